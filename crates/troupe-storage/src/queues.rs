//! Request queue contents and locks.
//!
//! Order: requests added (or reclaimed) with `forefront` come first, newest first; the rest
//! follow first in, first out. A lock hides a request from `lock_head` until it expires or is
//! released. Every call that takes a client key counts it for `hadMultipleClients`; `None` there
//! means the caller sent no `clientKey`, which counts as a new client. `now` is the caller's clock
//! in milliseconds (injected so tests can move time).

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use troupe_model::queue::QueueRequest;

use crate::Result;

/// What adding or updating one request did (state **before** the call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestOutcome {
    pub request_id: String,
    pub unique_key: String,
    pub was_already_present: bool,
    pub was_already_handled: bool,
}

/// One request of the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadItem {
    pub id: String,
    pub unique_key: String,
    pub url: String,
    pub method: String,
    pub retry_count: i64,
    /// Set for requests locked by this call (`lock_head`), or locked by anyone (`list_head`).
    pub lock_expires_at: Option<i64>,
}

/// Head entries serialised once (`{"id","uniqueKey","url","method","retryCount"}` objects), so a
/// head that did not change is answered by copying bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HeadEntries {
    /// The entries as JSON objects, separated by commas.
    json: String,
    /// End of each entry in `json`.
    ends: Vec<usize>,
}

impl HeadEntries {
    pub fn from_items(items: &[HeadItem]) -> Self {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Entry<'a> {
            id: &'a str,
            unique_key: &'a str,
            url: &'a str,
            method: &'a str,
            retry_count: i64,
        }
        let size = items
            .iter()
            .map(|i| 64 + i.id.len() + i.unique_key.len() + i.url.len() + i.method.len())
            .sum();
        let mut json = Vec::with_capacity(size);
        let mut ends = Vec::with_capacity(items.len());
        for item in items {
            if !json.is_empty() {
                json.push(b',');
            }
            let entry = Entry {
                id: &item.id,
                unique_key: &item.unique_key,
                url: &item.url,
                method: &item.method,
                retry_count: item.retry_count,
            };
            serde_json::to_writer(&mut json, &entry).expect("serialisable");
            ends.push(json.len());
        }
        let json = String::from_utf8(json).expect("serde_json writes UTF-8");
        Self { json, ends }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes held (for cache bounds).
    pub fn size(&self) -> usize {
        self.json.len() + self.ends.len() * std::mem::size_of::<usize>()
    }

    /// The first `count` entries as JSON array members (comma-separated, no brackets).
    pub fn json(&self, count: usize) -> &str {
        match count.min(self.ends.len()) {
            0 => "",
            n => &self.json[..self.ends[n - 1]],
        }
    }
}

/// The head of a queue as `list_head` returns it: shared, pre-serialised entries.
#[derive(Debug, Clone)]
pub struct ListedHead {
    pub entries: Arc<HeadEntries>,
    /// How many of `entries` this answer holds.
    pub count: usize,
    pub queue_modified_at: i64,
    pub had_multiple_clients: bool,
}

impl ListedHead {
    /// The items as JSON array members (comma-separated, no brackets).
    pub fn items_json(&self) -> &str {
        self.entries.json(self.count)
    }

    /// The items parsed back (tests and tools; the API sends `items_json`).
    pub fn items(&self) -> Vec<HeadItem> {
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&format!("[{}]", self.items_json())).expect("valid head JSON");
        list.iter()
            .map(|v| HeadItem {
                id: v["id"].as_str().unwrap_or_default().to_string(),
                unique_key: v["uniqueKey"].as_str().unwrap_or_default().to_string(),
                url: v["url"].as_str().unwrap_or_default().to_string(),
                method: v["method"].as_str().unwrap_or_default().to_string(),
                retry_count: v["retryCount"].as_i64().unwrap_or_default(),
                lock_expires_at: None,
            })
            .collect()
    }
}

/// The head of a queue, as `lock_head` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub items: Vec<HeadItem>,
    pub queue_modified_at: i64,
    pub had_multiple_clients: bool,
    /// After the call, some pending request holds an unexpired lock (anyone's).
    pub queue_has_locked_requests: bool,
}

/// Which requests a listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestFilter {
    /// Every request, handled or not.
    #[default]
    All,
    /// Requests not handled yet (locked or not).
    Pending,
    /// Pending requests holding an unexpired lock.
    Locked,
}

/// One page of a request listing, ordered by request id.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestsPage {
    /// Each request's stored JSON.
    pub items: Vec<String>,
    /// Id of the last item when more requests follow.
    pub next_after: Option<String>,
}

/// Result of a lock operation on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    /// Done; for prolong, the new expiry (ms).
    Ok(Option<i64>),
    /// No such request in the queue.
    NotFound,
    /// The request is already handled.
    Handled,
    /// Another client holds an unexpired lock on it.
    LockedByOther,
    /// (delete lock) The request is not locked by this client.
    NotLocked,
}

/// Identifier in a batch delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTarget {
    pub id: String,
    pub unique_key: Option<String>,
}

#[async_trait]
pub trait QueueStore {
    /// Adds requests in order (one transaction). Existing ones (same id) are left untouched.
    async fn add_requests(
        &self,
        queue_id: &str,
        requests: Vec<QueueRequest>,
        forefront: bool,
        client_key: Option<String>,
        now: i64,
    ) -> Result<Vec<RequestOutcome>>;
    /// The stored JSON of one request.
    async fn get_request(&self, queue_id: &str, request_id: &str) -> Result<Option<String>>;
    /// Replaces (or inserts) a request. Unhandled → re-positioned (front with `forefront`,
    /// else back) and unlocked; handled → leaves the head and its lock.
    async fn update_request(
        &self,
        queue_id: &str,
        request: QueueRequest,
        forefront: bool,
        client_key: Option<String>,
        now: i64,
    ) -> Result<RequestOutcome>;
    /// Deletes requests by id; returns, per target, whether it existed.
    async fn delete_requests(
        &self,
        queue_id: &str,
        targets: Vec<DeleteTarget>,
        client_key: Option<String>,
        now: i64,
    ) -> Result<Vec<bool>>;
    /// The first `limit` pending requests without locking: available ones in queue order,
    /// then ones locked by anyone.
    async fn list_head(
        &self,
        queue_id: &str,
        limit: u64,
        client_key: Option<String>,
        now: i64,
    ) -> Result<ListedHead>;
    /// Locks the first `limit` available requests for `lock_ms` for `client_key`.
    async fn lock_head(
        &self,
        queue_id: &str,
        limit: u64,
        lock_ms: i64,
        client_key: Option<String>,
        now: i64,
    ) -> Result<Head>;
    /// Extends (or takes) the caller's lock to `now + lock_ms`; `forefront` decides where the
    /// request goes when the lock lapses.
    async fn prolong_lock(
        &self,
        queue_id: &str,
        request_id: &str,
        lock_ms: i64,
        forefront: bool,
        client_key: Option<String>,
        now: i64,
    ) -> Result<LockOutcome>;
    /// Releases the caller's lock; the request goes to the front (`forefront`) or the back.
    async fn delete_lock(
        &self,
        queue_id: &str,
        request_id: &str,
        forefront: bool,
        client_key: Option<String>,
        now: i64,
    ) -> Result<LockOutcome>;
    /// Releases every unexpired lock the client holds; returns how many.
    async fn unlock_requests(
        &self,
        queue_id: &str,
        client_key: Option<String>,
        now: i64,
    ) -> Result<u64>;
    /// Requests ordered by id, after `after` (exclusive).
    async fn list_requests(
        &self,
        queue_id: &str,
        after: Option<String>,
        limit: u64,
        filter: RequestFilter,
        client_key: Option<String>,
        now: i64,
    ) -> Result<RequestsPage>;
}
