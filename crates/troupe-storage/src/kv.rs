//! Key-value store records: opaque bytes stored exactly as sent, with their `Content-Type` and
//! `Content-Encoding`, addressed by key and listed in UTF-8 byte order of the keys.
//!
//! Small records live next to their metadata; large ones are streamed to a backend-managed
//! blob, so neither a write nor a read ever holds a whole large record in memory.

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use troupe_model::storage::StorageInfo;

use crate::Result;

/// Longest record key.
pub const MAX_KEY_LEN: usize = 256;

/// Whether `key` is a valid record key: 1-256 characters of `a-zA-Z0-9!-_.'()`.
/// (Every valid key is ASCII, so byte order and character order agree.)
pub fn valid_record_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!-_.'()".contains(&b))
}

/// What is stored about a record besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    pub key: String,
    /// Stored size in bytes (of the body as sent, i.e. still encoded).
    pub size: u64,
    pub content_type: String,
    /// `Content-Encoding` the body was sent (and is stored) with, e.g. `gzip`; `None` = identity.
    pub content_encoding: Option<String>,
    pub modified_at: i64,
}

/// A record's bytes as read from storage.
pub enum RecordContent {
    /// Held in memory (small records).
    Inline(Bytes),
    /// An open file positioned at the start; `size` bytes long. The file stays readable even if
    /// the record is overwritten or deleted meanwhile: record files are never written, truncated
    /// or renamed once a row refers to them (an overwritten or deleted record's file is
    /// unlinked), so they may be memory-mapped.
    File(std::fs::File),
}

impl std::fmt::Debug for RecordContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordContent::Inline(bytes) => write!(f, "Inline({} bytes)", bytes.len()),
            RecordContent::File(_) => f.write_str("File"),
        }
    }
}

/// A record read from storage.
#[derive(Debug)]
pub struct Record {
    pub meta: RecordMeta,
    /// `None` when only the metadata was asked for.
    pub content: Option<RecordContent>,
}

/// Where the bytes of a record being written come from.
pub enum RecordSource {
    /// The whole body, already in memory.
    Bytes(Bytes),
    /// A body of unknown length as a stream of chunks, written as they come (no copy). An error
    /// aborts the write (nothing is changed).
    Chunks(Pin<Box<dyn futures::Stream<Item = std::io::Result<Bytes>> + Send>>),
}

/// A record to write.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub content_type: String,
    pub content_encoding: Option<String>,
}

/// What an access check needs to know about a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreAccess {
    pub num: i64,
    pub id: String,
    pub user_id: String,
    pub general_access: String,
    pub url_signing_secret_key: String,
}

/// The store a record write goes to: its catalog number and id. Both [`StorageInfo`] and
/// [`StoreAccess`] (the cached lookup of writes) name one.
pub trait StoreRef: Sync {
    fn num(&self) -> i64;
    fn id(&self) -> &str;
}

impl StoreRef for StorageInfo {
    fn num(&self) -> i64 {
        self.num
    }
    fn id(&self) -> &str {
        &self.id
    }
}

impl StoreRef for StoreAccess {
    fn num(&self) -> i64 {
        self.num
    }
    fn id(&self) -> &str {
        &self.id
    }
}

/// The shared [`StoreAccess`] that write lookups return.
impl<T: StoreRef + Send> StoreRef for std::sync::Arc<T> {
    fn num(&self) -> i64 {
        (**self).num()
    }
    fn id(&self) -> &str {
        (**self).id()
    }
}

/// One key of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub key: String,
    pub size: u64,
}

/// A page of keys in UTF-8 byte order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysPage {
    pub keys: Vec<KeyEntry>,
    /// More keys follow the last one of this page.
    pub is_truncated: bool,
}

/// Selects keys to list.
#[derive(Debug, Clone, Default)]
pub struct KeysQuery {
    /// Only keys strictly after this one (byte order).
    pub exclusive_start_key: Option<String>,
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// At most this many keys (the HTTP layer keeps it within 1..=1000).
    pub limit: u64,
}

#[async_trait]
pub trait KvStore {
    /// Reads a record of `store` (its metadata, plus its content unless `meta_only`). Counts as
    /// a read of the store.
    async fn get_record(
        &self,
        store: &StorageInfo,
        key: &str,
        meta_only: bool,
    ) -> Result<Option<Record>>;

    /// The key-value store with id `store_id` (what an access check needs) and its record `key`,
    /// in one lookup (the hot path of record reads): `None` when there is no key-value store
    /// with that id. Counts as a read when the record exists.
    async fn get_store_record(
        &self,
        store_id: &str,
        key: &str,
        meta_only: bool,
    ) -> Result<Option<(StoreAccess, Option<Record>)>>;

    /// Creates or replaces a record. Atomic: on any error (including a failing `Stream`) the old
    /// record, if any, stays as it was. `NotFound` when the store no longer exists, `Invalid` for
    /// an invalid key. Returns the stored size.
    async fn put_record(
        &self,
        store: &dyn StoreRef,
        key: &str,
        record: NewRecord,
        source: RecordSource,
    ) -> Result<u64>;

    /// Deletes a record; false when there was none.
    async fn delete_record(&self, store: &dyn StoreRef, key: &str) -> Result<bool>;

    /// Lists keys (with sizes) in UTF-8 byte order. Counts as a listing of the store.
    async fn list_keys(&self, store: &StorageInfo, query: KeysQuery) -> Result<KeysPage>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys() {
        // `..` is made of valid characters: a valid key (keys never name files).
        for ok in [
            "INPUT",
            "a",
            "x".repeat(256).as_str(),
            "a-b_c.d!e'f(g)h",
            "0",
            "..",
        ] {
            assert!(valid_record_key(ok), "{ok}");
        }
        for bad in [
            "",
            "a/b",
            "a%2Fb",
            "é",
            "a b",
            "x".repeat(257).as_str(),
            "a\0",
            "~x",
            "a*",
        ] {
            assert!(!valid_record_key(bad), "{bad}");
        }
    }
}
