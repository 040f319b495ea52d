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
//!
//! ## Batch-scoped state
//!
//! Writes that go through [`SqliteStorage::write_batched`] also get the batch's
//! [`BatchContext`]: state shared by the batch's writes and written to the database once,
//! before COMMIT, instead of once per write. The catalog counters of a storage
//! ([`super::catalog::CatalogDeltas`]) are the main use: eight PUTs to one store in a batch
//! make one `UPDATE storages` (and one sub-journal copy of its page) instead of eight. Rules:
//! - a [`BatchState`] hears after each batched write whether it succeeded; a failed write's
//!   changes to the state are undone with its savepoint ([`BatchState::job_failed`]);
//! - before a plain `write` runs, every state is flushed into the transaction and dropped, so
//!   plain writes see exact rows (and may change them: the states start afresh after them);
//! - the states are flushed before COMMIT, in the same transaction as the writes they
//!   account for; if a flush fails, the whole batch fails (as when COMMIT fails).

use std::any::{Any, TypeId};
use std::panic::AssertUnwindSafe;

use rusqlite::Transaction;

use super::SqliteStorage;
use crate::{Error, Result};

/// A queued write (one allocation per write): runs inside the batch's transaction and says
/// whether it succeeded; then, once the batch is settled, replies to its caller.
trait QueuedWrite: Send {
    fn run(&mut self, tx: &Transaction<'_>, context: &mut BatchContext) -> bool;
    /// Called once the batch holding the write has committed (`None`) or failed
    /// (`Some(message)`).
    fn settle(self: Box<Self>, failure: Option<&str>);
}

/// A write's closure, then its result, and its reply channel.
struct Pending<F, T> {
    f: Option<F>,
    result: Option<Result<T>>,
    sender: tokio::sync::oneshot::Sender<Result<T>>,
}

impl<F, T> QueuedWrite for Pending<F, T>
where
    T: Send + 'static,
    F: FnOnce(&Transaction<'_>, &mut BatchContext) -> Result<T> + Send + 'static,
{
    fn run(&mut self, tx: &Transaction<'_>, context: &mut BatchContext) -> bool {
        let f = self.f.take().expect("a write runs once");
        let result = f(tx, context);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn settle(self: Box<Self>, failure: Option<&str>) {
        let Some(result) = self.result else {
            return;
        };
        let result = match (failure, result) {
            (Some(message), Ok(_)) => Err(Error::Internal(anyhow::anyhow!(
                "write transaction failed: {message}"
            ))),
            (_, result) => result,
        };
        let _ = self.sender.send(result);
    }
}

type Completion = Box<dyn QueuedWrite>;

struct Job {
    write: Box<dyn QueuedWrite>,
    /// Uses the batch context (see [`SqliteStorage::write_batched`]); plain writes flush it.
    batched: bool,
    /// Runs without a savepoint (see [`Changes::OneStatement`]).
    one_statement: bool,
}

/// What a batched write changes in the database; says whether it needs a savepoint.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Changes {
    /// At most one data-changing statement, and it is the write's last fallible step: a write
    /// that fails has changed nothing (a failed single-row statement changes nothing), so it
    /// needs no savepoint of its own (saves SAVEPOINT/RELEASE and the sub-journal copies of
    /// every page it changes). Its batch-state changes are still undone on failure.
    OneStatement,
    /// Anything else: the write runs in its own savepoint.
    Many,
}

/// Most writes one transaction takes (bounds the latency a batch adds to its last write).
const MAX_BATCH: usize = 128;

/// State shared by the batched writes of one batch and written out once before COMMIT (see
/// the module docs).
pub(crate) trait BatchState: Any + Send {
    /// The batched write that just ran succeeded: keep what it did to the state.
    fn job_succeeded(&mut self);
    /// The batched write that just ran failed (its savepoint was rolled back): undo what it
    /// did to the state.
    fn job_failed(&mut self);
    /// Writes the pending state into the transaction. The state is dropped afterwards.
    fn flush(&mut self, tx: &Transaction<'_>) -> Result<()>;
}

/// The batch-scoped states of one batch, one per type (see [`BatchState`]).
#[derive(Default)]
pub(crate) struct BatchContext {
    states: Vec<(TypeId, Box<dyn BatchState>)>,
}

impl BatchContext {
    /// The batch's state of type `S`, created empty on first use.
    pub(crate) fn state<S: BatchState + Default>(&mut self) -> &mut S {
        let id = TypeId::of::<S>();
        let index = match self.states.iter().position(|(t, _)| *t == id) {
            Some(index) => index,
            None => {
                self.states.push((id, Box::new(S::default())));
                self.states.len() - 1
            }
        };
        let state: &mut dyn Any = &mut *self.states[index].1;
        state.downcast_mut::<S>().expect("states are keyed by type")
    }

    fn job_done(&mut self, ok: bool) {
        for (_, state) in &mut self.states {
            if ok {
                state.job_succeeded();
            } else {
                state.job_failed();
            }
        }
    }

    /// Writes every state into the transaction and forgets them.
    fn flush(&mut self, tx: &Transaction<'_>) -> Result<()> {
        for (_, mut state) in self.states.drain(..) {
            state.flush(tx)?;
        }
        Ok(())
    }
}

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
        self.submit(false, false, move |tx, _| f(tx)).await
    }

    /// Like [`write`](Self::write), and `f` also gets the batch's [`BatchContext`]: state
    /// shared with the other batched writes of the batch, written out once before COMMIT (see
    /// the module docs). `changes` says whether `f` needs a savepoint.
    pub(crate) async fn write_batched<T, F>(&self, changes: Changes, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &mut BatchContext) -> Result<T> + Send + 'static,
    {
        self.submit(true, changes == Changes::OneStatement, f).await
    }

    async fn submit<T, F>(&self, batched: bool, one_statement: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &mut BatchContext) -> Result<T> + Send + 'static,
    {
        let (sender, receiver) = tokio::sync::oneshot::channel::<Result<T>>();
        let job = Job {
            write: Box::new(Pending {
                f: Some(f),
                result: None,
                sender,
            }),
            batched,
            one_statement,
        };
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
            completion.settle(failure.as_deref());
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
    let mut context = BatchContext::default();
    for job in jobs {
        if !job.batched {
            // Plain writes see (and may change) exact rows.
            context.flush(&tx)?;
        }
        let savepoint = !single && !job.one_statement;
        if savepoint {
            tx.prepare_cached("SAVEPOINT troupe_write")?.execute([])?;
        }
        let mut write = job.write;
        let ok = match std::panic::catch_unwind(AssertUnwindSafe(|| write.run(&tx, &mut context))) {
            Ok(ok) => {
                completions.push(write);
                ok
            }
            // The write's reply channel is gone with it: its caller gets "write was dropped".
            Err(_) => {
                tracing::error!("a storage write panicked");
                if !savepoint && !single {
                    // What it changed cannot be undone alone.
                    return Err(Error::Internal(anyhow::anyhow!("a storage write panicked")));
                }
                false
            }
        };
        if job.batched {
            context.job_done(ok);
        }
        if savepoint {
            if !ok {
                tx.prepare_cached("ROLLBACK TO troupe_write")?.execute([])?;
            }
            tx.prepare_cached("RELEASE troupe_write")?.execute([])?;
        } else if !ok && tx.is_autocommit() {
            // SQLite rolled the whole transaction back (I/O error, disk full, ...).
            return Err(Error::Internal(anyhow::anyhow!(
                "the write transaction was rolled back"
            )));
        }
        any_ok |= ok;
    }
    if any_ok {
        context.flush(&tx)?;
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
