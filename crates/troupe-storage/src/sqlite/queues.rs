//! Request queues on SQLite (schema and ordering: `migrations/0003_request_queues.sql`).
//!
//! Every write runs in one transaction on the single writer connection, so `lock_head` selects
//! and locks atomically: no two clients can be handed the same request while its lock holds.
//! Expired locks are cleared lazily by the next `lock_head` (an index range scan over expired
//! locks only); reads treat them as unlocked.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use troupe_model::queue::{QueueRequest, REQUEST_ID_LEN};
use troupe_model::storage::StorageKind;

use super::group::{BatchState, Changes};
use super::stmts::with_stmt;
use super::{optional, SqliteStorage};
use crate::queues::{
    DeleteTarget, Head, HeadEntries, HeadItem, ListedHead, LockOutcome, RequestFilter,
    RequestOutcome, RequestsPage,
};
use crate::{Error, QueueStore, Result};

/// Queues whose head answers are cached at most.
const HEAD_CACHE_QUEUES: usize = 64;
/// Bytes of cached head entries at most (all queues).
const HEAD_CACHE_BYTES: usize = 8 << 20;

/// `list_head` answers per queue id, so polling an unchanged head costs no database read and no
/// serialisation.
///
/// Correctness: every queue write drops its queue's entry and bumps `generation` *after* it
/// committed and before its caller is answered (see [`HeadInvalidation`]). A reader notes the
/// generation before it reads the database and stores what it read only if the generation is
/// still the same, so an entry is never older than a write that was acknowledged before it was
/// served. An entry also expires at the first lock expiry after it was read (the head changes
/// then without a write). Keyed by queue id (never reused); a deleted queue's entry is
/// unreachable through the API (the queue is resolved first) and ages out.
#[derive(Default)]
pub(crate) struct HeadCache {
    state: Mutex<HeadCacheState>,
}

#[derive(Default)]
struct HeadCacheState {
    generation: u64,
    entries: HashMap<String, CachedHead>,
    bytes: usize,
}

#[derive(Clone)]
struct CachedHead {
    entries: Arc<HeadEntries>,
    /// Limit the entries were read with (fewer entries = every pending request).
    limit: u64,
    /// Clock of the read, and the first lock expiry after it.
    read_at: i64,
    valid_until: i64,
    modified_at: i64,
    multiple: bool,
    last_client: Option<String>,
}

impl HeadCache {
    fn generation(&self) -> u64 {
        self.state.lock().generation
    }

    fn get(&self, queue_id: &str, limit: u64, now: i64) -> Option<CachedHead> {
        let state = self.state.lock();
        let entry = state.entries.get(queue_id)?;
        let covers = limit <= entry.limit || (entry.entries.len() as u64) < entry.limit;
        (covers && entry.read_at <= now && now < entry.valid_until).then(|| entry.clone())
    }

    fn insert(&self, queue_id: &str, generation: u64, entry: CachedHead) {
        let size = entry.entries.size() + queue_id.len();
        if size > HEAD_CACHE_BYTES / 4 {
            return;
        }
        let mut state = self.state.lock();
        if state.generation != generation {
            return;
        }
        if let Some(old) = state.entries.remove(queue_id) {
            state.bytes -= old.entries.size() + queue_id.len();
        }
        while !state.entries.is_empty()
            && (state.entries.len() >= HEAD_CACHE_QUEUES || state.bytes + size > HEAD_CACHE_BYTES)
        {
            let victim = state.entries.keys().next().cloned().expect("not empty");
            let old = state.entries.remove(&victim).expect("present");
            state.bytes -= old.entries.size() + victim.len();
        }
        state.bytes += size;
        state.entries.insert(queue_id.to_string(), entry);
    }

    fn invalidate(&self, queue_id: &str) {
        let mut state = self.state.lock();
        state.generation += 1;
        if let Some(old) = state.entries.remove(queue_id) {
            state.bytes -= old.entries.size() + queue_id.len();
        }
    }
}

/// Travels inside a queue write's result: dropped once that write committed (by its caller,
/// or by group commit when the caller is gone) or failed, it invalidates the queue's cached head.
struct HeadInvalidation {
    storage: SqliteStorage,
    queue_id: String,
}

impl Drop for HeadInvalidation {
    fn drop(&mut self) {
        self.storage.inner.queue_heads.invalidate(&self.queue_id);
    }
}

/// Lock hints held at most (all queues); past that the map starts over.
const LOCK_HINTS_MAX: usize = 1 << 16;

/// Where the requests that `head/lock` handed out are: queue number → request id → (`rid`,
/// bytes of the stored JSON, key of its `rq_pending` entry), so the consumer's "handled" PUT
/// that follows needs no lookup of the request (`rq_ids` or the map of recent ids, then its
/// row and lock state).
///
/// Correctness: an entry is only a hint. The PUT that uses it first removes the request's
/// `rq_pending` entry at the hint's key, checked against `rid` (one DELETE). That entry exists
/// only while the request is pending under exactly that lock, and every change of a pending
/// request's row moves or removes its entry (a request put back in the queue gets a new
/// position, a handled or deleted one loses its entry, a lapse or a new lock changes the
/// expiry), so when the DELETE removes it, row `rid` is still the request the hint was made
/// from (that queue and id, pending, a stored JSON of that many bytes): the row is rewritten
/// by `rid` and the counters' deltas are exact. Otherwise (the request was handled, rewritten,
/// deleted, released or locked again meanwhile; or the write that made the hint was rolled
/// back) the DELETE changed nothing and the PUT takes the general path, which finds the
/// request and its entry ([`lock_state`], [`remove_pending`]). An entry is taken out when
/// used.
///
/// Memory: at most `LOCK_HINTS_MAX` entries (~50 bytes each: keyed by [`IdKey`], no allocation); entries of requests that are
/// never PUT back (released locks, consumers that died) go when the map starts over.
#[derive(Default)]
pub(crate) struct LockHints {
    state: Mutex<LockHintState>,
}

#[derive(Default)]
struct LockHintState {
    queues: HashMap<i64, FastMap<IdKey, LockHint>>,
    len: usize,
}

/// Where a locked request was when `head/lock` handed it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LockHint {
    rid: i64,
    /// Bytes of its stored JSON.
    size: i64,
    /// Its `rq_pending` entry: the lock's expiry and the request's position.
    locked_until: i64,
    ord: i64,
}

impl LockHints {
    /// Hints of requests whose id is no request id ([`IdKey::new`]) are left out.
    fn insert<S: AsRef<str>>(&self, num: i64, hints: impl Iterator<Item = (S, LockHint)>) {
        let mut state = self.state.lock();
        if state.len >= LOCK_HINTS_MAX {
            *state = LockHintState::default();
        }
        let mut added = 0;
        let queue = state.queues.entry(num).or_default();
        for (id, hint) in hints {
            let Some(id) = IdKey::new(id.as_ref()) else {
                continue;
            };
            if queue.insert(id, hint).is_none() {
                added += 1;
            }
        }
        state.len += added;
    }

    /// Drops the hints of queue `num` (deleted: its number may be reused).
    fn forget(&self, num: i64) {
        let mut state = self.state.lock();
        if let Some(queue) = state.queues.remove(&num) {
            state.len -= queue.len();
        }
    }

    fn peek(&self, num: i64, id: &str) -> Option<LockHint> {
        let id = IdKey::new(id)?;
        self.state.lock().queues.get(&num)?.get(&id).copied()
    }

    fn take(&self, num: i64, id: &str) -> Option<LockHint> {
        let id = IdKey::new(id)?;
        let mut state = self.state.lock();
        let queue = state.queues.get_mut(&num)?;
        let hint = queue.remove(&id)?;
        if queue.is_empty() {
            state.queues.remove(&num);
        }
        state.len -= 1;
        Some(hint)
    }
}

/// Requests in the map at which a merge into `rq_ids` starts (in the background, after the add
/// that reached it). ~33 bytes of memory each (a 16-byte key and the `rid` in a table at least
/// half full): 100,000 take ~3.3 MB. Each merge appends its ids to `rq_ids` as a new sorted run
/// (see `migrations/0012_request_id_runs.sql`); runs of about the same size are compacted
/// (`compact_runs`).
const MERGE_AT: usize = 100_000;

/// A request id as a key of the map of recent ids: its bytes, zero-padded, and its length in
/// the last byte (ids are at most [`REQUEST_ID_LEN`] bytes). No allocation per entry, and a
/// lookup compares the key inside the table instead of following a pointer to a `String`.
#[derive(Clone, Copy, PartialEq, Eq)]
struct IdKey([u8; 16]);

impl std::hash::Hash for IdKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.0));
    }
}

impl IdKey {
    /// `None` for ids longer than a request id (no request has one).
    fn new(id: &str) -> Option<IdKey> {
        let bytes = id.as_bytes();
        if bytes.len() > REQUEST_ID_LEN {
            return None;
        }
        let mut key = [0u8; 16];
        key[..bytes.len()].copy_from_slice(bytes);
        key[15] = bytes.len() as u8;
        Some(IdKey(key))
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0[..self.0[15] as usize]).expect("keys are made from strings")
    }
}

/// Where to find the requests added since the last merge: queue number → request id → `rid`.
///
/// Request ids are hashes, so a B-tree keyed by them takes every new request on a random page;
/// the map keeps new ids out of `rq_ids` until enough of them are merged in one sorted run
/// (each `rq_ids` page then takes many ids per write instead of one).
///
/// Correctness:
/// - Every row with `rid` above `rq_merged.watermark` is in the map (entries are added by the
///   insert, inside its transaction, and the map is rebuilt from those rows at start-up); every
///   row at or below it is in `rq_ids` (the merge inserts them and moves the watermark in one
///   transaction; new rows get a `rid` above both the watermark and every existing row).
/// - An entry is only a candidate: it is used after checking, in the caller's own snapshot,
///   that the row `rid` exists with that queue and id. So entries of writes that were rolled
///   back (a failed write's savepoint, a failed commit) or of deleted requests are harmless,
///   and nothing is removed from the map before the merge holding its row has committed.
/// - A lookup consults the map before it reads the database: an entry missing from the map
///   was either never committed or merged by a transaction that committed before the read
///   started, whose `rq_ids` rows the read's snapshot then holds.
///
/// Memory: at most about `MERGE_AT` entries plus what is added while a merge runs.
#[derive(Default)]
pub(crate) struct RecentIds {
    state: Mutex<RecentState>,
    /// Which ids each run of `rq_ids` may hold (see [`RunFilters`]).
    merged: Mutex<RunFilters>,
    /// A background merge or compaction runs.
    merging: std::sync::atomic::AtomicBool,
    /// Tests lower the merge threshold (0 = `MERGE_AT`).
    merge_at: std::sync::atomic::AtomicUsize,
    /// Tests lower the compaction fan-in (0 = `COMPACT_FAN_IN`).
    fan_in: std::sync::atomic::AtomicUsize,
    /// Tests lower the ids one compaction transaction moves (0 = `COMPACT_CHUNK`).
    compact_chunk: std::sync::atomic::AtomicUsize,
    /// Tests stop compactions after this many transactions (0 = never), as a crash would.
    #[cfg(test)]
    compact_stop: std::sync::atomic::AtomicUsize,
    /// Merges that took their ids from the map, not from the rows (tests).
    #[cfg(test)]
    merges_from_map: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct RecentState {
    queues: HashMap<i64, FastMap<IdKey, i64>>,
    len: usize,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

impl RecentIds {
    fn get(&self, num: i64, id: &str) -> Option<i64> {
        let key = IdKey::new(id)?;
        self.state.lock().queues.get(&num)?.get(&key).copied()
    }

    /// Records the `rid`s of new rows of queue `num` (ids with their first `rid`, the next ones
    /// counting up), under one lock.
    fn insert_run<'a>(
        &self,
        num: i64,
        ids: impl Iterator<Item = &'a str>,
        first_rid: i64,
    ) -> Result<()> {
        let mut state = self.state.lock();
        let RecentState { queues, len } = &mut *state;
        let map = queues.entry(num).or_default();
        for (id, rid) in ids.zip(first_rid..) {
            // Request ids are never longer (`request_id`); refusing the write keeps the map
            // holding every row above the watermark.
            let key = IdKey::new(id)
                .ok_or_else(|| Error::Internal(anyhow::anyhow!("request id {id:?} is too long")))?;
            if map.insert(key, rid).is_none() {
                *len += 1;
            }
        }
        Ok(())
    }

    /// The entries (queue, id, `rid`) with `rid` in `(above, upto]`, in no order.
    fn entries_between(&self, above: i64, upto: i64) -> Vec<(i64, IdKey, i64)> {
        let state = self.state.lock();
        let mut entries = Vec::with_capacity(state.len);
        for (&num, ids) in &state.queues {
            entries.extend(
                ids.iter()
                    .filter(|(_, &rid)| rid > above && rid <= upto)
                    .map(|(&key, &rid)| (num, key, rid)),
            );
        }
        entries
    }

    /// Drops the entries of queue `num` (deleted; see [`forget_queue`]).
    fn forget_queue(&self, num: i64) {
        let mut state = self.state.lock();
        if let Some(ids) = state.queues.remove(&num) {
            state.len -= ids.len();
        }
    }

    fn has_queue(&self, num: i64) -> bool {
        self.state.lock().queues.contains_key(&num)
    }

    fn len(&self) -> usize {
        self.state.lock().len
    }

    /// Drops the entries a committed merge up to `watermark` made redundant.
    fn prune(&self, watermark: i64) {
        let mut state = self.state.lock();
        let mut removed = 0;
        state.queues.retain(|_, ids| {
            let before = ids.len();
            ids.retain(|_, rid| *rid > watermark);
            removed += before - ids.len();
            !ids.is_empty()
        });
        state.len -= removed;
        if state.queues.is_empty() {
            state.queues.shrink_to_fit();
        }
    }

    fn threshold(&self) -> usize {
        match self.merge_at.load(std::sync::atomic::Ordering::Relaxed) {
            0 => MERGE_AT,
            n => n,
        }
    }

    fn fan_in(&self) -> usize {
        match self.fan_in.load(std::sync::atomic::Ordering::Relaxed) {
            0 => COMPACT_FAN_IN,
            n => n.max(2),
        }
    }

    fn compact_chunk(&self) -> usize {
        match self
            .compact_chunk
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => COMPACT_CHUNK,
            n => n,
        }
    }

    /// Whether run `run` of `rq_ids` may hold the pair whose [`filter_hash`] is `hash`.
    fn may_hold(&self, run: i64, hash: u64) -> bool {
        self.merged.lock().may_hold(run, hash)
    }
}

/// Runs of about the same size compacted into one at once: each request id is rewritten about
/// log_F(n / `MERGE_AT`) times as a queue grows to n requests, and a lookup checks at most
/// F − 1 runs per size class (fewer: the runs' filters rule most of them out).
const COMPACT_FAN_IN: usize = 8;
/// Ids one transaction of a compaction moves at most (~20 ms of the writer).
const COMPACT_CHUNK: usize = 16_384;

/// The size class of a run of `ids` ids: 0 below `fan_in × base`, one more per factor `fan_in`.
fn run_level(ids: i64, base: usize, fan_in: usize) -> u32 {
    let mut level = 0;
    let base = base.min(i64::MAX as usize) as i64;
    let mut bound = base.saturating_mul(fan_in as i64);
    while ids >= bound && bound < i64::MAX {
        level += 1;
        bound = bound.saturating_mul(fan_in as i64);
    }
    level
}

/// The filters of merged ids, one per run of `rq_ids` (see [`MergedFilter`]).
#[derive(Default)]
struct RunFilters {
    runs: HashMap<i64, MergedFilter>,
}

impl RunFilters {
    /// Whether run `run` may hold the pair whose [`filter_hash`] is `hash`. True for a run
    /// without a filter here: one compacted away while an older snapshot still lists it.
    fn may_hold(&self, run: i64, hash: u64) -> bool {
        self.runs
            .get(&run)
            .is_none_or(|filter| filter.may_hold_hash(hash))
    }

    /// The filter of a run this process writes (about `ids` ids): complete from the start,
    /// since every id is added before the write that puts it into the run commits.
    fn written(&mut self, run: i64, ids: usize) -> &mut MergedFilter {
        self.runs.entry(run).or_insert_with(|| MergedFilter {
            ready: true,
            ..MergedFilter::sized(ids)
        })
    }
}

/// On a connection outside a transaction (a reader), a read transaction, so the statements
/// that follow share one snapshot: a compaction moves ids between runs, and statements with
/// snapshots of their own could miss an id it moved between them (or see it twice). Taken
/// after the map of recent ids was consulted (see [`RecentIds`]).
fn snapshot(conn: &Connection) -> Result<Option<rusqlite::Transaction<'_>>> {
    Ok(if conn.is_autocommit() {
        Some(conn.unchecked_transaction()?)
    } else {
        None
    })
}

/// The runs of `rq_ids` in `conn`'s snapshot, newest first.
fn id_runs(conn: &Connection) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached("SELECT run FROM rq_runs ORDER BY run DESC")?;
    let runs = stmt
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(runs)
}

/// Ids the first block of a [`MergedFilter`] takes; each next block takes twice as many.
const FILTER_FIRST_IDS: usize = 1 << 15;
/// Bits per id (one 512-bit line per id, 8 bits set in it: ~0.05% false positives).
const FILTER_BITS_PER_ID: usize = 16;
/// Blocks at most: 2^15 × (2^11 − 1) ≈ 67M ids in 128 MiB. Past that the filter switches
/// itself off (every lookup seeks, as without a filter) until the next start-up.
const FILTER_MAX_BLOCKS: usize = 11;

/// A Bloom filter over the (queue number, id) pairs of one run of `rq_ids`, in front of the
/// seeks that tell a batch add (or a lookup) whether the run holds an id: a new id (most of
/// what is added) then needs no seek into `rq_ids`, and a merged one seeks the run holding it.
///
/// It never lacks a pair that its run holds (no false negative): it is filled from `rq_ids` at
/// start-up, and by the merge or compaction that writes the run inside each of its
/// transactions, before they commit, so before those ids can leave the map of recent ids
/// ([`RecentIds::prune`] runs after the commit) or their older run; runs have no other writer
/// but deletes. Pairs of a write that was rolled back, of deleted requests and of deleted
/// queues stay in it: false positives, which only cost the seek.
///
/// Split-block layout: an id sets 8 bits, one in each 64-bit word of one 64-byte line, so a
/// lookup reads one cache line per block. The filter grows by blocks (each twice the one before,
/// 16 bits per id); a lookup checks every block. Memory: 2 bytes per merged id (64 KiB at
/// least once anything is merged), at most 128 MiB.
#[derive(Default)]
struct MergedFilter {
    /// Bit lines, each block twice as many as the one before.
    blocks: Vec<Box<[[u64; 8]]>>,
    /// Ids added to the last block.
    last_len: usize,
    /// Too many ids: every lookup answers "maybe".
    off: bool,
    /// Filled from `rq_ids` (the start-up scan finished); until then every lookup answers
    /// "maybe", while merges already add their ids.
    ready: bool,
}

/// Odd constants that spread one 32-bit hash half over the 8 words of a line (as Parquet's
/// split-block Bloom filter does).
const FILTER_SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

fn filter_hash(num: i64, id: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x7247_7164_6451).hash_one((num, id))
}

/// Whether `line` has every bit of `hash` (`set`: sets them first).
fn filter_line(line: &mut [u64; 8], hash: u64, set: bool) -> bool {
    let key = hash as u32;
    let mut all = true;
    for (word, salt) in line.iter_mut().zip(FILTER_SALT) {
        let bit = 1u64 << (key.wrapping_mul(salt) >> 26);
        if set {
            *word |= bit;
        }
        all &= *word & bit != 0;
    }
    all
}

/// The line of `hash` in a block of `lines` lines.
fn filter_index(hash: u64, lines: usize) -> usize {
    (((hash >> 32) * lines as u64) >> 32) as usize
}

impl MergedFilter {
    /// An empty filter whose first block takes `ids` ids (at least [`FILTER_FIRST_IDS`], at
    /// most the 128 MiB of all blocks): a run's filter sized to the run is one block, so a
    /// lookup reads one line of it.
    fn sized(ids: usize) -> MergedFilter {
        let ids = ids.clamp(
            FILTER_FIRST_IDS,
            FILTER_FIRST_IDS << (FILTER_MAX_BLOCKS - 1),
        );
        MergedFilter {
            blocks: vec![vec![[0u64; 8]; ids * FILTER_BITS_PER_ID / 512].into_boxed_slice()],
            ..MergedFilter::default()
        }
    }

    fn add(&mut self, num: i64, id: &str) {
        self.add_hash(filter_hash(num, id));
    }

    fn add_hash(&mut self, hash: u64) {
        if self.off {
            return;
        }
        let full = match self.blocks.last() {
            None => true,
            Some(block) => self.last_len >= block.len() * 512 / FILTER_BITS_PER_ID,
        };
        if full {
            if self.blocks.len() >= FILTER_MAX_BLOCKS {
                *self = MergedFilter {
                    off: true,
                    ..MergedFilter::default()
                };
                return;
            }
            let ids = FILTER_FIRST_IDS << self.blocks.len();
            let lines = ids * FILTER_BITS_PER_ID / 512;
            self.blocks.push(vec![[0u64; 8]; lines].into_boxed_slice());
            self.last_len = 0;
        }
        let block = self.blocks.last_mut().expect("a block");
        let line = filter_index(hash, block.len());
        filter_line(&mut block[line], hash, true);
        self.last_len += 1;
    }

    /// Whether the run may hold the pair (false: it surely does not).
    #[cfg(test)]
    fn may_hold(&self, num: i64, id: &str) -> bool {
        self.may_hold_hash(filter_hash(num, id))
    }

    fn may_hold_hash(&self, hash: u64) -> bool {
        if self.off || !self.ready {
            return true;
        }
        self.blocks.iter().any(|block| {
            let mut line = block[filter_index(hash, block.len())];
            filter_line(&mut line, hash, false)
        })
    }

    /// Bytes held.
    fn bytes(&self) -> usize {
        self.blocks.iter().map(|b| b.len() * 64).sum()
    }
}

/// Fills the map of recent request ids from the rows not merged yet (at start-up).
pub(crate) fn init(storage: &SqliteStorage) -> Result<()> {
    let conn = storage.inner.writer.lock();
    let mut stmt = conn.prepare(
        "SELECT queue, id, rid FROM rq_requests WHERE rid > (SELECT watermark FROM rq_merged)",
    )?;
    let mut rows = stmt.query([])?;
    let recent = &storage.inner.recent_ids;
    while let Some(row) = rows.next()? {
        let id = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
        recent.insert_run(row.get(0)?, std::iter::once(id), row.get(2)?)?;
    }
    drop(rows);
    drop(stmt);
    // One filter per run, not ready (every lookup seeks that run) until the scan below filled it.
    {
        let mut stmt = conn.prepare("SELECT run, ids FROM rq_runs")?;
        let runs: Vec<(i64, i64)> = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        drop(stmt);
        let mut filters = recent.merged.lock();
        for (run, ids) in runs {
            filters
                .runs
                .entry(run)
                .or_insert_with(|| MergedFilter::sized(ids.max(0) as usize));
        }
    }
    load_lock_hints(&conn, &storage.inner.lock_hints)?;
    drop(conn);
    // The filters of merged ids are filled from `rq_ids` in the background (~250 ns per id, on
    // a scan connection with a small page cache): start-up does not wait for them, and lookups
    // seek every run until they are ready. Runs written meanwhile (merges, compactions) have
    // complete filters of their own, runs compacted away meanwhile have none any more (the
    // scan skips their ids), and the scan's snapshot holds every run listed above, so nothing
    // is missed.
    let this = storage.clone();
    let spawned = std::thread::Builder::new()
        .name("rq-ids-filter".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            let filled = this.scan_blocking(|conn| {
                let mut stmt = conn.prepare("SELECT run, queue, id FROM rq_ids")?;
                let filled = fill_filters(&this.inner.recent_ids.merged, stmt.query([])?);
                filled
            });
            match filled {
                Ok(ids) => {
                    let mut filters = this.inner.recent_ids.merged.lock();
                    for filter in filters.runs.values_mut() {
                        filter.ready = true;
                    }
                    let bytes: usize = filters.runs.values().map(MergedFilter::bytes).sum();
                    drop(filters);
                    tracing::info!(
                        ids,
                        filter_bytes = bytes,
                        ms = started.elapsed().as_millis() as u64,
                        "filters of request ids filled"
                    );
                }
                Err(err) => {
                    tracing::error!(error = %err, "filling the filter of request ids failed")
                }
            }
        });
    if let Err(err) = spawned {
        tracing::error!(error = %err, "starting the filter of request ids failed");
    }
    Ok(())
}

/// Adds the (run, queue, id) rows of `rows` to the filters of their runs, those listed at
/// start-up (locking them per 4096 rows).
fn fill_filters(filters: &Mutex<RunFilters>, mut rows: rusqlite::Rows<'_>) -> Result<usize> {
    let mut ids = 0;
    loop {
        let mut filters = filters.lock();
        for _ in 0..4096 {
            let Some(row) = rows.next()? else {
                return Ok(ids);
            };
            ids += 1;
            let id = row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?;
            if let Some(filter) = filters.runs.get_mut(&row.get(0)?) {
                filter.add(row.get(1)?, id);
            }
        }
    }
}

/// Ids one [`merged_among`] statement checks.
const MERGED_CHUNK: usize = 25;

/// For each request, whether `rq_ids` holds its id: per run, one statement per 25 requests
/// whose ids the run's filter may hold, none for the others.
fn merged_among(
    conn: &Connection,
    recent: &RecentIds,
    num: i64,
    requests: &[QueueRequest],
) -> Result<Vec<bool>> {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let list: Vec<String> = (0..MERGED_CHUNK).map(|i| format!("?{}", i + 3)).collect();
        format!(
            "SELECT id FROM rq_ids WHERE run = ?1 AND queue = ?2 AND id IN ({})",
            list.join(", ")
        )
    });
    let mut merged = vec![false; requests.len()];
    let runs = id_runs(conn)?;
    if runs.is_empty() {
        return Ok(merged);
    }
    let hashes: Vec<u64> = requests.iter().map(|r| filter_hash(num, &r.id)).collect();
    for run in runs {
        let candidates: Vec<&QueueRequest> = {
            let filters = recent.merged.lock();
            // No filter here: a run compacted away while this snapshot still lists it.
            let filter = filters.runs.get(&run);
            requests
                .iter()
                .zip(&hashes)
                .zip(&merged)
                .filter(|((_, hash), merged)| {
                    !**merged && filter.is_none_or(|filter| filter.may_hold_hash(**hash))
                })
                .map(|((r, _), _)| r)
                .collect()
        };
        if candidates.is_empty() {
            continue;
        }
        let mut stmt = conn.prepare_cached(sql)?;
        for chunk in candidates.chunks(MERGED_CHUNK) {
            stmt.raw_bind_parameter(1, run)?;
            stmt.raw_bind_parameter(2, num)?;
            for i in 0..MERGED_CHUNK {
                // Short chunks repeat their first id.
                let id = &chunk.get(i).unwrap_or(&chunk[0]).id;
                stmt.raw_bind_parameter(i + 3, id.as_str())?;
            }
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next()? {
                let id = row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
                for (r, flag) in requests.iter().zip(merged.iter_mut()) {
                    if r.id == id {
                        *flag = true;
                    }
                }
            }
        }
    }
    Ok(merged)
}

/// Removes the queue's request `id` from `rq_ids`, whichever run holds it.
fn delete_id(tx: &Connection, recent: &RecentIds, num: i64, id: &str) -> Result<()> {
    let hash = filter_hash(num, id);
    for run in id_runs(tx)? {
        if recent.may_hold(run, hash) {
            tx.prepare_cached("DELETE FROM rq_ids WHERE run = ?1 AND queue = ?2 AND id = ?3")?
                .execute(params![run, num, id])?;
        }
    }
    Ok(())
}

/// Rows one multi-row INSERT into `rq_ids` takes: a merge writes its run by statements of these
/// sizes (largest first), which share the per-statement costs (VDBE start, cursor open, reset)
/// among their rows (~3k instructions per id with one statement per id).
const ID_INSERT_SIZES: [usize; 3] = [128, 16, 1];

fn id_insert_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        multi_row_inserts(
            "INSERT INTO rq_ids (run, queue, id, rid)",
            &ID_INSERT_SIZES,
            |row| format!("(?1, ?{}, ?{}, ?{})", row * 3 + 2, row * 3 + 3, row * 3 + 4),
        )
    });
    let i = ID_INSERT_SIZES
        .iter()
        .position(|&n| n == rows)
        .expect("a statement size");
    &all[i]
}

/// Inserts the (queue, id, rid) `rows` into run `run` of `rq_ids`, in their order (sorted by
/// queue and id, above every id of the run: each insert appends).
fn insert_ids(tx: &Transaction<'_>, run: i64, rows: &[(i64, IdKey, i64)]) -> Result<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        let n = ID_INSERT_SIZES
            .into_iter()
            .find(|&n| n <= rest.len())
            .expect("size 1");
        let (chunk, tail) = rest.split_at(n);
        let mut stmt = tx.prepare_cached(id_insert_sql(n))?;
        stmt.raw_bind_parameter(1, run)?;
        for (i, (num, key, rid)) in chunk.iter().enumerate() {
            stmt.raw_bind_parameter(i * 3 + 2, *num)?;
            stmt.raw_bind_parameter(i * 3 + 3, key.as_str())?;
            stmt.raw_bind_parameter(i * 3 + 4, *rid)?;
        }
        stmt.raw_execute()?;
        rest = tail;
    }
    Ok(())
}

/// The `rid` of the queue's request `id`, in `conn`'s view (see [`RecentIds`]).
fn locate(conn: &Connection, recent: &RecentIds, num: i64, id: &str) -> Result<Option<i64>> {
    let candidate = recent.get(num, id);
    let _snapshot = snapshot(conn)?;
    if let Some(rid) = candidate {
        let live = conn
            .prepare_cached("SELECT 1 FROM rq_requests WHERE rid = ?1 AND queue = ?2 AND id = ?3")?
            .exists(params![rid, num, id])?;
        if live {
            return Ok(Some(rid));
        }
    }
    let hash = filter_hash(num, id);
    for run in id_runs(conn)? {
        if !recent.may_hold(run, hash) {
            continue;
        }
        let rid = conn
            .prepare_cached("SELECT rid FROM rq_ids WHERE run = ?1 AND queue = ?2 AND id = ?3")?
            .query_row(params![run, num, id], |row| row.get(0))
            .optional()?;
        if rid.is_some() {
            return Ok(rid);
        }
    }
    Ok(None)
}

// `LIMIT ?n + 0`, never a bare `LIMIT ?n`: SQLite plans with the value bound to a bare LIMIT
// parameter, so every new binding would re-prepare the statement (~100k instructions, more than
// the query itself).

/// The length in bytes of a stored request's full JSON (what `request.json.len()` was), from
/// its row in `rq_requests` (`$t`: the table's alias with its dot, or ""): compact rows store
/// less (see [`compact_json`]). Every size a request counts in `storageBytes` comes from here.
macro_rules! size_sql {
    ($t:literal) => {
        concat!(
            "CASE WHEN substr(",
            $t,
            "data, 1, 1) = '{' THEN octet_length(",
            $t,
            "data) ELSE octet_length(",
            $t,
            "data) - instr(",
            $t,
            "data, ';') + octet_length(",
            $t,
            "id) + octet_length(",
            $t,
            "unique_key) + octet_length(",
            $t,
            "url) + 12 END"
        )
    };
}

/// [`size_sql!`] of a row from its values, in Rust (the same number: `instr` counts characters,
/// i.e. the bytes that do not continue a UTF-8 sequence). `data` as bytes: the lock reads it
/// without checking it is UTF-8 (only its length and the characters before `;` count).
fn stored_size(id: &str, unique_key: &str, url: &str, data: &[u8]) -> i64 {
    if data.first() == Some(&b'{') {
        return data.len() as i64;
    }
    let instr = match memchr::memchr(b';', data) {
        Some(at) => data[..at].iter().filter(|&&b| b & 0xc0 != 0x80).count() as i64 + 1,
        None => 0,
    };
    data.len() as i64 - instr + (id.len() + unique_key.len() + url.len()) as i64 + 12
}

/// The first available requests in queue order, for locking (with each one's `rid`, stored
/// data — for its size, [`stored_size`] — and position).
const SQL_LOCKABLE: &str = "SELECT r.id, r.unique_key, r.url, r.method, r.retry_count, p.rid,
         r.data, p.ord FROM rq_pending p CROSS JOIN rq_requests r ON r.rid = p.rid
     WHERE p.queue = ?1 AND p.locked_until = 0 ORDER BY p.ord LIMIT ?2 + 0";
/// A queue's counters after one of its requests was rewritten, as deltas (no read of the
/// queue's row), with the caller's client counted for `hadMultipleClients` (the rules of
/// [`track`]) and `rq_front`/`rq_back` stepped for a request that goes back into the queue.
/// Matches only the row `?7` that is queue `?8`, so a stale queue number changes nothing.
macro_rules! sql_request_written {
    () => {
        "UPDATE storages SET
         handled_request_count = handled_request_count + ?1,
         rq_front = rq_front - ?2, rq_back = rq_back + ?3,
         had_multiple_clients = CASE
             WHEN had_multiple_clients != 0 OR last_client_key IS NULL THEN had_multiple_clients
             WHEN ?4 IS NULL OR last_client_key != ?4 THEN 1 ELSE 0 END,
         last_client_key = CASE
             WHEN had_multiple_clients = 0 AND last_client_key IS NULL THEN coalesce(?4, '')
             ELSE last_client_key END,
         modified_at = ?5, accessed_at = ?5, write_count = write_count + 1,
         storage_bytes = max(0, storage_bytes + ?6)
     WHERE num = ?7 AND id = ?8 AND kind = ?9"
    };
}
const SQL_REQUEST_WRITTEN: &str = sql_request_written!();
/// [`SQL_REQUEST_WRITTEN`] for a request that goes back into the queue: also yields the queue's
/// new ends (RETURNING costs about a statement of its own, so only this path has it).
const SQL_REQUEST_REQUEUED: &str = concat!(sql_request_written!(), " RETURNING rq_front, rq_back");
/// Locks that expired by ?2.
const SQL_EXPIRED: &str = "SELECT locked_until, ord, rid, lapse_to FROM rq_pending
     WHERE queue = ?1 AND locked_until > 0 AND locked_until <= ?2";
/// Whether any pending request holds an unexpired lock.
const SQL_HAS_LOCKED: &str = "SELECT EXISTS (SELECT 1 FROM rq_pending
     WHERE queue = ?1 AND locked_until > ?2)";
/// The first available requests in queue order, for the non-locking head.
const SQL_AVAILABLE: &str = "SELECT r.id, r.unique_key, r.url, r.method, r.retry_count, p.ord
     FROM rq_pending p CROSS JOIN rq_requests r ON r.rid = p.rid
     WHERE p.queue = ?1 AND p.locked_until = 0 ORDER BY p.ord LIMIT ?2 + 0";
/// Requests whose lock expired by ?2 (not cleared yet), soonest expiry first.
const SQL_LAPSED: &str =
    "SELECT r.id, r.unique_key, r.url, r.method, r.retry_count, p.ord, p.lapse_to
     FROM rq_pending p CROSS JOIN rq_requests r ON r.rid = p.rid
     WHERE p.queue = ?1 AND p.locked_until > 0 AND p.locked_until <= ?2
     ORDER BY p.locked_until LIMIT 10000";
/// Locked requests, soonest expiry first.
const SQL_LOCKED: &str = "SELECT r.id, r.unique_key, r.url, r.method, r.retry_count, p.locked_until
     FROM rq_pending p CROSS JOIN rq_requests r ON r.rid = p.rid
     WHERE p.queue = ?1 AND p.locked_until > ?2 ORDER BY p.locked_until, p.ord LIMIT ?3 + 0";

/// The first lock expiry after ?2.
const SQL_NEXT_EXPIRY: &str = "SELECT locked_until FROM rq_pending
     WHERE queue = ?1 AND locked_until > ?2 ORDER BY locked_until LIMIT 1";

/// A pending request's entry in `rq_pending` moved to another key (lock state and position).
const SQL_MOVE_PENDING: &str =
    "UPDATE rq_pending SET locked_until = ?1, ord = ?2, lock_client = ?3, lapse_to = ?4
     WHERE queue = ?5 AND locked_until = ?6 AND ord = ?7";
/// A pending request's entry added at its new key (see [`move_pending`]).
const SQL_INSERT_PENDING: &str =
    "INSERT INTO rq_pending (queue, locked_until, ord, rid, lock_client, lapse_to)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
/// A pending request's entry removed (it was handled or deleted), checked against its `rid`.
const SQL_DELETE_PENDING: &str =
    "DELETE FROM rq_pending WHERE queue = ?1 AND locked_until = ?2 AND ord = ?3 AND rid = ?4";

/// Query plans of the head queries (tests assert they are index range scans).
#[cfg(test)]
pub(crate) fn explain_head_queries(conn: &Connection) -> Result<Vec<(&'static str, String)>> {
    let mut out = Vec::new();
    for sql in [
        SQL_LOCKABLE,
        SQL_EXPIRED,
        SQL_HAS_LOCKED,
        SQL_AVAILABLE,
        SQL_LAPSED,
        SQL_LOCKED,
        SQL_NEXT_EXPIRY,
        SQL_MOVE_PENDING,
        SQL_DELETE_PENDING,
        SQL_FIND_BY_RID,
        SQL_FIND_BY_ID,
        SQL_UNLOCKABLE,
        SQL_ENTRY_AT,
        SQL_LOCKED_ENTRY,
    ] {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let count = stmt.parameter_count();
        let args: Vec<i64> = (0..count).map(|i| i as i64 + 1).collect();
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(args), |row| {
                row.get::<_, String>(3)
            })?
            .collect::<rusqlite::Result<_>>()?;
        out.push((sql, plan.join(" | ")));
    }
    Ok(out)
}

/// Drops what memory holds about the deleted queue `num` (after its deletion committed): its
/// lock hints and its entries in the map of recent ids. Its rows stay until they are purged
/// (see [`purge_requests`]); a merge meanwhile finds the map short of them and reads the rows
/// instead (see [`SqliteStorage::merge_recent_ids`]), and no lookup of the queue is left.
pub(crate) fn forget_queue(storage: &SqliteStorage, num: i64) {
    storage.inner.lock_hints.forget(num);
    storage.inner.recent_ids.forget_queue(num);
}

/// The `rid`s of every row of the deleted queue `num`, sorted (read once when its purge
/// starts, on a reader: the queue takes no new rows). Rows are deleted in this order by
/// [`purge_rows`]: a chunk of `rid`s in id order would hit a random page of `rq_requests` per
/// row, each page written again by many chunks (session 8 measured 1 s per 16,384 requests).
pub(crate) fn queue_rids(conn: &Connection, num: i64) -> Result<Vec<i64>> {
    let _snapshot = snapshot(conn)?;
    let mut rids = Vec::new();
    for run in id_runs(conn)? {
        let mut stmt =
            conn.prepare_cached("SELECT rid FROM rq_ids WHERE run = ?1 AND queue = ?2")?;
        let mut rows = stmt.query(params![run, num])?;
        while let Some(row) = rows.next()? {
            rids.push(row.get(0)?);
        }
    }
    let mut stmt = conn.prepare_cached(
        "SELECT rid FROM rq_requests WHERE rid > (SELECT watermark FROM rq_merged) AND queue = ?1",
    )?;
    let mut rows = stmt.query([num])?;
    while let Some(row) = rows.next()? {
        rids.push(row.get(0)?);
    }
    rids.sort_unstable();
    rids.dedup();
    Ok(rids)
}

/// Deletes the rows `rids` (ascending) of `rq_requests` (see [`queue_rids`]).
pub(crate) fn purge_rows(tx: &Transaction<'_>, rids: &[i64]) -> Result<()> {
    let mut stmt = tx.prepare_cached("DELETE FROM rq_requests WHERE rid = ?1")?;
    for rid in rids {
        stmt.execute([rid])?;
    }
    Ok(())
}

/// Deletes up to `rows` (at least 1) of what is left of the deleted queue `num` once its rows
/// are gone ([`purge_rows`]): its `rq_pending` entries, then its ids run by run. Returns the
/// entries deleted and whether nothing is left. Each run's id count in `rq_runs` goes down by
/// the ids deleted from it, as compactions expect (runs are never dropped here: a compaction
/// may be filling one). All by index ranges, in key order.
pub(crate) fn purge_requests(tx: &Transaction<'_>, num: i64, rows: usize) -> Result<(usize, bool)> {
    let mut left = rows;
    let last: Option<(i64, i64)> = tx
        .prepare_cached(
            "SELECT locked_until, ord FROM rq_pending WHERE queue = ?1
             ORDER BY locked_until, ord LIMIT 1 OFFSET ?2",
        )?
        .query_row(params![num, left as i64 - 1], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    left -= match last {
        Some((locked_until, ord)) => tx
            .prepare_cached(
                "DELETE FROM rq_pending WHERE queue = ?1 AND (locked_until, ord) <= (?2, ?3)",
            )?
            .execute(params![num, locked_until, ord])?,
        None => tx
            .prepare_cached("DELETE FROM rq_pending WHERE queue = ?1")?
            .execute([num])?,
    };
    for run in id_runs(tx)? {
        if left == 0 {
            return Ok((rows, false));
        }
        let last: Option<String> = tx
            .prepare_cached(
                "SELECT id FROM rq_ids WHERE run = ?1 AND queue = ?2 ORDER BY id LIMIT 1 OFFSET ?3",
            )?
            .query_row(params![run, num, left as i64 - 1], |row| row.get(0))
            .optional()?;
        let deleted = match last {
            Some(last) => tx
                .prepare_cached("DELETE FROM rq_ids WHERE run = ?1 AND queue = ?2 AND id <= ?3")?
                .execute(params![run, num, last])?,
            None => tx
                .prepare_cached("DELETE FROM rq_ids WHERE run = ?1 AND queue = ?2")?
                .execute(params![run, num])?,
        };
        if deleted > 0 {
            tx.prepare_cached("UPDATE rq_runs SET ids = ids - ?2 WHERE run = ?1")?
                .execute(params![run, deleted as i64])?;
        }
        left -= deleted.min(left);
    }
    Ok((rows - left, left > 0))
}

/// The queue's catalog row as the queue code needs it, plus changes to write back.
struct QueueRow {
    num: i64,
    modified_at: i64,
    total: i64,
    handled: i64,
    multiple: bool,
    last_client: Option<String>,
    front: i64,
    back: i64,
    /// Content changed: move `modifiedAt`.
    modified: bool,
    writes: i64,
    deletes: i64,
    bytes: i64,
}

impl QueueRow {
    fn load(conn: &Connection, queue_id: &str) -> Result<Self> {
        const SQL: &str =
            "SELECT num, modified_at, total_request_count, handled_request_count, had_multiple_clients,
                    last_client_key, rq_front, rq_back
             FROM storages WHERE id = ?1 AND kind = ?2";
        with_stmt(conn, SQL, |stmt| {
            stmt.query_row(params![queue_id, StorageKind::RequestQueue.code()], |row| {
                Ok(QueueRow {
                    num: row.get(0)?,
                    modified_at: row.get(1)?,
                    total: row.get(2)?,
                    handled: row.get(3)?,
                    multiple: row.get::<_, i64>(4)? != 0,
                    last_client: row.get(5)?,
                    front: row.get(6)?,
                    back: row.get(7)?,
                    modified: false,
                    writes: 0,
                    deletes: 0,
                    bytes: 0,
                })
            })
            .optional()
        })?
        .ok_or_else(|| Error::NotFound("Request queue was not found".into()))
    }

    /// Records a call by `client` (None = no clientKey = a new client) for `hadMultipleClients`.
    /// Returns whether the state changed.
    fn track(&mut self, client: &Option<String>) -> bool {
        track(&mut self.last_client, &mut self.multiple, client)
    }

    /// Position for a request put at the front (newest first) or the back (oldest first).
    fn next_ord(&mut self, forefront: bool) -> i64 {
        if forefront {
            self.front -= 1;
            self.front
        } else {
            self.back += 1;
            self.back
        }
    }

    fn save(&self, tx: &Transaction<'_>, now: i64) -> Result<()> {
        let modified_at = if self.modified { now } else { self.modified_at };
        const SQL: &str =
            "UPDATE storages SET total_request_count = ?1, handled_request_count = ?2, had_multiple_clients = ?3,
                 last_client_key = ?4, rq_front = ?5, rq_back = ?6, modified_at = ?7, accessed_at = ?8,
                 write_count = write_count + ?9, delete_count = delete_count + ?10,
                 storage_bytes = max(0, storage_bytes + ?11)
             WHERE num = ?12";
        with_stmt(tx, SQL, |s| {
            s.execute(params![
                self.total,
                self.handled,
                self.multiple as i64,
                self.last_client,
                self.front,
                self.back,
                modified_at,
                now,
                self.writes,
                self.deletes,
                self.bytes,
                self.num
            ])
        })?;
        Ok(())
    }
}

/// Records a call by `client` on a queue's (last client, multiple clients) state; returns
/// whether that changed (see [`QueueRow::track`]).
fn track(last_client: &mut Option<String>, multiple: &mut bool, client: &Option<String>) -> bool {
    if *multiple {
        return false;
    }
    match (&*last_client, client) {
        (None, None) => *last_client = Some(String::new()),
        (None, Some(key)) => *last_client = Some(key.clone()),
        (Some(_), None) => *multiple = true,
        (Some(last), Some(key)) if last == key => return false,
        (Some(_), Some(_)) => *multiple = true,
    }
    true
}

/// The first lock expiry after `now` among pending requests.
fn next_lock_expiry(conn: &Connection, num: i64, now: i64) -> Result<Option<i64>> {
    Ok(with_stmt(conn, SQL_NEXT_EXPIRY, |s| {
        s.query_row(params![num, now], |row| row.get(0)).optional()
    })?)
}

/// A stored request's state as the write paths need it.
struct Existing {
    rid: i64,
    handled: bool,
    /// 0 = not locked (or handled).
    locked_until: i64,
    lock_client: Option<String>,
    size: i64,
    /// Position (a pending request's entry is `(queue, locked_until, ord)` in `rq_pending`).
    ord: i64,
}

impl Existing {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Existing> {
        Ok(Existing {
            rid: row.get(0)?,
            handled: row.get(1)?,
            locked_until: row.get(2)?,
            lock_client: row.get(3)?,
            size: row.get(4)?,
            ord: row.get(5)?,
        })
    }
}

/// A request's row by `rid` (checked against queue and id); its lock state is read apart
/// ([`lock_state`]), where needed.
const SQL_FIND_BY_RID: &str = concat!(
    "SELECT rid, handled_at IS NOT NULL, 0, NULL, ",
    size_sql!(""),
    ", ord FROM rq_requests WHERE rid = ?1 AND queue = ?2 AND id = ?3"
);
/// [`SQL_FIND_BY_RID`] by id, through run ?1 of `rq_ids`.
const SQL_FIND_BY_ID: &str = concat!(
    "SELECT r.rid, r.handled_at IS NOT NULL, 0, NULL, ",
    size_sql!("r."),
    ", r.ord FROM rq_ids i CROSS JOIN rq_requests r ON r.rid = i.rid
     WHERE i.run = ?1 AND i.queue = ?2 AND i.id = ?3"
);
/// The lock client of the entry at a key, checked against its `rid` (no row: not there).
const SQL_ENTRY_AT: &str = "SELECT lock_client FROM rq_pending
     WHERE queue = ?1 AND locked_until = ?2 AND ord = ?3 AND rid = ?4";
/// A locked request's entry found without its key: a scan of the queue's locked entries (only
/// when no lock hint knows it: after the hints started over; see [`lock_state`]).
const SQL_LOCKED_ENTRY: &str = "SELECT locked_until, lock_client FROM rq_pending
     WHERE queue = ?1 AND locked_until > 0 AND ord = ?2 AND rid = ?3";
/// A client's locks in a queue.
const SQL_UNLOCKABLE: &str = "SELECT locked_until, ord FROM rq_pending
     WHERE queue = ?1 AND locked_until > 0 AND lock_client = ?2";

/// Reads where the pending request `e` (found by [`find`], id `id`) is locked (its
/// `rq_pending` entry's key and client): the entry a lock hint points at if the hint is still
/// right, else `(queue, 0, ord)` if it is available, else a scan of the queue's locked entries
/// (then remembered as a hint). Every step checks the entry's `rid`.
fn lock_state(
    tx: &Connection,
    hints: &LockHints,
    num: i64,
    id: &str,
    e: &mut Existing,
) -> Result<()> {
    if e.handled {
        return Ok(());
    }
    if let Some(hint) = hints.peek(num, id) {
        if hint.rid == e.rid && hint.ord == e.ord && hint.locked_until > 0 {
            if let Some(client) = with_stmt(tx, SQL_ENTRY_AT, |at| {
                at.query_row(params![num, hint.locked_until, e.ord, e.rid], |row| {
                    row.get::<_, Option<String>>(0)
                })
                .optional()
            })? {
                e.locked_until = hint.locked_until;
                e.lock_client = client;
                return Ok(());
            }
        }
    }
    if with_stmt(tx, SQL_ENTRY_AT, |at| {
        at.query_row(params![num, 0, e.ord, e.rid], |_| Ok(()))
            .optional()
    })?
    .is_some()
    {
        e.locked_until = 0;
        e.lock_client = None;
        return Ok(());
    }
    let (until, client) = with_stmt(tx, SQL_LOCKED_ENTRY, |s| {
        s.query_row(params![num, e.ord, e.rid], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Option<String>>(1)?))
        })
        .optional()
    })?
    .ok_or_else(|| {
        Error::Internal(anyhow::anyhow!(
            "request {} of queue {num} has no pending entry",
            e.rid
        ))
    })?;
    hints.insert(
        num,
        std::iter::once((
            id,
            LockHint {
                rid: e.rid,
                size: e.size,
                locked_until: until,
                ord: e.ord,
            },
        )),
    );
    e.locked_until = until;
    e.lock_client = client;
    Ok(())
}

/// A locked request `id` of queue `num` as its lock hint says it is, if its `rq_pending` entry is
/// still at the hint's key (checked against `rid`): then the request is pending under exactly
/// that lock (see [`LockHints`]), and neither its row nor `rq_ids` needs reading. `None`: no
/// hint, or a stale one (the caller then finds the request: [`find`], [`lock_state`]).
fn hinted_lock(tx: &Connection, hints: &LockHints, num: i64, id: &str) -> Result<Option<Existing>> {
    let Some(hint) = hints.peek(num, id) else {
        return Ok(None);
    };
    let client = with_stmt(tx, SQL_ENTRY_AT, |s| {
        s.query_row(params![num, hint.locked_until, hint.ord, hint.rid], |row| {
            row.get::<_, Option<String>>(0)
        })
        .optional()
    })?;
    Ok(client.map(|client| Existing {
        rid: hint.rid,
        handled: false,
        locked_until: hint.locked_until,
        lock_client: client,
        size: hint.size,
        ord: hint.ord,
    }))
}

/// Request `id` of queue `num` with its lock state, for a call on its lock (delete-lock,
/// prolong): from its lock hint while that still holds ([`hinted_lock`]), else found
/// ([`find`]) with its entry looked up ([`lock_state`]).
fn locked_request(
    tx: &Connection,
    storage: &SqliteStorage,
    num: i64,
    id: &str,
) -> Result<Option<Existing>> {
    let hints = &storage.inner.lock_hints;
    if let Some(found) = hinted_lock(tx, hints, num, id)? {
        return Ok(Some(found));
    }
    let mut found = find(tx, &storage.inner.recent_ids, num, id)?;
    if let Some(e) = &mut found {
        lock_state(tx, hints, num, id, e)?;
    }
    Ok(found)
}

/// Lock hints of the locked requests in the database (at start-up), as many as the map holds.
fn load_lock_hints(conn: &Connection, hints: &LockHints) -> Result<()> {
    let queues: Vec<i64> = conn
        .prepare("SELECT num FROM storages WHERE kind = ?1")?
        .query_map([StorageKind::RequestQueue.code()], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare(concat!(
        "SELECT r.id, p.rid, ",
        size_sql!("r."),
        ", p.locked_until, p.ord FROM rq_pending p CROSS JOIN rq_requests r ON r.rid = p.rid
         WHERE p.queue = ?1 AND p.locked_until > 0 LIMIT ?2"
    ))?;
    let mut room = LOCK_HINTS_MAX - 1;
    for num in queues {
        if room == 0 {
            break;
        }
        let found: Vec<(String, LockHint)> = stmt
            .query_map(params![num, room as i64], |row| {
                Ok((
                    row.get(0)?,
                    LockHint {
                        rid: row.get(1)?,
                        size: row.get(2)?,
                        locked_until: row.get(3)?,
                        ord: row.get(4)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        room -= found.len();
        hints.insert(num, found.into_iter());
    }
    Ok(())
}

fn find(tx: &Connection, recent: &RecentIds, num: i64, id: &str) -> Result<Option<Existing>> {
    // What `locate` does, with the row read in the same statement (one statement, not two).
    if let Some(rid) = recent.get(num, id) {
        let found = tx
            .prepare_cached(SQL_FIND_BY_RID)?
            .query_row(params![rid, num, id], Existing::from_row)
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    let hash = filter_hash(num, id);
    for run in id_runs(tx)? {
        if !recent.may_hold(run, hash) {
            continue;
        }
        let found = tx
            .prepare_cached(SQL_FIND_BY_ID)?
            .query_row(params![run, num, id], Existing::from_row)
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// Moves the pending request `rid`'s entry from `from` (locked_until, ord) to `to`, with the
/// lock's client and lapse (a new position goes to its row too: the caller's, or [`set_ord`]).
#[allow(clippy::too_many_arguments)]
fn move_pending(
    tx: &Connection,
    num: i64,
    rid: i64,
    from: (i64, i64),
    to: (i64, i64),
    client: Option<&str>,
    lapse_to: Option<i64>,
) -> Result<()> {
    // A DELETE and an INSERT: an UPDATE of the key columns of a `WITHOUT ROWID` table costs
    // about twice as much (SQLite moves the changed keys through an ephemeral table).
    let changed = with_stmt(tx, SQL_DELETE_PENDING, |s| {
        s.execute(params![num, from.0, from.1, rid])
    })?;
    if changed != 1 {
        return Err(Error::Internal(anyhow::anyhow!(
            "request {rid} of queue {num} has no pending entry"
        )));
    }
    with_stmt(tx, SQL_INSERT_PENDING, |s| {
        s.execute(params![num, to.0, to.1, rid, client, lapse_to])
    })?;
    Ok(())
}

/// A request's new position in its row (see [`move_pending`]).
fn set_ord(tx: &Connection, rid: i64, ord: i64) -> Result<()> {
    with_stmt(tx, "UPDATE rq_requests SET ord = ?1 WHERE rid = ?2", |s| {
        s.execute(params![ord, rid])
    })?;
    Ok(())
}

/// Removes the pending request `rid`'s entry, at `at` (locked_until, ord) if that is where it
/// is, else wherever it is. Returns whether there was one.
fn remove_pending(tx: &Connection, num: i64, rid: i64, at: (i64, i64)) -> Result<bool> {
    if with_stmt(tx, SQL_DELETE_PENDING, |s| {
        s.execute(params![num, at.0, at.1, rid])
    })? == 1
    {
        return Ok(true);
    }
    // A stale lock hint: the entry moved (the lock lapsed or was released: available at the
    // row's position; or taken again: a scan of the queue's locked entries).
    if tx
        .prepare_cached(
            "DELETE FROM rq_pending WHERE queue = ?1 AND locked_until = 0
             AND ord = (SELECT ord FROM rq_requests WHERE rid = ?2) AND rid = ?2",
        )?
        .execute(params![num, rid])?
        > 0
    {
        return Ok(true);
    }
    Ok(tx
        .prepare_cached(
            "DELETE FROM rq_pending WHERE queue = ?1 AND locked_until > 0
             AND ord = (SELECT ord FROM rq_requests WHERE rid = ?2) AND rid = ?2",
        )?
        .execute(params![num, rid])?
        > 0)
}

/// Entries of new pending requests (`rid`, position) locked until `locked_until` (0: available)
/// by `client`, in multi-row INSERTs like [`insert_rows`].
fn insert_pending(
    tx: &Connection,
    num: i64,
    locked_until: i64,
    client: Option<&str>,
    entries: &[(i64, i64)],
) -> Result<()> {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        multi_row_inserts(
            "INSERT INTO rq_pending (queue, locked_until, lock_client, rid, ord)",
            &INSERT_SIZES,
            |row| format!("(?1, ?2, ?3, ?{}, ?{})", 4 + 2 * row, 5 + 2 * row),
        )
    });
    let mut rest = entries;
    while !rest.is_empty() {
        let i = INSERT_SIZES
            .iter()
            .position(|&n| n <= rest.len())
            .expect("size 1");
        let (chunk, tail) = rest.split_at(INSERT_SIZES[i]);
        with_stmt(tx, all[i].as_str(), |stmt| {
            stmt.raw_bind_parameter(1, num)?;
            stmt.raw_bind_parameter(2, locked_until)?;
            stmt.raw_bind_parameter(3, client)?;
            for (row, (rid, ord)) in chunk.iter().enumerate() {
                stmt.raw_bind_parameter(4 + 2 * row, *rid)?;
                stmt.raw_bind_parameter(5 + 2 * row, *ord)?;
            }
            stmt.raw_execute()
        })?;
        rest = tail;
    }
    Ok(())
}

/// A request's row marked handled (its `rq_pending` entry is removed apart).
const SQL_HANDLED: &str =
    "UPDATE rq_requests SET handled_at = ?1, unique_key = ?2, url = ?3, method = ?4,
         retry_count = ?5, data = ?6
     WHERE rid = ?7";

/// Row `rid` rewritten as the handled request `r` (its `rq_pending` entry is removed apart).
/// Returns the rows changed (1, or 0 if there is no row `rid`).
fn mark_handled(tx: &Connection, r: &QueueRequest, rid: i64) -> Result<usize> {
    Ok(with_stmt(tx, SQL_HANDLED, |s| {
        s.execute(params![
            r.handled_at,
            r.unique_key,
            r.url,
            r.method,
            r.retry_count,
            stored_data(r).as_ref(),
            rid
        ])
    })?)
}

thread_local! {
    /// [`stored_data`]'s scratch for [`compact_json`], kept by the thread (the writer's) across
    /// requests: one allocation less per update. Not kept past 64 KiB.
    static STORED_DATA_SCRATCH: std::cell::RefCell<String> =
        const { std::cell::RefCell::new(String::new()) };
}

#[cfg(test)]
fn stored_data_scratch_capacity() -> usize {
    STORED_DATA_SCRATCH.with(|scratch| scratch.borrow().capacity())
}

/// What `rq_requests.data` holds for `r`: its compact form where it has one, else its full
/// JSON (see [`compact_json`]). Updates store it as batch adds do, so a rewritten row keeps
/// about its size (the full JSON repeats id, uniqueKey and url: ~160 bytes more per row, which
/// split the table's pages as consumers marked requests handled).
fn stored_data(r: &QueueRequest) -> std::borrow::Cow<'_, str> {
    let mut out = String::with_capacity(r.json.len());
    let compact = STORED_DATA_SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            let compact = compact_json(r, &mut scratch, &mut out);
            if scratch.capacity() > 64 << 10 {
                // (A huge request's scratch is not kept.)
                *scratch = String::new();
            }
            compact
        }
        Err(_) => compact_json(r, &mut String::with_capacity(r.json.len()), &mut out),
    });
    if compact {
        std::borrow::Cow::Owned(out)
    } else {
        std::borrow::Cow::Borrowed(&r.json)
    }
}

/// Where and by whom an existing request is rewritten (see [`update_existing`]).
struct Rewrite<'a> {
    num: i64,
    queue_id: &'a str,
    forefront: bool,
    client_key: &'a Option<String>,
    now: i64,
}

/// Replaces the stored request `existing` with `r` (handled, or back in the queue at the front
/// or the back, unlocked) and updates the queue's counters: the counters as deltas (no read of
/// the queue's row), then the request's row. Returns false, having changed nothing, when row
/// `w.num` is not the queue `w.queue_id` (a stale number: the queue was deleted).
fn update_existing(
    tx: &Transaction<'_>,
    w: &Rewrite<'_>,
    r: &QueueRequest,
    existing: &Existing,
) -> Result<bool> {
    let handles = r.handled_at.is_some();
    let handled_delta: i64 = match (handles, existing.handled) {
        (true, false) => 1,
        (false, true) => -1,
        _ => 0,
    };
    let (front_step, back_step) = match (handles, w.forefront) {
        (true, _) => (0i64, 0i64),
        (false, true) => (1, 0),
        (false, false) => (0, 1),
    };
    let args = params![
        handled_delta,
        front_step,
        back_step,
        w.client_key,
        w.now,
        r.json.len() as i64 - existing.size,
        w.num,
        w.queue_id,
        StorageKind::RequestQueue.code()
    ];
    if handles {
        if with_stmt(tx, SQL_REQUEST_WRITTEN, |s| s.execute(args))? == 0 {
            return Ok(false);
        }
        mark_handled(tx, r, existing.rid)?;
        if !existing.handled {
            remove_pending(
                tx,
                w.num,
                existing.rid,
                (existing.locked_until, existing.ord),
            )?;
        }
    } else {
        let Some((front, back)) = tx
            .prepare_cached(SQL_REQUEST_REQUEUED)?
            .query_row(args, |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })
            .optional()?
        else {
            return Ok(false);
        };
        let ord = if w.forefront { front } else { back };
        tx.prepare_cached(
            "UPDATE rq_requests SET handled_at = NULL, ord = ?1, unique_key = ?2, url = ?3, method = ?4,
                 retry_count = ?5, data = ?6
             WHERE rid = ?7",
        )?
        .execute(params![ord, r.unique_key, r.url, r.method, r.retry_count, stored_data(r).as_ref(), existing.rid])?;
        if existing.handled {
            insert_pending(tx, w.num, 0, None, &[(existing.rid, ord)])?;
        } else {
            move_pending(
                tx,
                w.num,
                existing.rid,
                (existing.locked_until, existing.ord),
                (0, ord),
                None,
                None,
            )?;
        }
    }
    Ok(true)
}

/// What a batch's request updates add to one queue's catalog row (see [`QueueDeltas`]).
#[derive(Clone, Debug, Default)]
struct QueueDelta {
    handled: i64,
    writes: i64,
    bytes: i64,
    /// The latest write's time: `modifiedAt` and `accessedAt`.
    now: i64,
    /// The first call's client (`Some(None)`: a call without clientKey); `None`: no call yet.
    first_client: Option<Option<String>>,
    /// A later call came from another client than the first, or one of them had no key: the
    /// calls alone make `hadMultipleClients` (the rules of [`track`], applied in order).
    multiple: bool,
}

impl QueueDelta {
    fn track(&mut self, client: &Option<String>) {
        match &self.first_client {
            None => self.first_client = Some(client.clone()),
            Some(first) => {
                if first.is_none() || client.is_none() || first != client {
                    self.multiple = true;
                }
            }
        }
    }

    fn add(&mut self, other: &QueueDelta) {
        self.handled += other.handled;
        self.writes += other.writes;
        self.bytes += other.bytes;
        self.now = self.now.max(other.now);
        if let Some(client) = &other.first_client {
            self.track(client);
        }
        self.multiple |= other.multiple;
    }
}

/// The queue counters and client tracking of a batch's request updates, written with one
/// `UPDATE storages` per queue before COMMIT instead of one per update (a [`BatchState`], see
/// `super::group`): a consumer's "handled" PUT then changes one row, the request's, and needs
/// no savepoint. Plain writes (everything that reads the queue's row) run after a flush.
#[derive(Default)]
pub(crate) struct QueueDeltas {
    /// Per queue number: what the batch's successful updates add.
    done: Vec<(i64, QueueDelta)>,
    /// What the running update adds (merged into `done` when it succeeds).
    job: Option<(i64, QueueDelta)>,
    /// Queues (number, id) found in this batch: only plain writes delete queues, and this
    /// state is dropped before any of them runs.
    checked: Vec<(i64, String)>,
}

impl QueueDeltas {
    /// Whether row `num` is still the queue `id` (numbers of deleted storages may be reused).
    fn check(&mut self, conn: &Connection, num: i64, id: &str) -> Result<bool> {
        if self.checked.iter().any(|(n, i)| *n == num && i == id) {
            return Ok(true);
        }
        const SQL: &str = "SELECT 1 FROM storages WHERE num = ?1 AND id = ?2 AND kind = ?3";
        let found = optional(with_stmt(conn, SQL, |s| {
            s.query_row(params![num, id, StorageKind::RequestQueue.code()], |_| {
                Ok(())
            })
        }))?
        .is_some();
        if found {
            self.checked.push((num, id.to_string()));
        }
        Ok(found)
    }
}

impl BatchState for QueueDeltas {
    fn job_succeeded(&mut self) {
        if let Some((num, delta)) = self.job.take() {
            match self.done.iter_mut().find(|(n, _)| *n == num) {
                Some((_, sum)) => sum.add(&delta),
                None => self.done.push((num, delta)),
            }
        }
    }

    fn job_failed(&mut self) {
        self.job = None;
    }

    fn flush(&mut self, tx: &Transaction<'_>) -> Result<()> {
        debug_assert!(self.job.is_none());
        if self.done.is_empty() {
            return Ok(());
        }
        // `hadMultipleClients` / `last_client_key` as `track` leaves them after the batch's
        // calls: ?2 = the calls alone make several clients, ?3 = the first call's client.
        const SQL: &str = "UPDATE storages SET handled_request_count = handled_request_count + ?1,
                 had_multiple_clients = CASE
                     WHEN had_multiple_clients != 0 THEN had_multiple_clients
                     WHEN last_client_key IS NULL THEN ?2
                     WHEN ?2 != 0 OR ?3 IS NULL OR last_client_key != ?3 THEN 1 ELSE 0 END,
                 last_client_key = CASE
                     WHEN had_multiple_clients = 0 AND last_client_key IS NULL THEN coalesce(?3, '')
                     ELSE last_client_key END,
                 modified_at = ?4, accessed_at = ?4, write_count = write_count + ?5,
                 storage_bytes = max(0, storage_bytes + ?6)
             WHERE num = ?7";
        for (num, d) in self.done.drain(..) {
            let changed = with_stmt(tx, SQL, |s| {
                s.execute(params![
                    d.handled,
                    d.multiple as i64,
                    d.first_client.flatten(),
                    d.now,
                    d.writes,
                    d.bytes,
                    num
                ])
            })?;
            if changed == 0 {
                // Cannot happen: queues are deleted by plain writes only, which run after a
                // flush.
                return Err(Error::Internal(anyhow::anyhow!(
                    "request queue {num} vanished within a write batch"
                )));
            }
        }
        Ok(())
    }
}

/// How a request's JSON is stored in `rq_requests.data`.
///
/// A request's `id`, `uniqueKey` and `url` have columns of their own, and the JSON the clients
/// read back (`request.json`, built by `parse_request`) starts with `{"id":"…"` and holds the
/// other two again as JSON strings. Stored in full they made a typical row ~450 bytes; a
/// *compact* `data` leaves them out (~160 bytes less per row, fewer pages written per batch and
/// read per merge):
///
/// `P1,P2;REST`: take the JSON without its leading `{"id":"…"` (`T0`), cut the first occurrence
/// of `"uniqueKey"` (the column's value in quotes) out of it at byte `P1` (`T1`), then the first
/// occurrence of `"url"` out of `T1` at byte `P2` (`REST`). Reading splices the same bytes back
/// at the same places, so the client gets back exactly the text it was given, whichever
/// occurrence was cut (escapes, key order and everything else untouched). A JSON whose values
/// are not found verbatim (escaped in the client's text) is stored in full, as every request
/// was before: full JSON starts with `{`, compact data with a digit, and both are read.
///
/// Request updates (`update_request`) store the same form ([`stored_data`]); the size a request
/// counts in `storageBytes` is always the length of its full JSON ([`SIZE_SQL`]).
fn compact_json(r: &QueueRequest, scratch: &mut String, out: &mut String) -> bool {
    /// Where `value` in quotes first occurs in `text` (a JSON text: quotes are few, so the
    /// candidates are its quotes).
    fn quoted(text: &str, value: &str) -> Option<usize> {
        let (bytes, value) = (text.as_bytes(), value.as_bytes());
        memchr::memchr_iter(b'"', bytes).find(|&at| {
            let end = at + 1 + value.len();
            bytes.get(end) == Some(&b'"') && &bytes[at + 1..end] == value
        })
    }
    fn push_number(out: &mut String, n: usize) {
        out.push_str(itoa::Buffer::new().format(n));
    }
    let json = r.json.as_str();
    let prefix_len = 8 + r.id.len();
    if json.len() < prefix_len
        || !json.starts_with("{\"id\":\"")
        || &json.as_bytes()[7..7 + r.id.len()] != r.id.as_bytes()
        || json.as_bytes()[prefix_len - 1] != b'"'
    {
        return false;
    }
    let t0 = &json[prefix_len..];
    let Some(p1) = quoted(t0, &r.unique_key) else {
        return false;
    };
    scratch.clear();
    scratch.push_str(&t0[..p1]);
    scratch.push_str(&t0[p1 + r.unique_key.len() + 2..]);
    let Some(p2) = quoted(scratch, &r.url) else {
        return false;
    };
    push_number(out, p1);
    out.push(',');
    push_number(out, p2);
    out.push(';');
    out.push_str(&scratch[..p2]);
    out.push_str(&scratch[p2 + r.url.len() + 2..]);
    true
}

/// The JSON of a stored request from its row (see [`compact_json`]).
fn request_json(id: &str, data: String, unique_key: &str, url: &str) -> Result<String> {
    if data.starts_with('{') {
        return Ok(data);
    }
    let bad = || Error::Internal(anyhow::anyhow!("stored request {id} is malformed"));
    let (header, rest) = data.split_once(';').ok_or_else(bad)?;
    let (p1, p2) = header.split_once(',').ok_or_else(bad)?;
    let p1: usize = p1.parse().map_err(|_| bad())?;
    let p2: usize = p2.parse().map_err(|_| bad())?;
    if p2 > rest.len() || !rest.is_char_boundary(p2) {
        return Err(bad());
    }
    let mut t1 = String::with_capacity(rest.len() + url.len() + 2);
    t1.push_str(&rest[..p2]);
    t1.push('"');
    t1.push_str(url);
    t1.push('"');
    t1.push_str(&rest[p2..]);
    if p1 > t1.len() || !t1.is_char_boundary(p1) {
        return Err(bad());
    }
    let mut out = String::with_capacity(t1.len() + id.len() + unique_key.len() + 10);
    out.push_str("{\"id\":\"");
    out.push_str(id);
    out.push('"');
    out.push_str(&t1[..p1]);
    out.push('"');
    out.push_str(unique_key);
    out.push('"');
    out.push_str(&t1[p1..]);
    Ok(out)
}

#[cfg(test)]
const SIZE_SQL: &str = size_sql!("");

/// Inserts `r`, which the queue does not hold (the caller checked): see [`insert_rows`].
fn insert(
    tx: &Transaction<'_>,
    recent: &RecentIds,
    q: &mut QueueRow,
    r: &QueueRequest,
    forefront: bool,
) -> Result<()> {
    insert_rows(tx, recent, q, &[r], forefront)
}

/// One multi-row INSERT per size in `sizes`: `head VALUES r0, r1, …` with `row(i)` the
/// placeholders of row `i` (the multi-row statements of batch adds, pending entries and runs
/// of ids).
fn multi_row_inserts(head: &str, sizes: &[usize], row: impl Fn(usize) -> String) -> Vec<String> {
    sizes
        .iter()
        .map(|&n| {
            let values: Vec<String> = (0..n).map(&row).collect();
            format!("{head} VALUES {}", values.join(", "))
        })
        .collect()
}

/// Rows one multi-row INSERT statement takes: a batch is written by statements of these sizes
/// (largest first), which share the per-statement costs (prepare-cache lookup, VDBE start,
/// reset) among their rows.
const INSERT_SIZES: [usize; 3] = [25, 8, 1];
/// Parameters of one inserted row (after `?1`, the queue, which every row shares).
const INSERT_COLUMNS: usize = 9;

/// A row's parameters: `rid`, `id`, `ord`, `handled_at`, `unique_key` (NULL: the `url`, as for
/// most requests), `url`, `method` (NULL: `GET`), `retry_count`, `data`. Each text bound is a
/// copy SQLite makes (and frees at the next bind): NULLs for the common values save two of five.
fn insert_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        multi_row_inserts(
            "INSERT INTO rq_requests (rid, queue, id, ord, handled_at, unique_key, url, method, retry_count, data)",
            &INSERT_SIZES,
            |row| {
                let p = |col: usize| format!("?{}", 1 + row * INSERT_COLUMNS + col);
                format!(
                    "({}, ?1, {}, {}, {}, coalesce({}, {}), {}, coalesce({}, 'GET'), {}, {})",
                    p(1),
                    p(2),
                    p(3),
                    p(4),
                    p(5),
                    p(6),
                    p(6),
                    p(7),
                    p(8),
                    p(9)
                )
            },
        )
    });
    let i = INSERT_SIZES
        .iter()
        .position(|&n| n == rows)
        .expect("a statement size");
    &all[i]
}

/// Inserts `rows` (new to the queue and distinct; the caller checked) in their order, with
/// `rid`s above every existing row and the merge watermark, positions from the queue's
/// counters, and records their ids in the map of recent ids.
fn insert_rows(
    tx: &Transaction<'_>,
    recent: &RecentIds,
    q: &mut QueueRow,
    rows: &[&QueueRequest],
    forefront: bool,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut rid: i64 = tx
        .prepare_cached(
            "SELECT max(coalesce((SELECT max(rid) FROM rq_requests), 0), (SELECT watermark FROM rq_merged))",
        )?
        .query_row([], |row| row.get(0))?;
    let mut rest = rows;
    let (mut compact, mut scratch) = (String::new(), String::new());
    let mut ends = Vec::with_capacity(INSERT_SIZES[0]);
    // (rid, position) of the new pending requests: their `rq_pending` entries.
    let mut pending = Vec::with_capacity(rows.len());
    while !rest.is_empty() {
        let n = INSERT_SIZES
            .into_iter()
            .find(|&n| n <= rest.len())
            .expect("size 1");
        let (chunk, tail) = rest.split_at(n);
        let first = rid + 1;
        // The stored `data` of each row (compact where possible), one buffer for the chunk.
        compact.clear();
        ends.clear();
        for r in chunk {
            if !compact_json(r, &mut scratch, &mut compact) {
                compact.push_str(&r.json);
            }
            ends.push(compact.len());
        }
        let mut stmt = tx.prepare_cached(insert_sql(n))?;
        stmt.raw_bind_parameter(1, q.num)?;
        for (i, r) in chunk.iter().enumerate() {
            let data = &compact[if i == 0 { 0 } else { ends[i - 1] }..ends[i]];
            rid += 1;
            let ord = q.next_ord(forefront);
            let at = 1 + i * INSERT_COLUMNS;
            stmt.raw_bind_parameter(at + 1, rid)?;
            stmt.raw_bind_parameter(at + 2, r.id.as_str())?;
            stmt.raw_bind_parameter(at + 3, ord)?;
            stmt.raw_bind_parameter(at + 4, r.handled_at)?;
            let unique_key = (r.unique_key != r.url).then_some(r.unique_key.as_str());
            stmt.raw_bind_parameter(at + 5, unique_key)?;
            stmt.raw_bind_parameter(at + 6, r.url.as_str())?;
            let method = (r.method != "GET").then_some(r.method.as_str());
            stmt.raw_bind_parameter(at + 7, method)?;
            stmt.raw_bind_parameter(at + 8, r.retry_count)?;
            stmt.raw_bind_parameter(at + 9, data)?;
            if r.handled_at.is_none() {
                pending.push((rid, ord));
            }
        }
        stmt.raw_execute()?;
        recent.insert_run(q.num, chunk.iter().map(|r| r.id.as_str()), first)?;
        for r in chunk.iter() {
            q.total += 1;
            if r.handled_at.is_some() {
                q.handled += 1;
            }
            q.writes += 1;
            q.bytes += r.json.len() as i64;
        }
        rest = tail;
    }
    insert_pending(tx, q.num, 0, None, &pending)?;
    q.modified = true;
    Ok(())
}

/// Clears locks that expired by `now`, putting each request where its lock said.
fn reap_expired(tx: &Transaction<'_>, q: &mut QueueRow, now: i64) -> Result<()> {
    let expired: Vec<(i64, i64, i64, Option<i64>)> = with_stmt(tx, SQL_EXPIRED, |s| {
        s.query_map(params![q.num, now], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect()
    })?;
    for (until, ord, rid, lapse_to) in expired {
        let to = match lapse_to {
            Some(to) => {
                let to = q.next_ord(to != 0);
                set_ord(tx, rid, to)?;
                to
            }
            None => ord,
        };
        move_pending(tx, q.num, rid, (until, ord), (0, to), None, None)?;
    }
    Ok(())
}

fn has_locked(conn: &Connection, num: i64, now: i64) -> Result<bool> {
    Ok(with_stmt(conn, SQL_HAS_LOCKED, |s| {
        s.query_row(params![num, now], |row| row.get(0))
    })?)
}

fn head_item(row: &rusqlite::Row<'_>) -> rusqlite::Result<HeadItem> {
    Ok(HeadItem {
        id: row.get(0)?,
        unique_key: row.get(1)?,
        url: row.get(2)?,
        method: row.get(3)?,
        retry_count: row.get(4)?,
        lock_expires_at: None,
    })
}

/// The non-locking head: available requests in queue order (including ones whose lock
/// expired but was not cleared yet, placed where the lapse puts them), then locked ones.
fn read_head(conn: &Connection, num: i64, limit: u64, now: i64) -> Result<Vec<HeadItem>> {
    let limit_i = limit.min(i64::MAX as u64) as i64;
    let available: Vec<(i64, HeadItem)> = conn
        .prepare_cached(SQL_AVAILABLE)?
        .query_map(params![num, limit_i], |row| {
            Ok((row.get(5)?, head_item(row)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let expired: Vec<(i64, Option<i64>, HeadItem)> = conn
        .prepare_cached(SQL_LAPSED)?
        .query_map(params![num, now], |row| {
            Ok((row.get(5)?, row.get(6)?, head_item(row)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut front = Vec::new();
    let mut stay = Vec::new();
    let mut back = Vec::new();
    for (ord, lapse_to, item) in expired {
        match lapse_to {
            Some(1) => front.push(item),
            Some(_) => back.push(item),
            None => stay.push((ord, item)),
        }
    }
    let mut middle = available;
    middle.extend(stay);
    middle.sort_by_key(|(ord, _)| *ord);
    let mut items: Vec<HeadItem> = front.into_iter().rev().collect();
    items.extend(middle.into_iter().map(|(_, item)| item));
    items.extend(back);
    items.truncate(limit as usize);
    if (items.len() as u64) < limit {
        let rest = limit_i - items.len() as i64;
        let locked = conn
            .prepare_cached(SQL_LOCKED)?
            .query_map(params![num, now, rest], |row| {
                let mut item = head_item(row)?;
                item.lock_expires_at = Some(row.get(5)?);
                Ok(item)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        items.extend(locked);
    }
    Ok(items)
}

impl SqliteStorage {
    /// `write` for anything that changes a queue (its requests or its catalog row): the queue's
    /// cached head is dropped after the commit, before the caller hears back.
    async fn queue_write<T, F>(&self, queue_id: String, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let guard = HeadInvalidation {
            storage: self.clone(),
            queue_id,
        };
        let (value, guard) = self.write(move |tx| Ok((f(tx)?, guard))).await?;
        drop(guard);
        Ok(value)
    }

    /// Counts a read call's client for `hadMultipleClients` (a write only when that changes).
    /// Returns the flag after the call.
    async fn track_read_client(
        &self,
        queue_id: &str,
        mut last_client: Option<String>,
        mut multiple: bool,
        client_key: Option<String>,
        now: i64,
    ) -> Result<bool> {
        if !track(&mut last_client, &mut multiple, &client_key) {
            return Ok(multiple);
        }
        let queue_id = queue_id.to_string();
        self.queue_write(queue_id.clone(), move |tx| {
            let mut q = QueueRow::load(tx, &queue_id)?;
            if q.track(&client_key) {
                q.save(tx, now)?;
            }
            Ok(q.multiple)
        })
        .await
    }

    /// A handled request's update in the queue with row number `num` (checked), as a batched
    /// write: the request's row is its only change, the queue's counters and client tracking
    /// go to the batch's [`QueueDeltas`]. Gives the request back (`Err`), having changed
    /// nothing, when the queue does not hold it (an insert, for the general path).
    #[allow(clippy::type_complexity)]
    async fn mark_handled(
        &self,
        queue_id: &str,
        num: i64,
        request: QueueRequest,
        client_key: Option<String>,
        now: i64,
    ) -> Result<std::result::Result<RequestOutcome, (QueueRequest, Option<String>)>> {
        let guard = HeadInvalidation {
            storage: self.clone(),
            queue_id: queue_id.to_string(),
        };
        let this = self.clone();
        let (value, guard) = self
            .write_batched(Changes::OneStatement, move |tx, batch| {
                let deltas = batch.state::<QueueDeltas>();
                if !deltas.check(tx, num, &guard.queue_id)? {
                    return Err(Error::NotFound("Request queue was not found".into()));
                }
                let r = &request;
                // A request `head/lock` handed out: its pending entry removed at the hint's key
                // (checked against `rid`) is the write's first change, and removes something
                // only if the request is still exactly the pending request of the hint (see
                // `LockHints`); then the row is rewritten by `rid`, no check needed.
                let hinted = match this.inner.lock_hints.take(num, &r.id) {
                    Some(hint) => {
                        let removed = with_stmt(tx, SQL_DELETE_PENDING, |s| {
                            s.execute(params![num, hint.locked_until, hint.ord, hint.rid])
                        })?;
                        (removed == 1).then_some(Existing {
                            rid: hint.rid,
                            handled: false,
                            locked_until: hint.locked_until,
                            lock_client: None,
                            size: hint.size,
                            ord: hint.ord,
                        })
                    }
                    None => None,
                };
                // The second change (this write has no savepoint): if it fails, SQLite rolled
                // the whole transaction back (only I/O errors, a full disk, ... can fail a
                // single-row UPDATE or DELETE), which fails the batch; anything else would
                // leave the queue half changed (a handled request in the head, or a pending
                // one out of it), so the batch must fail.
                let second = |change: Result<bool>, what: &str| -> Result<()> {
                    match change {
                        Ok(true) => Ok(()),
                        Err(err) if tx.is_autocommit() => Err(err),
                        Err(err) => panic!("{what} failed: {err}"),
                        Ok(false) => panic!("{what} found nothing"),
                    }
                };
                let existing = match hinted {
                    Some(existing) => {
                        second(
                            mark_handled(tx, r, existing.rid).map(|changed| changed == 1),
                            "marking a hinted request handled",
                        )?;
                        existing
                    }
                    None => {
                        let Some(mut existing) = find(tx, &this.inner.recent_ids, num, &r.id)?
                        else {
                            return Ok((Err((request, client_key)), guard));
                        };
                        lock_state(tx, &this.inner.lock_hints, num, &r.id, &mut existing)?;
                        // The write's first change: fails having changed nothing.
                        mark_handled(tx, r, existing.rid)?;
                        if !existing.handled {
                            let at = (existing.locked_until, existing.ord);
                            second(
                                remove_pending(tx, num, existing.rid, at).map(|_| true),
                                "removing a handled request's queue entry",
                            )?;
                        }
                        existing
                    }
                };
                let mut delta = QueueDelta {
                    handled: (!existing.handled) as i64,
                    writes: 1,
                    bytes: r.json.len() as i64 - existing.size,
                    now,
                    ..QueueDelta::default()
                };
                delta.track(&client_key);
                deltas.job = Some((num, delta));
                // The request's strings move into the answer (no copies).
                let QueueRequest { id, unique_key, .. } = request;
                let outcome = RequestOutcome {
                    request_id: id,
                    unique_key,
                    was_already_present: true,
                    was_already_handled: existing.handled,
                };
                Ok((Ok(outcome), guard))
            })
            .await?;
        drop(guard);
        Ok(value)
    }

    /// [`QueueStore::update_request`] with `hint`, the queue's row number if known: a hot
    /// request update (a consumer marking its request handled) is then the request's read and
    /// two UPDATEs, without reading the queue's row.
    pub(crate) async fn update_request_at(
        &self,
        queue_id: &str,
        hint: Option<i64>,
        request: QueueRequest,
        forefront: bool,
        client_key: Option<String>,
        now: i64,
    ) -> Result<RequestOutcome> {
        let queue_id = queue_id.to_string();
        let this = self.clone();
        self.queue_write(queue_id.clone(), move |tx| {
            let recent = &this.inner.recent_ids;
            let r = &request;
            let outcome = |present, handled| RequestOutcome {
                request_id: r.id.clone(),
                unique_key: r.unique_key.clone(),
                was_already_present: present,
                was_already_handled: handled,
            };
            let mut w = Rewrite {
                num: 0,
                queue_id: &queue_id,
                forefront,
                client_key: &client_key,
                now,
            };
            if let Some(num) = hint {
                if let Some(mut existing) = find(tx, recent, num, &r.id)? {
                    lock_state(tx, &this.inner.lock_hints, num, &r.id, &mut existing)?;
                    w.num = num;
                    if update_existing(tx, &w, r, &existing)? {
                        return Ok(outcome(true, existing.handled));
                    }
                    // A stale number (the queue is gone): nothing was changed.
                }
            }
            let mut q = QueueRow::load(tx, &queue_id)?;
            let Some(mut existing) = find(tx, recent, q.num, &r.id)? else {
                q.track(&client_key);
                insert(tx, recent, &mut q, r, forefront)?;
                q.save(tx, now)?;
                return Ok(outcome(false, false));
            };
            lock_state(tx, &this.inner.lock_hints, q.num, &r.id, &mut existing)?;
            w.num = q.num;
            if !update_existing(tx, &w, r, &existing)? {
                return Err(Error::Internal(anyhow::anyhow!(
                    "request queue {queue_id} vanished during a write"
                )));
            }
            Ok(outcome(true, existing.handled))
        })
        .await
    }
}

/// One page of a queue's requests in id order. Locked requests are few (bounded by the locks
/// held): they come from `rq_pending` and are sorted; the other listings walk `rq_ids` (so every
/// request of the queue must be merged, see [`RecentIds`]).
fn list_page(
    conn: &Connection,
    q: &QueueRow,
    after: Option<String>,
    limit: u64,
    filter: RequestFilter,
    now: i64,
) -> Result<RequestsPage> {
    let _snapshot = snapshot(conn)?;
    // All and pending requests: in id order in each run of `rq_ids` (?4), merged below.
    let sql = match filter {
        RequestFilter::All => {
            "SELECT i.id, r.data, r.unique_key, r.url FROM rq_ids i CROSS JOIN rq_requests r ON r.rid = i.rid
             WHERE i.run = ?4 AND i.queue = ?1 AND i.id > ?2 ORDER BY i.id LIMIT ?3 + 0"
        }
        RequestFilter::Pending => {
            "SELECT i.id, r.data, r.unique_key, r.url FROM rq_ids i CROSS JOIN rq_requests r ON r.rid = i.rid
             WHERE i.run = ?4 AND i.queue = ?1 AND i.id > ?2 AND r.handled_at IS NULL ORDER BY i.id LIMIT ?3 + 0"
        }
        RequestFilter::Locked => {
            "SELECT r.id, r.data, r.unique_key, r.url FROM rq_pending p CROSS JOIN rq_requests r ON r.rid = p.rid
             WHERE p.queue = ?1 AND p.locked_until > ?4 AND r.id > ?2
             ORDER BY r.id LIMIT ?3 + 0"
        }
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let after = after.unwrap_or_default();
    let fetch = (limit.min(i64::MAX as u64 - 1) + 1) as i64;
    let map = |row: &rusqlite::Row<'_>| {
        let id = row.get::<_, String>(0)?;
        let data = row.get::<_, String>(1)?;
        let key = row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?;
        let url = row.get_ref(3)?.as_str().map_err(rusqlite::Error::from)?;
        Ok(request_json(&id, data, key, url).map(|json| (id, json)))
    };
    let rows: Vec<Result<(String, String)>> = if filter == RequestFilter::Locked {
        stmt.query_map(params![q.num, after, fetch, now], map)?
            .collect::<rusqlite::Result<_>>()?
    } else {
        let mut rows = Vec::new();
        for run in id_runs(conn)? {
            for row in stmt.query_map(params![q.num, after, fetch, run], map)? {
                rows.push(row?);
            }
        }
        rows
    };
    let mut rows = rows.into_iter().collect::<Result<Vec<_>>>()?;
    if filter != RequestFilter::Locked {
        // A queue's ids are spread over the runs (each id in one run): the first `fetch` of
        // their union, in id order (`String` order is SQLite's BINARY order).
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        rows.truncate(fetch as usize);
    }
    let more = rows.len() as u64 > limit;
    let mut items = Vec::with_capacity(rows.len());
    let mut last = None;
    for (id, data) in rows.into_iter().take(limit as usize) {
        last = Some(id);
        items.push(data);
    }
    Ok(RequestsPage {
        items,
        next_after: if more { last } else { None },
    })
}

impl SqliteStorage {
    /// Starts a merge in the background once the map of recent ids is large enough (and, after
    /// it, the compactions it makes due).
    fn maybe_merge_recent_ids(&self) {
        let recent = &self.inner.recent_ids;
        if recent.len() >= recent.threshold() {
            self.spawn_background_merge(true);
        }
    }

    /// Runs a merge (`merge`) and then every compaction due, in the background, unless one
    /// runs already (it compacts whatever is due when it finishes its current step).
    fn spawn_background_merge(&self, merge: bool) {
        use std::sync::atomic::Ordering;
        if self.inner.recent_ids.merging.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let merged = if merge {
                this.merge_recent_ids().await
            } else {
                Ok(())
            };
            let done = match merged {
                Ok(()) => this.compact_runs().await,
                Err(err) => Err(err),
            };
            if let Err(err) = done {
                tracing::error!(error = %err, "merging request ids failed");
            }
            this.inner
                .recent_ids
                .merging
                .store(false, Ordering::Release);
        });
    }

    /// Moves the ids of every request added since the last merge into a new run of `rq_ids`
    /// (one sorted run, one transaction) and, once that committed, drops them from the map.
    pub(crate) async fn merge_recent_ids(&self) -> Result<()> {
        let this = self.clone();
        let started = std::time::Instant::now();
        let (watermark, ids, held, from_map) = self
            .write(move |tx| {
                let started = std::time::Instant::now();
                let old: i64 =
                    tx.query_row("SELECT watermark FROM rq_merged", [], |row| row.get(0))?;
                let new: i64 =
                    tx.query_row("SELECT coalesce(max(rid), 0) FROM rq_requests", [], |row| {
                        row.get(0)
                    })?;
                if new <= old {
                    return Ok((old, 0, started.elapsed(), false));
                }
                // The rows' ids, sorted here (SQLite's sorter cost ~5k instructions per id), then
                // appended to the new run in (queue, id) order. `IdKey`s order as SQLite orders
                // the ids (bytes, then length; ids hold no NUL).
                //
                // They come from the map when its entries in the range are exactly the rows:
                // every row above the watermark has its entry (see `RecentIds`), but entries of
                // rolled-back writes and of deleted requests stay. When the range holds a row
                // for each of its `new - old` rids (counted without decoding a record: rids
                // are distinct) and the map as many entries with distinct rids in it, both are
                // that whole range, one entry per row. Otherwise (a deleted request, a stale
                // entry) the rows themselves are read.
                let mut rows = this.inner.recent_ids.entries_between(old, new);
                let span = new - old;
                let exact = rows.len() as i64 == span && {
                    let mut seen = vec![0u64; (span as usize).div_ceil(64)];
                    let distinct = rows.iter().all(|&(_, _, rid)| {
                        let at = (rid - old - 1) as usize;
                        let (word, bit) = (at / 64, 1u64 << (at % 64));
                        let fresh = seen[word] & bit == 0;
                        seen[word] |= bit;
                        fresh
                    });
                    distinct
                        && tx
                            .prepare_cached(
                                "SELECT count(*) FROM rq_requests WHERE rid > ?1 AND rid <= ?2",
                            )?
                            .query_row(params![old, new], |row| row.get::<_, i64>(0))?
                            == span
                };
                #[cfg(test)]
                this.inner
                    .recent_ids
                    .merges_from_map
                    .fetch_add(exact as usize, std::sync::atomic::Ordering::Relaxed);
                if !exact {
                    rows.clear();
                    let mut stmt = tx.prepare_cached(
                        "SELECT queue, id, rid FROM rq_requests WHERE rid > ?1 AND rid <= ?2",
                    )?;
                    let mut found = stmt.query(params![old, new])?;
                    while let Some(row) = found.next()? {
                        let id = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
                        let key = IdKey::new(id).ok_or_else(|| {
                            Error::Internal(anyhow::anyhow!("request id {id:?} is too long"))
                        })?;
                        rows.push((row.get(0)?, key, row.get(2)?));
                    }
                }
                // (The key's bytes as a big-endian integer: the same order, one comparison.)
                rows.sort_unstable_by_key(|a| (a.0, u128::from_be_bytes(a.1 .0)));
                tx.execute("UPDATE rq_merged SET watermark = ?1", [new])?;
                if rows.is_empty() {
                    return Ok((new, 0, started.elapsed(), exact));
                }
                let run: i64 = tx.query_row(
                    "INSERT INTO rq_runs (run, ids)
                     SELECT coalesce(max(run), 0) + 1, ?1 FROM rq_runs RETURNING run",
                    [rows.len() as i64],
                    |row| row.get(0),
                )?;
                insert_ids(tx, run, &rows)?;
                // Before the commit, so the filter holds these ids before the map drops them.
                for chunk in rows.chunks(4096) {
                    let mut filters = this.inner.recent_ids.merged.lock();
                    let filter = filters.written(run, rows.len());
                    for (num, key, _) in chunk {
                        filter.add(*num, key.as_str());
                    }
                }
                Ok((new, rows.len(), started.elapsed(), exact))
            })
            .await?;
        self.inner.recent_ids.prune(watermark);
        if ids > 0 {
            tracing::info!(
                ids,
                from_map,
                write_ms = held.as_millis() as u64,
                total_ms = started.elapsed().as_millis() as u64,
                "merged request ids into a new run"
            );
        }
        Ok(())
    }

    /// Compacts runs of `rq_ids` while some size class (see [`run_level`]) holds `fan_in` runs
    /// or more: those runs' ids move into one new run, in transactions of at most
    /// `compact_chunk` ids (writes go on in between). After every transaction each id is in
    /// exactly one run (moved ids are inserted into the new run and deleted from their old one
    /// in the same transaction), so lookups, listings and a restart at any point see a valid
    /// set of runs; an interrupted compaction leaves a partly filled run, compacted later.
    pub(crate) async fn compact_runs(&self) -> Result<()> {
        let recent = &self.inner.recent_ids;
        loop {
            let (base, fan_in) = (recent.threshold(), recent.fan_in());
            let runs: Vec<(i64, i64)> = self
                .read(|conn| {
                    let mut stmt =
                        conn.prepare_cached("SELECT run, ids FROM rq_runs ORDER BY run")?;
                    let runs = stmt
                        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                        .collect::<rusqlite::Result<_>>()?;
                    Ok(runs)
                })
                .await?;
            let mut levels: std::collections::BTreeMap<u32, Vec<(i64, i64)>> = Default::default();
            for (run, ids) in runs {
                levels
                    .entry(run_level(ids, base, fan_in))
                    .or_default()
                    .push((run, ids));
            }
            let Some(sources) = levels.into_values().find(|runs| runs.len() >= fan_in) else {
                return Ok(());
            };
            let expected = sources.iter().map(|(_, ids)| ids.max(&0)).sum::<i64>() as usize;
            let sources = sources.into_iter().map(|(run, _)| run).collect();
            self.compact(Arc::new(sources), expected).await?;
        }
    }

    /// Moves every id of the runs `sources` (about `expected`) into one new run (see
    /// [`Self::compact_runs`]).
    async fn compact(&self, sources: Arc<Vec<i64>>, expected: usize) -> Result<()> {
        // Each source gives at most its share of the ids one transaction moves, so a
        // transaction moves at most `compact_chunk` ids whatever the fan-in.
        let chunk = (self.inner.recent_ids.compact_chunk() / sources.len().max(1)).max(1);
        let started = std::time::Instant::now();
        tracing::info!(
            runs = sources.len(),
            ids = expected,
            "compacting runs of request ids"
        );
        let (mut transactions, mut moved_ids, mut longest) =
            (0usize, 0usize, std::time::Duration::ZERO);
        let mut target: Option<i64> = None;
        let mut after: (i64, String) = (i64::MIN, String::new());
        #[cfg(test)]
        let mut chunks = 0;
        loop {
            let this = self.clone();
            let sources = sources.clone();
            let from = after.clone();
            let (run, bound, moved, held) = self
                .write(move |tx| {
                    let started = std::time::Instant::now();
                    let run = match target {
                        Some(run) => run,
                        None => tx.query_row(
                            "INSERT INTO rq_runs (run, ids)
                             SELECT coalesce(max(run), 0) + 1, 0 FROM rq_runs RETURNING run",
                            [],
                            |row| row.get(0),
                        )?,
                    };
                    // The next `chunk` ids of each source after `from`; past the smallest
                    // last id of a source that had more, a later transaction goes on.
                    let mut rows: Vec<(i64, IdKey, i64, i64)> = Vec::new();
                    let mut bound: Option<(i64, IdKey)> = None;
                    {
                        let mut stmt = tx.prepare_cached(
                            "SELECT queue, id, rid FROM rq_ids WHERE run = ?1 AND (queue, id) > (?2, ?3)
                             ORDER BY queue, id LIMIT ?4 + 0",
                        )?;
                        for &source in sources.iter() {
                            let mut found =
                                stmt.query(params![source, from.0, from.1, chunk as i64])?;
                            let mut read = 0;
                            let mut last = None;
                            while let Some(row) = found.next()? {
                                let id = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
                                let key = IdKey::new(id).ok_or_else(|| {
                                    Error::Internal(anyhow::anyhow!(
                                        "request id {id:?} is too long"
                                    ))
                                })?;
                                let num: i64 = row.get(0)?;
                                rows.push((num, key, row.get(2)?, source));
                                last = Some((num, key));
                                read += 1;
                            }
                            if read == chunk {
                                let last = last.expect("a full chunk");
                                if bound.is_none_or(|b| (last.0, last.1 .0) < (b.0, b.1 .0)) {
                                    bound = Some(last);
                                }
                            }
                        }
                    }
                    if let Some((num, key)) = bound {
                        rows.retain(|r| (r.0, r.1 .0) <= (num, key.0));
                    }
                    // Newest source first among equal ids (there are none: an id is in one
                    // run; a duplicate would only be a stale row, and the new run keeps one).
                    rows.sort_unstable_by(|a, b| (a.0, a.1 .0, b.3).cmp(&(b.0, b.1 .0, a.3)));
                    rows.dedup_by(|a, b| (a.0, a.1) == (b.0, b.1));
                    let moved: Vec<(i64, IdKey, i64)> =
                        rows.iter().map(|&(num, key, rid, _)| (num, key, rid)).collect();
                    insert_ids(tx, run, &moved)?;
                    for &source in sources.iter() {
                        let deleted = match bound {
                            Some((num, key)) => tx
                                .prepare_cached(
                                    "DELETE FROM rq_ids WHERE run = ?1 AND (queue, id) > (?2, ?3)
                                     AND (queue, id) <= (?4, ?5)",
                                )?
                                .execute(params![source, from.0, from.1, num, key.as_str()])?,
                            None => tx
                                .prepare_cached(
                                    "DELETE FROM rq_ids WHERE run = ?1 AND (queue, id) > (?2, ?3)",
                                )?
                                .execute(params![source, from.0, from.1])?,
                        };
                        if bound.is_none() {
                            tx.prepare_cached("DELETE FROM rq_runs WHERE run = ?1")?
                                .execute([source])?;
                        } else {
                            tx.prepare_cached("UPDATE rq_runs SET ids = ids - ?2 WHERE run = ?1")?
                                .execute(params![source, deleted as i64])?;
                        }
                    }
                    tx.prepare_cached("UPDATE rq_runs SET ids = ids + ?2 WHERE run = ?1")?
                        .execute(params![run, moved.len() as i64])?;
                    // Before the commit: the new run's filter holds its ids before they leave
                    // their old runs.
                    for part in moved.chunks(4096) {
                        let mut filters = this.inner.recent_ids.merged.lock();
                        let filter = filters.written(run, expected);
                        for (num, key, _) in part {
                            filter.add(*num, key.as_str());
                        }
                    }
                    Ok((
                        run,
                        bound.map(|(num, key)| (num, key.as_str().to_string())),
                        moved.len(),
                        started.elapsed(),
                    ))
                })
                .await?;
            target = Some(run);
            transactions += 1;
            moved_ids += moved;
            longest = longest.max(held);
            #[cfg(test)]
            {
                chunks += 1;
                let stop = self
                    .inner
                    .recent_ids
                    .compact_stop
                    .load(std::sync::atomic::Ordering::Relaxed);
                if chunks == stop {
                    return Err(Error::Internal(anyhow::anyhow!("compaction stopped")));
                }
            }
            match bound {
                Some(bound) => after = bound,
                None => break,
            }
        }
        let mut filters = self.inner.recent_ids.merged.lock();
        for source in sources.iter() {
            filters.runs.remove(source);
        }
        drop(filters);
        tracing::info!(
            runs = sources.len(),
            ids = moved_ids,
            transactions,
            longest_write_ms = longest.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "compacted runs of request ids"
        );
        Ok(())
    }

    /// Sets the fan-in of compactions, the ids one compaction transaction moves and after how
    /// many transactions compactions stop (0 = never; tests).
    #[cfg(test)]
    pub(crate) fn set_compaction(&self, fan_in: usize, chunk: usize, stop: usize) {
        use std::sync::atomic::Ordering;
        let recent = &self.inner.recent_ids;
        recent.fan_in.store(fan_in, Ordering::Relaxed);
        recent.compact_chunk.store(chunk, Ordering::Relaxed);
        recent.compact_stop.store(stop, Ordering::Relaxed);
    }

    /// Sets the number of recent ids at which a merge starts (tests).
    #[cfg(test)]
    pub(crate) fn set_merge_threshold(&self, entries: usize) {
        self.inner
            .recent_ids
            .merge_at
            .store(entries, std::sync::atomic::Ordering::Relaxed);
    }

    /// Entries in the map of recent ids (tests).
    #[cfg(test)]
    pub(crate) fn recent_id_count(&self) -> usize {
        self.inner.recent_ids.len()
    }
}

#[async_trait]
impl QueueStore for SqliteStorage {
    async fn add_requests(
        &self,
        queue_id: &str,
        requests: Vec<QueueRequest>,
        forefront: bool,
        client_key: Option<String>,
        now: i64,
    ) -> Result<Vec<RequestOutcome>> {
        let queue_id = queue_id.to_string();
        let this = self.clone();
        let outcomes = self
            .queue_write(queue_id.clone(), move |tx| {
                let recent = &this.inner.recent_ids;
                let mut q = QueueRow::load(tx, &queue_id)?;
                q.track(&client_key);
                let merged = merged_among(tx, recent, q.num, &requests)?;
                // (present, handled) per request; the new ones are inserted together.
                let mut states = Vec::with_capacity(requests.len());
                let mut fresh: Vec<&QueueRequest> = Vec::with_capacity(requests.len());
                for (r, merged) in requests.iter().zip(merged) {
                    if let Some(first) = fresh.iter().find(|f| f.id == r.id) {
                        // A repeat of a request this batch adds.
                        states.push((true, first.handled_at.is_some()));
                        continue;
                    }
                    // Most added requests are new: one statement told which ids `rq_ids` has
                    // (none when the filter of merged ids rules them all out), the map the rest.
                    let existing = if merged || recent.get(q.num, &r.id).is_some() {
                        find(tx, recent, q.num, &r.id)?
                    } else {
                        None
                    };
                    match existing {
                        Some(existing) => states.push((true, existing.handled)),
                        None => {
                            fresh.push(r);
                            states.push((false, false));
                        }
                    }
                }
                insert_rows(tx, recent, &mut q, &fresh, forefront)?;
                let outcomes: Vec<RequestOutcome> = requests
                    .into_iter()
                    .zip(states)
                    .map(|(r, (present, handled))| RequestOutcome {
                        request_id: r.id,
                        unique_key: r.unique_key,
                        was_already_present: present,
                        was_already_handled: handled,
                    })
                    .collect();
                q.save(tx, now)?;
                Ok(outcomes)
            })
            .await?;
        self.maybe_merge_recent_ids();
        Ok(outcomes)
    }

    async fn get_request(&self, queue_id: &str, request_id: &str) -> Result<Option<String>> {
        let (queue_id, request_id) = (queue_id.to_string(), request_id.to_string());
        let this = self.clone();
        self.read(move |conn| {
            let q = QueueRow::load(conn, &queue_id)?;
            let Some(rid) = locate(conn, &this.inner.recent_ids, q.num, &request_id)? else {
                return Ok(None);
            };
            let row = conn
                .prepare_cached("SELECT data, unique_key, url FROM rq_requests WHERE rid = ?1")?
                .query_row(params![rid], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                })
                .optional()?;
            row.map(|(data, key, url)| request_json(&request_id, data, &key, &url))
                .transpose()
        })
        .await
    }

    async fn update_request(
        &self,
        queue_id: &str,
        request: QueueRequest,
        forefront: bool,
        client_key: Option<String>,
        now: i64,
    ) -> Result<RequestOutcome> {
        // The queue's row number as the request's handler just resolved it (the catalog's
        // access cache), a hint checked inside the write (see `update_existing`).
        let hint = self
            .inner
            .caches
            .cached_access(StorageKind::RequestQueue, queue_id)
            .map(|access| access.num);
        if let (Some(num), Some(_)) = (hint, request.handled_at) {
            // The hot path (a consumer marking its request handled) changes one row.
            match self
                .mark_handled(queue_id, num, request, client_key, now)
                .await?
            {
                Ok(outcome) => return Ok(outcome),
                Err((request, client_key)) => {
                    return self
                        .update_request_at(queue_id, hint, request, forefront, client_key, now)
                        .await
                }
            }
        }
        self.update_request_at(queue_id, hint, request, forefront, client_key, now)
            .await
    }

    async fn delete_requests(
        &self,
        queue_id: &str,
        targets: Vec<DeleteTarget>,
        client_key: Option<String>,
        now: i64,
    ) -> Result<Vec<bool>> {
        let queue_id = queue_id.to_string();
        let this = self.clone();
        self.queue_write(queue_id.clone(), move |tx| {
            let recent = &this.inner.recent_ids;
            let mut q = QueueRow::load(tx, &queue_id)?;
            q.track(&client_key);
            let mut deleted = Vec::with_capacity(targets.len());
            for target in &targets {
                let Some(mut existing) = find(tx, recent, q.num, &target.id)? else {
                    deleted.push(false);
                    continue;
                };
                lock_state(tx, &this.inner.lock_hints, q.num, &target.id, &mut existing)?;
                tx.prepare_cached("DELETE FROM rq_requests WHERE rid = ?1")?
                    .execute([existing.rid])?;
                if !existing.handled {
                    remove_pending(
                        tx,
                        q.num,
                        existing.rid,
                        (existing.locked_until, existing.ord),
                    )?;
                }
                // Merged requests have an `rq_ids` row; a recent one's map entry goes stale.
                delete_id(tx, recent, q.num, &target.id)?;
                q.total -= 1;
                if existing.handled {
                    q.handled -= 1;
                }
                q.deletes += 1;
                q.bytes -= existing.size;
                q.modified = true;
                deleted.push(true);
            }
            q.save(tx, now)?;
            Ok(deleted)
        })
        .await
    }

    async fn list_head(
        &self,
        queue_id: &str,
        limit: u64,
        client_key: Option<String>,
        now: i64,
    ) -> Result<ListedHead> {
        let cache = &self.inner.queue_heads;
        let entry = match cache.get(queue_id, limit, now) {
            Some(entry) => entry,
            None => {
                let generation = cache.generation();
                let id = queue_id.to_string();
                let entry = self
                    .read(move |conn| {
                        let q = QueueRow::load(conn, &id)?;
                        let items = read_head(conn, q.num, limit, now)?;
                        let valid_until = next_lock_expiry(conn, q.num, now)?.unwrap_or(i64::MAX);
                        Ok(CachedHead {
                            entries: Arc::new(HeadEntries::from_items(&items)),
                            limit,
                            read_at: now,
                            valid_until,
                            modified_at: q.modified_at,
                            multiple: q.multiple,
                            last_client: q.last_client,
                        })
                    })
                    .await?;
                cache.insert(queue_id, generation, entry.clone());
                entry
            }
        };
        let multiple = self
            .track_read_client(queue_id, entry.last_client, entry.multiple, client_key, now)
            .await?;
        Ok(ListedHead {
            count: entry.entries.len().min(limit as usize),
            entries: entry.entries,
            queue_modified_at: entry.modified_at,
            had_multiple_clients: multiple,
        })
    }

    async fn lock_head(
        &self,
        queue_id: &str,
        limit: u64,
        lock_ms: i64,
        client_key: Option<String>,
        now: i64,
    ) -> Result<Head> {
        let queue_id = queue_id.to_string();
        let this = self.clone();
        self.queue_write(queue_id.clone(), move |tx| {
            let mut q = QueueRow::load(tx, &queue_id)?;
            q.track(&client_key);
            reap_expired(tx, &mut q, now)?;
            let expires = now + lock_ms;
            let mut items: Vec<(LockHint, HeadItem)> = with_stmt(tx, SQL_LOCKABLE, |s| {
                s.query_map(params![q.num, limit.min(i64::MAX as u64) as i64], |row| {
                    let item = head_item(row)?;
                    let data = row.get_ref(6)?.as_bytes()?;
                    let hint = LockHint {
                        rid: row.get(5)?,
                        size: stored_size(&item.id, &item.unique_key, &item.url, data),
                        locked_until: expires,
                        ord: row.get(7)?,
                    };
                    Ok((hint, item))
                })?
                .collect()
            })?;
            if let Some((last, _)) = items.last() {
                // The requests taken are the queue's first available ones: one key range of
                // `rq_pending`, re-added under the lock's expiry.
                const SQL_TAKE: &str =
                    "DELETE FROM rq_pending WHERE queue = ?1 AND locked_until = 0 AND ord <= ?2";
                let taken = with_stmt(tx, SQL_TAKE, |s| s.execute(params![q.num, last.ord]))?;
                if taken != items.len() {
                    return Err(Error::Internal(anyhow::anyhow!(
                        "queue {} head changed while locking it",
                        q.num
                    )));
                }
                let entries: Vec<(i64, i64)> =
                    items.iter().map(|(hint, _)| (hint.rid, hint.ord)).collect();
                let holder = client_key.as_deref().unwrap_or_default();
                insert_pending(tx, q.num, expires, Some(holder), &entries)?;
            }
            for (_, item) in &mut items {
                item.lock_expires_at = Some(expires);
            }
            this.inner.lock_hints.insert(
                q.num,
                items.iter().map(|(hint, item)| (item.id.as_str(), *hint)),
            );
            // A lock of at least a millisecond was just taken, unless nothing was available.
            let locked = (!items.is_empty() && lock_ms > 0) || has_locked(tx, q.num, now)?;
            q.save(tx, now)?;
            Ok(Head {
                items: items.into_iter().map(|(_, item)| item).collect(),
                queue_modified_at: q.modified_at,
                had_multiple_clients: q.multiple,
                queue_has_locked_requests: locked,
            })
        })
        .await
    }

    async fn prolong_lock(
        &self,
        queue_id: &str,
        request_id: &str,
        lock_ms: i64,
        forefront: bool,
        client_key: Option<String>,
        now: i64,
    ) -> Result<LockOutcome> {
        let (queue_id, request_id) = (queue_id.to_string(), request_id.to_string());
        let this = self.clone();
        self.queue_write(queue_id.clone(), move |tx| {
            let mut q = QueueRow::load(tx, &queue_id)?;
            q.track(&client_key);
            let holder = client_key.unwrap_or_default();
            let found = locked_request(tx, &this, q.num, &request_id)?;
            let outcome = match found {
                None => LockOutcome::NotFound,
                Some(r) if r.handled => LockOutcome::Handled,
                Some(r) if r.locked_until > now && r.lock_client.as_deref() != Some(&holder) => {
                    LockOutcome::LockedByOther
                }
                Some(r) => {
                    let expires = now + lock_ms;
                    move_pending(
                        tx,
                        q.num,
                        r.rid,
                        (r.locked_until, r.ord),
                        (expires, r.ord),
                        Some(&holder),
                        Some(forefront as i64),
                    )?;
                    let hint = LockHint {
                        rid: r.rid,
                        size: r.size,
                        locked_until: expires,
                        ord: r.ord,
                    };
                    this.inner
                        .lock_hints
                        .insert(q.num, std::iter::once((request_id.clone(), hint)));
                    LockOutcome::Ok(Some(expires))
                }
            };
            q.save(tx, now)?;
            Ok(outcome)
        })
        .await
    }

    async fn delete_lock(
        &self,
        queue_id: &str,
        request_id: &str,
        forefront: bool,
        client_key: Option<String>,
        now: i64,
    ) -> Result<LockOutcome> {
        let (queue_id, request_id) = (queue_id.to_string(), request_id.to_string());
        let this = self.clone();
        self.queue_write(queue_id.clone(), move |tx| {
            let mut q = QueueRow::load(tx, &queue_id)?;
            q.track(&client_key);
            let holder = client_key.unwrap_or_default();
            let found = locked_request(tx, &this, q.num, &request_id)?;
            let outcome = match found {
                None => LockOutcome::NotFound,
                Some(r) if r.handled => LockOutcome::Handled,
                Some(r) if r.locked_until == 0 => LockOutcome::NotLocked,
                Some(r) if r.lock_client.as_deref() != Some(&holder) => {
                    if r.locked_until > now {
                        LockOutcome::LockedByOther
                    } else {
                        LockOutcome::NotLocked
                    }
                }
                Some(r) => {
                    let ord = q.next_ord(forefront);
                    move_pending(
                        tx,
                        q.num,
                        r.rid,
                        (r.locked_until, r.ord),
                        (0, ord),
                        None,
                        None,
                    )?;
                    set_ord(tx, r.rid, ord)?;
                    this.inner.lock_hints.take(q.num, &request_id);
                    LockOutcome::Ok(None)
                }
            };
            q.save(tx, now)?;
            Ok(outcome)
        })
        .await
    }

    async fn unlock_requests(
        &self,
        queue_id: &str,
        client_key: Option<String>,
        now: i64,
    ) -> Result<u64> {
        let queue_id = queue_id.to_string();
        self.queue_write(queue_id.clone(), move |tx| {
            let mut q = QueueRow::load(tx, &queue_id)?;
            q.track(&client_key);
            let holder = client_key.unwrap_or_default();
            let held: Vec<(i64, i64)> = tx
                .prepare_cached(SQL_UNLOCKABLE)?
                .query_map(params![q.num, holder], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut count = 0;
            let mut stmt = tx.prepare_cached(SQL_MOVE_PENDING)?;
            for (until, ord) in held {
                stmt.execute(params![
                    0,
                    ord,
                    None::<&str>,
                    None::<i64>,
                    q.num,
                    until,
                    ord
                ])?;
                if until > now {
                    count += 1;
                }
            }
            drop(stmt);
            q.save(tx, now)?;
            Ok(count)
        })
        .await
    }

    async fn list_requests(
        &self,
        queue_id: &str,
        after: Option<String>,
        limit: u64,
        filter: RequestFilter,
        client_key: Option<String>,
        now: i64,
    ) -> Result<RequestsPage> {
        // Requests added since the last merge are not in `rq_ids` yet: a listing in id order
        // of a queue that has some merges first (see `RecentIds`; the check runs before the
        // listing's own read, so every request acknowledged before this call is listed).
        let mut merged = filter == RequestFilter::Locked;
        let (row, page) = loop {
            let (id, after) = (queue_id.to_string(), after.clone());
            let this = self.clone();
            let listed = self
                .read(move |conn| {
                    let q = QueueRow::load(conn, &id)?;
                    if !merged && this.inner.recent_ids.has_queue(q.num) {
                        return Ok(None);
                    }
                    list_page(conn, &q, after, limit, filter, now).map(|page| Some((q, page)))
                })
                .await?;
            match listed {
                Some(listed) => break listed,
                None => {
                    self.merge_recent_ids().await?;
                    // The merge added a run: compact in the background if that made it due.
                    self.spawn_background_merge(false);
                    merged = true;
                }
            }
        };
        self.track_read_client(queue_id, row.last_client, row.multiple, client_key, now)
            .await?;
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteOptions;
    use crate::{Storage, StorageCatalog};
    use serde_json::json;
    use troupe_model::queue::parse_request;

    fn req(key: &str) -> QueueRequest {
        parse_request(
            json!({"url": format!("https://example.com/{key}"), "uniqueKey": key}),
            None,
        )
        .unwrap()
    }

    /// Waits (with a generous deadline) until the Bloom filters of every run of ids are
    /// filled (in the background at start-up).
    fn wait_for_run_filters(storage: &SqliteStorage) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !storage
            .inner
            .recent_ids
            .merged
            .lock()
            .runs
            .values()
            .all(|f| f.ready)
        {
            assert!(std::time::Instant::now() < deadline, "filters never ready");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// [`req`] marked handled.
    fn handled_req(key: &str) -> QueueRequest {
        parse_request(
            json!({"url": format!("https://example.com/{key}"), "uniqueKey": key,
                   "handledAt": "2026-01-01T00:00:00.000Z"}),
            None,
        )
        .unwrap()
    }

    /// A new queue holding the requests `keys(0..n)`, added by client "a": its id and number.
    async fn seeded_queue(storage: &SqliteStorage, n: usize) -> (String, i64) {
        let q = new_queue(storage).await;
        let reqs = keys(0..n).iter().map(|k| req(k)).collect();
        storage
            .add_requests(&q, reqs, false, Some("a".into()), 1)
            .await
            .unwrap();
        let num = storage
            .get_storage(StorageKind::RequestQueue, &q)
            .await
            .unwrap()
            .unwrap()
            .num;
        (q, num)
    }

    /// The queue's `storageBytes` as the catalog reports it.
    async fn queue_bytes(storage: &SqliteStorage, queue: &str) -> usize {
        storage
            .get_storage(StorageKind::RequestQueue, queue)
            .await
            .unwrap()
            .unwrap()
            .storage_bytes as usize
    }

    async fn new_queue(storage: &dyn Storage) -> String {
        crate::conformance::new_storage(storage, StorageKind::RequestQueue)
            .await
            .id
    }

    /// (key, wasAlreadyPresent) of adding `keys`.
    async fn add(storage: &SqliteStorage, queue: &str, keys: &[String]) -> Vec<bool> {
        storage
            .add_requests(queue, keys.iter().map(|k| req(k)).collect(), false, None, 1)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.was_already_present)
            .collect()
    }

    /// Whether each request of `keys` was found and deleted (by its id, without clientKey).
    async fn delete_keys(storage: &SqliteStorage, queue: &str, keys: &[&str]) -> Vec<bool> {
        let targets = keys
            .iter()
            .map(|key| DeleteTarget {
                id: troupe_model::queue::request_id(key),
                unique_key: None,
            })
            .collect();
        storage
            .delete_requests(queue, targets, None, 1)
            .await
            .unwrap()
    }

    /// A storage whose recent ids merge only when the test says so, and two new queues (the
    /// data dir comes along for restarts).
    async fn unmerged_with_two_queues() -> (tempfile::TempDir, SqliteStorage, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        storage.set_merge_threshold(usize::MAX);
        let queue = new_queue(&storage).await;
        let other = new_queue(&storage).await;
        (dir, storage, queue, other)
    }

    fn keys(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("k{i}")).collect()
    }

    async fn listed(storage: &SqliteStorage, queue: &str) -> Vec<String> {
        let page = storage
            .list_requests(queue, None, 1000, RequestFilter::All, None, 1)
            .await
            .unwrap();
        page.items
            .iter()
            .map(|data| {
                let v: serde_json::Value = serde_json::from_str(data).unwrap();
                v["uniqueKey"].as_str().unwrap().to_string()
            })
            .collect()
    }

    /// Requests as clients send them, odd ones included: escapes (values not stored compact),
    /// unicode, key order, the url or uniqueKey repeated elsewhere in the request, large
    /// userData.
    fn odd_requests() -> Vec<QueueRequest> {
        let big = "x".repeat(200_000);
        let texts = [
            r#"{"url":"https://a.example/1","uniqueKey":"k1"}"#.to_string(),
            r#"{"uniqueKey":"https://a.example/2","url":"https://a.example/2","method":"POST","userData":{"label":"L","n":[1,2.50,-0e3]}}"#.to_string(),
            r#"{ "userData" : {"url": "https://a.example/3", "uniqueKey": "k3"}, "url" : "https://a.example/3", "uniqueKey" : "k3" }"#.to_string(),
            r#"{"url":"https:\/\/a.example\/4","uniqueKey":"k4"}"#.to_string(),
            r#"{"url":"https://a.example/5","uniqueKey":"k\"5\\"}"#.to_string(),
            r#"{"url":"https://a.example/\u00e9","uniqueKey":"\u00e9","x":"é"}"#.to_string(),
            r#"{"url":"https://a.example/é/日本","uniqueKey":"é/日本","userData":{"é":"日本 \ud83d\ude00"}}"#.to_string(),
            r#"{"id":null,"handledAt":"2026-08-21 10:23:31.607000+00:00","url":"https://a.example/7","uniqueKey":"","retryCount":3}"#.to_string(),
            r#"{"url":"https://a.example/8","uniqueKey":"https://a.example/8#x","note":"https://a.example/8"}"#.to_string(),
            r#"{"uniqueKey":"https://a.example/9","url":"https://a.example/9","url2":"\"https://a.example/9\""}"#.to_string(),
            r#"{"url":"https://a.example/10","uniqueKey":"s\"","a":"s\"","b":"\"s\""}"#.to_string(),
            format!(r#"{{"url":"https://a.example/11","uniqueKey":"k11","userData":{{"big":"{big}","url":"https://a.example/11"}}}}"#),
            r#"{"url":"https://a.example/12","uniqueKey":"1,2;x","userData":{}}"#.to_string(),
        ];
        texts
            .iter()
            .map(|text| {
                let raw: &serde_json::value::RawValue = serde_json::from_str(text).unwrap();
                troupe_model::queue::parse_request_raw(raw, None).unwrap()
            })
            .collect()
    }

    /// `stored_data` (the thread's kept scratch) stores what `compact_json` with a fresh scratch
    /// gives, request after request in any order, and does not keep a huge request's scratch.
    #[test]
    fn stored_data_reuses_its_scratch_exactly() {
        let requests = odd_requests();
        for round in 0..2 {
            for r in requests.iter().chain(requests.iter().rev()) {
                let mut want = String::new();
                let compact = compact_json(r, &mut String::new(), &mut want);
                let got = stored_data(r);
                if compact {
                    assert_eq!(got, want.as_str(), "round {round}: {}", r.json);
                } else {
                    assert_eq!(got, r.json.as_str(), "round {round}");
                }
            }
        }
        // Right after the 200 kB request, the thread keeps no scratch of that size.
        let big = requests.iter().find(|r| r.json.len() > 100_000).unwrap();
        let _ = stored_data(big);
        assert!(stored_data_scratch_capacity() <= 64 << 10);
        let _ = stored_data(&requests[0]);
        assert!(stored_data_scratch_capacity() > 0);
    }

    /// A request's JSON comes back byte for byte from its stored form, compact or full, and
    /// `SIZE_SQL` gives the full JSON's length from the row.
    #[test]
    fn stored_request_json_round_trips() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id TEXT, unique_key TEXT, url TEXT, data TEXT)")
            .unwrap();
        let mut full = Vec::new();
        for (i, r) in odd_requests().into_iter().enumerate() {
            let mut stored = String::new();
            let compact = compact_json(&r, &mut String::new(), &mut stored);
            if compact {
                assert!(!stored.starts_with('{'), "{stored}");
                assert!(
                    stored.len() + r.unique_key.len() + r.url.len() + r.id.len() + 4
                        <= r.json.len() + 20
                );
            } else {
                full.push(i);
                stored = r.json.clone();
            }
            let back = request_json(&r.id, stored.clone(), &r.unique_key, &r.url).unwrap();
            assert_eq!(back, r.json, "{stored}");
            conn.execute("DELETE FROM t", []).unwrap();
            conn.execute(
                "INSERT INTO t VALUES (?1, ?2, ?3, ?4)",
                params![r.id, r.unique_key, r.url, stored],
            )
            .unwrap();
            let size: i64 = conn
                .query_row(&format!("SELECT {SIZE_SQL} FROM t"), [], |row| row.get(0))
                .unwrap();
            assert_eq!(size as usize, r.json.len(), "{}", r.json);
            assert_eq!(
                stored_size(&r.id, &r.unique_key, &r.url, stored.as_bytes()),
                size
            );
        }
        // Malformed data counts as `size_sql!` says (no `;`; characters before it).
        for data in ["", "12", "é,1;ab", "x;y;z", "{\"a\":1}"] {
            conn.execute("DELETE FROM t", []).unwrap();
            conn.execute("INSERT INTO t VALUES ('i', 'k', 'u', ?1)", params![data])
                .unwrap();
            let size: i64 = conn
                .query_row(&format!("SELECT {SIZE_SQL} FROM t"), [], |row| row.get(0))
                .unwrap();
            assert_eq!(stored_size("i", "k", "u", data.as_bytes()), size, "{data}");
        }
        // Values escaped in the client's text are stored in full; the others compact.
        assert_eq!(full, [3, 4, 5, 10]);
        for bad in ["", "1;x", "a,b;{}", "5,0;x", "0,9;x"] {
            assert!(
                request_json("id", bad.to_string(), "k", "u").is_err(),
                "{bad}"
            );
        }
    }

    /// Stored compact or in full (as before session 6: a database written by an older
    /// version), requests read back exactly (get, listing), deduplicate, and count their full
    /// JSON in `storageBytes` through updates and deletes.
    #[tokio::test]
    async fn compact_and_full_rows_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        let queue = new_queue(&storage).await;
        let requests = odd_requests();
        let outcomes = storage
            .add_requests(&queue, requests.clone(), false, None, 1)
            .await
            .unwrap();
        assert!(outcomes.iter().all(|o| !o.was_already_present));
        // Half of the rows rewritten as older versions stored them (full JSON).
        storage
            .write_blocking(|tx| {
                for r in requests.iter().step_by(2) {
                    tx.execute(
                        "UPDATE rq_requests SET data = ?1 WHERE id = ?2",
                        params![r.json, r.id],
                    )?;
                }
                Ok(())
            })
            .unwrap();
        let full: i64 = storage
            .read_blocking(|conn| {
                Ok(conn.query_row(
                    "SELECT count(*) FROM rq_requests WHERE substr(data, 1, 1) = '{'",
                    [],
                    |row| row.get(0),
                )?)
            })
            .unwrap();
        // Rows 0, 2, …, 12 and the escaped 3 and 5.
        assert_eq!(full, 9);
        let total_bytes: usize = requests.iter().map(|r| r.json.len()).sum();
        assert_eq!(queue_bytes(&storage, &queue).await, total_bytes);
        check_read_back(&storage, &queue, &requests).await;
        // After a restart (the map of recent ids rebuilt from the rows) and a merge.
        drop(storage);
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        check_read_back(&storage, &queue, &requests).await;
        storage.merge_recent_ids().await.unwrap();
        check_read_back(&storage, &queue, &requests).await;
        // Updates replace what each row counts, compact or full; deletes remove it.
        let ascii: Vec<&QueueRequest> = requests.iter().filter(|r| r.json.is_ascii()).collect();
        let mut expected = queue_bytes(&storage, &queue).await as i64;
        for r in &ascii[..4] {
            let mut handled = (*r).clone();
            handled.handled_at = Some(5);
            handled.json = r
                .json
                .replacen('{', "{\"handledAt\":\"1970-01-01T00:00:00.005Z\",", 1);
            storage
                .update_request(&queue, handled.clone(), false, None, 3)
                .await
                .unwrap();
            expected += handled.json.len() as i64 - r.json.len() as i64;
            assert_eq!(queue_bytes(&storage, &queue).await as i64, expected);
            assert_eq!(
                storage.get_request(&queue, &r.id).await.unwrap(),
                Some(handled.json.clone())
            );
        }
        let targets: Vec<DeleteTarget> = ascii[4..]
            .iter()
            .map(|r| DeleteTarget {
                id: r.id.clone(),
                unique_key: None,
            })
            .collect();
        storage
            .delete_requests(&queue, targets, None, 4)
            .await
            .unwrap();
        expected -= ascii[4..].iter().map(|r| r.json.len() as i64).sum::<i64>();
        assert_eq!(queue_bytes(&storage, &queue).await as i64, expected);
    }

    /// Request updates store their request as batch adds do (compact where it can be, in full
    /// where a value is escaped): the consumer's handled PUT of a locked request (the hinted
    /// path), a handled update without a hint and a request put back in the queue all read
    /// back exactly (get, listing, dedup) and count their full JSON in `storageBytes`.
    #[tokio::test]
    async fn updated_requests_are_stored_compact() {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        let queue = new_queue(&storage).await;
        let requests = odd_requests();
        storage
            .add_requests(&queue, requests.clone(), false, None, 1)
            .await
            .unwrap();
        // The pending ones locked by "a" (the handled PUTs of these take the hinted path).
        let locked = storage
            .lock_head(&queue, 25, 60_000, Some("a".into()), 2)
            .await
            .unwrap();
        assert_eq!(
            locked.items.len(),
            requests.iter().filter(|r| r.handled_at.is_none()).count()
        );
        let with = |r: &QueueRequest, extra: &str| {
            let text = format!("{},{extra}}}", &r.json[..r.json.len() - 1]);
            let raw: &serde_json::value::RawValue = serde_json::from_str(&text).unwrap();
            troupe_model::queue::parse_request_raw(raw, None).unwrap()
        };
        let handled = r#""handledAt":"2026-01-01T00:00:00.000Z""#;
        let stored = |storage: SqliteStorage| async move {
            storage
                .read_blocking(|conn| {
                    let mut stmt =
                        conn.prepare("SELECT id, substr(data, 1, 1) = '{' FROM rq_requests")?;
                    let rows = stmt
                        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                        .collect::<rusqlite::Result<Vec<(String, bool)>>>()?;
                    Ok(rows)
                })
                .unwrap()
        };
        // Even ones handled, odd ones back in the queue with more userData; then the other way
        // round (no hints left: the general paths).
        for round in 0..2 {
            let now: Vec<QueueRequest> = requests
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    if i % 2 == round {
                        with(r, handled)
                    } else {
                        with(
                            r,
                            &format!(r#""retryCount":{round},"x":"https://a.example/{i}""#),
                        )
                    }
                })
                .collect();
            for r in &now {
                let outcome = storage
                    .update_request(&queue, r.clone(), false, Some("a".into()), 3 + round as i64)
                    .await
                    .unwrap();
                assert!(outcome.was_already_present);
            }
            let full: Vec<String> = stored(storage.clone())
                .await
                .into_iter()
                .filter(|(_, full)| *full)
                .map(|(id, _)| id)
                .collect();
            let mut escaped: Vec<String> =
                [3, 4, 5, 10].iter().map(|&i| now[i].id.clone()).collect();
            let mut full = full;
            full.sort();
            escaped.sort();
            assert_eq!(full, escaped, "round {round}");
            assert_eq!(
                queue_bytes(&storage, &queue).await,
                now.iter().map(|r| r.json.len()).sum::<usize>()
            );
            check_read_back(&storage, &queue, &now).await;
            let info = storage
                .get_storage(StorageKind::RequestQueue, &queue)
                .await
                .unwrap()
                .unwrap();
            let handled_count = now.iter().filter(|r| r.handled_at.is_some()).count() as u64;
            assert_eq!(info.handled_request_count, handled_count, "round {round}");
            let id = queue.clone();
            let num: i64 = storage
                .read_blocking(move |conn| {
                    Ok(
                        conn.query_row("SELECT num FROM storages WHERE id = ?1", [id], |row| {
                            row.get(0)
                        })?,
                    )
                })
                .unwrap();
            let pending = now.iter().filter(|r| r.handled_at.is_none()).count();
            assert_eq!(check_pending(&storage, num).await.len(), pending);
        }
    }

    async fn check_read_back(storage: &SqliteStorage, queue: &str, requests: &[QueueRequest]) {
        for r in requests {
            assert_eq!(
                storage.get_request(queue, &r.id).await.unwrap().as_deref(),
                Some(r.json.as_str())
            );
        }
        let page = storage
            .list_requests(queue, None, 1000, RequestFilter::All, None, 1)
            .await
            .unwrap();
        let mut want: Vec<(&str, &str)> = requests
            .iter()
            .map(|r| (r.id.as_str(), r.json.as_str()))
            .collect();
        want.sort();
        let got: Vec<&str> = page.items.iter().map(String::as_str).collect();
        assert_eq!(got, want.iter().map(|(_, j)| *j).collect::<Vec<_>>());
        let again = storage
            .add_requests(queue, requests.to_vec(), true, None, 2)
            .await
            .unwrap();
        for (o, r) in again.iter().zip(requests) {
            assert!(o.was_already_present);
            assert_eq!(o.was_already_handled, r.handled_at.is_some());
        }
    }
    /// The filter of merged ids never misses an id it was given, across its growing blocks,
    /// and rarely claims one it was not; it switches itself off (always "maybe") past its
    /// last block.
    #[test]
    fn merged_filter_has_no_false_negatives() {
        let mut filter = MergedFilter::default();
        assert!(filter.may_hold(1, "x"), "not ready: maybe");
        filter.ready = true;
        assert!(!filter.may_hold(1, "x"));
        let n = FILTER_FIRST_IDS * 3 + 10;
        let id = |i: usize| troupe_model::queue::request_id(&i.to_string());
        for i in 0..n {
            filter.add((i % 3) as i64, &id(i));
        }
        assert_eq!(filter.blocks.len(), 3);
        assert_eq!(
            filter.bytes(),
            7 * FILTER_FIRST_IDS * FILTER_BITS_PER_ID / 8
        );
        for i in 0..n {
            assert!(filter.may_hold((i % 3) as i64, &id(i)), "{i}");
        }
        // The same id in another queue is another pair.
        let others = (0..n)
            .filter(|&i| filter.may_hold((i % 3) as i64 + 3, &id(i)))
            .count();
        let fresh = (n..n + 100_000)
            .filter(|&i| filter.may_hold(1, &id(i)))
            .count();
        assert!(others < n / 200, "{others}");
        assert!(fresh < 500, "{fresh}");
        filter.blocks = Vec::new();
        filter.last_len = 0;
        for _ in 0..FILTER_MAX_BLOCKS {
            filter.blocks.push(vec![[0u64; 8]; 1].into_boxed_slice());
        }
        filter.last_len = usize::MAX;
        filter.add(1, "a");
        assert!(filter.off && filter.blocks.is_empty());
        assert!(filter.may_hold(1, "never added"));

        // Sized to its run: one block for its ids, another block past them.
        let mut filter = MergedFilter {
            ready: true,
            ..MergedFilter::sized(100_000)
        };
        for i in 0..100_000 {
            filter.add(1, &id(i));
        }
        assert_eq!(filter.blocks.len(), 1);
        filter.add(1, &id(100_000));
        assert_eq!(filter.blocks.len(), 2);
        assert!((0..=100_000).all(|i| filter.may_hold(1, &id(i))));
        let fresh = (200_000..300_000)
            .filter(|&i| filter.may_hold(1, &id(i)))
            .count();
        assert!(fresh < 500, "{fresh}");
        assert_eq!(MergedFilter::sized(0).bytes(), FILTER_FIRST_IDS * 2);
    }

    /// Ids of merged requests are in the filter after a merge and after a restart (rebuilt from
    /// `rq_ids`); when the filter wrongly says "maybe" (a false positive: here every id, the
    /// filter switched off), adding still tells new from present requests.
    #[tokio::test]
    async fn merged_filter_across_merges_restart_and_false_positives() {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        storage.set_merge_threshold(usize::MAX);
        let queue = new_queue(&storage).await;
        let num = |storage: &SqliteStorage| {
            let queue = queue.clone();
            storage
                .read_blocking(move |conn| Ok(QueueRow::load(conn, &queue)?.num))
                .unwrap()
        };
        let holds = |storage: &SqliteStorage, num: i64, key: &str| {
            let id = troupe_model::queue::request_id(key);
            let filters = storage.inner.recent_ids.merged.lock();
            filters.runs.values().any(|f| f.may_hold(num, &id))
        };
        let absent = |storage: &SqliteStorage, num: i64| {
            (1000..1100)
                .filter(|i| !holds(storage, num, &format!("k{i}")))
                .count()
        };
        // (Filled in the background at start-up: wait, with a generous deadline.)
        let ready = wait_for_run_filters;
        ready(&storage);
        assert_eq!(add(&storage, &queue, &keys(0..40)).await, vec![false; 40]);
        let n = num(&storage);
        storage.merge_recent_ids().await.unwrap();
        assert!(keys(0..40).iter().all(|k| holds(&storage, n, k)));
        assert_eq!(
            add(&storage, &queue, &keys(30..60)).await[..],
            {
                let mut want = vec![true; 10];
                want.extend([false; 20]);
                want
            }[..]
        );
        drop(storage);

        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        storage.set_merge_threshold(usize::MAX);
        ready(&storage);
        assert!(keys(0..40).iter().all(|k| holds(&storage, n, k)));
        // The filter rules out (nearly) every id it was not given.
        assert!(absent(&storage, n) >= 95);
        // 40..60 are not merged yet: found through the map.
        let mut want = vec![true; 60];
        want.extend([false; 5]);
        assert_eq!(add(&storage, &queue, &keys(0..65)).await, want);
        storage.merge_recent_ids().await.unwrap();
        assert!(keys(0..65).iter().all(|k| holds(&storage, n, k)));

        // Every lookup a false positive: the same answers, through the seeks.
        {
            let mut filters = storage.inner.recent_ids.merged.lock();
            for filter in filters.runs.values_mut() {
                *filter = MergedFilter {
                    off: true,
                    ..MergedFilter::default()
                };
            }
        }
        let mut want = vec![true; 65];
        want.extend([false; 5]);
        assert_eq!(add(&storage, &queue, &keys(0..70)).await, want);
        assert_eq!(listed(&storage, &queue).await.len(), 70);
        let info = storage
            .get_storage(StorageKind::RequestQueue, &queue)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.total_request_count, 70);
    }

    #[test]
    fn run_levels() {
        assert_eq!(run_level(0, 100, 8), 0);
        assert_eq!(run_level(799, 100, 8), 0);
        assert_eq!(run_level(800, 100, 8), 1);
        assert_eq!(run_level(6399, 100, 8), 1);
        assert_eq!(run_level(6400, 100, 8), 2);
        assert_eq!(run_level(i64::MAX, 100, 8), 18);
        assert_eq!(run_level(i64::MAX, usize::MAX, 8), 0);
    }

    /// Every id is found (dedup, get, listings in id order, pages) while its queue's ids are
    /// spread over several runs of `rq_ids`, in the middle of a compaction that stopped (as
    /// after a crash), after a restart and once the compaction finished; each id stays in
    /// exactly one run; deleting a request or a queue removes its ids from whichever run.
    #[tokio::test]
    async fn id_runs_across_compactions_and_restarts() {
        async fn check(storage: &SqliteStorage, queue: &str, present: &[String]) {
            for key in present {
                let id = troupe_model::queue::request_id(key);
                let got = storage.get_request(queue, &id).await.unwrap();
                let got: serde_json::Value = serde_json::from_str(&got.expect(key)).unwrap();
                assert_eq!(got["uniqueKey"], key.as_str());
            }
            for key in keys(900..905) {
                let id = troupe_model::queue::request_id(&key);
                assert!(storage.get_request(queue, &id).await.unwrap().is_none());
            }
            assert_eq!(
                add(storage, queue, present).await,
                vec![true; present.len()]
            );
            let mut by_id = present.to_vec();
            by_id.sort_by_key(|k| troupe_model::queue::request_id(k));
            assert_eq!(listed(storage, queue).await, by_id);
            // Pages of 7 across the runs.
            let mut paged = Vec::new();
            let mut after = None;
            loop {
                let page = storage
                    .list_requests(queue, after, 7, RequestFilter::Pending, None, 1)
                    .await
                    .unwrap();
                for data in &page.items {
                    let v: serde_json::Value = serde_json::from_str(data).unwrap();
                    paged.push(v["uniqueKey"].as_str().unwrap().to_string());
                }
                match page.next_after {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(paged, by_id);
        }
        fn counts(storage: &SqliteStorage) -> (i64, i64, i64, i64) {
            storage
                .read_blocking(|conn| {
                    Ok(conn.query_row(
                        "SELECT (SELECT count(*) FROM rq_runs), (SELECT count(*) FROM rq_ids),
                            (SELECT count(*) FROM (SELECT DISTINCT queue, id FROM rq_ids)),
                            (SELECT coalesce(sum(ids), 0) FROM rq_runs)",
                        [],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                    )?)
                })
                .unwrap()
        }
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        storage.set_merge_threshold(usize::MAX);
        storage.set_compaction(3, 7, 0);
        let queue = new_queue(&storage).await;
        let other = new_queue(&storage).await;
        // Five merges, five runs holding ids of both queues.
        for round in 0..5 {
            let new = keys(round * 20..round * 20 + 20);
            assert_eq!(add(&storage, &queue, &new).await, vec![false; 20]);
            let new = keys(round * 3..round * 3 + 3);
            assert_eq!(add(&storage, &other, &new).await, vec![false; 3]);
            storage.merge_recent_ids().await.unwrap();
        }
        assert_eq!(counts(&storage), (5, 115, 115, 115));
        let mut present = keys(0..100);
        check(&storage, &queue, &present).await;
        // Delete a merged request (in run 2), and one more after it was added back.
        assert_eq!(delete_keys(&storage, &queue, &["k30"]).await, [true]);
        present.retain(|k| k != "k30");
        check(&storage, &queue, &present).await;
        assert_eq!(counts(&storage).1, 114);

        // A compaction of the five runs that stops after two of its transactions (at most 7
        // ids each: 1 from each run, up to the smallest last id of a run that had more).
        storage.set_compaction(3, 7, 2);
        assert!(storage.compact_runs().await.is_err());
        let (runs, ids, distinct, _) = counts(&storage);
        assert_eq!((runs, ids, distinct), (6, 114, 114));
        let target: i64 = storage
            .read_blocking(|conn| {
                Ok(conn.query_row(
                    "SELECT count(*) FROM rq_ids WHERE run = (SELECT max(run) FROM rq_runs)",
                    [],
                    |row| row.get(0),
                )?)
            })
            .unwrap();
        assert!((2..=10).contains(&target), "{target} ids moved");
        check(&storage, &queue, &present).await;
        check(&storage, &other, &keys(0..15)).await;
        drop(storage);

        // After a restart (the runs' filters are refilled in the background: both before and
        // after that, lookups find every id).
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        storage.set_merge_threshold(usize::MAX);
        storage.set_compaction(3, 7, 0);
        check(&storage, &queue, &present).await;
        wait_for_run_filters(&storage);
        check(&storage, &queue, &present).await;
        check(&storage, &other, &keys(0..15)).await;

        // The compaction finishes: one run, counts exact.
        storage.compact_runs().await.unwrap();
        assert_eq!(counts(&storage), (1, 114, 114, 114));
        check(&storage, &queue, &present).await;
        check(&storage, &other, &keys(0..15)).await;
        // A request deleted after its id moved, and added back.
        assert_eq!(delete_keys(&storage, &queue, &["k31"]).await, [true]);
        assert_eq!(
            add(&storage, &queue, &["k31".to_string()]).await,
            vec![false]
        );
        storage.merge_recent_ids().await.unwrap();
        assert_eq!(counts(&storage), (2, 114, 114, 115));
        check(&storage, &queue, &present).await;
        // Deleting a queue removes its requests (found through every run and among the
        // requests not merged yet, pending or handled) and nothing of the other queue.
        let other_num: i64 = storage
            .read_blocking(|conn| {
                Ok(
                    conn.query_row("SELECT num FROM storages WHERE id = ?1", [&other], |row| {
                        row.get(0)
                    })?,
                )
            })
            .unwrap();
        assert_eq!(add(&storage, &other, &keys(500..505)).await, vec![false; 5]);
        let handled: Vec<QueueRequest> = ["k501", "k2"].map(handled_req).into();
        for r in handled {
            storage
                .update_request(&other, r, false, None, 1)
                .await
                .unwrap();
        }
        let rows_of = |num: i64| {
            storage
                .read_blocking(|conn| {
                    Ok(conn.query_row(
                        "SELECT (SELECT count(*) FROM rq_requests WHERE queue = ?1),
                             (SELECT count(*) FROM rq_pending WHERE queue = ?1),
                             (SELECT count(*) FROM rq_ids WHERE queue = ?1)",
                        [num],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                    )?)
                })
                .unwrap()
        };
        let (rows, pending, ids): (i64, i64, i64) = rows_of(other_num);
        assert_eq!((rows, pending, ids), (20, 18, 15));
        assert!(storage
            .delete_storage(StorageKind::RequestQueue, &other)
            .await
            .unwrap());
        storage.finish_purges().await;
        assert_eq!(rows_of(other_num), (0, 0, 0));
        assert_eq!(counts(&storage).1, 99);
        drop(storage);
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        check(&storage, &queue, &present).await;
    }

    /// A batch larger than one insert statement (25 + 8 + 1s) keeps its order at the back
    /// and its reversed order at the front, with duplicates and present requests mixed in.
    #[tokio::test]
    async fn multi_row_inserts_keep_order() {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        let queue = new_queue(&storage).await;
        assert_eq!(add(&storage, &queue, &keys(0..2)).await, vec![false; 2]);
        let mut batch = keys(2..40);
        batch.insert(5, "k0".into());
        batch.insert(20, "k7".into());
        let outcomes = storage
            .add_requests(
                &queue,
                batch.iter().map(|k| req(k)).collect(),
                false,
                None,
                1,
            )
            .await
            .unwrap();
        let present: Vec<usize> = (0..batch.len())
            .filter(|&i| outcomes[i].was_already_present)
            .collect();
        assert_eq!(present, vec![5, 20]);
        let front = keys(40..75);
        let outcomes = storage
            .add_requests(
                &queue,
                front.iter().map(|k| req(k)).collect(),
                true,
                None,
                1,
            )
            .await
            .unwrap();
        assert!(outcomes.iter().all(|o| !o.was_already_present));
        let head = storage.list_head(&queue, 1000, None, 1).await.unwrap();
        let got: Vec<String> = head.items().into_iter().map(|i| i.unique_key).collect();
        let mut want: Vec<String> = front.iter().rev().cloned().collect();
        want.extend(keys(0..40));
        assert_eq!(got, want);
        let info = storage
            .get_storage(StorageKind::RequestQueue, &queue)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.total_request_count, 75);
    }

    /// Requests are found (dedup, get, delete, listing) whether their ids are merged into
    /// `rq_ids` or still in the map of recent ids, also after a restart (the map is rebuilt
    /// from the rows above the watermark).
    #[tokio::test]
    async fn recent_and_merged_ids_across_restart() {
        let (dir, storage, queue, other) = unmerged_with_two_queues().await;
        assert_eq!(add(&storage, &queue, &keys(0..10)).await, vec![false; 10]);
        assert_eq!(add(&storage, &other, &keys(0..3)).await, vec![false; 3]);
        assert_eq!(storage.recent_id_count(), 13);
        storage.merge_recent_ids().await.unwrap();
        assert_eq!(storage.recent_id_count(), 0);
        assert_eq!(merges_from_map(&storage), 1);
        let mut want = vec![true; 5];
        want.extend([false; 5]);
        assert_eq!(add(&storage, &queue, &keys(5..15)).await, want);
        assert_eq!(storage.recent_id_count(), 5);
        // Delete a merged and a recent request, then add both back.
        let deleted = delete_keys(&storage, &queue, &["k3", "k12"]).await;
        assert_eq!(deleted, vec![true, true]);
        for key in ["k3", "k12"] {
            let id = troupe_model::queue::request_id(key);
            assert!(storage.get_request(&queue, &id).await.unwrap().is_none());
        }
        let back = vec!["k3".to_string(), "k12".to_string()];
        assert_eq!(add(&storage, &queue, &back).await, vec![false, false]);
        // A duplicate within one batch is present the second time.
        let dup = vec!["k20".to_string(), "k20".to_string()];
        assert_eq!(add(&storage, &queue, &dup).await, vec![false, true]);
        drop(storage);

        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        storage.set_merge_threshold(usize::MAX);
        assert!(
            storage.recent_id_count() >= 7,
            "{}",
            storage.recent_id_count()
        );
        let mut all = keys(0..15);
        all.push("k20".into());
        assert_eq!(add(&storage, &queue, &all).await, vec![true; 16]);
        assert_eq!(
            add(&storage, &other, &keys(0..4)).await,
            vec![true, true, true, false]
        );
        for key in &all {
            let id = troupe_model::queue::request_id(key);
            assert!(
                storage.get_request(&queue, &id).await.unwrap().is_some(),
                "{key}"
            );
        }
        // Listing merges first, so it sees every request in id order.
        let mut by_id = all.clone();
        by_id.sort_by_key(|k| troupe_model::queue::request_id(k));
        assert_eq!(listed(&storage, &queue).await, by_id);
        assert_eq!(storage.recent_id_count(), 0);
        let info = storage
            .get_storage(StorageKind::RequestQueue, &queue)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.total_request_count, 16);
        // Deleting the queue removes its merged ids too.
        assert!(storage
            .delete_storage(StorageKind::RequestQueue, &queue)
            .await
            .unwrap());
        storage.finish_purges().await;
        let left: i64 = storage
            .read_blocking(|conn| {
                Ok(conn.query_row("SELECT count(*) FROM rq_ids", [], |row| row.get(0))?)
            })
            .unwrap();
        assert_eq!(left, 4);
    }

    /// A write rolled back after its inserts leaves map entries behind; they must not make
    /// the requests look present, and a merge must skip them.
    #[tokio::test]
    async fn rolled_back_inserts_leave_no_trace() {
        let (_dir, storage) = {
            let dir = tempfile::tempdir().unwrap();
            let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
            (dir, storage)
        };
        storage.set_merge_threshold(usize::MAX);
        let queue = new_queue(&storage).await;
        let this = storage.clone();
        let q_id = queue.clone();
        let failed = storage
            .write(move |tx| {
                let mut q = QueueRow::load(tx, &q_id)?;
                for r in ["a", "b"].map(req) {
                    insert(tx, &this.inner.recent_ids, &mut q, &r, false)?;
                }
                Err::<(), _>(Error::Internal(anyhow::anyhow!("fail after the inserts")))
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(storage.recent_id_count(), 2);
        let id = troupe_model::queue::request_id("a");
        assert!(storage.get_request(&queue, &id).await.unwrap().is_none());
        assert_eq!(
            add(&storage, &queue, &["a".to_string(), "c".to_string()]).await,
            vec![false, false]
        );
        storage.merge_recent_ids().await.unwrap();
        assert_eq!(storage.recent_id_count(), 0);
        // The stale entry of "b" shares its `rid` with "c": the merge read the rows.
        assert_eq!(merges_from_map(&storage), 0);
        assert_eq!(ids_as_rows(&storage), (2, true));
        assert_eq!(
            add(&storage, &queue, &["a".into(), "b".into(), "c".into()]).await,
            vec![true, false, true]
        );
        assert_eq!(listed(&storage, &queue).await.len(), 3);
    }

    fn merges_from_map(storage: &SqliteStorage) -> usize {
        storage
            .inner
            .recent_ids
            .merges_from_map
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// (ids in `rq_ids`, whether `rq_ids` is exactly the (queue, id, rid) of the rows at or
    /// below the watermark).
    fn ids_as_rows(storage: &SqliteStorage) -> (i64, bool) {
        storage
            .read_blocking(|conn| {
                let ids: i64 = conn.query_row("SELECT count(*) FROM rq_ids", [], |r| r.get(0))?;
                let diff: i64 = conn.query_row(
                    "SELECT count(*) FROM (
                         SELECT 1 FROM (
                             SELECT queue, id, rid FROM rq_ids
                             UNION ALL
                             SELECT queue, id, rid FROM rq_requests
                             WHERE rid <= (SELECT watermark FROM rq_merged))
                         GROUP BY queue, id, rid HAVING count(*) != 2)",
                    [],
                    |r| r.get(0),
                )?;
                Ok((ids, diff == 0))
            })
            .unwrap()
    }

    /// Merges the recent ids and checks `rq_ids` holds exactly the merged rows; returns (merges
    /// so far that took their ids from the map, ids in `rq_ids`).
    async fn merge_and_check(storage: &SqliteStorage) -> (usize, i64) {
        storage.merge_recent_ids().await.unwrap();
        let (ids, exact) = ids_as_rows(storage);
        assert!(exact, "rq_ids is not the merged rows");
        (merges_from_map(storage), ids)
    }

    /// A merge takes its ids from the map only when the map's entries are exactly the rows
    /// above the watermark; entries of deleted requests or queues make it read the rows. Either
    /// way `rq_ids` ends up holding every merged row's (queue, id, rid).
    #[tokio::test]
    async fn merges_take_ids_from_the_map_only_when_exact() {
        let (_dir, storage, queue, other) = unmerged_with_two_queues().await;
        add(&storage, &queue, &keys(0..30)).await;
        add(&storage, &other, &keys(0..5)).await;
        assert_eq!(merge_and_check(&storage).await, (1, 35));
        // A deleted recent request (its entry stays): the rows are read.
        add(&storage, &queue, &keys(30..40)).await;
        assert_eq!(delete_keys(&storage, &queue, &["k33"]).await, [true]);
        assert_eq!(merge_and_check(&storage).await, (1, 44));
        // The last request deleted: its `rid` is taken again by the next add.
        add(&storage, &queue, &keys(40..45)).await;
        assert_eq!(delete_keys(&storage, &queue, &["k44"]).await, [true]);
        add(&storage, &queue, &keys(45..47)).await;
        assert_eq!(merge_and_check(&storage).await, (1, 50));
        // A deleted queue's recent requests.
        add(&storage, &other, &keys(5..9)).await;
        add(&storage, &queue, &keys(47..50)).await;
        assert!(storage
            .delete_storage(StorageKind::RequestQueue, &other)
            .await
            .unwrap());
        storage.finish_purges().await;
        assert_eq!(merge_and_check(&storage).await, (1, 48));
        // Plain adds again: from the map.
        add(&storage, &queue, &keys(50..60)).await;
        assert_eq!(merge_and_check(&storage).await, (2, 58));
        let mut want = vec![true; 58];
        want.extend([false, false]);
        let mut all: Vec<String> = keys(0..60)
            .into_iter()
            .filter(|k| k != "k33" && k != "k44")
            .collect();
        all.extend(["k33".to_string(), "k44".to_string()]);
        assert_eq!(add(&storage, &queue, &all).await, want);
    }

    /// Merges in the background (after every add) while requests are added, read and
    /// listed: nothing is lost or duplicated.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn background_merges_race_adds() {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        storage.set_merge_threshold(7);
        let queue = new_queue(&storage).await;
        let mut tasks = Vec::new();
        for t in 0..4 {
            let (storage, queue) = (storage.clone(), queue.clone());
            tasks.push(tokio::spawn(async move {
                for round in 0..20 {
                    let batch: Vec<String> = (0..10).map(|i| format!("t{t}-{round}-{i}")).collect();
                    assert_eq!(add(&storage, &queue, &batch).await, vec![false; 10]);
                    // Every acknowledged request is found right away, and again when re-added
                    // (a key of the previous round too).
                    for key in &batch {
                        let id = troupe_model::queue::request_id(key);
                        assert!(storage.get_request(&queue, &id).await.unwrap().is_some());
                    }
                    let mut again = batch[..3].to_vec();
                    if round > 0 {
                        again.push(format!("t{t}-{}-9", round - 1));
                    }
                    assert!(add(&storage, &queue, &again).await.iter().all(|p| *p));
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let listed = listed(&storage, &queue).await;
        assert_eq!(listed.len(), 800);
        let unique: std::collections::HashSet<_> = listed.iter().collect();
        assert_eq!(unique.len(), 800);
    }
    /// A request update with a stale queue number (the queue was deleted and a new queue took
    /// its row number) changes nothing: the number is checked against the queue's id inside
    /// the write, which then goes by the id (not found). A wrong number for a live queue falls
    /// back to the id too.
    #[tokio::test]
    async fn request_update_with_a_stale_queue_number() {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        let num = |id: String| {
            let storage = storage.clone();
            async move {
                storage
                    .get_storage(StorageKind::RequestQueue, &id)
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        let old = new_queue(&storage).await;
        add(&storage, &old, &keys(0..2)).await;
        let old_num = num(old.clone()).await.num;
        assert!(storage
            .delete_storage(StorageKind::RequestQueue, &old)
            .await
            .unwrap());
        storage.finish_purges().await;
        let new = new_queue(&storage).await;
        add(&storage, &new, &keys(0..2)).await;
        let before = num(new.clone()).await;
        // Once purged, the freed number is the new row's (the largest was deleted).
        assert_eq!(before.num, old_num);
        let handled = parse_request(
            json!({"url": "https://example.com/k0", "uniqueKey": "k0",
                   "handledAt": "2026-01-01T00:00:00.000Z"}),
            None,
        )
        .unwrap();
        for hint in [Some(old_num), None] {
            let result = storage
                .update_request_at(&old, hint, handled.clone(), false, Some("x".into()), 5)
                .await;
            assert!(matches!(result, Err(Error::NotFound(_))), "{result:?}");
        }
        let after = num(new.clone()).await;
        assert_eq!(
            (after.total_request_count, after.handled_request_count),
            (2, 0)
        );
        assert_eq!(
            (after.modified_at, after.write_count, after.storage_bytes),
            (before.modified_at, before.write_count, before.storage_bytes)
        );
        assert!(!after.had_multiple_clients);
        // The new queue's request is untouched, then updated through a wrong number.
        let out = storage
            .update_request_at(&new, Some(old_num + 1000), handled, false, None, 6)
            .await
            .unwrap();
        assert!(out.was_already_present && !out.was_already_handled);
        let after = num(new.clone()).await;
        assert_eq!(
            (after.total_request_count, after.handled_request_count),
            (2, 1)
        );
        assert_eq!(after.modified_at, 6);
    }

    /// The consumer loop's statements run as the writer's kept statements (`stmts`), prepared
    /// once, not through rusqlite's cache; and what they do is exact.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queue_writes_use_the_writers_kept_statements() {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        let (q, num) = seeded_queue(&storage, 6).await;
        let mut kept = 0;
        for round in 0..3 {
            let head = storage
                .lock_head(&q, 2, 60_000, Some("a".into()), 10 + round)
                .await
                .unwrap();
            assert_eq!(head.items.len(), 2);
            for item in &head.items {
                let r = handled_req(&item.unique_key);
                assert!(storage
                    .mark_handled(&q, num, r, Some("a".into()), 10 + round)
                    .await
                    .unwrap()
                    .is_ok());
            }
            let now = storage.inner.writer.lock().hot_len();
            assert!(now > 0);
            if round > 0 {
                // The same statements again: none added.
                assert_eq!(now, kept);
            }
            kept = now;
        }
        let info = storage
            .get_storage(StorageKind::RequestQueue, &q)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.handled_request_count, 6);
        assert!(check_pending(&storage, num).await.is_empty());
    }

    /// Lock hints: a handled PUT of a request `head/lock` handed out takes its hint (its
    /// entry's DELETE, then the row's UPDATE); a hint that no longer matches (handled
    /// meanwhile, put back in the queue with another size, deleted) changes nothing and the
    /// general path answers exactly; counters and storage bytes stay exact; a deleted queue's
    /// hints go with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lock_hints_stay_exact() {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        let (q, num) = seeded_queue(&storage, 6).await;
        let handled = handled_req;
        let hints = |storage: &SqliteStorage| {
            let state = storage.inner.lock_hints.state.lock();
            let mut ids: Vec<String> = state
                .queues
                .get(&num)
                .map(|m| m.keys().map(|k| k.as_str().to_string()).collect())
                .unwrap_or_default();
            ids.sort();
            (ids, state.len)
        };
        let mark = |key: &str, now: i64| {
            let (s, q, r) = (storage.clone(), q.clone(), handled(key));
            async move {
                match s
                    .mark_handled(&q, num, r, Some("a".into()), now)
                    .await
                    .unwrap()
                {
                    Ok(o) => (o.was_already_present, o.was_already_handled),
                    Err((r, _)) => panic!("back: {}", r.unique_key),
                }
            }
        };
        let head = storage
            .lock_head(&q, 4, 60_000, Some("a".into()), 2)
            .await
            .unwrap();
        assert_eq!(head.items.len(), 4);
        let id = |key: &str| troupe_model::queue::request_id(key);
        let mut locked: Vec<String> = keys(0..4).iter().map(|k| id(k)).collect();
        locked.sort();
        assert_eq!(hints(&storage), (locked, 4));
        // k0: the hint is used.
        assert_eq!(mark("k0", 3).await, (true, false));
        assert_eq!(hints(&storage).1, 3);
        // k1: handled on the general path (its hint stays), then again: the hint does not match
        // a handled row, so nothing changes through it and the answer is "already handled".
        let out = storage
            .update_request_at(&q, None, handled("k1"), false, Some("a".into()), 4)
            .await
            .unwrap();
        assert!(out.was_already_present && !out.was_already_handled);
        assert_eq!(mark("k1", 5).await, (true, true));
        // k2: put back into the queue with a longer JSON (its hint stays, its size is stale).
        let longer = parse_request(
            json!({"url": "https://example.com/k2", "uniqueKey": "k2", "userData": {"x": 1}}),
            None,
        )
        .unwrap();
        storage
            .update_request_at(&q, None, longer, false, Some("a".into()), 6)
            .await
            .unwrap();
        assert_eq!(mark("k2", 7).await, (true, false));
        // k3: deleted: the hint matches nothing and the request is not in the queue.
        storage
            .delete_requests(
                &q,
                vec![DeleteTarget {
                    id: id("k3"),
                    unique_key: None,
                }],
                Some("a".into()),
                8,
            )
            .await
            .unwrap();
        let back = storage
            .mark_handled(&q, num, handled("k3"), Some("a".into()), 9)
            .await
            .unwrap();
        assert!(back.is_err());
        // k4: never locked, no hint.
        assert_eq!(mark("k4", 10).await, (true, false));
        assert_eq!(hints(&storage), (Vec::new(), 0));
        // Counters and bytes as the rows say.
        let (row, rows) = storage
            .read(move |conn| {
                let row: (i64, i64, i64) = conn.query_row(
                    "SELECT total_request_count, handled_request_count, storage_bytes
                     FROM storages WHERE num = ?1",
                    [num],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )?;
                let rows: (i64, i64, i64) = conn.query_row(
                    concat!(
                        "SELECT count(*), count(handled_at), sum(",
                        size_sql!(""),
                        ") FROM rq_requests WHERE queue = ?1"
                    ),
                    [num],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )?;
                Ok((row, rows))
            })
            .await
            .unwrap();
        assert_eq!(row, rows);
        assert_eq!(row.0, 5);
        assert_eq!(row.1, 4);
        assert_eq!(check_pending(&storage, num).await.len(), 1);
        // Deleting the queue drops its hints (its number may be reused).
        let head = storage
            .lock_head(&q, 4, 60_000, Some("a".into()), 11)
            .await
            .unwrap();
        assert_eq!(head.items.len(), 1);
        assert_eq!(hints(&storage), (vec![id("k5")], 1));
        assert!(storage
            .delete_storage(StorageKind::RequestQueue, &q)
            .await
            .unwrap());
        assert_eq!(hints(&storage), (Vec::new(), 0));
        assert!(storage.inner.lock_hints.state.lock().queues.is_empty());
        // The map starts over when full.
        let hint = |rid: i64| LockHint {
            rid,
            size: 0,
            locked_until: 1,
            ord: rid,
        };
        let many = (0..LOCK_HINTS_MAX).map(|i| (format!("x{i}"), hint(i as i64)));
        storage.inner.lock_hints.insert(-1, many);
        assert_eq!(storage.inner.lock_hints.state.lock().len, LOCK_HINTS_MAX);
        storage
            .inner
            .lock_hints
            .insert(-1, std::iter::once(("y".to_string(), hint(1))));
        assert_eq!(storage.inner.lock_hints.state.lock().len, 1);
        assert_eq!(storage.inner.lock_hints.take(-1, "y"), Some(hint(1)));
        assert_eq!(storage.inner.lock_hints.take(-1, "y"), None);
    }

    /// Delete-lock and prolong take a locked request from its lock hint when its entry is still
    /// at the hint's key: every answer and every entry is what the general path (no hints:
    /// `find`, then `lock_state`'s lookups) gives, stale hints included.
    #[tokio::test]
    async fn lock_calls_through_hints_match_the_general_path() {
        /// Delete-lock of `key` (back of the queue when the lock goes).
        async fn release(
            storage: &SqliteStorage,
            q: &str,
            key: &str,
            client: Option<String>,
            now: i64,
        ) -> LockOutcome {
            let id = troupe_model::queue::request_id(key);
            storage
                .delete_lock(q, &id, false, client, now)
                .await
                .unwrap()
        }
        async fn scenario(
            wipe: bool,
        ) -> (
            Vec<LockOutcome>,
            Vec<(i64, i64, Option<String>, Option<i64>, String)>,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
            let (q, num) = seeded_queue(&storage, 8).await;
            let id = |key: &str| troupe_model::queue::request_id(key);
            let wipe_hints = |storage: &SqliteStorage| {
                if wipe {
                    *storage.inner.lock_hints.state.lock() = LockHintState::default();
                }
            };
            let head = storage
                .lock_head(&q, 6, 60_000, Some("a".into()), 2)
                .await
                .unwrap();
            assert_eq!(head.items.len(), 6);
            // (With hints, the calls below take the six locked requests from them.)
            assert_eq!(storage.inner.lock_hints.state.lock().len, 6);
            let mut out = Vec::new();
            let a = || Some("a".to_string());
            let b = || Some("b".to_string());
            // (key, delete (else prolong), client, forefront, now)
            let calls: [(&str, bool, Option<String>, bool, i64); 12] = [
                ("k0", true, b(), false, 3),   // locked by another client
                ("k0", true, a(), false, 4),   // released, back of the queue
                ("k0", true, a(), false, 5),   // not locked any more
                ("k1", false, a(), true, 6),   // prolonged (front on lapse)
                ("k1", false, b(), false, 7),  // locked by another client
                ("k1", true, a(), true, 8),    // released through the prolonged lock's hint
                ("k2", false, b(), false, 9),  // locked by another client
                ("k3", true, a(), true, 10),   // released to the front
                ("k6", true, a(), false, 11),  // never locked
                ("k7", false, a(), false, 12), // not locked: prolong locks it
                ("k7", true, a(), false, 13),  // released
                ("zz", true, a(), false, 14),  // no such request
            ];
            for (key, delete, client, forefront, now) in calls {
                wipe_hints(&storage);
                let outcome = if delete {
                    storage
                        .delete_lock(&q, &id(key), forefront, client, now)
                        .await
                } else {
                    storage
                        .prolong_lock(&q, &id(key), 30_000, forefront, client, now)
                        .await
                }
                .unwrap();
                out.push(outcome);
                check_pending(&storage, num).await;
            }
            // Stale hints: every lock released at once (the hints stay), then locked again by
            // another client after the old locks' expiry.
            storage
                .unlock_requests(&q, Some("a".into()), 15)
                .await
                .unwrap();
            wipe_hints(&storage);
            out.push(release(&storage, &q, "k4", a(), 16).await);
            wipe_hints(&storage);
            out.push(
                storage
                    .prolong_lock(&q, &id("k5"), 1_000, false, a(), 17)
                    .await
                    .unwrap(),
            );
            storage
                .lock_head(&q, 8, 60_000, Some("b".into()), 100_000)
                .await
                .unwrap();
            for (key, client) in [("k5", a()), ("k5", b()), ("k2", b())] {
                wipe_hints(&storage);
                out.push(release(&storage, &q, key, client, 100_001).await);
            }
            // Handled while locked: delete-lock says so.
            storage
                .update_request_at(&q, None, handled_req("k2"), false, b(), 100_002)
                .await
                .unwrap();
            wipe_hints(&storage);
            out.push(release(&storage, &q, "k2", b(), 100_003).await);
            (out, check_pending(&storage, num).await)
        }
        let (hinted, entries) = scenario(false).await;
        let (general, general_entries) = scenario(true).await;
        assert_eq!(hinted, general);
        assert_eq!(entries, general_entries);
        use LockOutcome::*;
        assert_eq!(
            hinted,
            [
                LockedByOther,
                Ok(None),
                NotLocked,
                Ok(Some(30_006)),
                LockedByOther,
                Ok(None),
                LockedByOther,
                Ok(None),
                NotLocked,
                Ok(Some(30_012)),
                Ok(None),
                NotFound,
                NotLocked,
                Ok(Some(1_017)),
                LockedByOther,
                Ok(None),
                Ok(None),
                Handled,
            ]
        );
    }

    /// Asserts that queue `num`'s `rq_pending` entries are exactly its pending requests, at
    /// their rows' positions; returns them as (locked_until, ord, lock_client, lapse_to, id).
    async fn check_pending(
        storage: &SqliteStorage,
        num: i64,
    ) -> Vec<(i64, i64, Option<String>, Option<i64>, String)> {
        storage
            .read(move |conn| {
                let pending: i64 = conn.query_row(
                    "SELECT count(*) FROM rq_requests WHERE queue = ?1 AND handled_at IS NULL",
                    [num],
                    |row| row.get(0),
                )?;
                let mut stmt = conn.prepare(
                    "SELECT p.locked_until, p.ord, p.lock_client, p.lapse_to, r.id, r.ord, r.queue,
                            r.handled_at IS NULL
                     FROM rq_pending p LEFT JOIN rq_requests r ON r.rid = p.rid
                     WHERE p.queue = ?1 ORDER BY p.locked_until, p.ord",
                )?;
                let rows = stmt
                    .query_map([num], |row| {
                        let entry = (
                            row.get::<_, i64>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, Option<String>>(2)?,
                            row.get::<_, Option<i64>>(3)?,
                            row.get::<_, String>(4)?,
                        );
                        let (ord, queue, pending): (i64, i64, bool) =
                            (row.get(5)?, row.get(6)?, row.get(7)?);
                        assert_eq!((entry.1, num, true), (ord, queue, pending), "{entry:?}");
                        Ok(entry)
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                assert_eq!(rows.len() as i64, pending);
                Ok(rows)
            })
            .await
            .unwrap()
    }

    /// A database from before migration 0011 (lock state in `rq_requests`, index `rq_head`)
    /// opened by this version: the pending entries are built from the rows (locks held before
    /// the upgrade hold on, lapse as they said, handled requests stay out), counters and the
    /// head are unchanged; then stale lock hints (the lock released, or lapsed and taken
    /// again) still remove the right entry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migration_builds_pending_entries() {
        let dir = tempfile::tempdir().unwrap();
        let id = |key: &str| troupe_model::queue::request_id(key);
        let handled = handled_req;
        let (q, num, before) = {
            let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
            let (q, num) = seeded_queue(&storage, 10).await;
            let head = storage
                .lock_head(&q, 2, 1_000_000, Some("a".into()), 10)
                .await
                .unwrap();
            assert_eq!(head.items.len(), 2);
            // k2: a lock that lapses at 25 (stays in place).
            storage
                .lock_head(&q, 1, 5, Some("b".into()), 20)
                .await
                .unwrap();
            // k3: locked by prolonging, goes to the front when it lapses.
            let out = storage
                .prolong_lock(&q, &id("k3"), 1_000_000, true, Some("c".into()), 30)
                .await
                .unwrap();
            assert_eq!(out, LockOutcome::Ok(Some(1_000_030)));
            storage
                .update_request_at(&q, None, handled("k4"), false, Some("a".into()), 40)
                .await
                .unwrap();
            let before = check_pending(&storage, num).await;
            assert_eq!(before.len(), 9);
            (q, num, before)
        };
        // The schema and rows as the previous version kept them.
        {
            let mut conn = Connection::open(dir.path().join("troupe.db")).unwrap();
            let tx = conn.transaction().unwrap();
            tx.execute_batch(
                "CREATE INDEX rq_head ON rq_requests (queue, locked_until, ord) WHERE handled_at IS NULL;
                 UPDATE rq_requests SET (locked_until, lock_client, lapse_to) =
                     (SELECT locked_until, lock_client, lapse_to FROM rq_pending p WHERE p.rid = rq_requests.rid)
                     WHERE handled_at IS NULL;
                 DROP TABLE rq_pending;
                 DELETE FROM _migrations WHERE name IN
                     ('0011_request_queue_pending', '0013_request_queue_pending_unindexed');",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        assert_eq!(check_pending(&storage, num).await, before);
        // The locks held are known as hints from start-up.
        for key in ["k0", "k1", "k2", "k3"] {
            let hint = storage.inner.lock_hints.peek(num, &id(key)).unwrap();
            assert!(hint.locked_until > 0, "{key}");
        }
        let info = storage
            .get_storage(StorageKind::RequestQueue, &q)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (info.total_request_count, info.handled_request_count),
            (10, 1)
        );
        // k2's lock lapsed: it is the head again, in its place; k0, k1, k3 stay locked.
        let head = storage
            .lock_head(&q, 10, 1_000, Some("d".into()), 100)
            .await
            .unwrap();
        let got: Vec<String> = head.items.iter().map(|i| i.unique_key.clone()).collect();
        assert_eq!(got, ["k2", "k5", "k6", "k7", "k8", "k9"]);
        assert!(head.queue_has_locked_requests);
        // Without hints, a locked request's entry is found by a scan.
        *storage.inner.lock_hints.state.lock() = LockHintState::default();
        let out = storage
            .delete_lock(&q, &id("k3"), false, Some("d".into()), 101)
            .await
            .unwrap();
        assert_eq!(out, LockOutcome::LockedByOther);
        let out = storage
            .delete_lock(&q, &id("k0"), false, Some("a".into()), 102)
            .await
            .unwrap();
        assert_eq!(out, LockOutcome::Ok(None));
        // k1 (locked before the upgrade, no hint): handled on the general path.
        let out = storage
            .update_request(&q, handled("k1"), false, Some("a".into()), 103)
            .await
            .unwrap();
        assert!(out.was_already_present && !out.was_already_handled);
        check_pending(&storage, num).await;
        // k2: its lock released after it was handed out (the hint's key is stale).
        assert_eq!(
            storage
                .unlock_requests(&q, Some("d".into()), 104)
                .await
                .unwrap(),
            6
        );
        let lock_one = |client: &str, ms: i64, now: i64| {
            let (s, q, client) = (storage.clone(), q.clone(), client.to_string());
            async move {
                let head = s.lock_head(&q, 1, ms, Some(client), now).await.unwrap();
                head.items[0].unique_key.clone()
            }
        };
        assert_eq!(lock_one("e", 1_000, 105).await, "k2");
        storage
            .unlock_requests(&q, Some("e".into()), 106)
            .await
            .unwrap();
        let out = storage
            .update_request(&q, handled("k2"), false, Some("e".into()), 107)
            .await
            .unwrap();
        assert!(out.was_already_present && !out.was_already_handled);
        check_pending(&storage, num).await;
        // k5: its lock lapsed and was taken again by another client (the hint kept is the
        // first lock's).
        assert_eq!(lock_one("f", 5, 200).await, "k5");
        let stale = storage.inner.lock_hints.take(num, &id("k5")).unwrap();
        assert_eq!(lock_one("g", 1_000, 300).await, "k5");
        let fresh = storage.inner.lock_hints.take(num, &id("k5")).unwrap();
        assert_ne!(stale.locked_until, fresh.locked_until);
        storage
            .inner
            .lock_hints
            .insert(num, std::iter::once((id("k5"), stale)));
        let out = storage
            .update_request(&q, handled("k5"), false, Some("g".into()), 301)
            .await
            .unwrap();
        assert!(out.was_already_present && !out.was_already_handled);
        let left = check_pending(&storage, num).await;
        let left: Vec<&str> = left.iter().map(|e| e.4.as_str()).collect();
        let mut want = vec![id("k0"), id("k3"), id("k6"), id("k7"), id("k8"), id("k9")];
        want.sort();
        let mut left: Vec<String> = left.iter().map(|s| s.to_string()).collect();
        left.sort();
        assert_eq!(left, want);
        let info = storage
            .get_storage(StorageKind::RequestQueue, &q)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (info.total_request_count, info.handled_request_count),
            (10, 4)
        );
    }

    /// Batched "handled" updates (`QueueDeltas`): in one batch, a failed write's counters and
    /// client are dropped, a plain write in the middle sees exact counters, a repeated update
    /// is `wasAlreadyHandled` and counted once, an unknown request goes back to the general
    /// path unchanged, an update of a queue deleted earlier in the batch fails, and the queue
    /// rows after the batch are exact (counters, clients, modifiedAt).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_handled_updates_stay_exact() {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        let info = |id: String| {
            let storage = storage.clone();
            async move {
                storage
                    .get_storage(StorageKind::RequestQueue, &id)
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        let (one, two, doomed) = (
            new_queue(&storage).await,
            new_queue(&storage).await,
            new_queue(&storage).await,
        );
        for q in [&one, &two, &doomed] {
            let reqs = keys(0..3).iter().map(|k| req(k)).collect();
            storage
                .add_requests(q, reqs, false, Some("a".into()), 1)
                .await
                .unwrap();
        }
        let nums = (
            info(one.clone()).await.num,
            info(two.clone()).await.num,
            info(doomed.clone()).await.num,
        );
        let before = info(one.clone()).await;
        let handled = handled_req;
        type Out = std::result::Result<String, String>;
        let held = storage.inner.writer.lock();
        let mut tasks: Vec<tokio::task::JoinHandle<Out>> = Vec::new();
        macro_rules! queue {
            ($body:expr) => {
                storage.spawn_queued(&mut tasks, $body)
            };
        }
        let mark = |queue: &str, num: i64, key: &str, client: Option<&str>, now: i64| {
            let (s, queue, r) = (storage.clone(), queue.to_string(), handled(key));
            let client = client.map(str::to_string);
            async move {
                s.mark_handled(&queue, num, r, client, now)
                    .await
                    .map(|out| match out {
                        Ok(o) => format!("{}{}", o.was_already_present, o.was_already_handled),
                        Err((r, _)) => format!("back {}", r.unique_key),
                    })
            }
        };
        // 0: k0 of queue one handled by client a.
        queue!(mark(&one, nums.0, "k0", Some("a"), 10));
        // 1: counts a handled request and client b for queue one, then fails: both dropped.
        let (s, num) = (storage.clone(), nums.0);
        queue!(async move {
            s.write_batched(Changes::OneStatement, move |_tx, batch| {
                let mut delta = QueueDelta {
                    handled: 1,
                    writes: 1,
                    now: 99,
                    ..QueueDelta::default()
                };
                delta.track(&Some("b".into()));
                batch.state::<QueueDeltas>().job = Some((num, delta));
                Err::<String, _>(Error::Invalid("refused".into()))
            })
            .await
        });
        // 2: queue two: clients b then c (two clients).
        queue!(mark(&two, nums.1, "k0", Some("b"), 11));
        queue!(mark(&two, nums.1, "k1", Some("c"), 12));
        // 4: a plain write reads queue one's row exactly.
        let (s, num) = (storage.clone(), nums.0);
        queue!(async move {
            s.write(move |tx| {
                let row: (i64, i64, i64, Option<String>) = tx.query_row(
                    "SELECT handled_request_count, write_count, had_multiple_clients, last_client_key
                     FROM storages WHERE num = ?1",
                    [num],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                )?;
                Ok(format!("{row:?}"))
            })
            .await
        });
        // 5: k0 again (already handled), k1, by client a; an unknown request comes back.
        queue!(mark(&one, nums.0, "k0", Some("a"), 13));
        queue!(mark(&one, nums.0, "k1", Some("a"), 14));
        queue!(mark(&one, nums.0, "nope", Some("z"), 15));
        // 8: queue doomed is deleted (a plain write), so an update of it fails.
        let (s, id) = (storage.clone(), doomed.clone());
        queue!(async move {
            s.delete_storage(StorageKind::RequestQueue, &id)
                .await
                .map(|b| b.to_string())
        });
        queue!(mark(&doomed, nums.2, "k0", Some("a"), 16));
        drop(held);
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        let ok = |s: &str| Ok::<String, String>(s.to_string());
        assert_eq!(results[0], ok("truefalse"));
        assert!(results[1].as_ref().unwrap_err().contains("refused"));
        assert_eq!(results[2], ok("truefalse"));
        assert_eq!(results[3], ok("truefalse"));
        assert_eq!(
            results[4],
            ok(&format!("(1, {}, 0, Some(\"a\"))", before.write_count + 1))
        );
        assert_eq!(results[5], ok("truetrue"));
        assert_eq!(results[6], ok("truefalse"));
        assert_eq!(results[7], ok("back nope"));
        assert_eq!(results[8], ok("true"));
        assert!(results[9].as_ref().unwrap_err().contains("NotFound"));
        let one = info(one).await;
        assert_eq!((one.total_request_count, one.handled_request_count), (3, 2));
        assert_eq!(one.write_count, before.write_count + 3);
        assert!(!one.had_multiple_clients);
        assert_eq!(one.modified_at, 14);
        let stored = handled("k0").json.len() as i64 - req("k0").json.len() as i64;
        assert_eq!(
            one.storage_bytes as i64,
            before.storage_bytes as i64 + 2 * stored
        );
        let two = info(two).await;
        assert_eq!((two.total_request_count, two.handled_request_count), (3, 2));
        assert!(two.had_multiple_clients);
        assert_eq!(two.modified_at, 12);
    }
}
