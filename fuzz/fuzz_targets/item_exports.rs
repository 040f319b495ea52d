//! Any stored item under any query, in every format: transforms and encoders never panic, and
//! JSON/JSONL output stays valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use troupe_api::items::formats::TextEncoder;
use troupe_api::items::node::Object;
use troupe_api::items::query::ItemFormat;
use troupe_api::items::table::Columns;
use troupe_api::items::transform::transform;
use troupe_api::items::ItemsQuery;
use troupe_api::params::Params;

fuzz_target!(|data: &[u8]| {
    // First line: the query; the rest: one item's JSON.
    let Some(split) = data.iter().position(|b| *b == b'\n') else { return };
    let Ok(query) = std::str::from_utf8(&data[..split]) else { return };
    let item = &data[split + 1..];
    let Ok(params) = Params::parse(Some(query)) else { return };
    for format in ["json", "jsonl", "csv", "html", "xml", "rss"] {
        let Ok(mut q) = ItemsQuery::from_params(&params) else { return };
        q.format = ItemFormat::parse(format).unwrap();
        let mut records: Vec<Object> = Vec::new();
        transform(item, &q, |record| records.push(record.clone()));
        let order = if q.output_fields.is_empty() { q.fields.clone() } else { q.output_fields.clone() };
        let mut columns = Columns::new(order);
        for record in &records {
            if columns.add_record(record, None).is_err() {
                return;
            }
        }
        columns.finish();
        let mut encoder = TextEncoder::new(&q, columns);
        let mut out = Vec::new();
        encoder.start(&q, "title", "http://x", &mut out);
        for record in &records {
            encoder.record(record, &mut out);
        }
        encoder.finish(&q, &mut out);
        let text = String::from_utf8(out).expect("exports are UTF-8");
        if format == "json" {
            let body = text.trim_start_matches('\u{feff}');
            let parsed: serde_json::Value = serde_json::from_str(body).expect("valid JSON array");
            assert_eq!(parsed.as_array().unwrap().len(), records.len());
        }
    }
});
