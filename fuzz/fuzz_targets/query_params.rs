//! Any query string: parsing never panics, and what parses is within the documented bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use troupe_api::items::ItemsQuery;
use troupe_api::params::Params;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    let Ok(params) = Params::parse(Some(query)) else { return };
    if let Ok(list) = params.list_params() {
        assert!(list.limit >= 1 && list.limit <= 1000);
    }
    let _ = params.bool("desc", false);
    let _ = params.u64("offset");
    let _ = params.list("fields");
    if let Ok(items) = ItemsQuery::from_params(&params) {
        assert!(items.output_fields.is_empty() || items.output_fields.len() == items.fields.len());
    }
});
