//! Persistence behind traits. HTTP handlers and the runner only see [`Storage`]; the SQLite
//! backend (default feature `sqlite`) is one implementation, and a PostgreSQL backend can be added
//! behind the same traits. [`conformance`] holds the test suite every backend must pass.

pub mod actors;
pub mod catalog;
pub mod conformance;
pub mod datasets;
pub mod error;
pub mod hooks;
pub mod kv;
pub mod queues;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod tasks;
pub mod users;

pub use actors::{ActorStore, BuildStore, Mutator, RunFilter, RunStore};
pub use catalog::StorageCatalog;
pub use datasets::DatasetStore;
pub use error::{Error, Result};
pub use hooks::{ScheduleStore, WebhookFilter, WebhookStore};
pub use kv::KvStore;
pub use queues::{
    DeleteTarget, Head, HeadEntries, HeadItem, ListedHead, LockOutcome, QueueStore, RequestFilter,
    RequestOutcome, RequestsPage,
};
pub use tasks::TaskStore;
pub use users::UserStore;

/// Everything troupe persists.
pub trait Storage:
    UserStore
    + StorageCatalog
    + DatasetStore
    + KvStore
    + QueueStore
    + ActorStore
    + BuildStore
    + RunStore
    + TaskStore
    + WebhookStore
    + ScheduleStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Storage for T where
    T: UserStore
        + StorageCatalog
        + DatasetStore
        + KvStore
        + QueueStore
        + ActorStore
        + BuildStore
        + RunStore
        + TaskStore
        + WebhookStore
        + ScheduleStore
        + Send
        + Sync
        + 'static
{
}
