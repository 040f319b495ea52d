//! Background removal of the content of deleted storages (`migrations/0014_storage_purges.sql`).
//!
//! Deleting a storage in one transaction held the single writer for as long as deleting all its
//! content took (seconds for a dataset of a million items or a queue of millions of requests),
//! and every other write of every user waited behind it. Now `delete_storage` removes the
//! catalog row and records a purge in one small transaction; the purger thread then deletes the
//! content in chunks of at most `purge_chunk_rows` rows, each chunk one write through the group
//! writer, so other writes commit between chunks. The purge row goes with the last chunk, so a
//! crash or `kill -9` at any point leaves a purge that the next start-up resumes.
//!
//! Content is keyed by the catalog number, and `create_storage` never gives a new storage a
//! number still listed in `storage_purges`: no storage can see a deleted storage's content.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rusqlite::{params, OptionalExtension, Transaction};
use troupe_model::storage::StorageKind;

use super::catalog::kind_from_code;
use super::{Inner, SqliteStorage};
use crate::Result;

/// Rows one purge write deletes at most unless the options say otherwise: ~4-8 ms of the
/// writer for dataset items (see docs/benchmarks.md, session 10).
pub const DEFAULT_PURGE_CHUNK_ROWS: usize = 2000;

/// Waits after a failed purge write before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A queue's sorted `rid`s and how many of them are deleted.
type RidList = (Arc<Vec<i64>>, usize);

/// The purger thread's signal, shared with the storage (see the module docs).
#[derive(Default)]
pub(crate) struct PurgeShared {
    /// Set when a purge may be waiting; cleared by the purger when it looks.
    signal: Mutex<bool>,
    wake: Condvar,
    closed: AtomicBool,
    /// Per queue being purged: the `rid`s of its rows, sorted (`queues::queue_rids`), and how
    /// many of them are deleted (only ever moved after a commit). Lost with the process: the
    /// next one reads them again (rows deleted already are skipped by the deletes).
    rq_rids: Mutex<HashMap<i64, RidList>>,
    /// Tests run purges by hand ([`SqliteStorage::purge_step`]).
    #[cfg(test)]
    pub(crate) held: AtomicBool,
}

impl PurgeShared {
    pub(crate) fn wake(&self) {
        *self.signal.lock() = true;
        self.wake.notify_one();
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake();
    }
}

/// What one purge write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PurgeStep {
    pub(crate) num: i64,
    pub(crate) kind: StorageKind,
    /// Rows deleted (at most the chunk size).
    pub(crate) rows: usize,
    /// The purge is complete (its row is gone).
    pub(crate) finished: bool,
}

/// The oldest purge: (number, kind).
fn next_purge(conn: &rusqlite::Connection) -> Result<Option<(i64, StorageKind)>> {
    Ok(conn
        .prepare_cached("SELECT num, kind FROM storage_purges ORDER BY num LIMIT 1")?
        .query_row([], |row| {
            Ok((row.get::<_, i64>(0)?, kind_from_code(row.get(1)?)))
        })
        .optional()?)
}

/// Records that the content of storage `num` (whose catalog row `tx` deletes) is to be purged.
pub(crate) fn schedule(tx: &Transaction<'_>, num: i64, kind: StorageKind) -> Result<()> {
    tx.prepare_cached("INSERT INTO storage_purges (num, kind, deleted_at) VALUES (?1, ?2, ?3)")?
        .execute(params![num, kind.code(), troupe_model::now_ms()])?;
    Ok(())
}

/// Starts the purger thread; it resumes every purge left by an earlier process at once.
pub(crate) fn init(storage: &SqliteStorage) -> Result<()> {
    let shared = Arc::clone(&storage.inner.purges);
    *shared.signal.lock() = true;
    let weak = Arc::downgrade(&storage.inner);
    std::thread::Builder::new()
        .name("troupe-purge".into())
        .spawn(move || purger(shared, weak))
        .map_err(crate::Error::from)?;
    Ok(())
}

fn purger(shared: Arc<PurgeShared>, weak: Weak<Inner>) {
    loop {
        {
            let mut signal = shared.signal.lock();
            while !*signal {
                if shared.closed.load(Ordering::SeqCst) {
                    return;
                }
                shared.wake.wait(&mut signal);
            }
            *signal = false;
        }
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        #[cfg(test)]
        if shared.held.load(Ordering::SeqCst) {
            continue;
        }
        // Held only for one write: the storage closes when its last user lets go.
        let Some(inner) = weak.upgrade() else { return };
        let storage = SqliteStorage { inner };
        let pause = storage.inner.options.purge_pause;
        // The write goes through the group writer like any other; off the async runtime, its
        // reply is awaited right here.
        let step = futures::executor::block_on(storage.purge_step());
        drop(storage);
        match step {
            Ok(Some(step)) => {
                if step.finished {
                    tracing::info!(num = step.num, kind = ?step.kind, "purged a deleted storage");
                }
                *shared.signal.lock() = true;
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %err, "purging a deleted storage failed; trying again");
                *shared.signal.lock() = true;
                std::thread::sleep(RETRY_AFTER);
            }
        }
    }
}

impl SqliteStorage {
    fn purge_chunk_rows(&self) -> usize {
        match self.inner.options.purge_chunk_rows {
            0 => DEFAULT_PURGE_CHUNK_ROWS,
            n => n,
        }
    }

    /// Deletes one chunk of the oldest purge's content (one write); `None` when no purge is left.
    pub(crate) async fn purge_step(&self) -> Result<Option<PurgeStep>> {
        let rows = self.purge_chunk_rows();
        // (Reads block: the purger thread is no runtime thread.)
        let Some((num, kind)) = self.read_blocking(next_purge)? else {
            return Ok(None);
        };
        // A queue's rows go first, in `rid` order, from a list read once off the writer.
        let mut rids = None;
        if kind == StorageKind::RequestQueue {
            let known = self.inner.purges.rq_rids.lock().get(&num).cloned();
            let (list, done) = match known {
                Some(known) => known,
                None => {
                    let list = self.scan_blocking(|conn| super::queues::queue_rids(conn, num))?;
                    let list = Arc::new(list);
                    self.inner
                        .purges
                        .rq_rids
                        .lock()
                        .insert(num, (Arc::clone(&list), 0));
                    (list, 0)
                }
            };
            if done < list.len() {
                let to = (done + rows).min(list.len());
                rids = Some((list, done, to));
            }
        }
        let this = self.clone();
        let chunk = rids
            .as_ref()
            .map(|(list, from, to)| (Arc::clone(list), *from, *to));
        let step = self
            .write(move |tx| {
                if next_purge(tx)? != Some((num, kind)) {
                    return Ok(None);
                }
                let (deleted, finished) = match (kind, chunk) {
                    (StorageKind::RequestQueue, Some((list, from, to))) => {
                        super::queues::purge_rows(tx, &list[from..to])?;
                        (to - from, false)
                    }
                    (StorageKind::RequestQueue, None) => {
                        super::queues::purge_requests(tx, num, rows)?
                    }
                    (StorageKind::Dataset, _) => {
                        let deleted = super::datasets::purge_items(tx, num, rows)?;
                        (deleted, deleted < rows)
                    }
                    (StorageKind::KeyValueStore, _) => {
                        let deleted = super::kv::purge_records(&this, tx, num, rows)?;
                        (deleted, deleted < rows)
                    }
                };
                if finished {
                    tx.prepare_cached("DELETE FROM storage_purges WHERE num = ?1")?
                        .execute([num])?;
                }
                Ok(Some(PurgeStep {
                    num,
                    kind,
                    rows: deleted,
                    finished,
                }))
            })
            .await?;
        let Some(step) = step else {
            // Another purge came first: a storage with a smaller number was deleted meanwhile.
            return Box::pin(self.purge_step()).await;
        };
        let mut lists = self.inner.purges.rq_rids.lock();
        if step.finished {
            lists.remove(&num);
        } else if let (Some((_, from, to)), Some(entry)) = (rids, lists.get_mut(&num)) {
            // Only from where this chunk started: a position never passes rows whose deletion
            // did not commit.
            if entry.1 == from {
                entry.1 = to;
            }
        }
        drop(lists);
        Ok(Some(step))
    }

    /// Runs purge writes until no purge is left; returns how many it ran.
    #[cfg(test)]
    pub(crate) async fn finish_purges(&self) -> usize {
        let mut steps = 0;
        while self.purge_step().await.unwrap().is_some() {
            steps += 1;
        }
        steps
    }

    /// Purges not finished yet (their storages' numbers).
    #[cfg(test)]
    pub(crate) fn purges_left(&self) -> Vec<i64> {
        self.read_blocking(|conn| {
            let mut stmt = conn.prepare("SELECT num FROM storage_purges ORDER BY num")?;
            let nums = stmt
                .query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(nums)
        })
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KeysQuery, NewRecord, RecordSource};
    use crate::queues::RequestFilter;
    use crate::sqlite::SqliteOptions;
    use crate::{DatasetStore, KvStore, QueueStore, StorageCatalog};
    use serde_json::json;
    use troupe_model::queue::parse_request;
    use troupe_model::storage::{NewItem, StorageInfo, StorageOrigin};

    /// A storage whose purges run only when the test says so (`purge_step`), `chunk` rows each.
    fn open_held(dir: &std::path::Path, chunk: usize) -> SqliteStorage {
        let storage = SqliteStorage::open(
            dir,
            SqliteOptions {
                purge_chunk_rows: chunk,
                ..SqliteOptions::default()
            },
        )
        .unwrap();
        storage.inner.purges.held.store(true, Ordering::SeqCst);
        storage
    }

    async fn create(storage: &SqliteStorage, kind: StorageKind, name: &str) -> StorageInfo {
        let user = crate::conformance::test_user(storage).await;
        let (info, created) = storage
            .create_storage(kind, &user, Some(name), StorageOrigin::default())
            .await
            .unwrap();
        assert!(created);
        info
    }

    /// Rows of any content table keyed by storage number `num`.
    fn content_rows(storage: &SqliteStorage, num: i64) -> i64 {
        storage
            .read_blocking(|conn| {
                Ok(conn.query_row(
                    "SELECT (SELECT count(*) FROM dataset_items WHERE k >= ?1 AND k < ?2)
                          + (SELECT count(*) FROM kv_records WHERE store_num = ?3)
                          + (SELECT count(*) FROM rq_requests WHERE queue = ?3)
                          + (SELECT count(*) FROM rq_pending WHERE queue = ?3)
                          + (SELECT count(*) FROM rq_ids WHERE queue = ?3)",
                    params![
                        super::super::datasets::item_key(num, 0),
                        super::super::datasets::item_key(num + 1, 0),
                        num
                    ],
                    |row| row.get(0),
                )?)
            })
            .unwrap()
    }

    /// (ids counted in `rq_runs`, rows of `rq_ids`).
    fn run_counts(storage: &SqliteStorage) -> (i64, i64) {
        storage
            .read_blocking(|conn| {
                Ok(conn.query_row(
                    "SELECT (SELECT coalesce(sum(ids), 0) FROM rq_runs), (SELECT count(*) FROM rq_ids)",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?)
            })
            .unwrap()
    }

    fn req(key: &str) -> troupe_model::queue::QueueRequest {
        parse_request(
            json!({"url": format!("https://example.com/{key}"), "uniqueKey": key}),
            None,
        )
        .unwrap()
    }

    async fn add(storage: &SqliteStorage, queue: &str, keys: std::ops::Range<usize>) {
        let requests = keys.map(|i| req(&format!("k{i}"))).collect();
        storage
            .add_requests(queue, requests, false, None, 1)
            .await
            .unwrap();
    }

    /// A dataset of `items` items, a store of `records` records (one in a file; returns its
    /// path) and a queue of `requests` requests: merged and recent ones, locked, handled.
    async fn fill(
        storage: &SqliteStorage,
        items: usize,
        records: usize,
        requests: usize,
    ) -> ([StorageInfo; 3], std::path::PathBuf) {
        let dataset = create(storage, StorageKind::Dataset, "d").await;
        let item = NewItem {
            json: r#"{"a":1}"#.into(),
            clean: true,
        };
        storage
            .push_items(&dataset.id, vec![item; items])
            .await
            .unwrap();
        let store = create(storage, StorageKind::KeyValueStore, "k").await;
        for i in 0..records {
            let size = if i == 0 {
                super::super::kv::INLINE_MAX + 1
            } else {
                10
            };
            let record = NewRecord {
                content_type: "text/plain".into(),
                content_encoding: None,
            };
            let body = RecordSource::Bytes(vec![b'x'; size].into());
            storage
                .put_record(&store, &format!("r{i}"), record, body)
                .await
                .unwrap();
        }
        let blob: String = storage
            .read_blocking(|conn| {
                Ok(conn.query_row(
                    "SELECT blob FROM kv_records WHERE blob IS NOT NULL",
                    [],
                    |row| row.get(0),
                )?)
            })
            .unwrap();
        let blob = super::super::kv::blob_path(storage.blobs_dir(), &blob);
        assert!(blob.exists());
        let queue = create(storage, StorageKind::RequestQueue, "q").await;
        let merged = requests * 2 / 3;
        add(storage, &queue.id, 0..merged).await;
        storage.merge_recent_ids().await.unwrap();
        add(storage, &queue.id, merged..requests).await;
        let head = storage
            .lock_head(&queue.id, 3, 60_000, Some("c".into()), 2)
            .await
            .unwrap();
        assert_eq!(head.items.len(), 3);
        let handled = parse_request(
            json!({"url": "https://example.com/k5", "uniqueKey": "k5",
                   "handledAt": "2026-01-01T00:00:00.000Z"}),
            None,
        )
        .unwrap();
        storage
            .update_request(&queue.id, handled, false, None, 3)
            .await
            .unwrap();
        ([dataset, store, queue], blob)
    }

    async fn delete_all(storage: &SqliteStorage, storages: &[StorageInfo]) {
        for info in storages {
            assert!(storage.delete_storage(info.kind, &info.id).await.unwrap());
        }
    }

    /// Gone at once (by id, by name, from listings; its name free), content purged later in
    /// writes of at most the chunk size with other writes committing between them; storages
    /// created meanwhile get new numbers and see nothing of the old content; the ids of the
    /// queue's runs stay counted right; the store's file goes once its row is gone.
    #[tokio::test]
    async fn deleted_storages_vanish_at_once_and_are_purged_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open_held(dir.path(), 7);
        let other = create(&storage, StorageKind::Dataset, "other").await;
        let (old, blob) = fill(&storage, 40, 12, 30).await;
        let user = crate::conformance::test_user(&storage).await;
        let rows: Vec<i64> = old.iter().map(|s| content_rows(&storage, s.num)).collect();
        assert_eq!(rows[0], 40);
        assert_eq!(rows[1], 12);
        assert!(rows[2] > 30, "{rows:?}");
        // The queue (the largest number) goes first and a new one takes its name at once.
        delete_all(&storage, &old[2..]).await;
        let queue = create(&storage, StorageKind::RequestQueue, "q").await;
        delete_all(&storage, &old[..2]).await;
        let dataset = create(&storage, StorageKind::Dataset, "d").await;
        let store = create(&storage, StorageKind::KeyValueStore, "k").await;
        let old_nums: Vec<i64> = old.iter().map(|s| s.num).collect();
        for new in [&dataset, &store, &queue] {
            assert!(
                !old_nums.contains(&new.num),
                "{} reuses {old_nums:?}",
                new.num
            );
        }
        for info in &old {
            assert!(storage
                .get_storage(info.kind, &info.id)
                .await
                .unwrap()
                .is_none());
            let by_name = storage
                .get_storage_by_name(info.kind, &user.id, "d")
                .await
                .unwrap();
            assert!(by_name.is_none_or(|s| s.id == dataset.id));
            let listed = storage
                .list_storages(info.kind, &user.id, Default::default(), Default::default())
                .await
                .unwrap();
            assert!(listed.items.iter().all(|s| s.id != info.id));
        }
        // Nothing of the old content shows in the new storages.
        let page = storage
            .list_requests(&queue.id, None, 1000, RequestFilter::All, None, 4)
            .await
            .unwrap();
        assert!(page.items.is_empty());
        let id = troupe_model::queue::request_id("k1");
        assert!(storage.get_request(&queue.id, &id).await.unwrap().is_none());
        let head = storage.list_head(&queue.id, 10, None, 4).await.unwrap();
        assert_eq!(head.count, 0);
        let keys = storage
            .list_keys(
                &store,
                KeysQuery {
                    exclusive_start_key: None,
                    prefix: None,
                    limit: 1000,
                },
            )
            .await
            .unwrap();
        assert!(keys.keys.is_empty());
        let record = storage
            .get_store_record(&store.id, "r1", false)
            .await
            .unwrap();
        assert!(record.unwrap().1.is_none());
        assert_eq!(content_rows(&storage, dataset.num), 0);
        // Not purged yet: the content waits for the purger.
        assert_eq!(
            old.iter()
                .map(|s| content_rows(&storage, s.num))
                .collect::<Vec<_>>(),
            rows
        );
        assert_eq!(storage.purges_left(), {
            let mut nums = old_nums.clone();
            nums.sort();
            nums
        });
        // Purge by hand, a write to another dataset committing between every two chunks.
        let total: i64 = rows.iter().sum();
        let mut left = total;
        let mut steps = 0;
        while let Some(step) = storage.purge_step().await.unwrap() {
            steps += 1;
            assert!(step.rows <= 7, "{step:?}");
            let now: i64 = old.iter().map(|s| content_rows(&storage, s.num)).sum();
            // (A merged request is a row and its id: one step of the chunk.)
            let gone = left - now;
            assert!(gone > 0 || step.finished, "{step:?}");
            assert!(gone <= 2 * step.rows as i64, "{step:?}");
            if step.kind != StorageKind::RequestQueue {
                assert_eq!(gone, step.rows as i64, "{step:?}");
            }
            left = now;
            let pushed = storage
                .push_items(
                    &other.id,
                    vec![NewItem {
                        json: r#"{"b":2}"#.into(),
                        clean: true,
                    }],
                )
                .await
                .unwrap();
            assert_eq!(pushed.item_count, steps);
        }
        assert_eq!(left, 0);
        assert!(steps as i64 >= total / 14, "{steps}");
        assert!(storage.purges_left().is_empty());
        let (counted, ids) = run_counts(&storage);
        assert_eq!(counted, ids);
        for new in [&dataset, &store, &queue] {
            assert_eq!(content_rows(&storage, new.num), 0);
        }
        // The file goes with the background sweep of doomed files (every second).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while blob.exists() {
            assert!(std::time::Instant::now() < deadline, "file still there");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A purge cut short (the storage closed mid-way, as by a crash) is resumed by the next
    /// start-up, in the background, and finishes.
    #[tokio::test]
    async fn an_interrupted_purge_finishes_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open_held(dir.path(), 5);
        let (old, _blob) = fill(&storage, 23, 9, 17).await;
        delete_all(&storage, &old).await;
        for _ in 0..3 {
            let step = storage.purge_step().await.unwrap().unwrap();
            assert!(!step.finished);
        }
        let left: i64 = old.iter().map(|s| content_rows(&storage, s.num)).sum();
        assert!(left > 0);
        drop(storage);
        let storage = SqliteStorage::open(
            dir.path(),
            SqliteOptions {
                purge_chunk_rows: 5,
                ..SqliteOptions::default()
            },
        )
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !storage.purges_left().is_empty() {
            assert!(std::time::Instant::now() < deadline, "purge not resumed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for info in &old {
            assert_eq!(content_rows(&storage, info.num), 0);
        }
        let (counted, ids) = run_counts(&storage);
        assert_eq!(counted, ids);
    }
}
