//! Key-value records in SQLite: table `kv_records` keyed by (store num, key). Bodies up to
//! [`INLINE_MAX`] bytes are stored inline; larger ones are streamed to a temp file under
//! `blobs/kv/tmp/`, synced, renamed to `blobs/kv/<xx>/<blob id>` and only then referenced by a
//! committed row — an acknowledged write survives `kill -9`, and a crash in between leaves at
//! most an orphan file, swept at the next start. File names are random ids, never keys.
//!
//! Read and list counters (and `accessedAt`) are buffered in memory and flushed about once a
//! second, so reads never take the writer lock (datasets' read counters ride along).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use rusqlite::{params, Connection, Transaction};
use troupe_model::storage::{StorageInfo, StorageKind};

use super::catalog::{CatalogDeltas, Delta};
use super::group::Changes;
use super::stmts::with_stmt;
use super::{optional, Durability, Inner, SqliteStorage};
use crate::kv::{
    valid_record_key, KeyEntry, KeysPage, KeysQuery, NewRecord, Record, RecordContent, RecordMeta,
    RecordSource, StoreAccess, StoreRef,
};
use crate::{Error, KvStore, Result};

/// Records up to this size are kept inline in the database (one B-tree lookup to read);
/// larger ones go to files.
pub const INLINE_MAX: usize = 128 * 1024;

/// Bytes of a streamed record body gathered before each write to its file.
const BLOB_BLOCK: usize = 1 << 20;

/// How often buffered counters are written and doomed blobs removed.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Buffered per-store counters and files waiting for removal.
#[derive(Default)]
pub(crate) struct KvState {
    pending: Mutex<HashMap<i64, Pending>>,
    /// Blobs of deleted stores: removed once no row references them (the deleting transaction
    /// may still be open when they are queued). `(blob, attempts)`.
    doomed: Mutex<Vec<(String, u32)>>,
    /// Where recently written inline records are (see [`RecordHints`]).
    hints: RecordHints,
}

/// Most entries [`RecordHints`] holds; it starts over when full.
const RECORD_HINTS_MAX: usize = 1 << 16;

/// Store number → key → (row id, size) of inline records written recently, so overwriting one
/// is a single UPDATE by row id instead of a lookup by key and then the UPDATE.
///
/// Correctness: an entry is only a hint. The UPDATE that uses it changes the row only where
/// it is still exactly what the hint says: row `id` is the record `key` of store `num`, of
/// `size` bytes, inline (all of it in its WHERE). Then the old size, for the store's
/// `storageBytes`, is the hint's, and there is no old file to remove. Otherwise (the record
/// was deleted, rewritten by a write that rolled back, moved to a file, its store deleted) it
/// changes nothing and the write takes the general path.
///
/// Only the writer thread uses it (inside write jobs), so its lock is never contended. Memory:
/// at most [`RECORD_HINTS_MAX`] entries.
#[derive(Default)]
struct RecordHints {
    state: Mutex<RecordHintState>,
}

/// Key → (row id, size) of one store's hinted records.
type StoreHints = HashMap<Box<str>, (i64, i64), foldhash::fast::RandomState>;

#[derive(Default)]
struct RecordHintState {
    stores: HashMap<i64, StoreHints>,
    len: usize,
}

impl RecordHints {
    fn get(&self, num: i64, key: &str) -> Option<(i64, i64)> {
        self.state.lock().stores.get(&num)?.get(key).copied()
    }

    fn put(&self, num: i64, key: &str, id: i64, size: i64) {
        let mut state = self.state.lock();
        if let Some(hint) = state.stores.get_mut(&num).and_then(|s| s.get_mut(key)) {
            *hint = (id, size);
            return;
        }
        if state.len >= RECORD_HINTS_MAX {
            *state = RecordHintState::default();
        }
        state.len += 1;
        state
            .stores
            .entry(num)
            .or_default()
            .insert(key.into(), (id, size));
    }

    fn remove(&self, num: i64, key: &str) {
        let mut state = self.state.lock();
        if let Some(store) = state.stores.get_mut(&num) {
            if store.remove(key).is_some() {
                state.len -= 1;
            }
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Pending {
    reads: i64,
    lists: i64,
    accessed_at: i64,
}

fn not_found() -> Error {
    Error::NotFound("Key-value store was not found".into())
}

fn kv_dir(blobs_dir: &Path) -> PathBuf {
    blobs_dir.join("kv")
}

/// Where the file of blob `blob` is: `blobs/kv/<first two characters>/<blob>`.
pub(crate) fn blob_path(blobs_dir: &Path, blob: &str) -> PathBuf {
    kv_dir(blobs_dir).join(&blob[..2]).join(blob)
}

/// The id of a new record file: random, with `0` as its second character, so new files go to
/// the 62 shard folders `<c>0` (ids of files written before 2026-11-30 use all 3,844). Shard
/// folders are made on first use, and with 3,844 of them a fresh data dir made a folder (an
/// inode and a block: ~100-150 µs on the bench machine) for most of its first thousands of
/// record files. 62 folders hold 16,000 files each per million records (ext4 indexes large
/// folders).
fn new_blob_id() -> String {
    let mut id = troupe_model::new_id().into_bytes();
    id[1] = b'0';
    String::from_utf8(id).expect("ids are ASCII")
}

/// Prepares the blob folders, removes leftovers of interrupted writes, and starts the
/// background flusher (which also sweeps orphans once).
pub(crate) fn init(storage: &SqliteStorage) -> Result<()> {
    let dir = kv_dir(storage.blobs_dir());
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    for entry in std::fs::read_dir(&tmp)? {
        let _ = std::fs::remove_file(entry?.path());
    }
    let weak = std::sync::Arc::downgrade(&storage.inner);
    std::thread::Builder::new()
        .name("troupe-kv-flush".into())
        .spawn(move || background(weak))
        .map_err(Error::from)?;
    Ok(())
}

fn background(weak: Weak<Inner>) {
    let mut swept = false;
    loop {
        std::thread::sleep(FLUSH_INTERVAL);
        let Some(inner) = weak.upgrade() else { return };
        let storage = SqliteStorage { inner };
        storage.inner.caches.tick();
        if let Err(err) = storage.flush_kv_counters() {
            tracing::warn!(error = %err, "flushing key-value counters failed");
        }
        storage.remove_doomed_blobs();
        if !swept {
            swept = true;
            if let Err(err) = storage.sweep_orphan_blobs() {
                tracing::warn!(error = %err, "sweeping orphan record files failed");
            }
        }
    }
}

fn blob_referenced(conn: &Connection, blob: &str) -> Result<bool> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM kv_records WHERE blob = ?1")?;
    Ok(optional(stmt.query_row([blob], |_| Ok(())))?.is_some())
}

/// Runs file I/O on the blocking pool.
async fn run_io<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|err| Error::Internal(anyhow::anyhow!("file task failed: {err}")))?
        .map_err(Error::from)
}

fn remove_quietly(path: &Path) {
    if let Err(err) = std::fs::remove_file(path) {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %err, "removing record file failed");
        }
    }
}

impl SqliteStorage {
    /// Buffers a read (or a listing) of storage `num`, a key-value store or a dataset, at `now`.
    pub(crate) fn note_access(&self, num: i64, list: bool, now: i64) {
        let mut pending = self.inner.kv.pending.lock();
        let entry = pending.entry(num).or_default();
        if list {
            entry.lists += 1;
        } else {
            entry.reads += 1;
        }
        entry.accessed_at = entry.accessed_at.max(now);
    }

    /// Writes buffered read/list counters and `accessedAt` to the catalog.
    pub fn flush_kv_counters(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.inner.kv.pending.lock());
        if pending.is_empty() {
            return Ok(());
        }
        self.write_blocking(|tx| write_counters(tx, &pending))
    }

    fn remove_doomed_blobs(&self) {
        let doomed = std::mem::take(&mut *self.inner.kv.doomed.lock());
        if doomed.is_empty() {
            return;
        }
        let mut keep = Vec::new();
        for (blob, attempts) in doomed {
            match self.read_blocking(|conn| blob_referenced(conn, &blob)) {
                Ok(false) => remove_quietly(&blob_path(self.blobs_dir(), &blob)),
                // Still referenced: the deleting transaction has not committed yet (or rolled
                // back). Give it a few more rounds.
                Ok(true) if attempts < 10 => keep.push((blob, attempts + 1)),
                Ok(true) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "checking a doomed record file failed");
                    keep.push((blob, attempts + 1));
                }
            }
        }
        self.inner.kv.doomed.lock().extend(keep);
    }

    /// Removes record files no row references (left by a crash between rename and commit).
    fn sweep_orphan_blobs(&self) -> Result<()> {
        let dir = kv_dir(self.blobs_dir());
        let started = std::time::SystemTime::now();
        for shard in std::fs::read_dir(&dir)? {
            let shard = shard?;
            if shard.file_name() == "tmp" || !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(shard.path())? {
                let entry = entry?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                // Files written since the sweep started may belong to a write still in flight.
                let fresh = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|m| m >= started - Duration::from_secs(60))
                    .unwrap_or(true);
                if fresh {
                    continue;
                }
                if !self.read_blocking(|conn| blob_referenced(conn, &name))? {
                    tracing::info!(blob = %name, "removing orphan record file");
                    remove_quietly(&entry.path());
                }
            }
        }
        Ok(())
    }

    /// Streams `source` into a new blob file; returns (blob id, size). Nothing is left behind on
    /// error. The body is gathered in blocks of about [`BLOB_BLOCK`] bytes, each written by one
    /// call on the blocking pool (chunks are written as they are, no copy); the last block is
    /// written, synced (`--fsync`) and renamed into place by the same call, so a body of up to a
    /// block costs one hop.
    async fn write_blob(&self, source: RecordSource) -> Result<(String, u64)> {
        let blob = new_blob_id();
        let mut writer = BlobWriter {
            file: None,
            tmp: kv_dir(self.blobs_dir())
                .join("tmp")
                .join(format!("{blob}.tmp")),
            dest: blob_path(self.blobs_dir(), &blob),
            full: self.inner.options.durability == Durability::Full,
            size: 0,
        };
        let tmp = writer.tmp.clone();
        let result = async {
            match source {
                RecordSource::Bytes(bytes) => writer = writer.write(vec![bytes], true).await?,
                RecordSource::Chunks(mut chunks) => {
                    use futures::StreamExt;
                    let mut next = chunks.next().await.transpose()?;
                    loop {
                        let mut block = Vec::new();
                        let mut len = 0;
                        while let Some(chunk) = next.take() {
                            len += chunk.len();
                            block.push(chunk);
                            // Read one chunk ahead: the block that ends the body also finishes
                            // the file.
                            next = chunks.next().await.transpose()?;
                            if len >= BLOB_BLOCK {
                                break;
                            }
                        }
                        let last = next.is_none();
                        writer = writer.write(block, last).await?;
                        if last {
                            break;
                        }
                    }
                }
            }
            Ok::<_, Error>(writer.size)
        }
        .await;
        match result {
            Ok(size) => Ok((blob, size)),
            Err(err) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(err)
            }
        }
    }
}

/// A record file being written: a temporary file until its last block, then renamed to its
/// blob path.
struct BlobWriter {
    file: Option<std::fs::File>,
    tmp: PathBuf,
    dest: PathBuf,
    /// Sync before the rename (`--fsync`).
    full: bool,
    size: u64,
}

impl BlobWriter {
    /// Writes `block` (creating the file first) on the blocking pool; when `last`, also syncs
    /// (with `--fsync`; by default, like the database, the file survives a crash or `kill -9`
    /// but not a power loss) and renames the file into place, in the same call.
    async fn write(mut self, block: Vec<Bytes>, last: bool) -> Result<Self> {
        run_io(move || {
            let mut file = match self.file.take() {
                Some(file) => file,
                None => std::fs::File::create(&self.tmp)?,
            };
            self.size += write_all_vectored(&mut file, &block)?;
            if !last {
                self.file = Some(file);
                return Ok(self);
            }
            if self.full {
                file.sync_data()?;
            }
            drop(file);
            let shard = self.dest.parent().expect("shard dir");
            // Shard folders are made on first use (and never removed).
            if let Err(err) = std::fs::rename(&self.tmp, &self.dest) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    return Err(err);
                }
                std::fs::create_dir_all(shard)?;
                std::fs::rename(&self.tmp, &self.dest)?;
            }
            if self.full {
                std::fs::File::open(shard)?.sync_all()?;
            }
            Ok(self)
        })
        .await
    }
}

/// Writes every buffer of `bufs` in order, in as few `writev` calls as the kernel allows;
/// returns the bytes written.
fn write_all_vectored(file: &mut std::fs::File, bufs: &[Bytes]) -> std::io::Result<u64> {
    use std::io::{IoSlice, Write};
    let total: usize = bufs.iter().map(Bytes::len).sum();
    let mut slices: Vec<IoSlice<'_>> = bufs
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| IoSlice::new(b))
        .collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        // At most IOV_MAX (1024 on Linux) buffers per call.
        let end = slices.len().min(1024);
        match file.write_vectored(&slices[..end]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(total as u64)
}

fn write_counters(tx: &Transaction<'_>, pending: &HashMap<i64, Pending>) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "UPDATE storages SET read_count = read_count + ?1, list_count = list_count + ?2,
         accessed_at = max(accessed_at, ?3) WHERE num = ?4",
    )?;
    for (num, counts) in pending {
        stmt.execute(params![counts.reads, counts.lists, counts.accessed_at, num])?;
    }
    Ok(())
}

/// Writes the read counters still pending when the storage closes.
pub(super) fn flush_on_close(inner: &Inner) {
    let pending = std::mem::take(&mut *inner.kv.pending.lock());
    if pending.is_empty() {
        return;
    }
    {
        let conn = inner.writer.lock();
        let result = Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Deferred)
            .map_err(Error::from)
            .and_then(|tx| {
                write_counters(&tx, &pending)?;
                tx.commit()?;
                Ok(())
            });
        if let Err(err) = result {
            tracing::warn!(error = %err, "flushing key-value counters on close failed");
        }
    }
}

/// Where a written record's bytes are.
enum Stored {
    Inline(Bytes),
    Blob(String),
}

/// Inserts or replaces a record row and records the change to the store's counters (written
/// once per batch, see [`CatalogDeltas`]). Returns the replaced record's blob, if any. Its only
/// change is its last statement ([`Changes::OneStatement`]).
#[allow(clippy::too_many_arguments)]
fn upsert_record(
    tx: &Connection,
    deltas: &mut CatalogDeltas,
    hints: &RecordHints,
    num: i64,
    store_id: &str,
    key: &str,
    record: &NewRecord,
    size: u64,
    stored: &Stored,
) -> Result<Option<String>> {
    if !deltas.check(tx, num, store_id)? {
        return Err(not_found());
    }
    let Stored::Inline(bytes) = stored else {
        hints.remove(num, key);
        return upsert_row(tx, deltas, None, num, key, record, size, stored);
    };
    if let Some((id, old_size)) = hints.get(num, key) {
        // Verified in the WHERE clause: see `RecordHints`.
        let now = troupe_model::now_ms();
        let changed = with_stmt(
            tx,
            "UPDATE kv_records SET size = ?3, content_type = ?4, content_encoding = ?5,
             modified_at = ?6, data = ?7
             WHERE id = ?8 AND store_num = ?1 AND key = ?2 AND size = ?9 AND blob IS NULL",
            |s| {
                s.execute(params![
                    num,
                    key,
                    size as i64,
                    record.content_type,
                    record.content_encoding,
                    now,
                    &bytes[..],
                    id,
                    old_size
                ])
            },
        )?;
        if changed == 1 {
            hints.put(num, key, id, size as i64);
            deltas.add(
                num,
                Delta {
                    bytes: size as i64 - old_size,
                    writes: 1,
                    now,
                    ..Delta::default()
                },
            );
            return Ok(None);
        }
    }
    upsert_row(tx, deltas, Some(hints), num, key, record, size, stored)
}

/// [`upsert_record`] without a usable hint: the old row by key, then an UPDATE or INSERT.
/// The row written goes to `hints` when given (inline records only).
#[allow(clippy::too_many_arguments)]
fn upsert_row(
    tx: &Connection,
    deltas: &mut CatalogDeltas,
    hints: Option<&RecordHints>,
    num: i64,
    key: &str,
    record: &NewRecord,
    size: u64,
    stored: &Stored,
) -> Result<Option<String>> {
    // The old row, if any, then a plain UPDATE by row id or a plain INSERT: both single-row
    // statements, which SQLite runs without a statement journal (an `INSERT … ON CONFLICT DO
    // UPDATE` needs one). The writer lock makes the lookup and the write one step.
    let old: Option<(i64, i64, Option<String>)> = optional(with_stmt(
        tx,
        "SELECT id, size, blob FROM kv_records WHERE store_num = ?1 AND key = ?2",
        |s| {
            s.query_row(params![num, key], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
        },
    ))?;
    let now = troupe_model::now_ms();
    let (blob, data) = match stored {
        Stored::Inline(bytes) => (None, Some(&bytes[..])),
        Stored::Blob(blob) => (Some(blob.as_str()), None),
    };
    // One parameter list for both; ?9 is the old row's id (NULL: a new row id).
    let sql = if old.is_some() {
        "UPDATE kv_records SET size = ?3, content_type = ?4, content_encoding = ?5, modified_at = ?6,
         blob = ?7, data = ?8 WHERE id = ?9"
    } else {
        "INSERT INTO kv_records (id, store_num, key, size, content_type, content_encoding, modified_at, blob, data)
         VALUES (?9, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    };
    with_stmt(tx, sql, |s| {
        s.execute(params![
            num,
            key,
            size as i64,
            record.content_type,
            record.content_encoding,
            now,
            blob,
            data,
            old.as_ref().map(|(id, _, _)| *id)
        ])
    })?;
    if let Some(hints) = hints {
        let id = old
            .as_ref()
            .map_or_else(|| tx.last_insert_rowid(), |(id, _, _)| *id);
        hints.put(num, key, id, size as i64);
    }
    deltas.add(
        num,
        Delta {
            bytes: size as i64 - old.as_ref().map_or(0, |(_, size, _)| *size),
            writes: 1,
            now,
            ..Delta::default()
        },
    );
    Ok(old.and_then(|(_, _, blob)| blob))
}

/// Forgets the buffered counters of the store `num` (deleted).
pub(crate) fn forget_store(storage: &SqliteStorage, num: i64) {
    storage.inner.kv.pending.lock().remove(&num);
}

/// Deletes the first `rows` (at least 1) remaining records of the deleted store `num` (see
/// `super::purge`); returns how many it deleted (fewer: none is left). Their files are queued
/// and removed once no row refers to them (after the commit).
pub(crate) fn purge_records(
    storage: &SqliteStorage,
    tx: &Transaction<'_>,
    num: i64,
    rows: usize,
) -> Result<usize> {
    let mut blobs = Vec::new();
    let mut last = None;
    let mut found = 0;
    {
        let mut stmt = tx.prepare_cached(
            "SELECT key, blob FROM kv_records WHERE store_num = ?1 ORDER BY key LIMIT ?2 + 0",
        )?;
        let mut records = stmt.query(params![num, rows as i64])?;
        while let Some(row) = records.next()? {
            found += 1;
            if let Some(blob) = row.get::<_, Option<String>>(1)? {
                blobs.push((blob, 0));
            }
            last = Some(row.get::<_, String>(0)?);
        }
    }
    let deleted = match last {
        Some(last) if found == rows => tx
            .prepare_cached("DELETE FROM kv_records WHERE store_num = ?1 AND key <= ?2")?
            .execute(params![num, last])?,
        _ => tx
            .prepare_cached("DELETE FROM kv_records WHERE store_num = ?1")?
            .execute([num])?,
    };
    if !blobs.is_empty() {
        storage.inner.kv.doomed.lock().extend(blobs);
    }
    Ok(deleted)
}

/// Reads one record (and opens its file) on a reader connection.
fn read_record(
    this: &SqliteStorage,
    conn: &Connection,
    num: i64,
    key: String,
    meta_only: bool,
) -> Result<Option<Record>> {
    let sql = if meta_only {
        "SELECT size, content_type, content_encoding, modified_at, blob FROM kv_records WHERE store_num = ?1 AND key = ?2"
    } else {
        "SELECT size, content_type, content_encoding, modified_at, blob, data FROM kv_records WHERE store_num = ?1 AND key = ?2"
    };
    // A concurrent overwrite may remove the file between the lookup and the open:
    // look again (the new row names the new file).
    for _ in 0..5 {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params![num, key])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let blob: Option<String> = row.get(4)?;
        let meta = RecordMeta {
            key: key.clone(),
            size: row.get::<_, i64>(0)? as u64,
            content_type: row.get(1)?,
            content_encoding: row.get(2)?,
            modified_at: row.get(3)?,
        };
        if meta_only {
            return Ok(Some(Record {
                meta,
                content: None,
            }));
        }
        let content = match blob {
            None => {
                let data = row.get_ref(5)?;
                let data = match data {
                    rusqlite::types::ValueRef::Null => &[][..],
                    other => other.as_blob().map_err(rusqlite::Error::from)?,
                };
                RecordContent::Inline(Bytes::copy_from_slice(data))
            }
            Some(blob) => match std::fs::File::open(blob_path(this.blobs_dir(), &blob)) {
                Ok(file) => RecordContent::File(file),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    drop(rows);
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(err) => return Err(err.into()),
            },
        };
        return Ok(Some(Record {
            meta,
            content: Some(content),
        }));
    }
    Err(Error::Internal(anyhow::anyhow!(
        "record file of {key} keeps disappearing"
    )))
}

#[async_trait]
impl KvStore for SqliteStorage {
    async fn get_record(
        &self,
        store: &StorageInfo,
        key: &str,
        meta_only: bool,
    ) -> Result<Option<Record>> {
        let num = store.num;
        let key = key.to_string();
        let this = self.clone();
        let record = self
            .read(move |conn| read_record(&this, conn, num, key, meta_only))
            .await?;
        if record.is_some() {
            self.note_access(num, false, troupe_model::now_ms());
        }
        Ok(record)
    }

    async fn get_store_record(
        &self,
        store_id: &str,
        key: &str,
        meta_only: bool,
    ) -> Result<Option<(StoreAccess, Option<Record>)>> {
        // Small records are served from memory while no write touched them since (see `cache`).
        let caches = &self.inner.caches;
        let hash = caches.record_hash(store_id, key);
        if let Some(hit) = caches.cached_record(hash, store_id, key) {
            self.note_access(hit.access.num, false, troupe_model::now_ms());
            let content = (!meta_only).then(|| RecordContent::Inline(hit.data.clone()));
            return Ok(Some((
                hit.access.clone(),
                Some(Record {
                    meta: hit.meta.clone(),
                    content,
                }),
            )));
        }
        // Loaded before the read: a write committing after it makes what is cached below stale.
        let tag = caches.record_tag(hash);
        // One statement (the store row by its unique id, the record by (store, key)) on a pooled
        // reader right here: a few microseconds, less than a hop to the blocking pool and back.
        let found = self.read_blocking(|conn| {
            let sql = if meta_only {
                "SELECT s.num, s.user_id, s.general_access, s.secret, r.id, r.size, r.content_type, r.content_encoding,
                 r.modified_at, r.blob FROM storages s LEFT JOIN kv_records r ON r.store_num = s.num AND r.key = ?2
                 WHERE s.id = ?1 AND s.kind = ?3"
            } else {
                "SELECT s.num, s.user_id, s.general_access, s.secret, r.id, r.size, r.content_type, r.content_encoding,
                 r.modified_at, r.blob, r.data FROM storages s LEFT JOIN kv_records r ON r.store_num = s.num AND r.key = ?2
                 WHERE s.id = ?1 AND s.kind = ?3"
            };
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = stmt.query(params![store_id, key, StorageKind::KeyValueStore.code()])?;
            let Some(row) = rows.next()? else {
                return Ok(None);
            };
            let access = StoreAccess {
                num: row.get(0)?,
                id: store_id.to_string(),
                user_id: row.get(1)?,
                general_access: row.get(2)?,
                url_signing_secret_key: row.get(3)?,
            };
            let record_id: Option<i64> = row.get(4)?;
            if record_id.is_none() {
                return Ok(Some((access, None)));
            }
            let blob: Option<String> = row.get(9)?;
            let meta = RecordMeta {
                key: key.to_string(),
                size: row.get::<_, i64>(5)? as u64,
                content_type: row.get(6)?,
                content_encoding: row.get(7)?,
                modified_at: row.get(8)?,
            };
            if meta_only {
                return Ok(Some((access, Some(Record { meta, content: None }))));
            }
            if blob.is_some() {
                // Files go through the careful path (a concurrent overwrite may move them).
                drop(rows);
                let record = read_record(self, conn, access.num, key.to_string(), false)?;
                return Ok(Some((access, record)));
            }
            let data = match row.get_ref(10)? {
                rusqlite::types::ValueRef::Null => &[][..],
                other => other.as_blob().map_err(rusqlite::Error::from)?,
            };
            let data = Bytes::copy_from_slice(data);
            caches.put_record(hash, tag, &access, &meta, &data);
            let content = RecordContent::Inline(data);
            Ok(Some((access, Some(Record { meta, content: Some(content) }))))
        })?;
        if let Some((access, Some(_))) = &found {
            self.note_access(access.num, false, troupe_model::now_ms());
        }
        Ok(found)
    }

    async fn put_record(
        &self,
        store: &dyn StoreRef,
        key: &str,
        record: NewRecord,
        source: RecordSource,
    ) -> Result<u64> {
        if !valid_record_key(key) {
            return Err(Error::Invalid(format!("Invalid record key: {key:?}")));
        }
        let num = store.num();
        // Checked again by the write: a store deleted meanwhile may have left its number to a
        // newer one.
        let store_id = store.id().to_string();
        let key = key.to_string();
        let (stored, size) = match source {
            RecordSource::Bytes(bytes) if bytes.len() <= INLINE_MAX => {
                let size = bytes.len() as u64;
                (Stored::Inline(bytes), size)
            }
            source => {
                let (blob, size) = self.write_blob(source).await?;
                (Stored::Blob(blob), size)
            }
        };
        let new_blob = match &stored {
            Stored::Blob(blob) => Some(blob.clone()),
            Stored::Inline(_) => None,
        };
        // Dropped once the write committed: cached reads of the record are stale from then on.
        let bump = self.inner.caches.record_write(&store_id, &key);
        // Concurrent record writes share one transaction (group commit, see `super::group`).
        let storage = self.clone();
        let result = self
            .write_batched(Changes::OneStatement, move |tx, batch| {
                let deltas = batch.state::<CatalogDeltas>();
                let old_blob = upsert_record(
                    tx,
                    deltas,
                    &storage.inner.kv.hints,
                    num,
                    &store_id,
                    &key,
                    &record,
                    size,
                    &stored,
                )?;
                Ok((old_blob, bump))
            })
            .await;
        match result {
            Ok((old_blob, bump)) => {
                drop(bump);
                if let Some(old) = old_blob {
                    remove_quietly(&blob_path(self.blobs_dir(), &old));
                }
                Ok(size)
            }
            Err(err) => {
                if let Some(blob) = new_blob {
                    remove_quietly(&blob_path(self.blobs_dir(), &blob));
                }
                Err(err)
            }
        }
    }

    async fn delete_record(&self, store: &dyn StoreRef, key: &str) -> Result<bool> {
        let num = store.num();
        let bump = self.inner.caches.record_write(store.id(), key);
        let key = key.to_string();
        let store_id = store.id().to_string();
        let storage = self.clone();
        let (removed, bump) = self
            .write_batched(Changes::OneStatement, move |tx, batch| {
                let deltas = batch.state::<CatalogDeltas>();
                if !deltas.check(tx, num, &store_id)? {
                    // The store is gone (its number may now name another one).
                    return Err(not_found());
                }
                storage.inner.kv.hints.remove(num, &key);
                let old: Option<(i64, i64, Option<String>)> = optional(
                    tx.prepare_cached(
                        "SELECT id, size, blob FROM kv_records WHERE store_num = ?1 AND key = ?2",
                    )?
                    .query_row(params![num, key], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    }),
                )?;
                let Some((id, size, blob)) = old else {
                    return Ok((None, bump));
                };
                tx.prepare_cached("DELETE FROM kv_records WHERE id = ?1")?
                    .execute([id])?;
                deltas.add(
                    num,
                    Delta {
                        bytes: -size,
                        deletes: 1,
                        now: troupe_model::now_ms(),
                        ..Delta::default()
                    },
                );
                Ok((Some(blob), bump))
            })
            .await?;
        drop(bump);
        match removed {
            None => Ok(false),
            Some(blob) => {
                if let Some(blob) = blob {
                    remove_quietly(&blob_path(self.blobs_dir(), &blob));
                }
                Ok(true)
            }
        }
    }

    async fn list_keys(&self, store: &StorageInfo, query: KeysQuery) -> Result<KeysPage> {
        let num = store.num;
        let page = self
            .read(move |conn| {
                let limit = query.limit.max(1);
                // Valid keys are ASCII below 0x7f, so "\x7f" is above all of them and
                // `prefix` + 1 on its last byte bounds the prefix range.
                let (upper, prefix) = match query.prefix.as_deref().filter(|p| !p.is_empty()) {
                    None => ("\u{7f}".to_string(), String::new()),
                    Some(prefix) => {
                        if !valid_record_key(prefix) {
                            // No key can start with characters keys cannot contain.
                            return Ok(KeysPage {
                                keys: Vec::new(),
                                is_truncated: false,
                            });
                        }
                        let mut upper = prefix.as_bytes().to_vec();
                        *upper.last_mut().expect("non-empty") += 1;
                        (
                            String::from_utf8(upper).expect("ascii"),
                            prefix.to_string(),
                        )
                    }
                };
                let (sql, lower) = match query.exclusive_start_key {
                    Some(start) if start.as_str() >= prefix.as_str() => (
                        "SELECT key, size FROM kv_records WHERE store_num = ?1 AND key > ?2 AND key < ?3 ORDER BY key LIMIT ?4 + 0",
                        start,
                    ),
                    _ => (
                        "SELECT key, size FROM kv_records WHERE store_num = ?1 AND key >= ?2 AND key < ?3 ORDER BY key LIMIT ?4 + 0",
                        prefix,
                    ),
                };
                let mut stmt = conn.prepare_cached(sql)?;
                let mut keys = stmt
                    .query_map(params![num, lower, upper, (limit + 1) as i64], |row| {
                        Ok(KeyEntry {
                            key: row.get(0)?,
                            size: row.get::<_, i64>(1)? as u64,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let is_truncated = keys.len() as u64 > limit;
                keys.truncate(limit as usize);
                Ok(KeysPage { keys, is_truncated })
            })
            .await?;
        self.note_access(num, true, troupe_model::now_ms());
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StorageCatalog;

    /// A record hint is only a hint: one with a wrong size, one naming another record's row
    /// and one of a deleted record change nothing but the record written, and `storageBytes`
    /// stays exact.
    #[tokio::test]
    async fn record_hints_are_only_hints() {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), Default::default()).unwrap();
        let store = crate::conformance::new_storage(&storage, StorageKind::KeyValueStore).await;
        let put = |key: &'static str, body: &'static str| {
            let (storage, store) = (storage.clone(), store.clone());
            async move {
                let meta = NewRecord {
                    content_type: "text/plain".into(),
                    content_encoding: None,
                };
                storage
                    .put_record(&store, key, meta, RecordSource::Bytes(body.into()))
                    .await
                    .unwrap();
            }
        };
        let check = |expected: &'static [(&'static str, &'static str)]| {
            let (storage, store) = (storage.clone(), store.clone());
            async move {
                let mut bytes = 0;
                for (key, body) in expected {
                    let record = storage.get_record(&store, key, false).await.unwrap();
                    let Some(RecordContent::Inline(got)) = record.and_then(|r| r.content) else {
                        panic!("record {key} missing");
                    };
                    assert_eq!(&got[..], body.as_bytes(), "record {key}");
                    bytes += body.len() as u64;
                }
                let info = storage
                    .get_storage(StorageKind::KeyValueStore, &store.id)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(info.storage_bytes, bytes);
            }
        };
        let hints = &storage.inner.kv.hints;
        put("a", "0123456789").await;
        put("b", "xy").await;
        let (a_id, a_size) = hints.get(store.num, "a").expect("a hint");
        let (b_id, _) = hints.get(store.num, "b").expect("b hint");
        assert_eq!(a_size, 10);
        // A good hint: one UPDATE.
        put("a", "0123").await;
        assert_eq!(hints.get(store.num, "a"), Some((a_id, 4)));
        check(&[("a", "0123"), ("b", "xy")]).await;
        // Wrong size.
        hints.put(store.num, "a", a_id, 3);
        put("a", "abcde").await;
        check(&[("a", "abcde"), ("b", "xy")]).await;
        // Another record's row (with its size).
        hints.put(store.num, "a", b_id, 2);
        put("a", "abcdefg").await;
        check(&[("a", "abcdefg"), ("b", "xy")]).await;
        assert_eq!(hints.get(store.num, "a"), Some((a_id, 7)));
        // A deleted record.
        assert!(storage.delete_record(&store, "b").await.unwrap());
        assert_eq!(hints.get(store.num, "b"), None);
        hints.put(store.num, "b", b_id, 2);
        put("b", "zz").await;
        check(&[("a", "abcdefg"), ("b", "zz")]).await;
        // A record moved to a file and back: no hint while it is a file.
        let big = Bytes::from(vec![b'x'; INLINE_MAX + 1]);
        let meta = NewRecord {
            content_type: "text/plain".into(),
            content_encoding: None,
        };
        storage
            .put_record(&store, "a", meta, RecordSource::Bytes(big))
            .await
            .unwrap();
        assert_eq!(hints.get(store.num, "a"), None);
        put("a", "back").await;
        check(&[("a", "back"), ("b", "zz")]).await;
    }

    /// The size and bytes of the record `key`, which must be kept in a file.
    async fn file_record(
        storage: &SqliteStorage,
        store: &StorageInfo,
        key: &str,
    ) -> (u64, Vec<u8>) {
        let record = storage
            .get_record(store, key, false)
            .await
            .unwrap()
            .unwrap();
        let Some(RecordContent::File(mut file)) = record.content else {
            panic!("a file record");
        };
        let mut read = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut read).unwrap();
        (record.meta.size, read)
    }

    /// New record files get ids with `0` as their second character (shard folders `<c>0`); a
    /// record whose file has an id of the kind written before (any shard) is still read, and
    /// its file removed when the record is replaced.
    #[tokio::test]
    async fn record_files_in_old_and_new_shards() {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), Default::default()).unwrap();
        let store = crate::conformance::new_storage(&storage, StorageKind::KeyValueStore).await;
        let meta = NewRecord {
            content_type: "application/octet-stream".into(),
            content_encoding: None,
        };
        let data: Vec<u8> = (0..INLINE_MAX + 4096).map(|i| (i % 251) as u8).collect();
        let blob_of = |storage: &SqliteStorage| {
            storage
                .read_blocking(|conn| {
                    Ok(conn.query_row(
                        "SELECT blob FROM kv_records WHERE key = 'big'",
                        [],
                        |row| row.get::<_, String>(0),
                    )?)
                })
                .unwrap()
        };
        for _ in 0..20 {
            storage
                .put_record(
                    &store,
                    "big",
                    meta.clone(),
                    RecordSource::Bytes(data.clone().into()),
                )
                .await
                .unwrap();
            let blob = blob_of(&storage);
            assert_eq!(blob.as_bytes()[1], b'0', "{blob}");
            assert!(blob_path(storage.blobs_dir(), &blob).exists());
        }
        // The file moved to an id of the old kind, as an older version would have named it.
        let blob = blob_of(&storage);
        let old = format!("aZ{}", &blob[2..]);
        let old_path = blob_path(storage.blobs_dir(), &old);
        std::fs::create_dir_all(old_path.parent().unwrap()).unwrap();
        std::fs::rename(blob_path(storage.blobs_dir(), &blob), &old_path).unwrap();
        storage
            .write_blocking(|tx| {
                tx.execute("UPDATE kv_records SET blob = ?1 WHERE key = 'big'", [&old])?;
                Ok(())
            })
            .unwrap();
        let read = file_record(&storage, &store, "big").await.1;
        assert!(read == data);
        storage
            .put_record(&store, "big", meta, RecordSource::Bytes(data.into()))
            .await
            .unwrap();
        assert!(!old_path.exists(), "the replaced file is removed");
        assert_eq!(blob_of(&storage).as_bytes()[1], b'0');
    }

    /// A body given as chunks is written whole, whatever its chunk sizes (empty ones, blocks
    /// ending mid-chunk or exactly at the end); a chunk stream that fails changes nothing and
    /// leaves no file behind.
    #[tokio::test]
    async fn chunked_bodies_are_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), Default::default()).unwrap();
        let store = crate::conformance::new_storage(&storage, StorageKind::KeyValueStore).await;
        let meta = NewRecord {
            content_type: "application/octet-stream".into(),
            content_encoding: None,
        };
        let chunks = |data: &[u8], size: usize| -> RecordSource {
            let mut pieces: Vec<std::io::Result<Bytes>> = vec![Ok(Bytes::new())];
            pieces.extend(
                data.chunks(size)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .flat_map(|c| [c, Ok(Bytes::new())]),
            );
            RecordSource::Chunks(Box::pin(futures::stream::iter(pieces)))
        };
        for (len, size) in [
            (INLINE_MAX + 1, 4096),
            (BLOB_BLOCK, 65536),
            (2 * BLOB_BLOCK, BLOB_BLOCK),
            (2 * BLOB_BLOCK + 7, 100_003),
            (3 * BLOB_BLOCK - 1, 333_333),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let written = storage
                .put_record(&store, "k", meta.clone(), chunks(&data, size))
                .await
                .unwrap();
            assert_eq!(written, len as u64);
            let (stored, read) = file_record(&storage, &store, "k").await;
            assert_eq!(stored, len as u64);
            assert!(read == data, "{len} in chunks of {size}");
        }
        let kept: Vec<u8> = (0..3 * BLOB_BLOCK - 1).map(|i| (i % 253) as u8).collect();
        let failing = futures::stream::iter(
            (0..40)
                .map(|_| Ok(Bytes::from(vec![1u8; 65536])))
                .chain([Err(std::io::Error::other("client went away"))]),
        );
        let failed = storage
            .put_record(&store, "k", meta, RecordSource::Chunks(Box::pin(failing)))
            .await;
        assert!(failed.is_err());
        let read = file_record(&storage, &store, "k").await.1;
        assert!(read == kept);
        let kv = kv_dir(storage.blobs_dir());
        assert_eq!(std::fs::read_dir(kv.join("tmp")).unwrap().count(), 0);
        let files: usize = std::fs::read_dir(&kv)
            .unwrap()
            .map(|shard| shard.unwrap().path())
            .filter(|shard| !shard.ends_with("tmp"))
            .map(|shard| std::fs::read_dir(shard).unwrap().count())
            .sum();
        assert_eq!(files, 1, "only the kept record's file");
    }
}
