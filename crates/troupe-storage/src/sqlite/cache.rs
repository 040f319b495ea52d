//! In-memory caches in front of the hottest reads, and the version counters that keep caches
//! right (here and in the HTTP layer, see [`crate::RunStore::runs_version`]).
//!
//! Invalidation is by version. What a write changes maps to one of a fixed number of counters
//! (slots, by hash), and the write bumps that counter *after* its transaction committed and
//! *before* it is acknowledged ([`Bump`] rides in the write's result, so the bump happens even
//! when the caller has gone away). A reader loads the counter *before* it reads from SQLite and
//! tags what it caches with that value; an entry is served only while its tag still equals the
//! counter. So if a write committed after the reader's snapshot, its bump came after the tag was
//! loaded and the entry is never served; if it committed before the tag was loaded, the snapshot
//! saw it. An acknowledged write is therefore visible to every later read (read-your-writes
//! across requests), and a delete makes the entry unusable the same way. Two keys sharing a slot
//! only cost each other a cache miss.
//!
//! Caches are bounded by bytes; a shard over its share drops arbitrary entries. The record
//! cache is emptied when it has not been used for [`IDLE_TICKS`] seconds, so an idle server
//! gives the memory back.
//! Writes by another process on the same database file are not seen (troupe owns its data dir).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::kv::{RecordMeta, StoreAccess};
use troupe_model::storage::StorageKind;

/// Version slots per kind of thing (a power of two).
const SLOTS: usize = 4096;

/// Key-value records larger than this are not cached (the cache is for small, hot records).
pub(crate) const MAX_CACHED_RECORD: usize = 32 * 1024;
/// Bytes the record cache may hold, payload and bookkeeping together.
const RECORD_CACHE_BYTES: usize = 16 << 20;
const RECORD_SHARDS: usize = 16;
/// What an entry costs besides its bytes (strings, map slot, allocation headers; measured roughly).
const ENTRY_OVERHEAD: usize = 256;
/// Ticks (seconds, see [`Caches::tick`]) without a read of the record cache before it is emptied.
const IDLE_TICKS: u64 = 10;
/// Storages whose access data the access cache may hold (a few hundred bytes each).
const ACCESS_CACHE_ENTRIES: usize = 8192;
const ACCESS_SHARDS: usize = 16;

/// Counters bumped by writes (see the module docs).
struct Versions {
    slots: Box<[AtomicU64]>,
}

impl Versions {
    fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn get(&self, hash: u64) -> u64 {
        self.slots[hash as usize & (SLOTS - 1)].load(Ordering::SeqCst)
    }

    fn bump(&self, hash: u64) {
        self.slots[hash as usize & (SLOTS - 1)].fetch_add(1, Ordering::SeqCst);
    }
}

/// The caches of one database and their versions.
pub(crate) struct Caches {
    hasher: foldhash::fast::RandomState,
    /// Key-value records, by (store id, key).
    record_versions: Versions,
    /// Bumped when a store's access settings change or a store is deleted: every cached record
    /// carries its store's access data.
    catalog_version: AtomicU64,
    records: RecordCache,
    /// Bumped when any storage is renamed, changes access or is deleted: the access cache
    /// holds what those change.
    storages_version: AtomicU64,
    access: AccessCache,
    /// Runs, by the id of their Actor and of their task.
    run_versions: Versions,
    /// Advanced about once a second by [`Caches::tick`].
    ticks: AtomicU64,
    /// The tick of the last read of the record cache.
    records_used: AtomicU64,
}

impl Caches {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            hasher: foldhash::fast::RandomState::default(),
            record_versions: Versions::new(),
            catalog_version: AtomicU64::new(0),
            records: RecordCache::new(),
            storages_version: AtomicU64::new(0),
            access: AccessCache::new(ACCESS_SHARDS),
            run_versions: Versions::new(),
            ticks: AtomicU64::new(0),
            records_used: AtomicU64::new(0),
        })
    }

    /// Called about once a second: empties the record cache when it has not been read for
    /// [`IDLE_TICKS`] ticks.
    pub(crate) fn tick(&self) {
        let now = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        if now.saturating_sub(self.records_used.load(Ordering::Relaxed)) >= IDLE_TICKS {
            self.records.clear();
        }
    }

    pub(crate) fn record_hash(&self, store_id: &str, key: &str) -> u64 {
        self.hasher.hash_one((store_id, key))
    }

    fn owner_hash(&self, owner_id: &str) -> u64 {
        self.hasher.hash_one(owner_id)
    }

    /// The version tag of a record read that starts now.
    pub(crate) fn record_tag(&self, hash: u64) -> (u64, u64) {
        (
            self.record_versions.get(hash),
            self.catalog_version.load(Ordering::SeqCst),
        )
    }

    /// The current version of the runs of an Actor or a task.
    pub(crate) fn runs_version(&self, owner_id: &str) -> u64 {
        self.run_versions.get(self.owner_hash(owner_id))
    }

    /// A cached record that is still current.
    pub(crate) fn cached_record(
        &self,
        hash: u64,
        store_id: &str,
        key: &str,
    ) -> Option<Arc<CachedRecord>> {
        let tag = self.record_tag(hash);
        self.records_used
            .store(self.ticks.load(Ordering::Relaxed), Ordering::Relaxed);
        self.records
            .get(hash)
            .filter(|e| e.tag == tag && &*e.store_id == store_id && e.meta.key == key)
    }

    /// Caches a record read with version tag `tag` (taken before the read).
    pub(crate) fn put_record(
        &self,
        hash: u64,
        tag: (u64, u64),
        access: &StoreAccess,
        meta: &RecordMeta,
        data: &Bytes,
    ) {
        if data.len() > MAX_CACHED_RECORD {
            return;
        }
        let entry = CachedRecord {
            store_id: access.id.as_str().into(),
            access: access.clone(),
            meta: meta.clone(),
            data: data.clone(),
            tag,
            cost: data.len() + ENTRY_OVERHEAD + meta.key.len() + meta.content_type.len(),
        };
        self.records.put(hash, entry);
    }

    /// Bumps (once dropped) what a write of record `key` of store `store_id` changes.
    pub(crate) fn record_write(self: &Arc<Self>, store_id: &str, key: &str) -> Bump {
        Bump {
            caches: self.clone(),
            what: What::Record(self.record_hash(store_id, key)),
        }
    }

    /// Bumps (once dropped) what a rename, an access change or the deletion of a storage of
    /// `kind` changes.
    pub(crate) fn catalog_write(self: &Arc<Self>, kind: StorageKind) -> Bump {
        Bump {
            caches: self.clone(),
            what: What::Catalog(kind == StorageKind::KeyValueStore),
        }
    }

    /// The version tag of a storage access read that starts now.
    pub(crate) fn access_tag(&self) -> u64 {
        self.storages_version.load(Ordering::SeqCst)
    }

    fn access_hash(&self, kind: StorageKind, id: &str) -> u64 {
        self.hasher.hash_one((kind.code(), id))
    }

    /// The cached access data of a storage, if still current.
    pub(crate) fn cached_access(&self, kind: StorageKind, id: &str) -> Option<Arc<StoreAccess>> {
        let tag = self.access_tag();
        let hash = self.access_hash(kind, id);
        let shard = self.access.shard(hash).lock();
        let entry = shard.get(&hash)?;
        (entry.tag == tag && entry.kind == kind && entry.access.id == id)
            .then(|| entry.access.clone())
    }

    /// Caches a storage's access data read with version tag `tag` (taken before the read).
    pub(crate) fn put_access(&self, kind: StorageKind, tag: u64, access: &Arc<StoreAccess>) {
        let hash = self.access_hash(kind, &access.id);
        let mut shard = self.access.shard(hash).lock();
        if shard.len() >= ACCESS_CACHE_ENTRIES / ACCESS_SHARDS && !shard.contains_key(&hash) {
            // Full: drop an arbitrary entry.
            if let Some(&victim) = shard.keys().next() {
                shard.remove(&victim);
            }
        }
        shard.insert(
            hash,
            CachedAccess {
                kind,
                access: access.clone(),
                tag,
            },
        );
    }

    /// Bumps (once dropped) the run versions of an Actor and, if any, a task.
    pub(crate) fn runs_write(self: &Arc<Self>, act_id: &str, task_id: Option<&str>) -> Bump {
        Bump {
            caches: self.clone(),
            what: What::Runs(
                self.owner_hash(act_id),
                task_id.map(|task| self.owner_hash(task)),
            ),
        }
    }
}

enum What {
    Record(u64),
    /// Any storage's catalog row; `true` for a key-value store (whose cached records carry it).
    Catalog(bool),
    Runs(u64, Option<u64>),
}

/// Bumps a version when dropped. A write returns it inside its result, so it is dropped after
/// the transaction committed: by the caller before it acknowledges the write, or by the group
/// commit's writer thread or settler task when the caller is gone. Dropped unused (a failed write), it only costs a miss.
#[must_use]
pub(crate) struct Bump {
    caches: Arc<Caches>,
    what: What,
}

impl Drop for Bump {
    fn drop(&mut self) {
        let caches = &self.caches;
        match self.what {
            What::Record(hash) => caches.record_versions.bump(hash),
            What::Catalog(kv) => {
                caches.storages_version.fetch_add(1, Ordering::SeqCst);
                if kv {
                    caches.catalog_version.fetch_add(1, Ordering::SeqCst);
                }
            }
            What::Runs(act, task) => {
                caches.run_versions.bump(act);
                if let Some(task) = task {
                    caches.run_versions.bump(task);
                }
            }
        }
    }
}

/// A small key-value record as last read, with its store's access data.
pub(crate) struct CachedRecord {
    store_id: Box<str>,
    pub(crate) access: StoreAccess,
    pub(crate) meta: RecordMeta,
    pub(crate) data: Bytes,
    tag: (u64, u64),
    cost: usize,
}

/// A storage's access data as last read.
struct CachedAccess {
    kind: StorageKind,
    /// Shared with the writes that found it (no copy of its strings per write).
    access: Arc<StoreAccess>,
    tag: u64,
}

type AccessShard = HashMap<u64, CachedAccess, foldhash::fast::FixedState>;

/// Access data of storages by the hash of (kind, id); a colliding storage replaces the entry.
type AccessCache = Sharded<AccessShard>;

/// A cache cut into independently locked parts, picked by a hash.
struct Sharded<T> {
    shards: Box<[Mutex<T>]>,
}

impl<T: Default> Sharded<T> {
    fn new(count: usize) -> Self {
        Self {
            shards: (0..count).map(|_| Mutex::new(T::default())).collect(),
        }
    }

    fn shard(&self, hash: u64) -> &Mutex<T> {
        // The low bits pick the version slot; the shard comes from the high ones.
        &self.shards[(hash >> 58) as usize % self.shards.len()]
    }

    fn iter(&self) -> impl Iterator<Item = &Mutex<T>> {
        self.shards.iter()
    }
}

struct RecordCache {
    shards: Sharded<Shard>,
}

#[derive(Default)]
struct Shard {
    /// By the hash of (store id, key); a colliding key replaces the entry.
    map: HashMap<u64, Arc<CachedRecord>, foldhash::fast::FixedState>,
    bytes: usize,
}

impl RecordCache {
    fn new() -> Self {
        Self {
            shards: Sharded::new(RECORD_SHARDS),
        }
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        self.shards.shard(hash)
    }

    fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            if !shard.map.is_empty() {
                *shard = Shard::default();
            }
        }
    }

    fn get(&self, hash: u64) -> Option<Arc<CachedRecord>> {
        self.shard(hash).lock().map.get(&hash).cloned()
    }

    fn put(&self, hash: u64, entry: CachedRecord) {
        let budget = RECORD_CACHE_BYTES / RECORD_SHARDS;
        let cost = entry.cost;
        let mut shard = self.shard(hash).lock();
        if let Some(old) = shard.map.remove(&hash) {
            shard.bytes -= old.cost;
        }
        while shard.bytes + cost > budget {
            let Some(&victim) = shard.map.keys().next() else {
                break;
            };
            if let Some(old) = shard.map.remove(&victim) {
                shard.bytes -= old.cost;
            }
        }
        shard.bytes += cost;
        shard.map.insert(hash, Arc::new(entry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(id: &str) -> StoreAccess {
        StoreAccess {
            num: 1,
            id: id.into(),
            user_id: "u".into(),
            general_access: "RESTRICTED".into(),
            url_signing_secret_key: String::new(),
        }
    }

    fn meta(key: &str) -> RecordMeta {
        RecordMeta {
            key: key.into(),
            size: 3,
            content_type: "text/plain".into(),
            content_encoding: None,
            modified_at: 0,
        }
    }

    #[test]
    fn entries_follow_versions() {
        let caches = Caches::new();
        let h = caches.record_hash("s", "k");
        let tag = caches.record_tag(h);
        caches.put_record(
            h,
            tag,
            &access("s"),
            &meta("k"),
            &Bytes::from_static(b"abc"),
        );
        assert!(caches.cached_record(h, "s", "k").is_some());
        // Another key or store with the same hash is not this entry.
        assert!(caches.cached_record(h, "s", "other").is_none());
        assert!(caches.cached_record(h, "t", "k").is_none());
        drop(caches.record_write("s", "k"));
        assert!(caches.cached_record(h, "s", "k").is_none());
        // An entry read before a write committed (older tag) is never served.
        caches.put_record(
            h,
            tag,
            &access("s"),
            &meta("k"),
            &Bytes::from_static(b"abc"),
        );
        assert!(caches.cached_record(h, "s", "k").is_none());
        let tag = caches.record_tag(h);
        caches.put_record(
            h,
            tag,
            &access("s"),
            &meta("k"),
            &Bytes::from_static(b"abc"),
        );
        assert!(caches.cached_record(h, "s", "k").is_some());
        drop(caches.catalog_write(StorageKind::KeyValueStore));
        assert!(caches.cached_record(h, "s", "k").is_none());
        // Other kinds' catalog changes leave cached records alone.
        let tag = caches.record_tag(h);
        caches.put_record(
            h,
            tag,
            &access("s"),
            &meta("k"),
            &Bytes::from_static(b"abc"),
        );
        drop(caches.catalog_write(StorageKind::Dataset));
        assert!(caches.cached_record(h, "s", "k").is_some());

        // Emptied once unused for a while.
        let tag = caches.record_tag(h);
        caches.put_record(
            h,
            tag,
            &access("s"),
            &meta("k"),
            &Bytes::from_static(b"abc"),
        );
        for _ in 0..IDLE_TICKS - 1 {
            caches.tick();
        }
        assert!(caches.cached_record(h, "s", "k").is_some());
        for _ in 0..IDLE_TICKS - 1 {
            caches.tick();
        }
        assert!(caches.records.get(h).is_some());
        caches.tick();
        assert!(caches.records.get(h).is_none());

        let before = caches.runs_version("a");
        let task_before = caches.runs_version("t");
        drop(caches.runs_write("a", Some("t")));
        assert_ne!(caches.runs_version("a"), before);
        assert_ne!(caches.runs_version("t"), task_before);
    }

    #[test]
    fn access_entries_follow_catalog_writes() {
        let caches = Caches::new();
        let tag = caches.access_tag();
        caches.put_access(StorageKind::Dataset, tag, &Arc::new(access("s")));
        assert_eq!(
            caches.cached_access(StorageKind::Dataset, "s").as_deref(),
            Some(&access("s"))
        );
        // Another kind or id is not this entry.
        assert!(caches
            .cached_access(StorageKind::KeyValueStore, "s")
            .is_none());
        assert!(caches.cached_access(StorageKind::Dataset, "t").is_none());
        // Any kind's rename, access change or deletion makes every entry stale.
        drop(caches.catalog_write(StorageKind::RequestQueue));
        assert!(caches.cached_access(StorageKind::Dataset, "s").is_none());
        // An entry read before the write committed (older tag) is never served.
        caches.put_access(StorageKind::Dataset, tag, &Arc::new(access("s")));
        assert!(caches.cached_access(StorageKind::Dataset, "s").is_none());
        // Bounded.
        let tag = caches.access_tag();
        for i in 0..3 * ACCESS_CACHE_ENTRIES {
            caches.put_access(
                StorageKind::Dataset,
                tag,
                &Arc::new(access(&format!("s{i}"))),
            );
        }
        let entries: usize = caches.access.iter().map(|s| s.lock().len()).sum();
        assert!(entries <= ACCESS_CACHE_ENTRIES);
        assert!(entries > ACCESS_CACHE_ENTRIES / 2);
    }

    #[test]
    fn memory_is_bounded() {
        let caches = Caches::new();
        let data = Bytes::from(vec![0u8; MAX_CACHED_RECORD]);
        for i in 0..(2 * RECORD_CACHE_BYTES / MAX_CACHED_RECORD) {
            let key = format!("k{i}");
            let h = caches.record_hash("s", &key);
            let tag = caches.record_tag(h);
            caches.put_record(h, tag, &access("s"), &meta(&key), &data);
        }
        let (mut bytes, mut entries) = (0, 0);
        for shard in caches.records.shards.iter() {
            let shard = shard.lock();
            assert!(shard.bytes <= RECORD_CACHE_BYTES / RECORD_SHARDS);
            assert_eq!(
                shard.bytes,
                shard.map.values().map(|e| e.cost).sum::<usize>()
            );
            bytes += shard.bytes;
            entries += shard.map.len();
        }
        assert!(bytes <= RECORD_CACHE_BYTES);
        assert!(entries > 0);
        // Too large to cache.
        let big = Bytes::from(vec![0u8; MAX_CACHED_RECORD + 1]);
        let h = caches.record_hash("s", "big");
        caches.put_record(h, caches.record_tag(h), &access("s"), &meta("big"), &big);
        assert!(caches.cached_record(h, "s", "big").is_none());
    }
}
