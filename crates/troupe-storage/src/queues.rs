//! Request queue contents and locks.
//!
//! Order: requests added (or reclaimed) with `forefront` come first, newest first; the rest
//! follow first in, first out. A lock hides a request from `lock_head` until it expires or is
//! released. Every call that takes a client key counts it for `hadMultipleClients`; `None` there
//! means the caller sent no `clientKey`, which counts as a new client. `now` is the caller's clock
//! in milliseconds (injected so tests can move time).

use async_trait::async_trait;
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

/// The head of a queue, as `list_head` and `lock_head` return it.
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
    ) -> Result<Head>;
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
