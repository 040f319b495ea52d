//! Encoders of every export format. Text formats write into a byte buffer batch by batch; XLSX
//! goes through rust_xlsxwriter in constant-memory mode (see `export.rs`).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::query::{ItemFormat, ItemsQuery};
use super::transform::{table_cells, table_leaves, Cell};

/// Tabular exports allow at most this many columns (Apify's limit).
pub const MAX_COLUMNS: usize = 2000;

/// The ordered column set of a tabular export: first appearance order, or with `fields` the
/// order of the fields (their nested columns in first appearance order within each field).
#[derive(Debug, Default, Clone)]
pub struct Columns {
    pub names: Vec<String>,
    index: HashMap<String, usize>,
    /// Position in `order` of the top-level field each column comes from.
    ranks: Vec<usize>,
    /// Output names of the requested `fields` (empty: first appearance order).
    order: Vec<String>,
}

impl Columns {
    /// An empty column set; `order` = the output names of `fields`, if any.
    pub fn new(order: Vec<String>) -> Self {
        Self {
            order,
            ..Self::default()
        }
    }

    fn rank(&self, top: &str) -> usize {
        self.order
            .iter()
            .position(|field| {
                field == top
                    || (top.len() > field.len()
                        && top.starts_with(field.as_str())
                        && top.as_bytes()[field.len()] == b'.')
            })
            .unwrap_or(usize::MAX)
    }

    /// Adds the columns of one record; false when the limit is exceeded.
    pub fn add_record(&mut self, record: &Map<String, Value>) -> bool {
        let mut ok = true;
        table_leaves(record, |top, path, _| {
            if !ok || self.index.contains_key(&path) {
                return;
            }
            if self.names.len() >= MAX_COLUMNS {
                ok = false;
                return;
            }
            let rank = self.rank(top);
            self.index.insert(path.clone(), self.names.len());
            self.names.push(path);
            self.ranks.push(rank);
        });
        ok
    }

    /// Fixes the final order once every record was seen: requested fields that never appeared
    /// get an (empty) column of their own, and columns follow the order of `fields`.
    pub fn finish(&mut self) {
        if self.order.is_empty() {
            return;
        }
        for (rank, field) in self.order.clone().into_iter().enumerate() {
            if !self.ranks.contains(&rank) && !self.index.contains_key(&field) {
                self.index.insert(field.clone(), self.names.len());
                self.names.push(field);
                self.ranks.push(rank);
            }
        }
        let mut columns: Vec<(usize, String)> =
            self.ranks.drain(..).zip(self.names.drain(..)).collect();
        columns.sort_by_key(|(rank, _)| *rank); // stable: first appearance within a field
        self.index.clear();
        for (position, (rank, name)) in columns.into_iter().enumerate() {
            self.index.insert(name.clone(), position);
            self.names.push(name);
            self.ranks.push(rank);
        }
    }

    /// The record laid out as one row of cells in column order.
    pub fn row(&self, record: &Map<String, Value>, scratch: &mut Vec<(String, Cell)>) -> Vec<Cell> {
        scratch.clear();
        table_cells(record, scratch);
        let mut row = vec![Cell::Empty; self.names.len()];
        for (name, value) in scratch.drain(..) {
            if let Some(&index) = self.index.get(&name) {
                row[index] = value;
            }
        }
        row
    }
}

/// Escapes text for XML and HTML.
pub fn escape_xml(text: &str, out: &mut Vec<u8>) {
    for ch in text.chars() {
        match ch {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            '"' => out.extend_from_slice(b"&quot;"),
            '\'' => out.extend_from_slice(b"&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// A property name turned into a valid XML element name.
pub fn xml_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

/// Writes `value` as the element `name` (arrays repeat the element; `@` holds attributes and `#`
/// the text of an object).
pub fn write_xml_value(name: &str, value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Array(elements) => {
            for element in elements {
                write_xml_value(name, element, out);
            }
        }
        Value::Object(fields) => {
            out.push(b'<');
            out.extend_from_slice(name.as_bytes());
            if let Some(Value::Object(attributes)) = fields.get("@") {
                for (key, attr) in attributes {
                    out.push(b' ');
                    out.extend_from_slice(xml_name(key).as_bytes());
                    out.extend_from_slice(b"=\"");
                    escape_xml(&super::transform::scalar_text(attr), out);
                    out.push(b'"');
                }
            }
            out.push(b'>');
            for (key, child) in fields {
                match key.as_str() {
                    "@" => {}
                    "#" => escape_xml(&super::transform::scalar_text(child), out),
                    _ => write_xml_value(&xml_name(key), child, out),
                }
            }
            out.extend_from_slice(b"</");
            out.extend_from_slice(name.as_bytes());
            out.push(b'>');
        }
        Value::Null => {
            out.push(b'<');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"/>");
        }
        scalar => {
            out.push(b'<');
            out.extend_from_slice(name.as_bytes());
            out.push(b'>');
            escape_xml(&super::transform::scalar_text(scalar), out);
            out.extend_from_slice(b"</");
            out.extend_from_slice(name.as_bytes());
            out.push(b'>');
        }
    }
}

/// Streaming encoder of one text format.
pub struct TextEncoder {
    format: ItemFormat,
    first: bool,
    delimiter: u8,
    xml_row: String,
    columns: Columns,
    scratch: Vec<(String, Cell)>,
}

impl TextEncoder {
    pub fn new(query: &ItemsQuery, columns: Columns) -> Self {
        Self {
            format: query.format,
            first: true,
            delimiter: query.delimiter,
            xml_row: query.xml_row.clone(),
            columns,
            scratch: Vec::new(),
        }
    }

    /// Everything before the first item.
    pub fn start(&mut self, query: &ItemsQuery, title: &str, link: &str, out: &mut Vec<u8>) {
        if query.bom {
            out.extend_from_slice(b"\xEF\xBB\xBF");
        }
        match self.format {
            ItemFormat::Json => out.push(b'['),
            ItemFormat::Jsonl | ItemFormat::Xlsx => {}
            ItemFormat::Csv => {
                if !query.skip_header_row && !self.columns.names.is_empty() {
                    let names = self.columns.names.clone();
                    self.write_csv_row(&names, out);
                }
            }
            ItemFormat::Html => {
                out.extend_from_slice(
                    b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>",
                );
                escape_xml(title, out);
                out.extend_from_slice(b"</title></head><body><table border=\"1\">\n<thead><tr>");
                for name in &self.columns.names {
                    out.extend_from_slice(b"<th>");
                    escape_xml(name, out);
                    out.extend_from_slice(b"</th>");
                }
                out.extend_from_slice(b"</tr></thead>\n<tbody>\n");
            }
            ItemFormat::Xml => {
                out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
                out.extend_from_slice(query.xml_root.as_bytes());
                out.extend_from_slice(b">\n");
            }
            ItemFormat::Rss => {
                out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel>\n<title>");
                escape_xml(query.feed_title.as_deref().unwrap_or(title), out);
                out.extend_from_slice(b"</title>\n<link>");
                escape_xml(link, out);
                out.extend_from_slice(b"</link>\n<description>");
                let description = query
                    .feed_description
                    .clone()
                    .unwrap_or_else(|| format!("Items of {title}"));
                escape_xml(&description, out);
                out.extend_from_slice(b"</description>\n");
            }
        }
    }

    /// One stored item copied as is (JSON and JSONL without transforms).
    pub fn raw_item(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        match self.format {
            ItemFormat::Json => {
                if !self.first {
                    out.push(b',');
                }
                out.push(b'\n');
                out.extend_from_slice(raw);
            }
            _ => {
                out.extend_from_slice(raw);
                out.push(b'\n');
            }
        }
        self.first = false;
    }

    /// One transformed record.
    pub fn record(&mut self, record: &Map<String, Value>, out: &mut Vec<u8>) {
        match self.format {
            ItemFormat::Json | ItemFormat::Jsonl => {
                let text = serde_json::to_vec(record).expect("serialisable");
                self.raw_item(&text, out);
            }
            ItemFormat::Csv => {
                let row = self.columns.row(record, &mut self.scratch);
                let row: Vec<&str> = row.iter().map(Cell::text).collect();
                self.write_csv_row(&row, out);
            }
            ItemFormat::Html => {
                let row = self.columns.row(record, &mut self.scratch);
                out.extend_from_slice(b"<tr>");
                for cell in row {
                    out.extend_from_slice(b"<td>");
                    escape_xml(cell.text(), out);
                    out.extend_from_slice(b"</td>");
                }
                out.extend_from_slice(b"</tr>\n");
            }
            ItemFormat::Xml | ItemFormat::Rss => {
                let row_name = if self.format == ItemFormat::Rss {
                    "item"
                } else {
                    self.xml_row.as_str()
                };
                write_xml_value(row_name, &Value::Object(record.clone()), out);
                out.push(b'\n');
            }
            ItemFormat::Xlsx => {}
        }
    }

    /// Everything after the last item.
    pub fn finish(&mut self, query: &ItemsQuery, out: &mut Vec<u8>) {
        match self.format {
            ItemFormat::Json => {
                if !self.first {
                    out.push(b'\n');
                }
                out.extend_from_slice(b"]");
            }
            ItemFormat::Html => out.extend_from_slice(b"</tbody></table></body></html>\n"),
            ItemFormat::Xml => {
                out.extend_from_slice(b"</");
                out.extend_from_slice(query.xml_root.as_bytes());
                out.extend_from_slice(b">\n");
            }
            ItemFormat::Rss => out.extend_from_slice(b"</channel></rss>\n"),
            _ => {}
        }
    }

    fn write_csv_row<T: AsRef<[u8]>>(&self, row: &[T], out: &mut Vec<u8>) {
        let mut writer = csv::WriterBuilder::new()
            .delimiter(self.delimiter)
            .from_writer(&mut *out);
        // Writing into a Vec cannot fail.
        let _ = writer.write_record(row);
        let _ = writer.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xml_values() {
        let mut out = Vec::new();
        write_xml_value(
            "item",
            &json!({"a": [1, 2], "b": {"@": {"x": "1"}, "#": "t<"}, "9z": null}),
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<item><a>1</a><a>2</a><b x=\"1\">t&lt;</b><_9z/></item>"
        );
    }
}
