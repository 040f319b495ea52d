//! The owner tasks: one per build, one per run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use troupe_model::actor::{Actor, Build, JobStatus, Run, TaggedBuild, MAX_RESTARTS_ON_ERROR};
use troupe_model::now_ms;

use crate::archive::Limits;
use crate::build::{self, PrepareContext};
use crate::env::{run_env, RunEnv};
use crate::logs::LogWriter;
use crate::process;
use crate::source::FetchContext;
use crate::{Control, Runner};

/// Folder holding the prepared sources of a build.
pub fn build_dir(data_dir: &Path, build_id: &str) -> PathBuf {
    data_dir.join("builds").join(build_id)
}

/// Working folder of a run.
pub fn run_dir(data_dir: &Path, run_id: &str) -> PathBuf {
    data_dir.join("runs").join(run_id)
}

pub(crate) async fn build_task(runner: Runner, id: String) {
    let inner = &runner.inner;
    let storage = &inner.storage;
    let data_dir = inner.config.data_dir.clone();
    let log = match LogWriter::open(&data_dir, &id, inner.config.log_limit) {
        Ok(log) => Arc::new(log),
        Err(err) => {
            tracing::error!(build = %id, error = %err, "cannot open build log");
            return;
        }
    };
    let _followed = runner.register_log(&id, &log);
    let build = match storage
        .update_build(
            &id,
            Box::new(|b: &mut Build| {
                if b.status == JobStatus::Ready {
                    b.status = JobStatus::Running;
                }
                Ok(())
            }),
        )
        .await
    {
        Ok(build) if build.status == JobStatus::Running => build,
        _ => return,
    };
    runner.notify();
    log.system(&format!(
        "Building version {} (build {})",
        build.version_number, build.build_number
    ));
    let dir = build_dir(&data_dir, &id);
    let staging = staging_dir(&data_dir, &id);
    let _ = std::fs::remove_dir_all(&dir);
    let cancel = Arc::new(AtomicBool::new(false));
    let pid_runner = runner.clone();
    let pid_id = id.clone();
    let on_spawn = move |pid: i32| {
        pid_runner
            .inner
            .build_pids
            .lock()
            .insert(pid_id.clone(), pid);
        if pid_runner.inner.aborted_builds.lock().contains(&pid_id) {
            process::kill_group(pid, libc::SIGKILL);
        }
    };
    let home = inner.config.cache_dir.join("home");
    let work = async {
        let branch = crate::source::fetch(
            &FetchContext {
                log: log.clone(),
                home: &home,
                on_spawn: &on_spawn,
                limits: Limits {
                    max_bytes: inner.config.max_source_bytes,
                    max_entries: crate::MAX_SOURCE_ENTRIES,
                },
                cancel: cancel.clone(),
                allow_local: inner.config.allow_local_sources,
            },
            &build.version,
            &dir,
            &staging,
        )
        .await?;
        let extra_env = if build.version.apply_env_vars_to_build {
            build
                .version
                .env_vars
                .iter()
                .map(|v| (v.name.clone(), v.value.clone()))
                .collect()
        } else {
            Default::default()
        };
        let prepared = build::prepare(PrepareContext {
            dir: &dir,
            cache_dir: &inner.config.cache_dir,
            log: log.clone(),
            extra_env,
            on_spawn: &on_spawn,
            use_cache: build.use_cache,
        })
        .await?;
        Ok(Box::new((prepared, branch)))
    };
    let limit = (build.timeout_secs > 0).then(|| Duration::from_secs(build.timeout_secs));
    let ending = tokio::select! {
        result = work => BuildEnding::Done(result),
        () = sleep_or_never(limit) => BuildEnding::TimedOut,
        () = until_build_aborted(&runner, &id) => BuildEnding::Aborted,
    };
    if !matches!(ending, BuildEnding::Done(_)) {
        // The step going on was dropped: stop its processes and any unpack, drop the scratch.
        cancel.store(true, Ordering::SeqCst);
        if let Some(pid) = inner.build_pids.lock().get(&id) {
            process::kill_group(*pid, libc::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&staging);
    }
    inner.build_pids.lock().remove(&id);
    if inner.aborted_builds.lock().remove(&id) {
        log.system("The build was aborted");
        runner.notify();
        return;
    }
    let (prepared, branch) = match ending {
        BuildEnding::Done(Ok(done)) => *done,
        BuildEnding::Done(Err(message)) => {
            log.system(&format!("Build failed: {message}"));
            return end_build(&runner, &id, JobStatus::Failed, message).await;
        }
        BuildEnding::TimedOut => {
            let message = format!(
                "The build timed out after {} s; its processes were stopped",
                build.timeout_secs
            );
            log.system(&message);
            return end_build(&runner, &id, JobStatus::TimedOut, message).await;
        }
        BuildEnding::Aborted => return,
    };
    log.system("Build finished");
    let finished = now_ms();
    // The tag moves first, so whoever sees the build SUCCEEDED also finds it by tag.
    let tag = build.tag.clone();
    let tagged = TaggedBuild {
        build_id: build.id.clone(),
        build_number: build.build_number.clone(),
        finished_at: Some(finished),
    };
    let _ = storage
        .update_actor(
            &build.act_id,
            Box::new(move |a: &mut Actor| {
                a.tagged_builds.insert(tag, tagged);
                Ok(())
            }),
        )
        .await;
    let _ = storage
        .update_build(
            &id,
            Box::new(move |b: &mut Build| {
                // The files are in the build folder now; the stored snapshot keeps
                // every other field of the version (runs load builds often).
                b.version.source_files.clear();
                b.start = Some(prepared.start);
                b.actor_definition = prepared.actor_definition;
                b.input_schema = prepared.input_schema;
                b.readme = prepared.readme;
                b.git_branch_name = branch;
                if !b.status.is_terminal() {
                    b.status = JobStatus::Succeeded;
                    b.finished_at = Some(finished);
                }
                Ok(())
            }),
        )
        .await;

    announce_build_end(&runner, &id).await;
}

/// Ends build `id` (unless it already ended) with a failing `status` and its `message`, then
/// announces it.
async fn end_build(runner: &Runner, id: &str, status: JobStatus, message: String) {
    let _ = runner
        .inner
        .storage
        .update_build(
            id,
            Box::new(move |b: &mut Build| {
                if !b.status.is_terminal() {
                    b.status = status;
                    b.finished_at = Some(now_ms());
                    b.status_message = Some(message);
                }
                Ok(())
            }),
        )
        .await;
    announce_build_end(runner, id).await;
}

/// Wakes the waiters of build `id` and emits its `finished` event.
async fn announce_build_end(runner: &Runner, id: &str) {
    runner.notify();
    if let Ok(Some(build)) = runner.inner.storage.get_build(id).await {
        runner.emit(crate::JobEvent::build_finished(build));
    }
}

/// Folder a build fetches its sources into before they move to [`build_dir`].
pub fn staging_dir(data_dir: &Path, build_id: &str) -> PathBuf {
    data_dir.join("builds").join(format!("{build_id}.fetch"))
}

/// How the work of a build ended.
enum BuildEnding {
    /// The prepared build and the git branch of its sources.
    Done(Result<Box<(build::Prepared, Option<String>)>, String>),
    TimedOut,
    Aborted,
}

/// Sleeps for `limit`, or forever without one.
async fn sleep_or_never(limit: Option<Duration>) {
    match limit {
        Some(limit) => tokio::time::sleep(limit).await,
        None => std::future::pending().await,
    }
}

/// Returns once build `id` was aborted ([`Runner::abort_build`] marks it, then notifies).
async fn until_build_aborted(runner: &Runner, id: &str) {
    let mut changes = runner.changes();
    loop {
        if runner.inner.aborted_builds.lock().contains(id) {
            return;
        }
        if changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// How one process attempt ended.
enum Ending {
    Exited(Option<i32>),
    TimedOut,
    Aborted,
    MemoryExceeded(u64),
    Restart,
}

/// Final fields of a run.
struct Outcome {
    status: JobStatus,
    exit_code: Option<i32>,
    message: Option<String>,
}

pub(crate) async fn run_task(runner: Runner, id: String, mut rx: mpsc::UnboundedReceiver<Control>) {
    let inner = runner.inner.clone();
    let storage = inner.storage.clone();
    let data_dir = inner.config.data_dir.clone();
    let log = match LogWriter::open(&data_dir, &id, inner.config.log_limit) {
        Ok(log) => Arc::new(log),
        Err(err) => {
            tracing::error!(run = %id, error = %err, "cannot open run log");
            return;
        }
    };
    let _followed = runner.register_log(&id, &log);
    let events = match inner.live.lock().get(&id) {
        Some(live) => live.events.clone(),
        None => return,
    };
    let mut token: Option<String> = None;
    let mut counters = (0u64, 0f64);
    let outcome = loop {
        let Ok(Some(mut run)) = storage.get_run(&id).await else {
            return;
        };
        if run.attempt_started_at == 0 {
            run.attempt_started_at = now_ms();
        }
        if run.status == JobStatus::Aborting || run.status.is_terminal() {
            break Outcome {
                status: JobStatus::Aborted,
                exit_code: None,
                message: None,
            };
        }
        let t0 = std::time::Instant::now();
        let setup = prepare_attempt(&runner, &run, &mut token).await;
        tracing::debug!(run = %id, elapsed_us = t0.elapsed().as_micros() as u64, "run prepared");
        let (build, actor, env, cwd, port) = match setup {
            Ok(parts) => parts,
            Err(message) => {
                log.system(&message);
                break Outcome {
                    status: JobStatus::Failed,
                    exit_code: None,
                    message: Some(message),
                };
            }
        };
        let start = build.start.clone().expect("checked");
        let _ = actor;
        let (mut child, pump) = match process::spawn(&start.argv, &cwd, &env, log.clone()) {
            Ok(spawned) => spawned,
            Err(err) => {
                let message = format!("Could not start the Actor ({}): {err}", start.argv[0]);
                log.system(&message);
                break Outcome {
                    status: JobStatus::Failed,
                    exit_code: None,
                    message: Some(message),
                };
            }
        };
        let pid = child.id().unwrap_or(0) as i32;
        tracing::debug!(run = %id, elapsed_us = t0.elapsed().as_micros() as u64, "run spawned");
        let mark = process::mark(pid);
        let attempt_started = run.attempt_started_at;
        let updated = storage
            .update_run(
                &id,
                Box::new(move |r: &mut Run| {
                    r.process = Some(mark);
                    r.extras.container_port = Some(port);
                    if r.status == JobStatus::Ready {
                        r.status = JobStatus::Running;
                    }
                    if r.attempt_started_at == 0 {
                        r.attempt_started_at = attempt_started;
                    }
                    Ok(())
                }),
            )
            .await;
        let run = match updated {
            Ok(run) => run,
            Err(err) => {
                process::kill_group(pid, libc::SIGKILL);
                tracing::error!(run = %id, error = %err, "cannot record run start");
                return;
            }
        };
        runner.notify();
        let ending = supervise(
            &runner,
            &run,
            &mut child,
            pid,
            &mut rx,
            &events,
            &log,
            &mut counters,
        )
        .await;
        // Whatever ended the main process, nothing of its group may survive.
        process::kill_group(pid, libc::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(5), pump).await;
        match ending {
            Ending::Restart => {
                log.system("Restarting the Actor process");
                continue;
            }
            Ending::Exited(code) => {
                let status = if code == Some(0) {
                    JobStatus::Succeeded
                } else {
                    JobStatus::Failed
                };
                log.system(&format!(
                    "Actor process exited with {}",
                    code.map(|c| format!("exit code {c}"))
                        .unwrap_or_else(|| "a signal".into())
                ));
                // An abort that raced with a normal exit still counts as an abort.
                let current = storage.get_run(&id).await.ok().flatten();
                let status = match current.map(|r| r.status) {
                    Some(JobStatus::Aborting) => JobStatus::Aborted,
                    Some(JobStatus::TimingOut) => JobStatus::TimedOut,
                    _ => status,
                };
                if status == JobStatus::Failed && restart_on_error(&runner, &run, &log).await {
                    continue;
                }
                break Outcome {
                    status,
                    exit_code: Some(code.unwrap_or(-1)),
                    message: None,
                };
            }
            Ending::TimedOut => {
                break Outcome {
                    status: JobStatus::TimedOut,
                    exit_code: None,
                    message: Some(format!(
                        "The Actor run timed out after {} seconds",
                        run.timeout_secs
                    )),
                }
            }
            Ending::Aborted => {
                break Outcome {
                    status: JobStatus::Aborted,
                    exit_code: None,
                    message: None,
                }
            }
            Ending::MemoryExceeded(bytes) => {
                if restart_on_error(&runner, &run, &log).await {
                    continue;
                }
                break Outcome {
                    status: JobStatus::Failed,
                    exit_code: None,
                    message: Some(format!(
                        "The Actor run used {} MB and exceeded its memory limit of {} MB, so it was stopped",
                        bytes / (1024 * 1024),
                        run.memory_mbytes
                    )),
                };
            }
        }
    };
    log.system(&format!(
        "The run ended with status {}",
        outcome.status.as_str()
    ));
    // The run's token stops working before the run is seen as ended: a client that waits
    // for the end and then tries the token must be refused.
    if token.is_some() {
        let _ = storage.revoke_run_tokens(&id).await;
        let callback = inner.on_tokens_revoked.lock().clone();
        if let Some(callback) = callback {
            callback();
        }
    }
    let finished = now_ms();
    let (mem_max, cpu_max) = counters;
    let result = storage
        .update_run(
            &id,
            Box::new(move |r: &mut Run| {
                // Already ended by the server's shutdown (which reported it).
                if r.status.is_terminal() && r.finished_at.is_some() {
                    return Err(troupe_storage::Error::Conflict("already ended".into()));
                }
                r.status = outcome.status;
                r.finished_at = Some(finished);
                r.exit_code = outcome.exit_code;
                if let Some(message) = outcome.message {
                    r.status_message = Some(message);
                    r.is_status_message_terminal = Some(true);
                }
                r.process = None;
                r.counters.mem_max_bytes = r.counters.mem_max_bytes.max(mem_max);
                r.counters.cpu_max_usage = r.counters.cpu_max_usage.max(cpu_max);
                r.counters.mem_current_bytes = 0;
                r.counters.cpu_current_usage = 0.0;
                Ok(())
            }),
        )
        .await;
    let ended = match result {
        Ok(run) => Some(run),
        Err(troupe_storage::Error::Conflict(_)) => None,
        Err(err) => {
            tracing::error!(run = %id, error = %err, "cannot record run end");
            None
        }
    };
    runner.notify();
    if let Some(run) = ended {
        runner.emit(crate::JobEvent::run_finished(run));
    }
}

/// With `restartOnError`, a failed attempt is followed by another one (as on Apify), at most
/// [`MAX_RESTARTS_ON_ERROR`] times; `stats.restartCount` counts them. True when the run goes on.
async fn restart_on_error(runner: &Runner, run: &Run, log: &LogWriter) -> bool {
    if !run.extras.restart_on_error || run.counters.restart_count >= MAX_RESTARTS_ON_ERROR {
        return false;
    }
    let restarted = runner
        .inner
        .storage
        .update_run(
            &run.id,
            Box::new(|r: &mut Run| {
                if r.status != JobStatus::Running {
                    return Err(troupe_storage::Error::Conflict("not running".into()));
                }
                r.counters.restart_count += 1;
                Ok(())
            }),
        )
        .await;
    match restarted {
        Ok(r) => {
            log.system(&format!(
                "The Actor process failed; restarting it (restartOnError, restart {} of {MAX_RESTARTS_ON_ERROR})",
                r.counters.restart_count
            ));
            runner.notify();
            true
        }
        Err(_) => false,
    }
}

type Attempt = (
    Build,
    Actor,
    std::collections::BTreeMap<String, String>,
    PathBuf,
    u16,
);

/// Loads what a process attempt needs and lays out the run folder.
async fn prepare_attempt(
    runner: &Runner,
    run: &Run,
    token: &mut Option<String>,
) -> Result<Attempt, String> {
    let inner = &runner.inner;
    let storage = &inner.storage;
    let internal = |e: troupe_storage::Error| format!("Internal error: {e}");
    let build = storage
        .get_build(&run.build_id)
        .await
        .map_err(internal)?
        .ok_or("The build of this run no longer exists")?;
    if build.status != JobStatus::Succeeded || build.start.is_none() {
        return Err(format!(
            "Build {} is not usable (status {})",
            build.build_number,
            build.status.as_str()
        ));
    }
    let actor = storage
        .get_actor(&run.act_id)
        .await
        .map_err(internal)?
        .ok_or("The Actor of this run no longer exists")?;
    if token.is_none() {
        // The run's own token: acts for the owner, revoked when the run ends.
        let (_, secret) = storage
            .create_token(&run.user_id, &format!("run {}", run.id), Some(&run.id))
            .await
            .map_err(internal)?;
        *token = Some(secret);
    }
    let token = token.as_deref().expect("set above");
    let data_dir = &inner.config.data_dir;
    let cwd = run_dir(data_dir, &run.id);
    let src = build_dir(data_dir, &build.id);
    link_build(&src, &cwd).map_err(|e| format!("Cannot prepare the run folder: {e}"))?;
    let home = cwd.join(".home");
    let _ = std::fs::create_dir_all(&home);
    let ws_base = inner
        .config
        .api_base_url
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let events_url = format!(
        "{ws_base}/v2/actor-runs/{}/events-websocket?token={token}",
        run.id
    );
    let port = process::free_port();
    let env = run_env(&RunEnv {
        run,
        build: &build,
        actor: &actor,
        token,
        api_base_url: &inner.config.api_base_url,
        public_base_url: &inner.config.public_base_url,
        events_url: Some(&events_url),
        web_server_port: port,
        home: &home,
    });
    Ok((build, actor, env, cwd, port))
}

/// Makes `run` a folder of symlinks to the top-level entries of the build folder, so a run has
/// its own working folder (files it writes stay there) while sharing the prepared sources.
fn link_build(build: &Path, run: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(run)?;
    for entry in std::fs::read_dir(build)? {
        let entry = entry?;
        let target = run.join(entry.file_name());
        match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(&target)?,
            Ok(_) => continue,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(entry.path(), &target)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn supervise(
    runner: &Runner,
    run: &Run,
    child: &mut tokio::process::Child,
    pid: i32,
    rx: &mut mpsc::UnboundedReceiver<Control>,
    events: &broadcast::Sender<String>,
    log: &LogWriter,
    counters: &mut (u64, f64),
) -> Ending {
    let config = &runner.inner.config;
    let storage = &runner.inner.storage;
    let deadline = (run.timeout_secs > 0).then(|| {
        let elapsed = (now_ms() - run.attempt_started_at).max(0) as u64;
        Instant::now() + Duration::from_millis((run.timeout_secs * 1000).saturating_sub(elapsed))
    });
    let mut stopping: Option<Ending> = None;
    let mut kill_at: Option<Instant> = None;
    // The first sample waits a second: scanning /proc right away would compete with the child's
    // own start-up for the CPU.
    let mut tick = tokio::time::interval_at(
        Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut persist = tokio::time::interval(config.persist_state_interval);
    persist.tick().await;
    let ticks_per_sec = process::ticks_per_second() as f64;
    let mut last_cpu: Option<(u64, Instant)> = None;
    let (mut mem_sum, mut cpu_sum, mut samples) = (0f64, 0f64, 0f64);
    let limit_bytes = run.memory_mbytes * 1024 * 1024;
    let cpus = (run.memory_mbytes as f64 / 4096.0).max(0.125);
    loop {
        tokio::select! {
            status = child.wait() => {
                let code = status.ok().and_then(|s| {
                    use std::os::unix::process::ExitStatusExt;
                    s.code().or_else(|| s.signal().map(|sig| 128 + sig))
                });
                return stopping.unwrap_or(Ending::Exited(code));
            }
            _ = sleep_until_opt(deadline), if deadline.is_some() && stopping.is_none() => {
                log.system(&format!("The run timed out after {} seconds; stopping it", run.timeout_secs));
                let _ = storage.update_run(&run.id, Box::new(|r: &mut Run| {
                    if matches!(r.status, JobStatus::Running | JobStatus::Ready) {
                        r.status = JobStatus::TimingOut;
                    }
                    Ok(())
                })).await;
                runner.notify();
                process::kill_group(pid, libc::SIGKILL);
                stopping = Some(Ending::TimedOut);
            }
            _ = sleep_until_opt(kill_at), if kill_at.is_some() => {
                log.system("Graceful abort period is over; killing the run");
                process::kill_group(pid, libc::SIGKILL);
                kill_at = None;
            }
            command = rx.recv() => {
                match command {
                    Some(Control::Abort { graceful }) => {
                        if graceful && kill_at.is_none() && stopping.is_none() {
                            log.system(&format!("Aborting gracefully; the run will be killed in {} seconds", config.graceful_abort_secs));
                            let _ = events.send(json!({"name": "aborting", "data": {}}).to_string());
                            let _ = events.send(json!({"name": "persistState", "data": {"isMigrating": false}}).to_string());
                            kill_at = Some(Instant::now() + Duration::from_secs(config.graceful_abort_secs));
                        } else {
                            log.system("Aborting the run");
                            process::kill_group(pid, libc::SIGKILL);
                        }
                        stopping = Some(Ending::Aborted);
                    }
                    Some(Control::Restart) => {
                        let _ = events.send(json!({"name": "persistState", "data": {"isMigrating": true}}).to_string());
                        process::kill_group(pid, libc::SIGKILL);
                        stopping = Some(Ending::Restart);
                    }
                    None => {}
                }
            }
            _ = persist.tick() => {
                let _ = events.send(json!({"name": "persistState", "data": {"isMigrating": false}}).to_string());
            }
            _ = tick.tick() => {
                let usage = process::group_usage(pid);
                let now = Instant::now();
                let cpu = match last_cpu {
                    Some((ticks, at)) => {
                        let dt = now.duration_since(at).as_secs_f64().max(0.001);
                        (usage.cpu_ticks.saturating_sub(ticks) as f64 / ticks_per_sec) / dt * 100.0
                    }
                    None => 0.0,
                };
                last_cpu = Some((usage.cpu_ticks, now));
                samples += 1.0;
                mem_sum += usage.rss_bytes as f64;
                cpu_sum += cpu;
                counters.0 = counters.0.max(usage.rss_bytes);
                counters.1 = counters.1.max(cpu);
                let info = json!({
                    "name": "systemInfo",
                    "data": {
                        "memAvgBytes": mem_sum / samples,
                        "memCurrentBytes": usage.rss_bytes,
                        "memMaxBytes": counters.0,
                        "memTotalBytes": limit_bytes,
                        "cpuAvgUsage": cpu_sum / samples,
                        "cpuMaxUsage": counters.1,
                        "cpuCurrentUsage": cpu,
                        "isCpuOverloaded": cpu > cpus * 100.0 * 0.95,
                        "createdAt": troupe_model::format_ts(now_ms()),
                    }
                });
                let _ = events.send(info.to_string());
                if usage.rss_bytes > limit_bytes && stopping.is_none() {
                    log.system(&format!(
                        "The run uses {} MB, over its memory limit of {} MB; stopping it",
                        usage.rss_bytes / (1024 * 1024),
                        run.memory_mbytes
                    ));
                    process::kill_group(pid, libc::SIGKILL);
                    stopping = Some(Ending::MemoryExceeded(usage.rss_bytes));
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
