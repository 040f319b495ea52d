//! Actor workloads: `runs/last` on an Actor with 1k runs vs one with 1M runs (T10), run start
//! latency vs a bare spawn (T11), log ingest and log GET (T12).
//!
//! The tiny Actor is a shell script whose first instruction writes one byte into a FIFO the
//! harness reads: start latency = POST .../runs → byte read. Runs for `runs/last` are inserted
//! in bulk straight into troupe's database through troupe-storage (cloned from a real run).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use troupe_model::actor::JobStatus;
use troupe_storage::sqlite::{SqliteOptions, SqliteStorage};
use troupe_storage::RunStore;

use crate::bench::{expect_status, Ctx, Sample, Workload};
use crate::client::Client;
use crate::load::{new_hist, Req};

/// How long a started run may take to signal its start before it counts as an error: generous,
/// so that only a real failure (not a slow, loaded machine) fails the smoke run.
const SIGNAL_PATIENCE: Duration = Duration::from_secs(120);

/// Bytes the log Actor prints (under troupe's 10 MB log cap).
/// Output of the log Actor (T12). Big enough that run start and finish (a few ms) do not
/// dominate the ingest time, and below the bench server's log cap ([`LOG_CAP`]) so every byte is
/// stored, none dropped.
const LOG_BYTES: u64 = 40_000_000;
/// Size of the log read by `log_get` (T12get: "GET of a 10 MB log"), written by its own run.
const GET_LOG_BYTES: u64 = 9_500_000;
/// Lines the `log_tail` Actor prints, one per ~20 ms (~1.5 s a run).
const TAIL_LINES: u32 = 60;
/// `--max-log-bytes` of the bench's troupe server: the 40 MB of 80-character lines plus the
/// 25-byte timestamp of each line.
pub const LOG_CAP: u64 = 64 << 20;

fn shell_actor(name: &str, script: &str) -> Value {
    json!({
        "name": name,
        "versions": [{
            "versionNumber": "0.1",
            "sourceType": "SOURCE_FILES",
            "sourceFiles": [
                {"name": ".actor/actor.json", "format": "TEXT", "content": "{\"actorSpecification\":1,\"startCommand\":\"sh main.sh\"}"},
                {"name": "main.sh", "format": "TEXT", "content": script},
            ],
        }],
        "defaultRunOptions": {"build": "latest", "timeoutSecs": 120, "memoryMbytes": 128},
    })
}

fn fifo_path(ctx: &Ctx) -> PathBuf {
    ctx.work_dir.join("start.fifo")
}

async fn create_actor(ctx: &Ctx, name: &str, script: &str, build: bool) -> anyhow::Result<String> {
    let v = ctx
        .api_json(
            Method::POST,
            "/v2/acts",
            serde_json::to_vec(&shell_actor(name, script))?,
            StatusCode::CREATED,
        )
        .await?;
    let id = v["data"]["id"].as_str().unwrap_or_default().to_string();
    if build {
        let b = ctx
            .api_json(
                Method::POST,
                &format!("/v2/acts/{id}/builds?version=0.1&waitForFinish=120"),
                Bytes::new(),
                StatusCode::CREATED,
            )
            .await?;
        // A loaded machine may take longer than one wait: wait until the build ends.
        let mut b = b;
        let build_id = b["data"]["id"].as_str().unwrap_or_default().to_string();
        for _ in 0..10 {
            if !["READY", "RUNNING"].contains(&b["data"]["status"].as_str().unwrap_or_default()) {
                break;
            }
            b = ctx
                .api_json(
                    Method::GET,
                    &format!("/v2/actor-builds/{build_id}?waitForFinish=60"),
                    Bytes::new(),
                    StatusCode::OK,
                )
                .await?;
        }
        anyhow::ensure!(
            b["data"]["status"] == "SUCCEEDED",
            "build of {name}: {}",
            b["data"]["status"]
        );
    }
    Ok(id)
}

/// Waits for a run to finish; returns its final status.
async fn wait_run(ctx: &Ctx, run_id: &str) -> anyhow::Result<String> {
    for _ in 0..20 {
        let v = ctx
            .api_json(
                Method::GET,
                &format!("/v2/actor-runs/{run_id}?waitForFinish=60"),
                Bytes::new(),
                StatusCode::OK,
            )
            .await?;
        let status = v["data"]["status"].as_str().unwrap_or_default().to_string();
        if ["SUCCEEDED", "FAILED", "TIMED-OUT", "ABORTED"].contains(&status.as_str()) {
            return Ok(status);
        }
    }
    anyhow::bail!("run {run_id} did not finish")
}

/// Reads one byte from the FIFO (opened read-write so `open` never blocks); on timeout a byte
/// is written to unblock the reader and `None` comes back.
async fn wait_fifo(path: &Path, timeout: Duration) -> anyhow::Result<Option<Instant>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(0)
        .open(path)?;
    let reader = file.try_clone()?;
    let handle = tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        let mut byte = [0u8; 1];
        let n = reader.read(&mut byte).unwrap_or(0);
        (n, byte[0], Instant::now())
    });
    tokio::pin!(handle);
    match tokio::time::timeout(timeout, &mut handle).await {
        Ok(result) => {
            let (n, byte, at) = result?;
            Ok((n == 1 && byte == b'x').then_some(at))
        }
        Err(_) => {
            use std::io::Write;
            let mut w = &file;
            let _ = w.write_all(b"t");
            let _ = handle.await;
            Ok(None)
        }
    }
}

/// Creates the Actors and seeds runs; false when troupe has no Actors.
pub async fn setup(ctx: &Ctx) -> anyhow::Result<bool> {
    let (status, _) = ctx.api(Method::GET, "/v2/acts", Bytes::new()).await?;
    if status != StatusCode::OK {
        return Ok(false);
    }
    let fifo = fifo_path(ctx);
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())?;
    anyhow::ensure!(
        unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } == 0,
        "mkfifo: {}",
        std::io::Error::last_os_error()
    );
    let tiny = create_actor(
        ctx,
        "bench-tiny",
        &format!("printf x > '{}'\n", fifo.display()),
        true,
    )
    .await?;
    ctx.set_id("actor_tiny", tiny.clone());
    // A first real run: checks the protocol and is the template of the seeded runs.
    let v = ctx
        .api_json(
            Method::POST,
            &format!("/v2/acts/{tiny}/runs"),
            Bytes::from_static(b"{}"),
            StatusCode::CREATED,
        )
        .await?;
    let run_id = v["data"]["id"].as_str().unwrap_or_default().to_string();
    anyhow::ensure!(
        wait_fifo(&fifo, SIGNAL_PATIENCE).await?.is_some(),
        "the tiny Actor did not signal its start"
    );
    let status = wait_run(ctx, &run_id).await?;
    anyhow::ensure!(status == "SUCCEEDED", "tiny Actor run: {status}");

    let log_actor = create_actor(
        ctx,
        "bench-log",
        &format!(
            "yes 'troupe-bench log line: the quick brown fox jumps over the lazy dog 0123456789' | head -c {LOG_BYTES}\n"
        ),
        true,
    )
    .await?;
    ctx.set_id("actor_log", log_actor);
    let log_get_actor = create_actor(
        ctx,
        "bench-log-get",
        &format!(
            "yes 'troupe-bench log line: the quick brown fox jumps over the lazy dog 0123456789' | head -c {GET_LOG_BYTES}\n"
        ),
        true,
    )
    .await?;
    // The log `log_get` reads: one run of the 9.5 MB log Actor, made here so that every round
    // reads the same stored log (its length, with the per-line timestamps, is what a GET sends).
    let v = ctx
        .api_json(
            Method::POST,
            &format!("/v2/acts/{log_get_actor}/runs"),
            Bytes::from_static(b"{}"),
            StatusCode::CREATED,
        )
        .await?;
    let log_run = v["data"]["id"].as_str().unwrap_or_default().to_string();
    let status = wait_run(ctx, &log_run).await?;
    anyhow::ensure!(status == "SUCCEEDED", "log Actor run: {status}");
    let (status, log) = ctx
        .api(Method::GET, &format!("/v2/logs/{log_run}"), Bytes::new())
        .await?;
    anyhow::ensure!(
        status == StatusCode::OK && log.len() as u64 >= GET_LOG_BYTES,
        "log GET: {status}, {} bytes",
        log.len()
    );
    ctx.set_id("log_get_run", log_run);
    // Prints the time (ns since the epoch) every 20 ms: `log_tail` follows its runs' logs.
    let tail_actor = create_actor(
        ctx,
        "bench-log-tail",
        &format!(
            "i=0; while [ $i -lt {TAIL_LINES} ]; do date +%s%N; sleep 0.02; i=$((i+1)); done\n"
        ),
        true,
    )
    .await?;
    ctx.set_id("actor_log_tail", tail_actor);
    ctx.set_id("log_get_bytes", log.len().to_string());

    let small = create_actor(ctx, "bench-runs-small", "exit 0\n", false).await?;
    let big = create_actor(ctx, "bench-runs-big", "exit 0\n", false).await?;
    ctx.set_id("actor_small", small.clone());
    ctx.set_id("actor_big", big.clone());
    let t = Instant::now();
    let big_runs = if ctx.settings.quick {
        20_000
    } else {
        1_000_000
    };
    let data_dir = ctx.data_dir.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let storage = SqliteStorage::open(&data_dir, SqliteOptions::default())?;
        let handle = tokio::runtime::Handle::current();
        let template = handle
            .block_on(storage.get_run(&run_id))?
            .ok_or_else(|| anyhow::anyhow!("template run not found"))?;
        let base = template.started_at - 10 * 86_400_000;
        for (act, count) in [(small, 1_000u64), (big, big_runs)] {
            let mut done = 0;
            while done < count {
                let n = 10_000.min(count - done);
                let runs: Vec<_> = (done..done + n)
                    .map(|i| {
                        let mut run = template.clone();
                        run.id = troupe_model::new_id();
                        run.act_id = act.clone();
                        run.started_at = base + i as i64 * 7;
                        run.attempt_started_at = run.started_at;
                        run.finished_at = Some(run.started_at + 3);
                        // Mostly succeeded, some failed, so the status filter has work to do.
                        run.status = if i % 10 == 9 {
                            JobStatus::Failed
                        } else {
                            JobStatus::Succeeded
                        };
                        run
                    })
                    .collect();
                storage.insert_runs_blocking(&runs)?;
                done += n;
            }
        }
        Ok(())
    })
    .await??;
    eprintln!(
        "seeded 1000 + {big_runs} runs in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(true)
}

pub fn workloads(ctx: &Ctx) -> Vec<Workload> {
    let mut list = Vec::new();
    for (id, name, desc) in [
        (
            "runs_last_small",
            "actor_small",
            "T10 GET acts/{id}/runs/last?status=SUCCEEDED, Actor with 1k runs, c=64",
        ),
        (
            "runs_last_big",
            "actor_big",
            "T10 same, Actor with 1M runs (20k in --quick), c=64",
        ),
    ] {
        let actor = ctx.id(name);
        list.push(
            Workload::http(
                id,
                desc,
                "req/s",
                1.0,
                64,
                Arc::new(move |_, _| {
                    Req::get(format!("/v2/acts/{actor}/runs/last?status=SUCCEEDED"))
                }),
                expect_status(200),
            )
            .vs("hello"),
        );
    }
    list.push(
        Workload::custom(
            "run_start",
            "T11 POST acts/{id}/runs of a tiny sh Actor → its first instruction, c=1",
            "starts/s",
            Arc::new(|ctx| Box::pin(async move { run_starts(&ctx).await })),
        )
        .vs("spawn"),
    );
    list.push(
        Workload::custom(
            "log_ingest",
            "T12 Actor prints 40 MB to stdout: POST run → run finished",
            "MB/s",
            Arc::new(|ctx| Box::pin(async move { log_ingest(&ctx).await })),
        )
        .vs("disk_write")
        .once(),
    );
    {
        // Every round, like the other HTTP workloads (it was one short sample after the rounds).
        let run = ctx.id("log_get_run");
        let len: u64 = ctx.id("log_get_bytes").parse().unwrap_or(GET_LOG_BYTES);
        list.push(
            Workload::http(
                "log_get",
                "T12 GET /v2/logs/{runId} of a 9.5 MB log (stored with line timestamps), c=1",
                "MiB/s",
                len as f64 / (1 << 20) as f64,
                1,
                Arc::new(move |_, _| Req::get(format!("/v2/logs/{run}"))),
                Arc::new(move |resp| {
                    if resp.status == StatusCode::OK && resp.len == len {
                        Ok(())
                    } else {
                        Err(format!("log GET: {}, {} bytes", resp.status, resp.len))
                    }
                }),
            )
            .vs("sink_1mib"),
        );
    }
    list.push(Workload::custom(
        "log_tail",
        "T12 GET /v2/logs/{runId}?stream=1 of a running Actor printing a line every 20 ms: \
             print → line received",
        "lines/s",
        Arc::new(|ctx| Box::pin(async move { log_tail(&ctx).await })),
    ));
    list
}

async fn run_starts(ctx: &Ctx) -> anyhow::Result<Sample> {
    let actor = ctx.id("actor_tiny");
    let fifo = fifo_path(ctx);
    let max = if ctx.settings.quick { 3 } else { 20 };
    let mut client = Client::new(ctx.troupe, &ctx.token);
    let mut hist = new_hist();
    let mut sample = Sample::default();
    let start = Instant::now();
    let cpu_before = crate::sys::cpu_sample(ctx.troupe_pid);
    let mut last_run = None;
    while sample.ops < max && start.elapsed() < ctx.settings.point {
        let t = Instant::now();
        let (status, body) = client
            .send(
                Req::new(
                    Method::POST,
                    format!("/v2/acts/{actor}/runs"),
                    Bytes::from_static(b"{}"),
                )
                .header("content-type", "application/json"),
            )
            .await?;
        if status != StatusCode::CREATED {
            sample.errors += 1;
            sample.first_error.get_or_insert(format!(
                "start: {status} {}",
                String::from_utf8_lossy(&body)
            ));
            continue;
        }
        match wait_fifo(&fifo, SIGNAL_PATIENCE).await? {
            Some(at) => {
                let _ = hist.record(at.duration_since(t).as_micros() as u64 + 1);
                sample.ops += 1;
            }
            None => {
                sample.errors += 1;
                sample
                    .first_error
                    .get_or_insert("the Actor did not signal within 120 s".into());
            }
        }
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        last_run = v["data"]["id"].as_str().map(str::to_string);
    }
    sample.secs = start.elapsed().as_secs_f64();
    let cpu_after = crate::sys::cpu_sample(ctx.troupe_pid);
    // Let the last run finish so rounds do not overlap.
    if let Some(run) = last_run {
        let status = wait_run(ctx, &run).await?;
        if status != "SUCCEEDED" {
            sample.errors += 1;
            sample
                .first_error
                .get_or_insert(format!("run ended {status}"));
        }
    }
    sample.rate = sample.ops as f64 / sample.secs.max(1e-9);
    sample.p50_us = hist.value_at_quantile(0.5) as f64;
    sample.p99_us = hist.value_at_quantile(0.99) as f64;
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        if sample.ops > 0 {
            sample.cpu_us_per_op =
                Some(crate::sys::cpu_delta_ns(&a, &b) as f64 / 1000.0 / sample.ops as f64);
        }
    }
    Ok(sample)
}

async fn log_ingest(ctx: &Ctx) -> anyhow::Result<Sample> {
    let actor = ctx.id("actor_log");
    let t = Instant::now();
    let v = ctx
        .api_json(
            Method::POST,
            &format!("/v2/acts/{actor}/runs"),
            Bytes::from_static(b"{}"),
            StatusCode::CREATED,
        )
        .await?;
    let run_id = v["data"]["id"].as_str().unwrap_or_default().to_string();
    let status = wait_run(ctx, &run_id).await?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(status == "SUCCEEDED", "log Actor run: {status}");
    Ok(Sample {
        rate: LOG_BYTES as f64 / 1e6 / secs,
        ops: 1,
        secs,
        p50_us: secs * 1e6,
        p99_us: secs * 1e6,
        ..Sample::default()
    })
}

/// Follows the log of a run that prints the time every 20 ms: latency = time a line was printed
/// (its text) → time the follower received it. Lines printed before the follower's answer
/// arrived (the backlog it gets at once) are not counted.
async fn log_tail(ctx: &Ctx) -> anyhow::Result<Sample> {
    use http_body_util::BodyExt;
    fn now_ns() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    }
    let v = ctx
        .api_json(
            Method::POST,
            &format!("/v2/acts/{}/runs", ctx.id("actor_log_tail")),
            Bytes::from_static(b"{}"),
            StatusCode::CREATED,
        )
        .await?;
    let run = v["data"]["id"].as_str().unwrap_or_default().to_string();
    let start = Instant::now();
    let response = ctx
        .api_response(
            Method::GET,
            &format!("/v2/logs/{run}?stream=1"),
            Bytes::new(),
        )
        .await?;
    anyhow::ensure!(
        response.status() == StatusCode::OK,
        "log GET stream=1: {}",
        response.status()
    );
    let since = now_ns();
    let mut body = response.into_body();
    let mut hist = new_hist();
    let (mut lines, mut pending) = (0u64, Vec::new());
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let at = now_ns();
        pending.extend_from_slice(data);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            // `<ISO timestamp> <ns>`; troupe's own lines ([troupe] ...) have no number.
            let printed = std::str::from_utf8(&line)
                .ok()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|t| t.parse::<u128>().ok());
            if let Some(printed) = printed.filter(|&p| p >= since) {
                let _ = hist.record((at.saturating_sub(printed) / 1000) as u64 + 1);
                lines += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let status = wait_run(ctx, &run).await?;
    anyhow::ensure!(status == "SUCCEEDED", "log tail Actor run: {status}");
    anyhow::ensure!(lines > 0, "no line of the followed log was counted");
    Ok(Sample {
        rate: lines as f64 / secs,
        ops: lines,
        secs,
        p50_us: hist.value_at_quantile(0.5) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
        ..Sample::default()
    })
}
