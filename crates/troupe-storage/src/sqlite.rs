//! SQLite backend: one file `troupe.db` in WAL mode inside the data dir.
//!
//! One writer connection (serialised by a mutex, so every write transaction sees the latest
//! counters) and a small pool of reader connections. Writes of concurrent callers are committed
//! together (group commit, see `group`). Calls leave the async runtime through
//! `spawn_blocking`, except single-row primary-key reads. Large blobs live as files under `blobs/` next to the database.

mod actors;
mod cache;
mod catalog;
mod datasets;
mod group;
mod hooks;
mod kv;
mod purge;
mod queues;
mod stmts;
mod tasks;
mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, Transaction};

use crate::{Error, Result};

pub use datasets::item_key as dataset_item_key;
pub use group::wake_deferred_writers;
pub use purge::DEFAULT_PURGE_CHUNK_ROWS;

/// Schema migrations, applied in order; each name is recorded once applied. Append only.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_core", include_str!("sqlite/migrations/0001_core.sql")),
    (
        "0002_tokens",
        include_str!("sqlite/migrations/0002_tokens.sql"),
    ),
    (
        "0003_request_queues",
        include_str!("sqlite/migrations/0003_request_queues.sql"),
    ),
    (
        "0004_actors",
        include_str!("sqlite/migrations/0004_actors.sql"),
    ),
    ("0005_kv", include_str!("sqlite/migrations/0005_kv.sql")),
    (
        "0006_tasks",
        include_str!("sqlite/migrations/0006_tasks.sql"),
    ),
    (
        "0007_run_retention",
        include_str!("sqlite/migrations/0007_run_retention.sql"),
    ),
    (
        "0008_request_queues_indexes",
        include_str!("sqlite/migrations/0008_request_queues_indexes.sql"),
    ),
    (
        "0009_hooks",
        include_str!("sqlite/migrations/0009_hooks.sql"),
    ),
    (
        "0010_request_queue_ids",
        include_str!("sqlite/migrations/0010_request_queue_ids.sql"),
    ),
    (
        "0011_request_queue_pending",
        include_str!("sqlite/migrations/0011_request_queue_pending.sql"),
    ),
    (
        "0012_request_id_runs",
        include_str!("sqlite/migrations/0012_request_id_runs.sql"),
    ),
    (
        "0013_request_queue_pending_unindexed",
        include_str!("sqlite/migrations/0013_request_queue_pending_unindexed.sql"),
    ),
    (
        "0014_storage_purges",
        include_str!("sqlite/migrations/0014_storage_purges.sql"),
    ),
];

/// How hard commits are pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// WAL + `synchronous=NORMAL`: every acknowledged write survives a crash or `kill -9` of the
    /// server; a power loss may drop the last few transactions.
    #[default]
    Normal,
    /// WAL + `synchronous=FULL`: fsync on every commit; survives power loss too.
    Full,
}

/// Options for opening the SQLite backend.
#[derive(Debug, Clone, Default)]
pub struct SqliteOptions {
    pub durability: Durability,
    /// Rows one background write deletes at most when the content of a deleted storage is
    /// purged (0 = [`DEFAULT_PURGE_CHUNK_ROWS`]; see `purge`).
    pub purge_chunk_rows: usize,
    /// Pause of the purger after each of its writes (zero: none).
    pub purge_pause: std::time::Duration,
}

/// The SQLite implementation of [`crate::Storage`].
#[derive(Clone)]
pub struct SqliteStorage {
    inner: Arc<Inner>,
}

struct Inner {
    db_path: PathBuf,
    blobs_dir: PathBuf,
    options: SqliteOptions,
    writer: Mutex<stmts::Writer>,
    readers: Mutex<Vec<Connection>>,
    /// Writes waiting for the next group commit, and the writer thread's state (see `group`).
    writes: Arc<group::WriteShared>,
    /// Reader connections for long range scans (dataset items): a scan reads each page once,
    /// so it gets a small cache of its own and never evicts the hot pages (catalog, records,
    /// queue heads) from the general readers' caches.
    scanners: Mutex<Vec<Connection>>,
    kv: kv::KvState,
    /// Caches in front of hot reads, and the versions writes bump (see `cache`).
    caches: Arc<cache::Caches>,
    /// Cached request-queue head answers (see `queues::HeadCache`).
    queue_heads: queues::HeadCache,
    /// Where the requests that `head/lock` handed out are (see `queues::LockHints`).
    lock_hints: queues::LockHints,
    /// Ids of requests added since the last merge into `rq_ids` (see `queues::RecentIds`).
    recent_ids: queues::RecentIds,
    /// Bumped on every token revocation, so caches in front of token lookups can tell.
    token_generation: std::sync::atomic::AtomicU64,
    /// The purger of deleted storages' content (see `purge`).
    purges: Arc<purge::PurgeShared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.writes.close();
        self.purges.close();
        kv::flush_on_close(self);
    }
}

impl SqliteStorage {
    /// Opens (creating if needed) the database in `data_dir` and runs pending migrations.
    pub fn open(data_dir: &Path, options: SqliteOptions) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let blobs_dir = data_dir.join("blobs");
        std::fs::create_dir_all(&blobs_dir)?;
        let db_path = data_dir.join("troupe.db");
        let mut writer = open_connection(&db_path, &options, false)?;
        migrate(&mut writer)?;
        let storage = Self {
            inner: Arc::new(Inner {
                db_path,
                blobs_dir,
                options,
                writer: Mutex::new(stmts::Writer::new(writer)),
                readers: Mutex::new(Vec::new()),
                writes: Arc::default(),
                scanners: Mutex::new(Vec::new()),
                kv: kv::KvState::default(),
                caches: cache::Caches::new(),
                queue_heads: queues::HeadCache::default(),
                lock_hints: queues::LockHints::default(),
                recent_ids: queues::RecentIds::default(),
                token_generation: std::sync::atomic::AtomicU64::new(0),
                purges: Arc::default(),
            }),
        };
        storage
            .inner
            .writes
            .start(Arc::downgrade(&storage.inner))
            .context("starting the writer thread")?;
        kv::init(&storage)?;
        queues::init(&storage)?;
        purge::init(&storage)?;
        Ok(storage)
    }

    /// Marks that a token was revoked (see [`crate::UserStore::token_generation`]).
    pub(crate) fn bump_token_generation(&self) {
        self.inner
            .token_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn current_token_generation(&self) -> u64 {
        self.inner
            .token_generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Folder for blobs too large to keep inline in the database.
    pub fn blobs_dir(&self) -> &Path {
        &self.inner.blobs_dir
    }

    /// Runs `f` on a reader connection, off the async runtime.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let this = self.clone();
        run_blocking(move || this.read_blocking(f)).await
    }

    /// Blocking form of `read` (also used by troupe-bench's raw-engine yardsticks, so they run
    /// on exactly troupe's connections and pragmas).
    pub fn read_blocking<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.inner.readers.lock().pop();
        let conn = match conn {
            Some(conn) => conn,
            None => open_connection(&self.inner.db_path, &self.inner.options, true)?,
        };
        let result = f(&conn);
        let mut readers = self.inner.readers.lock();
        if readers.len() < MAX_POOLED_READERS {
            readers.push(conn);
        }
        result
    }

    /// Like `read_blocking`, on a connection meant for long range scans (small page cache).
    pub(crate) fn scan_blocking<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.inner.scanners.lock().pop();
        let conn = match conn {
            Some(conn) => conn,
            None => {
                let conn = open_connection(&self.inner.db_path, &self.inner.options, true)?;
                conn.pragma_update(None, "cache_size", -SCAN_CACHE_KIB)?;
                conn
            }
        };
        let result = f(&conn);
        let mut scanners = self.inner.scanners.lock();
        if scanners.len() < 8 {
            scanners.push(conn);
        }
        result
    }

    /// Blocking form of `write` (also used by troupe-bench's raw-engine yardsticks).
    pub fn write_blocking<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let conn = self.inner.writer.lock();
        // The writer connection is only ever shared (see `stmts::Writer`).
        let tx = Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }
}

/// Page cache of a scan connection, KiB. Reading random 1000-item pages of a 340 MB dataset
/// cost 0.152 µs CPU per item with a 16 MiB cache, 0.125-0.133 with 1-4 MiB, 0.122-0.127 with
/// 256 KiB (which made hot pages 2x dearer: 0.09 vs 0.048 µs).
const SCAN_CACHE_KIB: i64 = 2048;

/// Runs blocking database work on tokio's blocking pool.
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|err| Error::Internal(anyhow::anyhow!("storage task failed: {err}")))?
}

/// Reader connections kept open between calls (more may be open during a burst of reads).
const MAX_POOLED_READERS: usize = 16;
/// Process-wide soft limit on SQLite's heap (page caches included).
const SOFT_HEAP_LIMIT_BYTES: i64 = 96 * 1024 * 1024;
/// Size the WAL file is cut back to once a large transaction has been checkpointed (normal
/// traffic keeps it near the autocheckpoint's 1000 pages, ~4 MiB).
const WAL_SIZE_LIMIT_BYTES: i64 = 32 * 1024 * 1024;

fn open_connection(path: &Path, options: &SqliteOptions, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)
        .with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // A large transaction (deleting a queue of millions of requests, a big batch) grows
        // the WAL file; SQLite reuses it from the start after each checkpoint but never
        // shrinks it. With a limit, the first commit after the WAL restarts truncates the file
        // to this size (one `fstat` per restart otherwise).
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)?;
    }
    let sync = match options.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Memory stays bounded whatever the database size and however many requests ran at once:
    // the writer keeps a 16 MiB page cache, each pooled reader 4 MiB (up to MAX_POOLED_READERS of
    // them; reads of cold pages come from the OS page cache), a process-wide soft heap limit makes
    // SQLite recycle cache pages beyond that, and no mmap (mapped pages count towards the
    // server's RSS, and a full export of a large dataset would map the whole file).
    let cache_kib = if read_only { 4096 } else { 16384 };
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    conn.pragma_update(None, "soft_heap_limit", SOFT_HEAP_LIMIT_BYTES)?;
    conn.pragma_update(None, "mmap_size", 0)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)")?;
    for (name, sql) in MIGRATIONS {
        let applied: bool = conn
            .query_row("SELECT 1 FROM _migrations WHERE name = ?1", [name], |_| {
                Ok(true)
            })
            .or_else(|err| match err {
                rusqlite::Error::QueryReturnedNoRows => Ok(false),
                other => Err(other),
            })?;
        if applied {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("migration {name}"))?;
        tx.execute(
            "INSERT INTO _migrations (name, applied_at) VALUES (?1, ?2)",
            rusqlite::params![name, troupe_model::now_ms()],
        )?;
        tx.commit()?;
        tracing::info!(migration = name, "applied migration");
    }
    Ok(())
}

/// `query_row` that maps "no rows" to `None`.
pub(crate) fn optional<T>(result: rusqlite::Result<T>) -> rusqlite::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_temp() -> (tempfile::TempDir, SqliteStorage) {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        (dir, storage)
    }

    /// A transaction larger than the WAL size limit grows the WAL file; once it has been
    /// checkpointed, the next commit cuts the file back to the limit instead of leaving it at
    /// the largest transaction's size for good. Nothing is lost on the way.
    #[test]
    fn wal_file_is_cut_back_after_a_large_transaction() {
        let (dir, storage) = open_temp();
        let wal = dir.path().join("troupe.db-wal");
        let wal_size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        storage
            .write_blocking(|tx| {
                Ok(tx.execute_batch("CREATE TABLE big (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")?)
            })
            .unwrap();
        let chunk = vec![7u8; 1 << 20];
        let rows = (WAL_SIZE_LIMIT_BYTES >> 20) + 8;
        storage
            .write_blocking(|tx| {
                let mut insert = tx.prepare("INSERT INTO big (k, v) VALUES (?1, ?2)")?;
                for k in 0..rows {
                    insert.execute(rusqlite::params![k, chunk])?;
                }
                Ok(())
            })
            .unwrap();
        let grown = wal_size();
        assert!(
            grown > WAL_SIZE_LIMIT_BYTES as u64,
            "the large transaction's frames are in the WAL ({grown} bytes)"
        );
        // (The large commit checkpointed itself: the WAL passed 1000 pages and nothing reads.)
        for k in 0..3 {
            storage
                .write_blocking(|tx| Ok(tx.execute("UPDATE big SET v = x'00' WHERE k = ?1", [k])?))
                .unwrap();
        }
        let after = wal_size();
        assert!(
            after <= WAL_SIZE_LIMIT_BYTES as u64,
            "WAL file {after} bytes after a checkpoint and a restart (grew to {grown})"
        );
        let (count, bytes): (i64, i64) = storage
            .read_blocking(|conn| {
                Ok(
                    conn.query_row("SELECT count(*), sum(length(v)) FROM big", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?,
                )
            })
            .unwrap();
        assert_eq!(count, rows);
        assert_eq!(bytes, (rows - 3) * (1 << 20) + 3);
    }

    /// Replies of committed writes go through a settler task on the caller's multi-thread
    /// runtime (see `group`). When that runtime shuts down, writes from another runtime (of
    /// either flavour) still get their replies, and a write queued behind a batch in flight
    /// when the runtime went away is not lost.
    #[test]
    fn writes_are_answered_across_runtimes() {
        let (_dir, storage) = open_temp();
        storage
            .write_blocking(|tx| Ok(tx.execute_batch("CREATE TABLE rt (v INTEGER NOT NULL)")?))
            .unwrap();
        let insert = |storage: &SqliteStorage, v: i64| {
            let storage = storage.clone();
            async move {
                storage
                    .write(move |tx| Ok(tx.execute("INSERT INTO rt (v) VALUES (?1)", [v])?))
                    .await
            }
        };
        let multi = || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        };
        let first = multi();
        assert_eq!(first.block_on(insert(&storage, 1)).unwrap(), 1);
        // A write whose batch commits while its runtime shuts down.
        let submitted = storage.writes_submitted();
        let held = storage.inner.writer.lock();
        let pending = first.spawn(insert(&storage, 2));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while storage.writes_submitted() == submitted {
            assert!(
                std::time::Instant::now() < deadline,
                "the write did not queue"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(pending);
        first.shutdown_timeout(std::time::Duration::from_secs(10));
        drop(held);
        let second = multi();
        assert_eq!(second.block_on(insert(&storage, 3)).unwrap(), 1);
        drop(second);
        let current = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(current.block_on(insert(&storage, 4)).unwrap(), 1);
        let third = multi();
        assert_eq!(third.block_on(insert(&storage, 5)).unwrap(), 1);
        let stored: Vec<i64> = storage
            .read_blocking(|c| {
                let mut stmt = c.prepare("SELECT v FROM rt ORDER BY v")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<i64>>>()?)
            })
            .unwrap();
        // The write of the runtime that shut down was queued: it commits, unanswered.
        assert_eq!(stored, vec![1, 2, 3, 4, 5]);
    }

    /// A runtime thread that parked once defers the writer's wake-up of its writes to its next
    /// park (`group::wake_deferred_writers`), and a write on a thread that never parks again
    /// wakes the writer itself after `DEFER_LIMIT`.
    #[test]
    fn deferred_writer_wake_ups_are_given() {
        let (_dir, storage) = open_temp();
        storage
            .write_blocking(|tx| Ok(tx.execute_batch("CREATE TABLE dw (v INTEGER NOT NULL)")?))
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(wake_deferred_writers)
            .build()
            .unwrap();
        let wait_for_idle_writer = || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !storage.writer_state().0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the writer never waited"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        };
        let insert = |v: i64| {
            let storage = storage.clone();
            async move {
                storage
                    .write(move |tx| Ok(tx.execute("INSERT INTO dw (v) VALUES (?1)", [v])?))
                    .await
            }
        };
        // The thread parks once (it may defer from then on).
        runtime.block_on(async { tokio::time::sleep(std::time::Duration::from_millis(1)).await });
        // The write defers the wake-up; the thread, with nothing else to do, parks and gives it.
        wait_for_idle_writer();
        let deferred = storage.writer_state().1;
        assert_eq!(runtime.block_on(insert(1)).unwrap(), 1);
        assert_eq!(storage.writer_state().1, deferred + 1);
        // The thread stays busy (it yields, so it never parks): the write's own bound wakes the
        // writer.
        wait_for_idle_writer();
        let answered = runtime.block_on(async {
            let write = tokio::spawn(insert(2));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !write.is_finished() {
                if std::time::Instant::now() > deadline {
                    return false;
                }
                tokio::task::yield_now().await;
            }
            write.await.unwrap().unwrap() == 1
        });
        assert!(answered, "the deferred write was never committed");
        assert_eq!(storage.writer_state().1, deferred + 2);
        let stored: Vec<i64> = storage
            .read_blocking(|c| {
                let mut stmt = c.prepare("SELECT v FROM dw ORDER BY v")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<i64>>>()?)
            })
            .unwrap();
        assert_eq!(stored, vec![1, 2]);
    }

    /// Group commit: writes queued while the writer is busy share one transaction, a write
    /// that fails or panics is rolled back alone, and every caller gets its own result.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_isolates_failing_writes() {
        let (_dir, storage) = open_temp();
        storage
            .write_blocking(|tx| Ok(tx.execute_batch("CREATE TABLE gc (v INTEGER NOT NULL)")?))
            .unwrap();
        let (batches_before, writes_before) = storage.group_stats();
        // Holding the writer connection makes the writes below queue up behind the writer thread.
        let held = storage.inner.writer.lock();
        let mut tasks = Vec::new();
        for i in 0..30i64 {
            let storage = storage.clone();
            tasks.push(tokio::spawn(async move {
                storage
                    .write(move |tx| {
                        tx.execute("INSERT INTO gc (v) VALUES (?1)", [i])?;
                        match i % 5 {
                            1 => Err(Error::Invalid(format!("refused {i}"))),
                            2 => panic!("write {i} panicked (expected by the test)"),
                            3 => {
                                // A statement error after a change: the change goes too.
                                tx.execute("INSERT INTO gc (v) VALUES (NULL)", [])?;
                                Ok(i)
                            }
                            _ => Ok(i),
                        }
                    })
                    .await
            }));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if storage.writes_submitted() - writes_before == 30 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "writes did not queue");
            // (A plain sleep: the writer lock is held, and the writes run on the workers.)
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(held);
        let mut committed = Vec::new();
        for (i, task) in tasks.into_iter().enumerate() {
            let result = task.await.unwrap();
            match i % 5 {
                1 => assert!(matches!(result, Err(Error::Invalid(_))), "{i}: {result:?}"),
                2 | 3 => assert!(matches!(result, Err(Error::Internal(_))), "{i}: {result:?}"),
                _ => {
                    assert_eq!(result.unwrap(), i as i64);
                    committed.push(i as i64);
                }
            }
        }
        let stored: Vec<i64> = storage
            .read_blocking(|c| {
                let mut stmt = c.prepare("SELECT v FROM gc ORDER BY v")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<i64>>>()?)
            })
            .unwrap();
        assert_eq!(stored, committed);
        let (batches, writes) = storage.group_stats();
        assert_eq!(writes - writes_before, 30);
        // The writer took what was queued when it started, then everything else at once.
        assert!(
            batches - batches_before <= 2,
            "{} batches",
            batches - batches_before
        );
    }

    /// Batch-scoped catalog counters (`group::BatchContext`, `catalog::CatalogDeltas`): in one
    /// batch, a failed write's counter changes are dropped, a plain write in the middle sees
    /// exact counters, a write to a store deleted earlier in the batch fails, and the counters
    /// after the batch count exactly the writes that succeeded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_counters_stay_exact() {
        use crate::kv::{NewRecord, RecordSource};
        use crate::{DatasetStore, KvStore, StorageCatalog};
        use troupe_model::storage::{NewItem, StorageInfo, StorageKind, StorageOrigin};

        let (_dir, storage) = open_temp();
        // The purge of store b (deleted below) would be one more write, counted or not by the
        // time the counts are read (the purger thread races the check): held here.
        storage
            .inner
            .purges
            .held
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let user = crate::conformance::test_user(&storage).await;
        let create = |kind| {
            let (storage, user) = (storage.clone(), user.clone());
            async move {
                storage
                    .create_storage(kind, &user, None, StorageOrigin::default())
                    .await
                    .unwrap()
                    .0
            }
        };
        let a = create(StorageKind::KeyValueStore).await;
        let b = create(StorageKind::KeyValueStore).await;
        let d = create(StorageKind::Dataset).await;
        let (batches_before, writes_before) = storage.group_stats();
        let held = storage.inner.writer.lock();
        // Each write is queued before the next one starts, so they run in this order.
        let mut tasks: Vec<tokio::task::JoinHandle<std::result::Result<u64, String>>> = Vec::new();
        macro_rules! queue {
            ($body:expr) => {
                storage.spawn_queued(&mut tasks, $body)
            };
        }
        let put = |storage: &SqliteStorage, store: &StorageInfo, key: &str, len: usize| {
            let (storage, store, key) = (storage.clone(), store.clone(), key.to_string());
            async move {
                let record = NewRecord {
                    content_type: "application/octet-stream".into(),
                    content_encoding: None,
                };
                let body = RecordSource::Bytes(vec![7u8; len].into());
                storage.put_record(&store, &key, record, body).await
            }
        };
        // 0: a new record of 3 bytes.
        queue!(put(&storage, &a, "k1", 3));
        // 1: counts a write, then fails: its counters go with it.
        let (s, num) = (storage.clone(), a.num);
        queue!(async move {
            s.write_batched(group::Changes::OneStatement, move |_tx, batch| {
                let delta = catalog::Delta {
                    bytes: 1000,
                    writes: 1,
                    ..Default::default()
                };
                batch.state::<catalog::CatalogDeltas>().add(num, delta);
                Err::<u64, _>(Error::Invalid("refused".into()))
            })
            .await
        });
        // 2: another record, 5 bytes.
        queue!(put(&storage, &a, "k2", 5));
        // 3: a plain write reads exact counters: (write_count, storage_bytes).
        let (s, num) = (storage.clone(), a.num);
        queue!(async move {
            s.write(move |tx| {
                let (writes, bytes): (i64, i64) = tx.query_row(
                    "SELECT write_count, storage_bytes FROM storages WHERE num = ?1",
                    [num],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?;
                Ok((writes * 1000 + bytes) as u64)
            })
            .await
        });
        // 4: store b is deleted (a plain write) ...
        let (s, id) = (storage.clone(), b.id.clone());
        queue!(async move {
            s.delete_storage(StorageKind::KeyValueStore, &id)
                .await
                .map(u64::from)
        });
        // 5: ... so a write to it fails.
        queue!(put(&storage, &b, "x", 1));
        // 6: k1 overwritten with 10 bytes.
        queue!(put(&storage, &a, "k1", 10));
        // 7, 8: pushes of 1 and 2 items see the counts of the batch's earlier pushes.
        let item = |n: usize| {
            (0..n)
                .map(|i| NewItem {
                    json: format!("{{\"i\":{i}}}").into(),
                    clean: true,
                })
                .collect::<Vec<_>>()
        };
        for n in [1, 2] {
            let (s, id, items) = (storage.clone(), d.id.clone(), item(n));
            queue!(async move { s.push_items(&id, items).await.map(|p| p.item_count) });
        }
        drop(held);
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        assert_eq!(results[0], Ok(3));
        assert!(
            results[1].as_ref().unwrap_err().contains("refused"),
            "{results:?}"
        );
        assert_eq!(results[2], Ok(5));
        assert_eq!(results[3], Ok(2 * 1000 + 8));
        assert_eq!(results[4], Ok(1));
        assert!(
            results[5].as_ref().unwrap_err().contains("NotFound"),
            "{results:?}"
        );
        assert_eq!(results[6], Ok(10));
        assert_eq!(results[7], Ok(1));
        assert_eq!(results[8], Ok(3));
        let (batches, writes) = storage.group_stats();
        assert_eq!(writes - writes_before, 9);
        assert!(
            batches - batches_before <= 2,
            "{} batches",
            batches - batches_before
        );
        let info = storage
            .get_storage(StorageKind::KeyValueStore, &a.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((info.write_count, info.storage_bytes), (3, 15));
        let info = storage
            .get_storage(StorageKind::Dataset, &d.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (info.item_count, info.clean_item_count, info.write_count),
            (3, 3, 3)
        );
        assert!(storage
            .get_storage(StorageKind::KeyValueStore, &b.id)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn conformance_users() {
        let (_dir, storage) = open_temp();
        crate::conformance::users::run(&storage).await;
    }

    #[tokio::test]
    async fn conformance_tokens() {
        let (_dir, storage) = open_temp();
        crate::conformance::users::run_tokens(&storage).await;
    }

    #[tokio::test]
    async fn conformance_catalog() {
        let (_dir, storage) = open_temp();
        crate::conformance::catalog::run(&storage).await;
    }

    #[tokio::test]
    async fn conformance_retention() {
        let (_dir, storage) = open_temp();
        crate::conformance::catalog::run_retention(&storage).await;
    }

    #[tokio::test]
    async fn conformance_datasets() {
        let (_dir, storage) = open_temp();
        crate::conformance::datasets::run(&storage).await;
        crate::conformance::datasets::run_concurrent(&storage).await;
    }

    #[tokio::test]
    async fn conformance_queues() {
        let (_dir, storage) = open_temp();
        crate::conformance::queues::run(&storage).await;
    }

    /// The queue suite with a merge of recent request ids after every add (racing the
    /// suite's own calls), and with no merge but the ones listings make.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_queues_merging() {
        for threshold in [1, usize::MAX] {
            let (_dir, storage) = open_temp();
            storage.set_merge_threshold(threshold);
            crate::conformance::queues::run(&storage).await;
        }
    }

    /// Manual scale check (run with `cargo test --release -p troupe-storage -- --ignored
    /// queue_head_cost --nocapture`; `TROUPE_RQ_SCALE` sets the large size, default 1,000,000):
    /// head and head/lock cost the same on 100 and on many pending requests, also with 10,000
    /// requests locked at the front by another client. Rounds are interleaved.
    #[tokio::test(flavor = "multi_thread")]
    #[ignore]
    async fn queue_head_cost_is_flat() {
        use crate::{QueueStore, StorageCatalog};
        use std::time::{Duration, Instant};
        use troupe_model::queue::parse_request;
        use troupe_model::storage::{StorageKind, StorageOrigin};
        let large: usize = std::env::var("TROUPE_RQ_SCALE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let (_dir, storage) = open_temp();
        let user = crate::conformance::test_user(&storage).await;
        let now = troupe_model::now_ms();
        let mut queues = Vec::new();
        for size in [100usize, large] {
            let (q, _) = storage
                .create_storage(
                    StorageKind::RequestQueue,
                    &user,
                    None,
                    StorageOrigin::default(),
                )
                .await
                .unwrap();
            let started = Instant::now();
            for chunk in 0..size.div_ceil(1000) {
                let batch = (chunk * 1000..((chunk + 1) * 1000).min(size))
                    .map(|i| {
                        parse_request(
                            serde_json::json!({"url": format!("https://example.com/{i}"), "uniqueKey": format!("{}-{i}", q.id)}),
                            None,
                        )
                        .unwrap()
                    })
                    .collect();
                storage
                    .add_requests(&q.id, batch, false, None, now)
                    .await
                    .unwrap();
            }
            let fill = started.elapsed();
            eprintln!(
                "filled {size} in {fill:?} ({:.0} requests/s)",
                size as f64 / fill.as_secs_f64()
            );
            queues.push(q.id);
        }
        // Per-call minimum and median over many calls: the machine is shared and noisy, the
        // minimum is the cost of the work itself.
        let measure = |id: String| {
            let storage = storage.clone();
            async move {
                let (mut head, mut lock) = (Vec::new(), Vec::new());
                for _ in 0..200 {
                    let t = Instant::now();
                    let h = storage
                        .list_head(&id, 100, Some("me".into()), now)
                        .await
                        .unwrap();
                    head.push(t.elapsed());
                    assert_eq!(h.count, 100);
                    let t = Instant::now();
                    let l = storage
                        .lock_head(&id, 25, 60_000, Some("me".into()), now)
                        .await
                        .unwrap();
                    lock.push(t.elapsed());
                    assert_eq!(l.items.len(), 25);
                    storage
                        .unlock_requests(&id, Some("me".into()), now)
                        .await
                        .unwrap();
                }
                head.sort();
                lock.sort();
                let us = |d: Duration| d.as_micros() as f64;
                (us(head[0]), us(head[100]), us(lock[0]), us(lock[100]))
            }
        };
        let mut report = Vec::new();
        for phase in ["no locks", "10,000 locked at the front"] {
            if phase != "no locks" {
                for _ in 0..400 {
                    storage
                        .lock_head(&queues[1], 25, 3_600_000, Some("other".into()), now)
                        .await
                        .unwrap();
                }
            }
            let small = measure(queues[0].clone()).await;
            let big = measure(queues[1].clone()).await;
            eprintln!(
                "{phase}: head(100) min/median {:.0}/{:.0} us on 100 vs {:.0}/{:.0} us on {large}; \
                 head/lock(25) {:.0}/{:.0} us vs {:.0}/{:.0} us",
                small.0, small.1, big.0, big.1, small.2, small.3, big.2, big.3
            );
            report.push((small.0, big.0, small.2, big.2));
        }
        for (sh, bh, sl, bl) in report {
            assert!(bh < sh * 2.0 + 100.0, "head grows with size");
            assert!(bl < sl * 2.0 + 100.0, "head/lock grows with size");
        }
    }

    #[test]
    fn queue_head_queries_use_index_ranges() {
        let (_dir, storage) = open_temp();
        let plans = storage
            .write_blocking(|tx| queues::explain_head_queries(tx))
            .unwrap();
        for (sql, plan) in plans {
            assert!(!plan.contains("SCAN rq_requests"), "{sql}: {plan}");
            assert!(!plan.contains("SCAN p"), "{sql}: {plan}");
            assert!(!plan.contains("SCAN rq_pending"), "{sql}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql}: {plan}");
        }
    }

    #[tokio::test]
    async fn conformance_actors() {
        let (_dir, storage) = open_temp();
        crate::conformance::actors::run(&storage).await;
    }

    #[tokio::test]
    async fn conformance_hooks() {
        let (_dir, storage) = open_temp();
        crate::conformance::hooks::run_webhooks(&storage).await;
        crate::conformance::hooks::run_schedules(&storage).await;
    }

    #[tokio::test]
    async fn conformance_tasks() {
        let (_dir, storage) = open_temp();
        crate::conformance::tasks::run(&storage).await;
    }

    #[tokio::test]
    async fn conformance_kv() {
        let (_dir, storage) = open_temp();
        crate::conformance::kv::run(&storage).await;
        kv_files_follow_records(&storage).await;
    }

    /// SQLite specifics: large records are files named by ids, removed with their record.
    async fn kv_files_follow_records(storage: &SqliteStorage) {
        use crate::kv::{NewRecord, RecordSource};
        use crate::{KvStore, StorageCatalog};
        use troupe_model::storage::{StorageKind, StorageOrigin};
        let user = crate::conformance::test_user(storage).await;
        let (store, _) = storage
            .create_storage(
                StorageKind::KeyValueStore,
                &user,
                None,
                StorageOrigin::default(),
            )
            .await
            .unwrap();
        let files = || -> Vec<std::path::PathBuf> {
            let mut out = Vec::new();
            for shard in std::fs::read_dir(storage.blobs_dir().join("kv")).unwrap() {
                let shard = shard.unwrap().path();
                for f in std::fs::read_dir(&shard).unwrap() {
                    out.push(f.unwrap().path());
                }
            }
            out
        };
        let meta = NewRecord {
            content_type: "application/octet-stream".into(),
            content_encoding: None,
        };
        let big = bytes::Bytes::from(vec![7u8; kv::INLINE_MAX + 1]);
        storage
            .put_record(&store, "..", meta.clone(), RecordSource::Bytes(big.clone()))
            .await
            .unwrap();
        let listed = files();
        assert_eq!(listed.len(), 1, "{listed:?}");
        let name = listed[0].file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(name.len(), 17);
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric()));
        // Overwriting replaces the file; an inline overwrite removes it.
        storage
            .put_record(&store, "..", meta.clone(), RecordSource::Bytes(big.clone()))
            .await
            .unwrap();
        assert_eq!(files().len(), 1);
        assert_ne!(files()[0], listed[0]);
        storage
            .put_record(
                &store,
                "..",
                meta.clone(),
                RecordSource::Bytes("small".into()),
            )
            .await
            .unwrap();
        assert!(files().is_empty());
        storage
            .put_record(&store, "a", meta.clone(), RecordSource::Bytes(big.clone()))
            .await
            .unwrap();
        assert!(storage.delete_record(&store, "a").await.unwrap());
        assert!(files().is_empty());
        // Deleting the store removes its files (after the deleting transaction commits).
        storage
            .put_record(&store, "b", meta.clone(), RecordSource::Bytes(big))
            .await
            .unwrap();
        assert_eq!(files().len(), 1);
        storage
            .delete_storage(StorageKind::KeyValueStore, &store.id)
            .await
            .unwrap();
        // Removed in the background: wait for it as long as a slow, loaded machine may need.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !files().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(files().is_empty());
    }

    /// "Last run" of an Actor or a task, with every filter combination, is one index seek:
    /// no table scan and no sort.
    #[test]
    fn last_run_queries_are_index_seeks() {
        let (_dir, storage) = open_temp();
        for owner_col in ["act_id", "actor_task_id"] {
            for (status, origin) in [(false, false), (true, false), (false, true), (true, true)] {
                let sql = tasks::last_run_sql(owner_col, status, origin);
                let plan: Vec<String> = storage
                    .read_blocking(move |c| {
                        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                        let n = stmt.parameter_count();
                        let args: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
                        let rows = stmt
                            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                                r.get::<_, String>(3)
                            })?;
                        Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
                    })
                    .unwrap();
                let plan = plan.join(" | ");
                assert!(
                    plan.starts_with("SEARCH runs USING INDEX")
                        && !plan.contains("TEMP B-TREE")
                        && !plan.contains("SCAN"),
                    "{owner_col} status={status} origin={origin}: {plan}"
                );
                let equalities = 2 + status as usize + origin as usize;
                assert_eq!(
                    plan.matches('=').count(),
                    equalities,
                    "every filter is part of the index key: {plan}"
                );
            }
        }
    }

    /// Manual scale check (`cargo test --release -p troupe-storage -- --ignored --nocapture
    /// last_run_lookup_is_scale_free`): "last run" lookups through the trait on a store with 1,000
    /// runs and on one with 1,000,000 (1,000 Actors, tasks on a tenth of the runs). Measured on
    /// the loaded 2-core dev machine: 44.6k lookups/s vs 36.2k lookups/s (ratio 0.81, medians of 5).
    #[tokio::test]
    #[ignore]
    async fn last_run_lookup_is_scale_free() {
        use crate::{RunStore, TaskStore};
        use troupe_model::actor::JobStatus;
        async fn filled(n: usize) -> (tempfile::TempDir, SqliteStorage) {
            let (dir, storage) = open_temp();
            let user = crate::conformance::test_user(&storage).await;
            let statuses = ["SUCCEEDED", "FAILED", "RUNNING", "ABORTED"];
            let template = crate::conformance::actors::run_object(
                &user.id,
                "a",
                0,
                JobStatus::Succeeded,
                "API",
            );
            storage
                .write(move |tx| {
                    let mut stmt = tx.prepare(
                        "INSERT INTO runs (id, act_id, user_id, status, origin, started_at, data, actor_task_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?;
                    for i in 0..n {
                        let mut run = template.clone();
                        run.id = format!("run{i:014}");
                        run.act_id = format!("act{}", i % 1000);
                        run.started_at = i as i64;
                        run.status = JobStatus::parse(statuses[i % 4]).unwrap();
                        run.actor_task_id = (i % 10 == 0).then(|| format!("task{}", i % 100));
                        stmt.execute(rusqlite::params![
                            run.id,
                            run.act_id,
                            run.user_id,
                            run.status.as_str(),
                            if i % 3 == 0 { "WEB" } else { "API" },
                            run.started_at,
                            serde_json::to_string(&run).unwrap(),
                            run.actor_task_id,
                        ])?;
                    }
                    Ok(())
                })
                .await
                .unwrap();
            (dir, storage)
        }
        async fn rate(storage: &SqliteStorage, user: &str, lookups: usize) -> f64 {
            let started = std::time::Instant::now();
            for i in 0..lookups {
                // Actors whose number is a multiple of 4 have SUCCEEDED runs.
                let act = format!("act{}", (i * 4) % 1000);
                let found = storage
                    .last_run(user, &act, Some(JobStatus::Succeeded), None)
                    .await
                    .unwrap();
                assert!(found.is_some());
                // Tasks 0, 20, 40, 60, 80 have SUCCEEDED runs started over the API.
                let task = format!("task{}", (i % 5) * 20);
                let found = storage
                    .last_task_run(user, &task, Some(JobStatus::Succeeded), Some("API"))
                    .await
                    .unwrap();
                assert!(found.is_some());
            }
            (2 * lookups) as f64 / started.elapsed().as_secs_f64()
        }
        let (_small_dir, small) = filled(1_000).await;
        let t = std::time::Instant::now();
        let (_big_dir, big) = filled(1_000_000).await;
        println!("filled 1M runs in {:?}", t.elapsed());
        let user = crate::conformance::test_user(&small).await.id;
        let big_user = crate::conformance::test_user(&big).await.id;
        let (mut s, mut b) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            s.push(rate(&small, &user, 10_000).await);
            b.push(rate(&big, &big_user, 10_000).await);
        }
        s.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        println!(
            "lookups/s (median of 5): 1k runs {:.0} {s:?}, 1M runs {:.0} {b:?}, ratio {:.2}",
            s[2],
            b[2],
            b[2] / s[2]
        );
        // The endpoint-level gate (≥ 0.9) is troupe-bench's T10big; here, without HTTP in front,
        // the bigger B-tree and page cache show, and a shared machine is noisy. A scan would be
        // three orders of magnitude slower, which this still catches.
        assert!(b[2] / s[2] >= 0.5);
    }

    #[test]
    fn reopening_keeps_data_and_skips_applied_migrations() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap());
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        let count: i64 = storage
            .read_blocking(|c| {
                Ok(c.query_row("SELECT count(*) FROM _migrations", [], |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(count as usize, MIGRATIONS.len());
    }
}
