//! Shared vocabulary of troupe: ids, timestamps, the Apify resource objects as they travel
//! between storage and the HTTP layer, and small pure helpers the SDK contract pins down
//! (request ids derived from `uniqueKey`, URL signatures).

pub mod actor;
pub mod hooks;
pub mod id;
pub mod list;
pub mod queue;
pub mod signature;
pub mod storage;
pub mod task;
pub mod time;
pub mod user;

pub use id::new_id;
pub use list::{ListParams, Page};
pub use time::{format_ts, now_ms, parse_ts};

/// Who may read a resource without being its owner (Apify's `generalAccess`).
pub const GENERAL_ACCESS_VALUES: &[&str] = &[
    "ANYONE_WITH_ID_CAN_READ",
    "ANYONE_WITH_NAME_CAN_READ",
    "FOLLOW_USER_SETTING",
    "RESTRICTED",
];

/// Default `generalAccess` of new resources.
pub const DEFAULT_GENERAL_ACCESS: &str = "FOLLOW_USER_SETTING";
