//! Group commit: every `SqliteStorage::write` of concurrent callers shares one transaction on
//! the single writer connection.
//!
//! A write is queued with a reply channel. The storage's writer thread (one per storage,
//! `troupe-writer`) takes every queued write as one batch and commits it. Inside a batch each
//! write runs in its own savepoint, so a write that fails (or panics) is rolled back alone and
//! the others go on. Replies are sent only after the transaction holding the write has
//! committed, so an acknowledged write is exactly as durable as with one transaction per write;
//! when the commit fails, every write of the batch fails.
//!
//! ## Hand-offs
//!
//! The writer is a thread of its own, not a blocking-pool task started per batch: a queued write
//! wakes it only when it waits, and it takes every write queued meanwhile.
//!
//! On a runtime thread that has the [`wake_deferred_writers`] hook (the server's runtime, as
//! tokio's `on_thread_park`), the wake-up waits until the thread is about to park: the thread
//! first reads every request already there and queues their writes, and the writer then takes
//! them in one batch. Waking the writer at once made it preempt the runtime thread on a shared
//! CPU after the first write. A write whose thread stays busy wakes the writer itself after
//! `DEFER_LIMIT` (1 ms), and `DEFER_MAX_JOBS` queued writes wake it at once. (Running the
//! writer under `SCHED_BATCH` instead made writes wait behind any other busy process, such as
//! the Actors troupe runs: see docs/benchmarks.md, session 6.)
//!
//! Replies go back in one hop: the writer hands a committed batch's replies to the
//! storage's settler task on the async runtime with a single wake-up, and the settler sends
//! them from there (a reply sent from a runtime thread wakes its request without a system
//! call). Sending each reply from the writer thread woke the runtime once per reply, and the
//! runtime worker preempted the writer at each. Without a multi-thread runtime to run the
//! settler on, the writer sends replies itself.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex};
use rusqlite::Transaction;

use super::stmts::with_stmt;
use super::{Inner, SqliteStorage};
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

/// The write queue of one storage, shared by the storage, its writer thread and its settler.
#[derive(Default)]
pub(crate) struct WriteShared {
    queue: Mutex<WriteQueue>,
    /// Signalled when a write is queued while the writer thread waits, and at shutdown.
    wake: Condvar,
    inbox: Mutex<SettlerInbox>,
    /// A settler task is running (fast check of `inbox.alive`).
    settler_alive: AtomicBool,
    /// Wakes the settler: replies are waiting, or the storage is gone.
    settle: tokio::sync::Notify,
    /// The storage is gone: the writer thread and the settler stop.
    closed: AtomicBool,
}

/// Writes waiting for the next batch.
#[derive(Default)]
struct WriteQueue {
    jobs: Vec<Job>,
    /// The writer thread waits on `wake` (a queued write must signal it).
    waiting: bool,
    /// A runtime thread owes the waiting writer a wake-up, given when that thread parks (see
    /// [`wake_deferred_writers`]) or when its write has waited `DEFER_LIMIT`.
    wake_owed: bool,
    /// Writes that deferred the writer's wake-up (tests check the path is taken).
    #[cfg(test)]
    deferred: u64,
    /// Batches and writes committed so far (how well writes coalesce; see `group_stats`).
    batches: u64,
    writes: u64,
}

/// Committed batches whose replies wait for the settler.
#[derive(Default)]
struct SettlerInbox {
    alive: bool,
    batches: Vec<(Vec<Completion>, Option<String>)>,
}

impl WriteShared {
    /// Starts the writer thread of `storage` (see the module docs).
    pub(crate) fn start(self: &Arc<Self>, storage: Weak<Inner>) -> std::io::Result<()> {
        let shared = Arc::clone(self);
        std::thread::Builder::new()
            .name("troupe-writer".into())
            .spawn(move || writer_thread(shared, storage))?;
        Ok(())
    }

    /// The storage is gone: stops the writer thread and the settler.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        {
            // Under the lock, so a writer about to wait sees `closed`.
            let _queue = self.queue.lock();
            self.wake.notify_all();
        }
        self.settle.notify_one();
    }

    /// Sends the replies of a settled batch: through the settler when one runs, else here.
    fn deliver(&self, completions: Vec<Completion>, failure: Option<String>) {
        let mut inbox = self.inbox.lock();
        if inbox.alive {
            inbox.batches.push((completions, failure));
            drop(inbox);
            self.settle.notify_one();
        } else {
            drop(inbox);
            settle_all(completions, failure.as_deref());
        }
    }

    /// Makes sure a settler task runs on the current runtime, if it is a multi-thread one (a
    /// current-thread runtime runs its tasks only while something blocks on it).
    fn ensure_settler(self: &Arc<Self>) {
        if self.settler_alive.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return;
        }
        {
            let mut inbox = self.inbox.lock();
            if inbox.alive {
                return;
            }
            inbox.alive = true;
            self.settler_alive.store(true, Ordering::Release);
        }
        let guard = SettlerGuard(Arc::clone(self));
        handle.spawn(settler(guard));
    }

    /// Gives the owed wake-up, if it is still owed (see `WriteQueue::wake_owed`).
    fn wake_owed_now(&self) {
        let wake = {
            let mut queue = self.queue.lock();
            let wake = queue.wake_owed && queue.waiting;
            queue.wake_owed = false;
            if wake {
                queue.waiting = false;
            }
            wake
        };
        if wake {
            self.wake.notify_one();
        }
    }
}

/// How a queued write wakes the writer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Not at all: the writer is busy, or a wake-up is owed already.
    None,
    /// At once.
    Now,
    /// When this runtime thread parks (see [`wake_deferred_writers`]).
    Deferred,
}

/// Longest a write waits for the wake-up its runtime thread owes (a thread busy with other
/// requests that does not park); then the write wakes the writer itself.
const DEFER_LIMIT: std::time::Duration = std::time::Duration::from_millis(1);
/// Queued writes past which a write wakes the writer at once even though a wake-up is owed.
const DEFER_MAX_JOBS: usize = 64;

/// The writers a thread owes a wake-up; `None` on threads that never parked through
/// [`wake_deferred_writers`] (they wake the writer at once). A thread that exits (its runtime
/// shuts down) gives the wake-ups it still owes.
struct Owed(Option<Vec<Arc<WriteShared>>>);

impl Drop for Owed {
    fn drop(&mut self) {
        for shared in self.0.take().unwrap_or_default() {
            shared.wake_owed_now();
        }
    }
}

thread_local! {
    static DEFERRED: std::cell::RefCell<Owed> = const { std::cell::RefCell::new(Owed(None)) };
}

/// Hook for the async runtime's `on_thread_park`: a runtime thread that is about to park gives
/// the wake-ups it owes to writers. After its first park, writes queued on the thread wake the
/// writer only when the thread has nothing else to do, so the writer (which would otherwise
/// preempt the thread on a shared CPU) takes every write of the requests already read in one
/// batch. A write waits at most `DEFER_LIMIT` for this.
pub fn wake_deferred_writers() {
    let owed = DEFERRED.try_with(|cell| {
        let mut cell = cell.borrow_mut();
        match cell.0.as_mut() {
            None => {
                cell.0 = Some(Vec::new());
                Vec::new()
            }
            Some(list) => std::mem::take(list),
        }
    });
    for shared in owed.unwrap_or_default() {
        shared.wake_owed_now();
    }
}

fn settle_all(completions: Vec<Completion>, failure: Option<&str>) {
    for completion in completions {
        completion.settle(failure);
    }
}

/// The settler task: sends the replies of committed batches from the runtime.
async fn settler(guard: SettlerGuard) {
    let shared = &guard.0;
    loop {
        shared.settle.notified().await;
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        let batches = std::mem::take(&mut shared.inbox.lock().batches);
        for (completions, failure) in batches {
            settle_all(completions, failure.as_deref());
        }
    }
}

/// Owned by the settler task: when the task ends (its runtime shuts down, or the storage is
/// gone), replies go back to being sent by the writer, and those left in the inbox are sent.
struct SettlerGuard(Arc<WriteShared>);

impl Drop for SettlerGuard {
    fn drop(&mut self) {
        let batches = {
            let mut inbox = self.0.inbox.lock();
            inbox.alive = false;
            self.0.settler_alive.store(false, Ordering::Release);
            std::mem::take(&mut inbox.batches)
        };
        for (completions, failure) in batches {
            settle_all(completions, failure.as_deref());
        }
    }
}

/// The writer thread: commits batches until the storage is gone.
fn writer_thread(shared: Arc<WriteShared>, storage: Weak<Inner>) {
    loop {
        let jobs: Vec<Job> = {
            let mut queue = shared.queue.lock();
            while queue.jobs.is_empty() {
                if shared.closed.load(Ordering::SeqCst) {
                    return;
                }
                queue.waiting = true;
                shared.wake.wait(&mut queue);
            }
            queue.waiting = false;
            queue.wake_owed = false;
            let take = queue.jobs.len().min(MAX_BATCH);
            queue.batches += 1;
            queue.writes += take as u64;
            if take == queue.jobs.len() {
                std::mem::take(&mut queue.jobs)
            } else {
                queue.jobs.drain(..take).collect()
            }
        };
        // Writes hold the storage while they wait, so it is there unless they were given up.
        let Some(inner) = storage.upgrade() else {
            return;
        };
        let storage = SqliteStorage { inner };
        // The writes' own panics are caught in the batch; this catches the rest, so the writer
        // outlives any panic (the batch's callers then get "write was dropped").
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| storage.commit_batch(jobs)));
        drop(storage);
        match outcome {
            Ok((completions, failure)) => shared.deliver(completions, failure),
            Err(_) => tracing::error!("the writer thread panicked while committing a batch"),
        }
    }
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
        let shared = &self.inner.writes;
        // (`try_with`: a thread being torn down wakes the writer at once.)
        let can_defer = DEFERRED
            .try_with(|cell| cell.borrow().0.is_some())
            .unwrap_or(false);
        let action = {
            let mut queue = shared.queue.lock();
            queue.jobs.push(job);
            if !queue.waiting {
                // The writer is busy: it takes this write with the next batch.
                Wake::None
            } else if queue.wake_owed && queue.jobs.len() < DEFER_MAX_JOBS {
                // Another write owes the wake-up already.
                Wake::None
            } else if can_defer && !queue.wake_owed {
                queue.wake_owed = true;
                #[cfg(test)]
                {
                    queue.deferred += 1;
                }
                Wake::Deferred
            } else {
                queue.waiting = false;
                queue.wake_owed = false;
                Wake::Now
            }
        };
        match action {
            Wake::None => {}
            Wake::Now => {
                shared.wake.notify_one();
            }
            Wake::Deferred => {
                // Should this fail, the write's own bound below still wakes the writer.
                let _ = DEFERRED.try_with(|cell| {
                    if let Some(list) = cell.borrow_mut().0.as_mut() {
                        list.push(Arc::clone(shared));
                    }
                });
            }
        }
        shared.ensure_settler();
        let reply = if action == Wake::Deferred {
            // Bound the wait for a runtime thread that stays busy and does not park.
            tokio::pin!(receiver);
            tokio::select! {
                biased;
                reply = &mut receiver => reply,
                () = tokio::time::sleep(DEFER_LIMIT) => {
                    shared.wake_owed_now();
                    receiver.await
                }
            }
        } else {
            receiver.await
        };
        reply.unwrap_or_else(|_| Err(Error::Internal(anyhow::anyhow!("write was dropped"))))
    }

    /// Writes queued or taken by the writer thread so far (tests wait on it).
    #[cfg(test)]
    pub(crate) fn writes_submitted(&self) -> u64 {
        let queue = self.inner.writes.queue.lock();
        queue.jobs.len() as u64 + queue.writes
    }

    /// Spawns `write` and returns once it is queued (tests hold the writer connection, so
    /// writes queued one after another this way run in that order, in one batch).
    #[cfg(test)]
    pub(crate) fn spawn_queued<T: Send + 'static>(
        &self,
        tasks: &mut Vec<tokio::task::JoinHandle<std::result::Result<T, String>>>,
        write: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) {
        let before = self.writes_submitted();
        tasks.push(tokio::spawn(async move {
            write.await.map_err(|err| format!("{err:?}"))
        }));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.writes_submitted() == before {
            assert!(std::time::Instant::now() < deadline, "write did not queue");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// (writer thread waiting for work, writes that deferred its wake-up so far).
    #[cfg(test)]
    pub(crate) fn writer_state(&self) -> (bool, u64) {
        let queue = self.inner.writes.queue.lock();
        (queue.waiting, queue.deferred)
    }

    /// (batches, writes) taken by the writer thread so far.
    pub fn group_stats(&self) -> (u64, u64) {
        let queue = self.inner.writes.queue.lock();
        (queue.batches, queue.writes)
    }

    /// Runs one batch in one transaction; returns its writes (to settle) and the batch's
    /// failure, if any.
    fn commit_batch(&self, jobs: Vec<Job>) -> (Vec<Completion>, Option<String>) {
        let count = jobs.len();
        let mut completions: Vec<Completion> = Vec::with_capacity(count);
        let outcome = {
            let writer = self.inner.writer.lock();
            writer.with_hot(|conn| run_batch(conn, jobs, &mut completions))
        };
        let failure = outcome.err().map(|err| format!("{err:#}"));
        if let Some(message) = &failure {
            tracing::error!(error = %message, writes = count, "write transaction failed");
        }
        (completions, failure)
    }
}

fn run_batch(
    conn: &rusqlite::Connection,
    jobs: Vec<Job>,
    completions: &mut Vec<Completion>,
) -> Result<()> {
    // The writer connection is only ever shared (see `stmts::Writer`).
    let tx = Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
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
            with_stmt(&tx, "SAVEPOINT troupe_write", |s| s.execute([]))?;
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
                with_stmt(&tx, "ROLLBACK TO troupe_write", |s| s.execute([]))?;
            }
            with_stmt(&tx, "RELEASE troupe_write", |s| s.execute([]))?;
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
        // `tx.commit()` would prepare the COMMIT afresh each time. Committed, `tx` finds the
        // connection in autocommit mode and its drop does nothing; if COMMIT fails, the drop
        // rolls back, as after a failed `commit()`.
        with_stmt(&tx, "COMMIT", |s| s.execute([]))?;
        debug_assert!(tx.is_autocommit());
    } else {
        tx.rollback()?;
    }
    Ok(())
}
