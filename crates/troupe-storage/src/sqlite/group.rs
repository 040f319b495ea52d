//! Group commit: every `SqliteStorage::write` of concurrent callers shares one transaction on
//! the single writer connection.
//!
//! A write is queued with a reply channel. The first writer that finds no batch in flight
//! becomes the leader (a task on the blocking pool) and commits batches until the queue is
//! empty. Inside a batch each write runs in its own savepoint, so a write that fails (or
//! panics) is rolled back alone and the others go on. Replies are sent only after the
//! transaction holding the write has committed, so an acknowledged write is exactly as durable
//! as with one transaction per write; when the commit fails, every write of the batch fails.
//!
//! Per write this saves BEGIN/COMMIT, the lock round trips on the database and the WAL index,
//! the WAL frame writes of pages the batch's writes share (the catalog row, index pages), and
//! most of the hops to the blocking pool.

use std::panic::AssertUnwindSafe;

use rusqlite::Transaction;

use super::SqliteStorage;
use crate::{Error, Result};

/// Called once the batch holding the write has committed (`None`) or failed (`Some(message)`).
type Completion = Box<dyn FnOnce(Option<&str>) + Send>;
/// A queued write: runs inside the batch's transaction, says whether it succeeded, and hands
/// back what to do once the batch is settled.
type Job = Box<dyn FnOnce(&Transaction<'_>) -> (bool, Completion) + Send>;

/// Most writes one transaction takes (bounds the latency a batch adds to its last write).
const MAX_BATCH: usize = 128;

/// Writes waiting for the next batch.
#[derive(Default)]
pub(crate) struct WriteQueue {
    jobs: Vec<Job>,
    leader_active: bool,
    /// Batches and writes committed so far (how well writes coalesce; see `group_stats`).
    batches: u64,
    writes: u64,
}

impl SqliteStorage {
    /// Runs `f` inside a write transaction on the writer connection, off the async runtime,
    /// possibly together with other callers' writes (see the module docs). `f`'s changes are
    /// rolled back if it returns an error; the result is returned once they are committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let (sender, receiver) = tokio::sync::oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |tx| {
            let result = f(tx);
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |failure| {
                let result = match (failure, result) {
                    (Some(message), Ok(_)) => Err(Error::Internal(anyhow::anyhow!(
                        "write transaction failed: {message}"
                    ))),
                    (_, result) => result,
                };
                let _ = sender.send(result);
            });
            (ok, completion)
        });
        let lead = {
            let mut queue = self.inner.writes.lock();
            queue.jobs.push(job);
            !std::mem::replace(&mut queue.leader_active, true)
        };
        if lead {
            let leader = Leader {
                storage: self.clone(),
                finished: false,
            };
            tokio::task::spawn_blocking(move || leader.run());
        }
        receiver
            .await
            .unwrap_or_else(|_| Err(Error::Internal(anyhow::anyhow!("write was dropped"))))
    }

    /// Writes queued or taken by a leader so far (tests wait on it).
    #[cfg(test)]
    pub(crate) fn writes_submitted(&self) -> u64 {
        let queue = self.inner.writes.lock();
        queue.jobs.len() as u64 + queue.writes
    }

    /// (batches, writes) taken by the group-commit leader so far.
    pub fn group_stats(&self) -> (u64, u64) {
        let queue = self.inner.writes.lock();
        (queue.batches, queue.writes)
    }

    /// Runs one batch in one transaction and settles its writes.
    fn commit_batch(&self, jobs: Vec<Job>) {
        let count = jobs.len();
        let mut completions: Vec<Completion> = Vec::with_capacity(count);
        let outcome = {
            let mut conn = self.inner.writer.lock();
            run_batch(&mut conn, jobs, &mut completions)
        };
        let failure = outcome.err().map(|err| format!("{err:#}"));
        if let Some(message) = &failure {
            tracing::error!(error = %message, writes = count, "write transaction failed");
        }
        for completion in completions {
            completion(failure.as_deref());
        }
    }
}

fn run_batch(
    conn: &mut rusqlite::Connection,
    jobs: Vec<Job>,
    completions: &mut Vec<Completion>,
) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // A lone write needs no savepoint: the transaction is its unit.
    let single = jobs.len() == 1;
    let mut any_ok = false;
    for job in jobs {
        if !single {
            tx.prepare_cached("SAVEPOINT troupe_write")?.execute([])?;
        }
        let ok = match std::panic::catch_unwind(AssertUnwindSafe(|| job(&tx))) {
            Ok((ok, completion)) => {
                completions.push(completion);
                ok
            }
            // The write's reply channel is gone with it: its caller gets "write was dropped".
            Err(_) => {
                tracing::error!("a storage write panicked");
                false
            }
        };
        if !single {
            if !ok {
                tx.prepare_cached("ROLLBACK TO troupe_write")?.execute([])?;
            }
            tx.prepare_cached("RELEASE troupe_write")?.execute([])?;
        }
        any_ok |= ok;
    }
    if any_ok {
        tx.commit()?;
    } else {
        tx.rollback()?;
    }
    Ok(())
}

/// The blocking-pool task that commits batches until the queue is empty.
struct Leader {
    storage: SqliteStorage,
    finished: bool,
}

impl Leader {
    fn run(mut self) {
        loop {
            let jobs: Vec<Job> = {
                let mut queue = self.storage.inner.writes.lock();
                if queue.jobs.is_empty() {
                    queue.leader_active = false;
                    self.finished = true;
                    return;
                }
                let take = queue.jobs.len().min(MAX_BATCH);
                queue.batches += 1;
                queue.writes += take as u64;
                if take == queue.jobs.len() {
                    std::mem::take(&mut queue.jobs)
                } else {
                    queue.jobs.drain(..take).collect()
                }
            };
            self.storage.commit_batch(jobs);
        }
    }
}

impl Drop for Leader {
    /// A leader that never ran (the runtime is shutting down) or unwound hands leadership
    /// back; the writes it leaves queued fail rather than wait forever.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let stranded = {
            let mut queue = self.storage.inner.writes.lock();
            queue.leader_active = false;
            std::mem::take(&mut queue.jobs)
        };
        drop(stranded);
    }
}
