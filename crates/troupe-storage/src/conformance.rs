//! The storage test suite, written once against the traits. Every backend calls each `run`
//! from its own tests (see the bottom of `sqlite.rs`).

pub mod actors;
pub mod catalog;
pub mod datasets;
pub mod hooks;
pub mod kv;
pub mod queues;
pub mod tasks;
pub mod users;

use troupe_model::storage::{StorageInfo, StorageKind, StorageOrigin};
use troupe_model::user::User;

use crate::Storage;

/// A user to own test resources.
pub async fn test_user(storage: &dyn Storage) -> User {
    storage
        .ensure_default_user("tester", "test-token")
        .await
        .expect("default user")
}

/// A new unnamed storage of `kind` owned by the test user.
pub async fn new_storage(storage: &dyn Storage, kind: StorageKind) -> StorageInfo {
    let user = test_user(storage).await;
    storage
        .create_storage(kind, &user, None, StorageOrigin::default())
        .await
        .expect("new storage")
        .0
}
