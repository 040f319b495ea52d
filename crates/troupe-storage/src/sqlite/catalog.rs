use async_trait::async_trait;
use rusqlite::{params, Connection, Row, Transaction};
use troupe_model::list::{ListParams, Page};
use troupe_model::storage::{
    StorageInfo, StorageKind, StorageListFilter, StorageOrigin, StorageUpdate,
};
use troupe_model::user::User;

use super::group::BatchState;
use super::stmts::with_stmt;
use super::{optional, SqliteStorage};
use std::sync::Arc;

use crate::kv::StoreAccess;
use crate::{Error, Result, StorageCatalog};

/// Columns read by [`info_from_row`], joined with the owner's username.
pub(crate) const INFO_COLUMNS: &str = "s.num, s.id, s.kind, s.name, s.user_id, coalesce(u.username, ''), s.created_at, s.modified_at, \
     s.accessed_at, s.act_id, s.act_run_id, s.general_access, s.secret, s.read_count, s.write_count, s.delete_count, \
     s.list_count, s.storage_bytes, s.item_count, s.clean_item_count, s.total_request_count, s.handled_request_count, \
     s.had_multiple_clients";

pub(crate) fn kind_from_code(code: i64) -> StorageKind {
    match code {
        1 => StorageKind::Dataset,
        2 => StorageKind::KeyValueStore,
        _ => StorageKind::RequestQueue,
    }
}

pub(crate) fn info_from_row(row: &Row<'_>) -> rusqlite::Result<StorageInfo> {
    Ok(StorageInfo {
        num: row.get(0)?,
        id: row.get(1)?,
        kind: kind_from_code(row.get(2)?),
        name: row.get(3)?,
        user_id: row.get(4)?,
        username: row.get(5)?,
        created_at: row.get(6)?,
        modified_at: row.get(7)?,
        accessed_at: row.get(8)?,
        act_id: row.get(9)?,
        act_run_id: row.get(10)?,
        general_access: row.get(11)?,
        url_signing_secret_key: row.get(12)?,
        read_count: row.get::<_, i64>(13)? as u64,
        write_count: row.get::<_, i64>(14)? as u64,
        delete_count: row.get::<_, i64>(15)? as u64,
        list_count: row.get::<_, i64>(16)? as u64,
        storage_bytes: row.get::<_, i64>(17)? as u64,
        item_count: row.get::<_, i64>(18)? as u64,
        clean_item_count: row.get::<_, i64>(19)? as u64,
        total_request_count: row.get::<_, i64>(20)? as u64,
        handled_request_count: row.get::<_, i64>(21)? as u64,
        had_multiple_clients: row.get::<_, i64>(22)? != 0,
    })
}

/// Reads one storage by id and kind on any connection (used inside write transactions too).
pub(crate) fn load_storage(
    conn: &Connection,
    kind: StorageKind,
    id: &str,
) -> Result<Option<StorageInfo>> {
    let sql = format!("SELECT {INFO_COLUMNS} FROM storages s LEFT JOIN users u ON u.id = s.user_id WHERE s.id = ?1 AND s.kind = ?2");
    let mut stmt = conn.prepare_cached(&sql)?;
    Ok(optional(
        stmt.query_row(params![id, kind.code()], info_from_row),
    )?)
}

/// Like [`load_storage`] but a missing storage is an error.
pub(crate) fn require_storage(
    conn: &Connection,
    kind: StorageKind,
    id: &str,
) -> Result<StorageInfo> {
    load_storage(conn, kind, id)?
        .ok_or_else(|| Error::NotFound(format!("{} was not found", kind.label())))
}

fn load_by_name(
    conn: &Connection,
    kind: StorageKind,
    user_id: &str,
    name: &str,
) -> Result<Option<StorageInfo>> {
    let sql = format!(
        "SELECT {INFO_COLUMNS} FROM storages s LEFT JOIN users u ON u.id = s.user_id WHERE s.user_id = ?1 AND s.kind = ?2 AND s.name = ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    Ok(optional(stmt.query_row(
        params![user_id, kind.code(), name],
        info_from_row,
    ))?)
}

#[async_trait]
impl StorageCatalog for SqliteStorage {
    async fn create_storage(
        &self,
        kind: StorageKind,
        owner: &User,
        name: Option<&str>,
        origin: StorageOrigin,
    ) -> Result<(StorageInfo, bool)> {
        let user_id = owner.id.clone();
        let name = name.map(str::to_string);
        self.write(move |tx| {
            if let Some(name) = &name {
                if let Some(existing) = load_by_name(tx, kind, &user_id, name)? {
                    return Ok((existing, false));
                }
            }
            let id = troupe_model::new_id();
            let now = troupe_model::now_ms();
            // Above every number in use and every number whose content is still being purged
            // (SQLite's own choice, the largest number + 1, would reuse a deleted storage's).
            tx.execute(
                "INSERT INTO storages (num, id, kind, user_id, name, created_at, modified_at, accessed_at, act_id, act_run_id, general_access, secret)
                 VALUES (max(coalesce((SELECT max(num) FROM storages), 0), coalesce((SELECT max(num) FROM storage_purges), 0)) + 1,
                         ?1, ?2, ?3, ?4, ?5, ?5, ?5, ?6, ?7, ?8, ?9)",
                params![
                    id,
                    kind.code(),
                    user_id,
                    name,
                    now,
                    origin.act_id,
                    origin.act_run_id,
                    troupe_model::DEFAULT_GENERAL_ACCESS,
                    troupe_model::id::random_string(32)
                ],
            )?;
            Ok((require_storage(tx, kind, &id)?, true))
        })
        .await
    }

    async fn get_storage(&self, kind: StorageKind, id: &str) -> Result<Option<StorageInfo>> {
        // One primary-key lookup (every storage request resolves its storage with it): cheaper
        // on a pooled reader right here than a hop to the blocking pool and back.
        self.read_blocking(|conn| load_storage(conn, kind, id))
    }

    async fn get_storage_access(
        &self,
        kind: StorageKind,
        id: &str,
    ) -> Result<Option<Arc<StoreAccess>>> {
        // Cached (see `super::cache`): a miss reads the row and caches it with the version
        // loaded before the read, so a rename, access change or deletion that committed after
        // that read makes the entry unusable.
        let caches = &self.inner.caches;
        if let Some(hit) = caches.cached_access(kind, id) {
            return Ok(Some(hit));
        }
        let tag = caches.access_tag();
        let found = self.read_blocking(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT num, user_id, general_access, secret FROM storages WHERE id = ?1 AND kind = ?2",
            )?;
            Ok(optional(stmt.query_row(params![id, kind.code()], |row| {
                Ok(Arc::new(StoreAccess {
                    num: row.get(0)?,
                    id: id.to_string(),
                    user_id: row.get(1)?,
                    general_access: row.get(2)?,
                    url_signing_secret_key: row.get(3)?,
                }))
            }))?)
        })?;
        if let Some(access) = &found {
            caches.put_access(kind, tag, access);
        }
        Ok(found)
    }

    async fn get_storage_by_name(
        &self,
        kind: StorageKind,
        user_id: &str,
        name: &str,
    ) -> Result<Option<StorageInfo>> {
        let (user_id, name) = (user_id.to_string(), name.to_string());
        self.read(move |conn| load_by_name(conn, kind, &user_id, &name))
            .await
    }

    async fn list_storages(
        &self,
        kind: StorageKind,
        user_id: &str,
        filter: StorageListFilter,
        params: ListParams,
    ) -> Result<Page<StorageInfo>> {
        let user_id = user_id.to_string();
        self.read(move |conn| {
            let named_only = if filter.unnamed { "" } else { " AND s.name IS NOT NULL" };
            let total: i64 = conn.query_row(
                &format!("SELECT count(*) FROM storages s WHERE s.user_id = ?1 AND s.kind = ?2{named_only}"),
                params![user_id, kind.code()],
                |row| row.get(0),
            )?;
            let order = if params.desc { "DESC" } else { "ASC" };
            let sql = format!(
                "SELECT {INFO_COLUMNS} FROM storages s LEFT JOIN users u ON u.id = s.user_id
                 WHERE s.user_id = ?1 AND s.kind = ?2{named_only} ORDER BY s.created_at {order}, s.num {order} LIMIT ?3 + 0 OFFSET ?4"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let items = stmt
                .query_map(
                    params![user_id, kind.code(), params.limit as i64, params.offset as i64],
                    info_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Page::new(params, total as u64, items))
        })
        .await
    }

    async fn update_storage(
        &self,
        kind: StorageKind,
        id: &str,
        update: StorageUpdate,
    ) -> Result<StorageInfo> {
        let id = id.to_string();
        // Cached access data and cached key-value records carry the name and access settings
        // (see `super::cache`).
        let bump = self.inner.caches.catalog_write(kind);
        self.write(move |tx| {
            let current = require_storage(tx, kind, &id)?;
            let now = troupe_model::now_ms();
            if let Some(name) = &update.name {
                if let Some(new_name) = name {
                    if let Some(other) = load_by_name(tx, kind, &current.user_id, new_name)? {
                        if other.id != current.id {
                            return Err(Error::Conflict(format!(
                                "{} with name \"{new_name}\" already exists",
                                kind.label()
                            )));
                        }
                    }
                }
                tx.execute(
                    "UPDATE storages SET name = ?1, modified_at = ?2 WHERE num = ?3",
                    params![name, now, current.num],
                )?;
            }
            if let Some(access) = &update.general_access {
                tx.execute(
                    "UPDATE storages SET general_access = ?1, modified_at = ?2 WHERE num = ?3",
                    params![access, now, current.num],
                )?;
            }
            Ok((require_storage(tx, kind, &id)?, bump))
        })
        .await
        .map(|(info, _bump)| info)
    }

    async fn delete_storage(&self, kind: StorageKind, id: &str) -> Result<bool> {
        let id = id.to_string();
        // Cached access data and cached key-value records go with their storage (see `super::cache`).
        let bump = self.inner.caches.catalog_write(kind);
        // Only the catalog row goes now, with a record of the purge; the content goes in the
        // background in bounded writes (see `super::purge`).
        let (deleted, _bump) = self
            .write(move |tx| {
                let Some(info) = load_storage(tx, kind, &id)? else {
                    return Ok((None, bump));
                };
                tx.execute("DELETE FROM storages WHERE num = ?1", [info.num])?;
                super::purge::schedule(tx, info.num, kind)?;
                Ok((Some(info.num), bump))
            })
            .await?;
        let Some(num) = deleted else {
            return Ok(false);
        };
        match kind {
            StorageKind::Dataset => {}
            StorageKind::KeyValueStore => super::kv::forget_store(self, num),
            StorageKind::RequestQueue => super::queues::forget_queue(self, num),
        }
        self.inner.purges.wake();
        Ok(true)
    }

    async fn expired_unnamed_storages(
        &self,
        cutoff_ms: i64,
        limit: u64,
    ) -> Result<Vec<(StorageKind, String)>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT kind, id FROM storages WHERE name IS NULL AND max(modified_at, accessed_at) < ?1
                 ORDER BY modified_at LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![cutoff_ms, limit as i64], |row| Ok((kind_from_code(row.get(0)?), row.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}

/// Changes to a storage's catalog counters, accumulated by the writes of a batch (see
/// [`CatalogDeltas`]).
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Delta {
    pub(crate) bytes: i64,
    pub(crate) writes: i64,
    pub(crate) deletes: i64,
    pub(crate) items: i64,
    pub(crate) clean_items: i64,
    /// The write's time: `modifiedAt` and `accessedAt` (the latest one wins).
    pub(crate) now: i64,
}

impl Delta {
    fn add(&mut self, other: &Delta) {
        self.bytes += other.bytes;
        self.writes += other.writes;
        self.deletes += other.deletes;
        self.items += other.items;
        self.clean_items += other.clean_items;
        self.now = self.now.max(other.now);
    }
}

/// Catalog counters of the storages a batch writes to, written with one `UPDATE storages` per
/// storage before COMMIT instead of one per write (a [`BatchState`], see `super::group`).
/// A batched write checks its storage with [`CatalogDeltas::check`], reads counters through
/// [`CatalogDeltas::pending`] on top of the row, and records its changes with
/// [`CatalogDeltas::add`].
#[derive(Default)]
pub(crate) struct CatalogDeltas {
    /// Per storage number: changes of the batch's writes that succeeded.
    done: Vec<(i64, Delta)>,
    /// Changes of the write running now (merged into `done` when it succeeds).
    job: Vec<(i64, Delta)>,
    /// Storages (number, id) found in this batch: only plain writes delete storages, and this
    /// state is dropped before any of them runs.
    checked: Vec<(i64, String)>,
}

impl CatalogDeltas {
    /// Whether storage `num` is still the storage `id` (numbers of deleted storages may be
    /// reused): a write to a storage deleted since its caller looked it up must fail.
    pub(crate) fn check(&mut self, conn: &Connection, num: i64, id: &str) -> Result<bool> {
        if self.checked.iter().any(|(n, i)| *n == num && i == id) {
            return Ok(true);
        }
        let found = optional(with_stmt(
            conn,
            "SELECT 1 FROM storages WHERE num = ?1 AND id = ?2",
            |s| s.query_row(params![num, id], |_| Ok(())),
        ))?
        .is_some();
        if found {
            self.checked.push((num, id.to_string()));
        }
        Ok(found)
    }

    /// What the batch's writes so far (the running one included) add to storage `num`'s row.
    pub(crate) fn pending(&self, num: i64) -> Delta {
        let mut sum = Delta::default();
        for (n, delta) in self.done.iter().chain(&self.job) {
            if *n == num {
                sum.add(delta);
            }
        }
        sum
    }

    /// Records the running write's changes to storage `num`'s counters.
    pub(crate) fn add(&mut self, num: i64, delta: Delta) {
        add_to(&mut self.job, num, &delta);
    }
}

fn add_to(deltas: &mut Vec<(i64, Delta)>, num: i64, delta: &Delta) {
    match deltas.iter_mut().find(|(n, _)| *n == num) {
        Some((_, sum)) => sum.add(delta),
        None => deltas.push((num, *delta)),
    }
}

impl BatchState for CatalogDeltas {
    fn job_succeeded(&mut self) {
        for (num, delta) in std::mem::take(&mut self.job) {
            add_to(&mut self.done, num, &delta);
        }
    }

    fn job_failed(&mut self) {
        self.job.clear();
    }

    fn flush(&mut self, tx: &Transaction<'_>) -> Result<()> {
        debug_assert!(self.job.is_empty());
        if self.done.is_empty() {
            return Ok(());
        }
        let done = &mut self.done;
        let vanished = with_stmt(
            tx,
            "UPDATE storages SET storage_bytes = storage_bytes + ?1, write_count = write_count + ?2,
             delete_count = delete_count + ?3, item_count = item_count + ?4,
             clean_item_count = clean_item_count + ?5, modified_at = ?6, accessed_at = ?6
             WHERE num = ?7",
            |stmt| {
                for (num, d) in done.drain(..) {
                    let changed = stmt.execute(params![
                        d.bytes,
                        d.writes,
                        d.deletes,
                        d.items,
                        d.clean_items,
                        d.now,
                        num
                    ])?;
                    if changed == 0 {
                        return Ok(Some(num));
                    }
                }
                Ok(None)
            },
        )?;
        if let Some(num) = vanished {
            // Cannot happen: storages are deleted by plain writes only, which run after a
            // flush.
            return Err(Error::Internal(anyhow::anyhow!(
                "storage {num} vanished within a write batch"
            )));
        }
        Ok(())
    }
}
