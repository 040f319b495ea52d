//! Any request-queue request body: validation never panics; what it accepts has the id derived
//! from its uniqueKey and an http(s) URL.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Ok(request) = troupe_model::queue::parse_request(value, None) {
        assert_eq!(request.id, troupe_model::queue::request_id(&request.unique_key));
        let url = request.url.to_ascii_lowercase();
        assert!(url.starts_with("http://") || url.starts_with("https://"), "{url}");
    }
});
