//! Datasets, key-value stores and request queues share one catalog: the same naming, ownership,
//! timestamps and access rules. Each kind adds its own counters.

use std::fmt;

/// The three Apify storage kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageKind {
    Dataset,
    KeyValueStore,
    RequestQueue,
}

impl StorageKind {
    /// Stable code stored in the database.
    pub fn code(self) -> i64 {
        match self {
            StorageKind::Dataset => 1,
            StorageKind::KeyValueStore => 2,
            StorageKind::RequestQueue => 3,
        }
    }

    /// The URL collection segment (`datasets`, `key-value-stores`, `request-queues`).
    pub fn collection(self) -> &'static str {
        match self {
            StorageKind::Dataset => "datasets",
            StorageKind::KeyValueStore => "key-value-stores",
            StorageKind::RequestQueue => "request-queues",
        }
    }

    /// Human name used in error messages.
    pub fn label(self) -> &'static str {
        match self {
            StorageKind::Dataset => "Dataset",
            StorageKind::KeyValueStore => "Key-value store",
            StorageKind::RequestQueue => "Request queue",
        }
    }
}

impl fmt::Display for StorageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A storage's catalog row with every kind's counters (unused ones stay zero).
#[derive(Debug, Clone, PartialEq)]
pub struct StorageInfo {
    pub kind: StorageKind,
    /// Internal dense number; keys of items/records/requests are derived from it.
    pub num: i64,
    pub id: String,
    pub name: Option<String>,
    pub user_id: String,
    pub username: String,
    pub created_at: i64,
    pub modified_at: i64,
    pub accessed_at: i64,
    pub act_id: Option<String>,
    pub act_run_id: Option<String>,
    pub general_access: String,
    pub url_signing_secret_key: String,
    pub read_count: u64,
    pub write_count: u64,
    pub delete_count: u64,
    pub list_count: u64,
    pub storage_bytes: u64,
    /// Datasets: items stored.
    pub item_count: u64,
    /// Datasets: items non-empty without hidden fields.
    pub clean_item_count: u64,
    /// Request queues.
    pub total_request_count: u64,
    pub handled_request_count: u64,
    pub had_multiple_clients: bool,
}

/// Who created a storage (set for a run's default storages).
#[derive(Debug, Clone, Default)]
pub struct StorageOrigin {
    pub act_id: Option<String>,
    pub act_run_id: Option<String>,
}

/// Fields a storage update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct StorageUpdate {
    /// `Some(None)` makes the storage unnamed.
    pub name: Option<Option<String>>,
    pub general_access: Option<String>,
}

/// Listing filter for storages of one kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct StorageListFilter {
    /// Include unnamed storages (`unnamed=1`).
    pub unnamed: bool,
}

/// One dataset item as pushed: its raw JSON text and whether it is non-empty once hidden
/// (`#`-prefixed) fields are dropped.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub json: Box<str>,
    pub clean: bool,
}

/// Storage names: 1-63 characters of `a-zA-Z0-9-` (Apify's rule), no leading/trailing hyphen.
pub fn validate_storage_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err("Storage name must have 1 to 63 characters".into());
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err("Storage name can only contain letters 'a' through 'z', the digits '0' through '9', and the hyphen ('-')".into());
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("Storage name cannot start or end with a hyphen".into());
    }
    Ok(())
}
