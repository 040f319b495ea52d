//! The process runtime. The API records builds and runs in storage and hands them to the
//! [`Runner`]; only the runner starts processes. Each build and each run has one owner task that
//! persists every status transition, captures stdout/stderr into the job's log, and enforces the
//! run's timeout and memory limit.
//!
//! Runs wait in `READY` until the memory budget (`max_memory_mbytes`) has room, first come first
//! served. A running child lives in its own process group; abort, timeout, memory overrun and
//! server shutdown kill the whole group. On start, [`Runner::recover`] ends runs a previous
//! server process left behind.

pub mod archive;
pub mod build;
pub mod env;
pub mod logs;
pub mod process;
mod run;
pub mod source;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, watch};
use troupe_model::actor::{Build, JobStatus, Run};
use troupe_storage::Storage;

pub use logs::{log_path, remove_run_files, LogWriter, LOG_LIMIT};

/// Errors of runner commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] troupe_storage::Error),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the runner is set up.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The data dir (builds, run folders and logs live below it).
    pub data_dir: PathBuf,
    /// pip and npm caches.
    pub cache_dir: PathBuf,
    /// Origin Actors use to reach the API (no `/v2`), e.g. `http://127.0.0.1:8080`.
    pub api_base_url: String,
    /// Origin shown in shareable links (no `/v2`).
    pub public_base_url: String,
    /// Total memory runs may use at once (MB).
    pub max_memory_mbytes: u64,
    /// How often `persistState` is sent to each run.
    pub persist_state_interval: Duration,
    /// Grace period between the `aborting` event and the kill of a graceful abort.
    pub graceful_abort_secs: u64,
    /// How long `run-sync` endpoints wait for a run before answering 408 (Apify: 300 s).
    pub sync_run_wait: Duration,
    /// Largest build or run log kept, in bytes (further output is dropped).
    pub log_limit: u64,
    /// Time limit of a build when the request names none (`None` = no limit).
    pub build_timeout: Option<Duration>,
    /// Largest download and largest unpacked/cloned sources of a build, in bytes.
    pub max_source_bytes: u64,
    /// Whether GIT_REPO/GITHUB_GIST sources may be `file://` URLs or local paths.
    pub allow_local_sources: bool,
}

/// Default of [`RunnerConfig::build_timeout`]: 30 minutes.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(1800);
/// Default of [`RunnerConfig::max_source_bytes`]: 512 MiB.
pub const DEFAULT_MAX_SOURCE_BYTES: u64 = 512 * 1024 * 1024;
/// Most files, folders and symlinks a build's fetched sources may hold.
pub const MAX_SOURCE_ENTRIES: u64 = 200_000;

/// Something that happened to a job, for webhooks: the job as it is after the change, and
/// the webhook event type (`ACTOR.RUN.SUCCEEDED`...).
#[derive(Debug, Clone)]
pub enum JobEvent {
    Run {
        event_type: &'static str,
        run: Run,
    },
    Build {
        event_type: &'static str,
        build: Build,
    },
}

/// The `ACTOR.RUN.*` / `ACTOR.BUILD.*` suffix of a terminal status.
fn terminal_suffix(status: JobStatus) -> Option<&'static str> {
    match status {
        JobStatus::Succeeded => Some("SUCCEEDED"),
        JobStatus::Failed => Some("FAILED"),
        JobStatus::Aborted => Some("ABORTED"),
        JobStatus::TimedOut => Some("TIMED_OUT"),
        _ => None,
    }
}

impl JobEvent {
    /// The terminal event of a run (`None` while it is not terminal).
    pub fn run_finished(run: Run) -> Option<Self> {
        let event_type = match terminal_suffix(run.status)? {
            "SUCCEEDED" => "ACTOR.RUN.SUCCEEDED",
            "FAILED" => "ACTOR.RUN.FAILED",
            "ABORTED" => "ACTOR.RUN.ABORTED",
            _ => "ACTOR.RUN.TIMED_OUT",
        };
        Some(JobEvent::Run { event_type, run })
    }

    /// The terminal event of a build (`None` while it is not terminal).
    pub fn build_finished(build: Build) -> Option<Self> {
        let event_type = match terminal_suffix(build.status)? {
            "SUCCEEDED" => "ACTOR.BUILD.SUCCEEDED",
            "FAILED" => "ACTOR.BUILD.FAILED",
            "ABORTED" => "ACTOR.BUILD.ABORTED",
            _ => "ACTOR.BUILD.TIMED_OUT",
        };
        Some(JobEvent::Build { event_type, build })
    }
}

type JobEventHook = Arc<dyn Fn(JobEvent) + Send + Sync>;

/// A command to a live run's owner task.
#[derive(Debug)]
pub(crate) enum Control {
    Abort {
        graceful: bool,
    },
    /// Kill the process and start it again (reboot, metamorph: the run was already updated).
    Restart,
}

pub(crate) struct LiveRun {
    pub control: mpsc::UnboundedSender<Control>,
    pub events: broadcast::Sender<String>,
}

#[derive(Default)]
struct Schedule {
    used_mbytes: u64,
    queue: VecDeque<(String, u64)>,
}

/// While alive, a job's log writer is registered for its followers (see
/// [`Runner::register_log`]).
pub(crate) struct LogRegistration {
    inner: Arc<Inner>,
    id: String,
    flushes: watch::Receiver<u64>,
}

impl Drop for LogRegistration {
    fn drop(&mut self) {
        let mut map = self.inner.log_flushes.lock();
        // Only this writer's entry: a job run again (resurrect) may have registered a new one.
        if map
            .get(&self.id)
            .is_some_and(|rx| rx.same_channel(&self.flushes))
        {
            map.remove(&self.id);
        }
    }
}

/// Handle to the runtime; cheap to clone.
#[derive(Clone)]
pub struct Runner {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub storage: Arc<dyn Storage>,
    pub config: RunnerConfig,
    /// Bumped after every persisted status change of any job; waiters watch it.
    pub changes: watch::Sender<u64>,
    schedule: Mutex<Schedule>,
    pub live: Mutex<HashMap<String, LiveRun>>,
    /// Process group of the current installer step of each running build.
    pub build_pids: Mutex<HashMap<String, i32>>,
    /// Flushes of the open log of each job that is being written (see [`Runner::log_flushes`]).
    pub log_flushes: Mutex<HashMap<String, watch::Receiver<u64>>>,
    pub aborted_builds: Mutex<std::collections::HashSet<String>>,
    /// Called after run tokens were revoked (the API drops its token cache).
    pub on_tokens_revoked: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// Told about job events (webhooks); must not block.
    pub on_job_event: Mutex<Option<JobEventHook>>,
}

impl Runner {
    pub fn new(storage: Arc<dyn Storage>, config: RunnerConfig) -> Self {
        let (changes, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                storage,
                config,
                changes,
                schedule: Mutex::new(Schedule::default()),
                live: Mutex::new(HashMap::new()),
                build_pids: Mutex::new(HashMap::new()),
                log_flushes: Mutex::new(HashMap::new()),
                aborted_builds: Mutex::new(Default::default()),
                on_tokens_revoked: Mutex::new(None),
                on_job_event: Mutex::new(None),
            }),
        }
    }

    pub fn config(&self) -> &RunnerConfig {
        &self.inner.config
    }

    /// Registers a callback run after a run's token is revoked.
    pub fn on_tokens_revoked(&self, f: Arc<dyn Fn() + Send + Sync>) {
        *self.inner.on_tokens_revoked.lock() = Some(f);
    }

    /// Registers the receiver of job events (webhooks). It is called inline and must not block.
    pub fn on_job_event(&self, f: JobEventHook) {
        *self.inner.on_job_event.lock() = Some(f);
    }

    /// Reports a job event (also used by the API for CREATED and RESURRECTED).
    pub fn emit(&self, event: Option<JobEvent>) {
        self.inner.emit(event);
    }

    /// A receiver that changes whenever the log of job `id` got new lines, while the job's
    /// process is being logged (`None` before and after; then its status changes tell).
    pub fn log_flushes(&self, id: &str) -> Option<watch::Receiver<u64>> {
        self.inner.log_flushes.lock().get(id).cloned()
    }

    /// Makes `log`'s flushes visible through [`Runner::log_flushes`] until the guard is dropped.
    pub(crate) fn register_log(&self, id: &str, log: &logs::LogWriter) -> LogRegistration {
        let flushes = log.subscribe();
        self.inner
            .log_flushes
            .lock()
            .insert(id.to_string(), flushes.clone());
        LogRegistration {
            inner: self.inner.clone(),
            id: id.to_string(),
            flushes,
        }
    }

    /// Tells waiters that some job changed.
    pub fn notify(&self) {
        self.inner.notify();
    }

    /// Ends what a previous server process left behind: builds READY/RUNNING and runs
    /// RUNNING/ABORTING/TIMING-OUT end FAILED (their process groups killed if still alive and
    /// still ours); runs in READY are queued again.
    pub async fn recover(&self) -> Result<()> {
        let storage = &self.inner.storage;
        for build in storage.unfinished_builds().await? {
            let _ =
                std::fs::remove_dir_all(run::staging_dir(&self.inner.config.data_dir, &build.id));
            let ended = storage
                .update_build(
                    &build.id,
                    Box::new(|b: &mut Build| {
                        b.status = JobStatus::Failed;
                        b.finished_at = Some(troupe_model::now_ms());
                        b.status_message =
                            Some("The server restarted while the build was running".into());
                        Ok(())
                    }),
                )
                .await?;
            self.emit(JobEvent::build_finished(ended));
        }
        for run in storage.unfinished_runs().await? {
            if run.status == JobStatus::Ready && run.process.is_none() {
                self.enqueue(&run.id, run.memory_mbytes);
                continue;
            }
            let mut killed = false;
            if let Some(mark) = &run.process {
                if process::is_ours(mark) {
                    process::kill_group(mark.pid, libc::SIGKILL);
                    killed = true;
                }
            }
            let message = if killed {
                "The server restarted while the run was going; its processes were stopped"
            } else {
                "The server restarted while the run was going"
            };
            LogWriter::open(
                &self.inner.config.data_dir,
                &run.id,
                self.inner.config.log_limit,
            )
            .map(|log| log.system(message))
            .ok();
            let ended = storage
                .update_run(
                    &run.id,
                    Box::new(move |r: &mut Run| {
                        r.status = JobStatus::Failed;
                        r.finished_at = Some(troupe_model::now_ms());
                        r.status_message = Some(message.into());
                        r.is_status_message_terminal = Some(true);
                        r.process = None;
                        Ok(())
                    }),
                )
                .await?;
            storage.revoke_run_tokens(&run.id).await?;
            self.emit(JobEvent::run_finished(ended));
        }
        self.notify();
        Ok(())
    }

    /// Starts preparing a build (already stored in READY).
    pub fn start_build(&self, build_id: &str) {
        let runner = self.clone();
        let id = build_id.to_string();
        tokio::spawn(async move {
            run::build_task(runner, id).await;
        });
    }

    /// Aborts a READY/RUNNING build; no-op otherwise.
    pub async fn abort_build(&self, build_id: &str) -> Result<Build> {
        let storage = &self.inner.storage;
        let build = storage
            .get_build(build_id)
            .await?
            .ok_or_else(|| troupe_storage::Error::NotFound("Actor build was not found".into()))?;
        if build.status.is_terminal() {
            return Ok(build);
        }
        self.inner
            .aborted_builds
            .lock()
            .insert(build_id.to_string());
        if let Some(pid) = self.inner.build_pids.lock().get(build_id) {
            process::kill_group(*pid, libc::SIGKILL);
        }
        let build = storage
            .update_build(
                build_id,
                Box::new(|b: &mut Build| {
                    if !b.status.is_terminal() {
                        b.status = JobStatus::Aborted;
                        b.finished_at = Some(troupe_model::now_ms());
                    }
                    Ok(())
                }),
            )
            .await?;
        self.notify();
        self.emit(JobEvent::build_finished(build.clone()));
        Ok(build)
    }

    /// Queues a stored READY run; it starts when the memory budget has room.
    pub fn start_run(&self, run: &Run) -> Result<()> {
        if run.memory_mbytes > self.inner.config.max_memory_mbytes {
            return Err(Error::Invalid(format!(
                "The run needs {} MB but the server's memory budget is {} MB",
                run.memory_mbytes, self.inner.config.max_memory_mbytes
            )));
        }
        self.enqueue(&run.id, run.memory_mbytes);
        Ok(())
    }

    fn enqueue(&self, run_id: &str, memory: u64) {
        self.inner
            .schedule
            .lock()
            .queue
            .push_back((run_id.to_string(), memory));
        self.pump();
    }

    /// Starts queued runs while the budget allows, in order.
    fn pump(&self) {
        let mut started = Vec::new();
        {
            let mut schedule = self.inner.schedule.lock();
            while let Some((_, memory)) = schedule.queue.front() {
                let memory = *memory;
                if schedule.used_mbytes + memory > self.inner.config.max_memory_mbytes
                    && schedule.used_mbytes > 0
                {
                    break;
                }
                let (id, _) = schedule.queue.pop_front().expect("front");
                schedule.used_mbytes += memory;
                started.push((id, memory));
            }
        }
        for (id, memory) in started {
            let runner = self.clone();
            // The run is live (abortable) from the moment it leaves the queue.
            let (tx, rx) = mpsc::unbounded_channel();
            let (events, _) = broadcast::channel(64);
            let mine = tx.clone();
            self.inner.live.lock().insert(
                id.clone(),
                LiveRun {
                    control: tx,
                    events,
                },
            );
            tokio::spawn(async move {
                run::run_task(runner.clone(), id.clone(), rx).await;
                {
                    // A resurrect may already have made the run live again: leave that entry.
                    let mut live = runner.inner.live.lock();
                    if live.get(&id).is_some_and(|l| l.control.same_channel(&mine)) {
                        live.remove(&id);
                    }
                }
                runner.inner.schedule.lock().used_mbytes -= memory;
                runner.pump();
                runner.notify();
            });
        }
    }

    /// Aborts a run: READY runs end at once; running ones are killed now, or with `graceful`
    /// get the `aborting` event and are killed after the grace period. Finished runs are
    /// returned unchanged.
    pub async fn abort_run(&self, run_id: &str, graceful: bool) -> Result<Run> {
        let storage = &self.inner.storage;
        let queued = {
            let mut schedule = self.inner.schedule.lock();
            let before = schedule.queue.len();
            schedule.queue.retain(|(id, _)| id != run_id);
            before != schedule.queue.len()
        };
        if queued {
            // Tokens first: the run must not be seen as ended while its token still works.
            storage.revoke_run_tokens(run_id).await?;
            let run = storage
                .update_run(
                    run_id,
                    Box::new(|r: &mut Run| {
                        r.status = JobStatus::Aborted;
                        r.finished_at = Some(troupe_model::now_ms());
                        Ok(())
                    }),
                )
                .await?;
            self.notify();
            self.emit(JobEvent::run_finished(run.clone()));
            return Ok(run);
        }
        let control = self
            .inner
            .live
            .lock()
            .get(run_id)
            .map(|live| live.control.clone());
        let run = storage
            .get_run(run_id)
            .await?
            .ok_or_else(|| troupe_storage::Error::NotFound("Actor run was not found".into()))?;
        if run.status.is_terminal() || control.is_none() {
            return Ok(run);
        }
        let run = storage
            .update_run(
                run_id,
                Box::new(|r: &mut Run| {
                    if matches!(
                        r.status,
                        JobStatus::Ready | JobStatus::Running | JobStatus::TimingOut
                    ) {
                        r.status = JobStatus::Aborting;
                    }
                    Ok(())
                }),
            )
            .await?;
        self.notify();
        if let Some(control) = control {
            let _ = control.send(Control::Abort { graceful });
        }
        Ok(run)
    }

    /// Restarts the process of a live run (after the caller updated the stored run, e.g. for a
    /// metamorph). False when the run is not live.
    pub fn restart_run(&self, run_id: &str) -> bool {
        let control = self
            .inner
            .live
            .lock()
            .get(run_id)
            .map(|live| live.control.clone());
        control.is_some_and(|c| c.send(Control::Restart).is_ok())
    }

    /// True while a run has an owner task.
    pub fn is_live(&self, run_id: &str) -> bool {
        self.inner.live.lock().contains_key(run_id)
    }

    /// The event stream of a live run (for its websocket).
    pub fn subscribe_events(&self, run_id: &str) -> Option<broadcast::Receiver<String>> {
        self.inner
            .live
            .lock()
            .get(run_id)
            .map(|live| live.events.subscribe())
    }

    /// A receiver that changes whenever some job's status changed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Waits until run `id` is terminal or `timeout` passes; returns it as it is then.
    pub async fn wait_run(&self, id: &str, timeout: Duration) -> Result<Option<Run>> {
        self.wait_terminal(
            timeout,
            || self.inner.storage.get_run(id),
            |r| r.status.is_terminal(),
        )
        .await
    }

    /// Waits until build `id` is terminal or `timeout` passes.
    pub async fn wait_build(&self, id: &str, timeout: Duration) -> Result<Option<Build>> {
        self.wait_terminal(
            timeout,
            || self.inner.storage.get_build(id),
            |b| b.status.is_terminal(),
        )
        .await
    }

    /// Loads a job after every status change until it is gone, `terminal` or `timeout` passed.
    async fn wait_terminal<T, F, Fut>(
        &self,
        timeout: Duration,
        mut load: F,
        terminal: impl Fn(&T) -> bool,
    ) -> Result<Option<T>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = troupe_storage::Result<Option<T>>>,
    {
        let mut changes = self.changes();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            let job = load().await?;
            if job.as_ref().is_none_or(&terminal) {
                return Ok(job);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Ok(job);
            }
        }
    }

    /// Server shutdown: kills every live run's process group and ends the runs FAILED.
    pub async fn shutdown(&self) {
        let ids: Vec<String> = self.inner.live.lock().keys().cloned().collect();
        for id in &ids {
            let mark = match self.inner.storage.get_run(id).await {
                Ok(Some(run)) => run.process,
                _ => None,
            };
            // The run is ended before its process is killed: killed first, its supervisor could
            // record a plain FAILED first, and this message would never be set.
            let message = "The server was stopped while the run was going";
            LogWriter::open(&self.inner.config.data_dir, id, self.inner.config.log_limit)
                .map(|log| log.system(message))
                .ok();
            let ended = self
                .inner
                .storage
                .update_run(
                    id,
                    Box::new(move |r: &mut Run| {
                        if r.status.is_terminal() {
                            return Err(troupe_storage::Error::Conflict("already ended".into()));
                        }
                        r.status = JobStatus::Failed;
                        r.finished_at = Some(troupe_model::now_ms());
                        r.status_message = Some(message.into());
                        r.is_status_message_terminal = Some(true);
                        r.process = None;
                        Ok(())
                    }),
                )
                .await;
            if let Some(mark) = &mark {
                process::kill_group(mark.pid, libc::SIGKILL);
            }
            let _ = self.inner.storage.revoke_run_tokens(id).await;
            // Its webhooks (ACTOR.RUN.FAILED) are stored now and delivered now or on the next
            // start (the server waits for the records: `Hooks::flush`).
            if let Ok(run) = ended {
                self.emit(JobEvent::run_finished(run));
            }
        }
        for pid in self.inner.build_pids.lock().values() {
            process::kill_group(*pid, libc::SIGKILL);
        }
    }
}

impl Inner {
    pub fn emit(&self, event: Option<JobEvent>) {
        let Some(event) = event else { return };
        let hook = self.on_job_event.lock().clone();
        if let Some(hook) = hook {
            hook(event);
        }
    }

    pub fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}
