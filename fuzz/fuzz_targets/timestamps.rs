//! Any timestamp text: parsing never panics; what parses formats back to a parseable value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(ms) = troupe_model::parse_ts(text) {
        let shown = troupe_model::format_ts(ms);
        assert!(troupe_model::parse_ts(&shown).is_some());
    }
});
