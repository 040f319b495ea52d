//! Small caches of response bodies, kept right by version numbers from storage (e.g.
//! [`troupe_storage::RunStore::runs_version`]): an entry is served only while the version read
//! *before* the answer was computed is still current, so an acknowledged write is visible to
//! every later request. Bounded by bytes.

use std::collections::HashMap;

use bytes::Bytes;
use parking_lot::Mutex;

/// Bodies larger than this are not cached.
const MAX_BODY: usize = 16 * 1024;

/// A bounded map from a key to a body computed at a version.
pub struct BodyCache {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, (u64, Bytes), foldhash::fast::RandomState>,
    bytes: usize,
}

/// What an entry costs besides its body and key.
const ENTRY_OVERHEAD: usize = 64;

impl BodyCache {
    /// A cache holding at most `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The body cached under `key` at `version`, if any.
    pub fn get(&self, key: &str, version: u64) -> Option<Bytes> {
        let inner = self.inner.lock();
        let (at, body) = inner.entries.get(key)?;
        (*at == version).then(|| body.clone())
    }

    /// Caches `body` under `key`, computed from data read after `version` was read.
    pub fn put(&self, key: String, version: u64, body: Bytes) {
        if body.len() > MAX_BODY {
            return;
        }
        let cost = |key: &str, body: &Bytes| key.len() + body.len() + ENTRY_OVERHEAD;
        let new_cost = cost(&key, &body);
        let mut inner = self.inner.lock();
        if let Some((_, old)) = inner.entries.remove(&key) {
            inner.bytes -= cost(&key, &old);
        }
        while inner.bytes + new_cost > self.budget {
            let Some(victim) = inner.entries.keys().next().cloned() else {
                break;
            };
            if let Some((_, old)) = inner.entries.remove(&victim) {
                inner.bytes -= cost(&victim, &old);
            }
        }
        inner.bytes += new_cost;
        inner.entries.insert(key, (version, body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_bounds() {
        let cache = BodyCache::new(10_000);
        cache.put("a".into(), 1, Bytes::from_static(b"one"));
        assert_eq!(cache.get("a", 1).as_deref(), Some(&b"one"[..]));
        assert_eq!(cache.get("a", 2), None);
        assert_eq!(cache.get("b", 1), None);
        cache.put("a".into(), 2, Bytes::from_static(b"two"));
        assert_eq!(cache.get("a", 2).as_deref(), Some(&b"two"[..]));
        assert_eq!(cache.get("a", 1), None);
        for i in 0..1000 {
            cache.put(format!("k{i}"), 0, Bytes::from(vec![0u8; 100]));
        }
        let inner = cache.inner.lock();
        assert!(inner.bytes <= 10_000);
        let sum: usize = inner
            .entries
            .iter()
            .map(|(k, (_, b))| k.len() + b.len() + ENTRY_OVERHEAD)
            .sum();
        assert_eq!(inner.bytes, sum);
        drop(inner);
        assert_eq!(cache.get("k999", 0).map(|b| b.len()), Some(100));
        // Too large to cache.
        cache.put("big".into(), 0, Bytes::from(vec![0u8; MAX_BODY + 1]));
        assert_eq!(cache.get("big", 0), None);
    }
}
