//! The storage catalog: create, find, list, rename and delete datasets, key-value stores and
//! request queues (one implementation for the three kinds).

use async_trait::async_trait;
use troupe_model::list::{ListParams, Page};
use troupe_model::storage::{
    StorageInfo, StorageKind, StorageListFilter, StorageOrigin, StorageUpdate,
};
use troupe_model::user::User;

use crate::kv::StoreAccess;
use crate::Result;

#[async_trait]
pub trait StorageCatalog {
    /// Creates an unnamed storage, or gets-or-creates a named one. Returns `(info, created)`.
    async fn create_storage(
        &self,
        kind: StorageKind,
        owner: &User,
        name: Option<&str>,
        origin: StorageOrigin,
    ) -> Result<(StorageInfo, bool)>;
    /// A storage by id.
    async fn get_storage(&self, kind: StorageKind, id: &str) -> Result<Option<StorageInfo>>;
    /// What an access check and a write need to know about the storage with id `id` (no
    /// counters). The hot path of writes: served from memory until a rename, an access change or
    /// a deletion of any storage commits. `None` when there is no such storage.
    async fn get_storage_access(
        &self,
        kind: StorageKind,
        id: &str,
    ) -> Result<Option<std::sync::Arc<StoreAccess>>>;
    /// A storage by its owner and name.
    async fn get_storage_by_name(
        &self,
        kind: StorageKind,
        user_id: &str,
        name: &str,
    ) -> Result<Option<StorageInfo>>;
    /// The owner's storages of one kind, oldest first (or newest with `desc`).
    async fn list_storages(
        &self,
        kind: StorageKind,
        user_id: &str,
        filter: StorageListFilter,
        params: ListParams,
    ) -> Result<Page<StorageInfo>>;
    /// Renames or changes access; `NotFound` for an unknown id, `Conflict` for a taken name.
    async fn update_storage(
        &self,
        kind: StorageKind,
        id: &str,
        update: StorageUpdate,
    ) -> Result<StorageInfo>;
    /// Deletes a storage and its content. Returns false when it did not exist.
    async fn delete_storage(&self, kind: StorageKind, id: &str) -> Result<bool>;
    /// Up to `limit` unnamed storages (any kind) neither modified nor accessed since `cutoff_ms`,
    /// oldest first (the retention policy deletes them).
    async fn expired_unnamed_storages(
        &self,
        cutoff_ms: i64,
        limit: u64,
    ) -> Result<Vec<(StorageKind, String)>>;
}
