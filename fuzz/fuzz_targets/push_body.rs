//! Any push body: either rejected with a 400, or every accepted item is a single-line JSON object.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match troupe_api::items::parse_push_body(data) {
        Ok(items) => {
            for item in items {
                assert!(!item.json.contains('\n'));
                let value: serde_json::Value = serde_json::from_str(&item.json).expect("accepted items parse");
                assert!(value.is_object());
            }
        }
        Err(err) => assert_eq!(err.status.as_u16(), 400),
    }
});
