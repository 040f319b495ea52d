//! In-process yardsticks, run on the server's CPU while the servers idle: SQLite loops on
//! troupe's own storage (same schema, pragmas, connections and transactions, through
//! `SqliteStorage::write_blocking`/`read_blocking`), serde_json, and process spawn.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::params;
use troupe_storage::sqlite::{dataset_item_key, SqliteOptions, SqliteStorage};

use crate::load::new_hist;

/// Result of one in-process loop: `units` done in `elapsed` (+ per-op latency histogram, µs).
pub struct RawResult {
    pub ops: u64,
    pub units: u64,
    pub elapsed: Duration,
    pub hist: hdrhistogram::Histogram<u64>,
}

impl RawResult {
    fn new() -> Self {
        Self {
            ops: 0,
            units: 0,
            elapsed: Duration::ZERO,
            hist: new_hist(),
        }
    }
}

/// Catalog number used for the raw dataset rows (no catalog row needed: items have no FK).
const RAW_NUM: i64 = 1;
/// Catalog number of the 1-row-commit rows.
const COMMIT_NUM: i64 = 2;

pub struct RawEngine {
    storage: SqliteStorage,
    /// Items in the raw dataset range so far.
    inserted: u64,
    items: Vec<String>,
    commit_seq: u64,
    commit_rng: crate::load::Rng,
    value_1k: Vec<u8>,
}

impl RawEngine {
    pub fn open(dir: &Path, items: Vec<String>) -> anyhow::Result<Self> {
        let storage = SqliteStorage::open(dir, SqliteOptions::default())
            .context("opening the yardstick database")?;
        Ok(Self {
            storage,
            inserted: 0,
            items,
            commit_seq: 0,
            commit_rng: crate::load::Rng::new(7),
            value_1k: vec![b'x'; 1024],
        })
    }

    /// Batched insert: 1000 rows per transaction, like a dataset push.
    pub fn insert(&mut self, duration: Duration, max_rows: u64) -> anyhow::Result<RawResult> {
        let mut r = RawResult::new();
        let start = Instant::now();
        while start.elapsed() < duration && r.units < max_rows {
            let first = self.inserted;
            let items = &self.items;
            let t = Instant::now();
            self.storage.write_blocking(|tx| {
                let mut stmt =
                    tx.prepare_cached("INSERT INTO dataset_items (k, data) VALUES (?1, ?2)")?;
                for i in 0..1000u64 {
                    let item = &items[((first + i) % items.len() as u64) as usize];
                    stmt.execute(params![
                        dataset_item_key(RAW_NUM, first + i),
                        item.as_bytes()
                    ])?;
                }
                Ok(())
            })?;
            let _ = r.hist.record(t.elapsed().as_micros() as u64 + 1);
            self.inserted += 1000;
            r.ops += 1;
            r.units += 1000;
        }
        r.elapsed = start.elapsed();
        Ok(r)
    }

    /// Full range scans of (up to) the first `rows` raw items, reading every blob.
    pub fn scan(&mut self, duration: Duration, rows: u64) -> anyhow::Result<RawResult> {
        let rows = rows.min(self.inserted).max(1);
        let mut r = RawResult::new();
        let start = Instant::now();
        while start.elapsed() < duration {
            let t = Instant::now();
            let (n, _bytes) = self.storage.read_blocking(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT data FROM dataset_items WHERE k >= ?1 AND k < ?2 ORDER BY k",
                )?;
                let mut q = stmt.query(params![
                    dataset_item_key(RAW_NUM, 0),
                    dataset_item_key(RAW_NUM, rows)
                ])?;
                let (mut n, mut bytes) = (0u64, 0u64);
                while let Some(row) = q.next()? {
                    let data = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
                    bytes += data.len() as u64;
                    n += 1;
                }
                Ok((n, bytes))
            })?;
            let _ = r.hist.record(t.elapsed().as_micros() as u64 + 1);
            r.ops += 1;
            r.units += n;
        }
        r.elapsed = start.elapsed();
        Ok(r)
    }

    /// One-row commits: upsert a 1 KiB value, one transaction each, keys in sequence over 10,000
    /// rows or (`random`) uniformly at random among them.
    pub fn commit(
        &mut self,
        duration: Duration,
        max_ops: u64,
        random: bool,
    ) -> anyhow::Result<RawResult> {
        let mut r = RawResult::new();
        let start = Instant::now();
        while start.elapsed() < duration && r.ops < max_ops {
            let n = if random {
                self.commit_rng.below(10_000)
            } else {
                self.commit_seq % 10_000
            };
            let key = dataset_item_key(COMMIT_NUM, n);
            self.commit_seq += 1;
            let value = &self.value_1k;
            let t = Instant::now();
            self.storage.write_blocking(|tx| {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO dataset_items (k, data) VALUES (?1, ?2)",
                )?;
                stmt.execute(params![key, value])?;
                Ok(())
            })?;
            let _ = r.hist.record(t.elapsed().as_micros() as u64 + 1);
            r.ops += 1;
            r.units += 1;
        }
        r.elapsed = start.elapsed();
        Ok(r)
    }
}

/// serde_json `Value` parse + serialize of each item, one core.
pub fn serde_roundtrip(items: &[String], duration: Duration) -> RawResult {
    let mut r = RawResult::new();
    let start = Instant::now();
    let mut out = Vec::with_capacity(1024);
    'outer: loop {
        for chunk in items.chunks(1000) {
            let t = Instant::now();
            for item in chunk {
                let value: serde_json::Value = serde_json::from_str(item).expect("valid item");
                out.clear();
                serde_json::to_writer(&mut out, &value).expect("serialize");
                std::hint::black_box(&out);
            }
            let _ = r.hist.record(t.elapsed().as_micros() as u64 + 1);
            r.ops += 1;
            r.units += chunk.len() as u64;
            if start.elapsed() >= duration {
                break 'outer;
            }
        }
    }
    r.elapsed = start.elapsed();
    r
}

/// Spawn + exit (reaped) of a tiny binary.
pub fn spawn_exit(bin: &Path, duration: Duration, max_ops: u64) -> anyhow::Result<RawResult> {
    let mut r = RawResult::new();
    let start = Instant::now();
    while start.elapsed() < duration && r.ops < max_ops {
        let t = Instant::now();
        let status = Command::new(bin)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("spawning {}", bin.display()))?;
        anyhow::ensure!(status.success(), "{} failed: {status}", bin.display());
        let _ = r.hist.record(t.elapsed().as_micros() as u64 + 1);
        r.ops += 1;
        r.units += 1;
    }
    r.elapsed = start.elapsed();
    Ok(r)
}

/// Buffered sequential write of `bytes` in 1 MiB blocks plus one final fsync (MB/s = 1e6 B/s).
pub fn disk_write(dir: &Path, bytes: u64) -> anyhow::Result<RawResult> {
    use std::io::Write;
    let path = dir.join("disk-write.tmp");
    let block = vec![b'l'; 1 << 20];
    let mut r = RawResult::new();
    let start = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    let mut written = 0u64;
    while written < bytes {
        file.write_all(&block)?;
        written += block.len() as u64;
    }
    file.sync_all()?;
    r.elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(&path)?;
    let _ = r.hist.record(r.elapsed.as_micros() as u64 + 1);
    r.ops = 1;
    r.units = written;
    Ok(r)
}
