//! Any record key: accepted keys are exactly the 1-256 characters of `a-zA-Z0-9!-_.'()`, so no
//! accepted key can name a path (`/`, NUL, `..` alone is fine as data: keys never touch the FS).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(key) = std::str::from_utf8(data) else { return };
    let expected = (1..=256).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"!-_.'()".contains(&b));
    assert_eq!(troupe_storage::kv::valid_record_key(key), expected, "{key:?}");
});
