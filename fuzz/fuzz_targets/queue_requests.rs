//! Any request-queue request body: validation never panics; what it accepts has the id derived
//! from its uniqueKey and an http(s) URL. Any batch body: the one-pass batch reader answers as
//! the entry-by-entry one whenever it accepts the body; so does the one-pass reader of a single
//! request body (`PUT …/requests/{id}`), with and without a path id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use troupe_model::queue::{parse_request_batch, parse_request_body, parse_request_raw, BatchEntry};

fuzz_target!(|data: &[u8]| {
    if let Some(entries) = parse_request_batch(data) {
        let fast: Vec<_> = entries.into_iter().map(BatchEntry::parse).collect();
        let slow: Vec<&RawValue> = serde_json::from_slice(data).expect("a JSON array");
        let slow: Vec<_> = slow.into_iter().map(|e| parse_request_raw(e, None)).collect();
        assert_eq!(fast, slow);
    }
    for path_id in [None, Some("k"), Some("3Xq2YZ8qvh1bJZa")] {
        if let Some(fast) = parse_request_body(data, path_id) {
            let raw: &RawValue = serde_json::from_slice(data).expect("a JSON value");
            assert_eq!(fast, parse_request_raw(raw, path_id));
        }
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Ok(request) = troupe_model::queue::parse_request(value, None) {
        assert_eq!(request.id, troupe_model::queue::request_id(&request.unique_key));
        let url = request.url.to_ascii_lowercase();
        assert!(url.starts_with("http://") || url.starts_with("https://"), "{url}");
    }
});
