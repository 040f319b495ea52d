//! Dataset items: append-only, addressed by a dense per-dataset index so any offset is a seek.

use async_trait::async_trait;
use bytes::Bytes;
use troupe_model::storage::NewItem;

use crate::Result;

/// A dataset's item counts right after a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushedItems {
    pub item_count: u64,
    pub clean_item_count: u64,
}

/// One page of raw items read from a dataset.
#[derive(Debug, Clone)]
pub struct ItemsPage {
    /// Total items in the dataset when the page was read.
    pub total: u64,
    /// Raw JSON of each item, in the requested order.
    pub items: Vec<Bytes>,
}

#[async_trait]
pub trait DatasetStore {
    /// Appends items atomically (all or nothing). Returns the dataset's counts after the push.
    async fn push_items(&self, dataset_id: &str, items: Vec<NewItem>) -> Result<PushedItems>;
    /// Reads up to `limit` items starting `offset` items from the start (or from the end with
    /// `desc`). Costs the same at any offset.
    async fn read_items(
        &self,
        dataset_id: &str,
        offset: u64,
        limit: u64,
        desc: bool,
    ) -> Result<ItemsPage>;
    /// Blocking form of [`DatasetStore::read_items`] without the copy: one read transaction
    /// that hands each item's raw JSON to `visit` straight from storage. `visit` returns false
    /// to stop after that item. Returns the dataset's total and how many items were visited.
    /// Call it off the async runtime (`spawn_blocking`).
    fn visit_items(
        &self,
        dataset_id: &str,
        offset: u64,
        limit: u64,
        desc: bool,
        visit: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(u64, u64)>;
    /// Notes one read of the items of the dataset numbered `dataset_num` ([`StorageInfo::num`]):
    /// `readCount` grows by one and `accessedAt` moves to `now_ms` (never back). Cheap and never
    /// waits for a write: backends may buffer it, so the dataset object shows it eventually
    /// (within seconds). Unknown numbers are ignored.
    fn note_dataset_read(&self, dataset_num: i64, now_ms: i64);
}
