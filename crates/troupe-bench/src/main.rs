//! troupe-bench: starts the real `troupe serve` and a bare-hyper yardstick server, measures
//! troupe's workloads and same-run yardsticks in interleaved rounds, prints a table, writes
//! JSON, and checks the gates of bench/targets.toml. See README.md "Benchmarks".

mod bench;
mod client;
mod data;
mod kv;
mod load;
mod raw;
mod report;
mod rq;
mod runs;
mod sys;
mod workloads;
mod yardstick_server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use hyper::{Method, StatusCode};
use parking_lot::Mutex;

use crate::bench::{Ctx, Settings, Workload};
use crate::report::{Round, RowInfo, Status};

#[derive(Debug, Parser)]
#[command(
    name = "troupe-bench",
    about = "troupe benchmark harness with same-run yardsticks"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Smoke run (~1 minute, small data): every workload once or twice, for CI.
    #[arg(long)]
    quick: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not fail on gates (errors and correctness violations still fail).
    #[arg(long)]
    no_gate: bool,
    /// The troupe binary (default: `troupe` next to this binary, else target/release/troupe).
    #[arg(long)]
    troupe_bin: Option<PathBuf>,
    /// Gates file (default: bench/targets.toml of the workspace).
    #[arg(long)]
    targets: Option<PathBuf>,
    /// Rounds (default 5, quick 2).
    #[arg(long)]
    rounds: Option<usize>,
    /// Measured seconds per point (default 1.5, quick 0.25).
    #[arg(long)]
    point_secs: Option<f64>,
    /// Items in the read/export dataset (default 1,000,000, quick 20,000).
    #[arg(long)]
    items: Option<u64>,
    /// Only run workloads whose id contains one of these (comma-separated); yardsticks always run.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Binary for the spawn yardstick (run with no arguments and stdin from /dev/null; the
    /// default is the tiny Actor's interpreter, so run start compares with the same binary).
    #[arg(long, default_value = "/bin/sh")]
    spawn_bin: PathBuf,
    /// Do not pin servers and load to separate CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Scheduling niceness for the harness and both servers (e.g. -10 on a machine busy with
    /// other work; needs root for negative values). Default: unchanged.
    #[arg(long, allow_hyphen_values = true)]
    nice: Option<i32>,
    /// Where temporary data dirs go (default: the system temp dir).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// The bare-hyper yardstick server (started by the harness itself).
    YardstickServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Some(Sub::YardstickServer { listen }) = cli.command {
        if let Err(err) = yardstick_server::run(listen) {
            eprintln!("yardstick server: {err:#}");
            std::process::exit(1);
        }
        return;
    }
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("troupe-bench: {err:#}");
            std::process::exit(2);
        }
    }
}

fn default_troupe_bin() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let sibling = dir.join("troupe");
            if sibling.is_file() {
                return sibling;
            }
        }
    }
    PathBuf::from("target/release/troupe")
}

fn default_targets() -> PathBuf {
    let local = PathBuf::from("bench/targets.toml");
    if local.is_file() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/targets.toml")
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let quick = cli.quick;
    let settings = Settings {
        quick,
        rounds: cli.rounds.unwrap_or(if quick { 2 } else { 5 }).max(1),
        point: Duration::from_secs_f64(cli.point_secs.unwrap_or(if quick { 0.25 } else { 1.5 })),
        warmup: Duration::from_millis(if quick { 100 } else { 300 }),
        read_items: cli
            .items
            .unwrap_or(if quick { 20_000 } else { 1_000_000 })
            .max(1000),
        scan_rows: if quick { 20_000 } else { 200_000 },
        spawn_bin: cli.spawn_bin.clone(),
    };
    let targets_path = cli.targets.clone().unwrap_or_else(default_targets);
    let targets: report::Targets = toml::from_str(
        &std::fs::read_to_string(&targets_path)
            .with_context(|| format!("reading {}", targets_path.display()))?,
    )
    .with_context(|| format!("parsing {}", targets_path.display()))?;
    let troupe_bin = cli.troupe_bin.clone().unwrap_or_else(default_troupe_bin);
    anyhow::ensure!(
        troupe_bin.is_file(),
        "troupe binary {} not found (build it with `cargo build --release`, or pass --troupe-bin)",
        troupe_bin.display()
    );

    if let Some(nice) = cli.nice {
        // Per thread on Linux; set first, so every thread and child inherits it.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
            anyhow::bail!("setpriority({nice}): {}", std::io::Error::last_os_error());
        }
    }
    // Before pinning (which narrows this thread's CPU set).
    let nproc = sys::allowed_cpus().len();
    let placement = sys::Placement::detect(cli.no_pin);
    if let Some(cpu) = placement.load {
        sys::pin_current_thread(cpu).context("pinning the load generator")?;
    }
    let work = match &cli.work_dir {
        Some(dir) => tempfile::Builder::new()
            .prefix("troupe-bench")
            .tempdir_in(dir)?,
        None => tempfile::Builder::new().prefix("troupe-bench").tempdir()?,
    };
    let data_dir = work.path().join("troupe-data");
    let token = format!("bench_{}", troupe_model::id::random_string(32));

    let mut cmd = Command::new(&troupe_bin);
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--max-log-bytes")
        .arg(runs::LOG_CAP.to_string())
        .env("TROUPE_TOKEN", &token)
        .env_remove("RUST_LOG");
    let mut troupe = sys::Server::start(
        "troupe",
        cmd,
        placement.server,
        "troupe listening on",
        &work.path().join("troupe.stderr"),
    )?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("yardstick-server")
        .arg("--listen")
        .arg("127.0.0.1:0");
    let mut yard = sys::Server::start(
        "yardstick",
        cmd,
        placement.server,
        "yardstick listening on",
        &work.path().join("yardstick.stderr"),
    )?;

    let items: Vec<String> = (0..10_000).map(data::item).collect();
    let raw = raw::RawEngine::open(&work.path().join("yardstick-db"), items.clone())?;
    let ctx = Ctx {
        settings: Arc::new(settings.clone()),
        troupe: troupe.addr,
        troupe_pid: troupe.pid(),
        yard: yard.addr,
        yard_pid: yard.pid(),
        token,
        data_dir: data_dir.clone(),
        work_dir: work.path().to_path_buf(),
        placement,
        raw: Arc::new(Mutex::new(raw)),
        items: Arc::new(items),
        ids: Arc::new(Mutex::new(BTreeMap::new())),
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let outcome = runtime.block_on(bench_main(
        &ctx,
        &cli,
        &targets,
        nproc,
        &mut troupe,
        &mut yard,
    ));
    troupe.stop();
    yard.stop();
    let outcome = outcome?;
    eprintln!("total time {:.0} s", started.elapsed().as_secs_f64());
    Ok(outcome)
}

fn selected(cli: &Cli, id: &str) -> bool {
    cli.only.is_empty() || cli.only.iter().any(|o| id.contains(o.as_str()))
}

/// Whether any workload with this id prefix may be selected (to skip its setup).
fn any_selected(cli: &Cli, prefix: &str) -> bool {
    cli.only.is_empty()
        || cli
            .only
            .iter()
            .any(|o| o.starts_with(prefix) || prefix.starts_with(o.as_str()))
}

async fn wait_ready(ctx: &Ctx) -> anyhow::Result<()> {
    // Generous: a loaded machine starts slowly; the wait ends as soon as troupe answers.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok((StatusCode::OK, _)) = ctx.api(Method::GET, "/v2/users/me", Bytes::new()).await {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "troupe did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bench_main(
    ctx: &Ctx,
    cli: &Cli,
    targets: &report::Targets,
    nproc: usize,
    troupe: &mut sys::Server,
    yard: &mut sys::Server,
) -> anyhow::Result<i32> {
    let s = &ctx.settings;
    wait_ready(ctx).await?;
    let idle = workloads::idle_rss(ctx.troupe_pid);
    eprintln!(
        "troupe {} (pid {}), yardstick {} (pid {}); servers on CPU {:?}, load on CPU {:?}; {} rounds x {:.2} s",
        ctx.troupe, ctx.troupe_pid, ctx.yard, ctx.yard_pid, ctx.placement.server, ctx.placement.load,
        s.rounds, s.point.as_secs_f64()
    );

    let t = Instant::now();
    {
        let raw = ctx.raw.clone();
        let rows = s.scan_rows;
        bench::on_server_cpu(ctx, move || {
            raw.lock().insert(Duration::from_secs(600), rows)
        })
        .await?;
    }
    workloads::setup_datasets(ctx).await?;
    eprintln!(
        "seeded {} dataset items (+{} raw rows) in {:.1} s",
        s.read_items,
        s.scan_rows,
        t.elapsed().as_secs_f64()
    );

    let mut list: Vec<Workload> = workloads::yardsticks();
    list.extend(workloads::datasets(ctx));
    // Features are probed: a troupe without them reports their gates as "n/a".
    let t = Instant::now();
    if any_selected(cli, "kv_") && kv::setup(ctx).await? {
        list.extend(kv::workloads(ctx));
    }
    if any_selected(cli, "rq_") && rq::setup(ctx).await? {
        list.extend(rq::workloads(ctx));
    }
    if (any_selected(cli, "run") || any_selected(cli, "log_")) && runs::setup(ctx).await? {
        list.extend(runs::workloads(ctx));
    }
    eprintln!(
        "set up stores, queues and Actors in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    list.retain(|w| w.yardstick_row || selected(cli, &w.id));

    let mut rounds: Vec<Round> = Vec::new();
    let mut loads = Vec::new();
    let mut fatal: Vec<String> = Vec::new();
    for round in 0..s.rounds {
        let mut samples = Round::new();
        loads.push(sys::loadavg());
        for w in list.iter().filter(|w| !w.once) {
            let sample = w.run(ctx).await;
            progress(round, w, &sample, &samples);
            samples.insert(w.id.clone(), sample);
            if !troupe.alive() || !yard.alive() {
                fatal.push(format!(
                    "a server died during {}; troupe stderr:\n{}",
                    w.id,
                    troupe.stderr_tail()
                ));
                break;
            }
        }
        rounds.push(samples);
        if !fatal.is_empty() {
            break;
        }
    }
    if fatal.is_empty() {
        let mut once = Round::new();
        for w in list.iter().filter(|w| w.once) {
            let sample = w.run(ctx).await;
            progress(s.rounds, w, &sample, &once);
            once.insert(w.id.clone(), sample);
        }
        once.insert("idle_rss".into(), idle);
        rounds.push(once);
        for w in list.iter() {
            if let Some(verify) = &w.verify {
                if let Err(err) = verify(ctx.clone()).await {
                    fatal.push(format!("correctness: {err:#}"));
                }
            }
        }
    }

    // Summaries in list order.
    let mut rows: Vec<RowInfo<'_>> = list
        .iter()
        .map(|w| RowInfo {
            id: &w.id,
            desc: &w.desc,
            unit: w.unit,
            yardstick: w.yardstick.as_deref(),
        })
        .collect();
    rows.push(RowInfo {
        id: "idle_rss",
        desc: "server RSS after start, before any load",
        unit: "",
        yardstick: None,
    });
    let summaries: Vec<report::Summary> = rows
        .iter()
        .filter_map(|row| report::summarize(row, &rounds))
        .collect();
    let by_id: BTreeMap<String, report::Summary> = summaries
        .iter()
        .map(|s| (s.id.clone(), s.clone()))
        .collect();
    let gates: Vec<report::GateResult> = targets
        .gate
        .iter()
        .map(|g| report::evaluate(g, &by_id, &rounds))
        .collect();

    println!("\n{}", report::table(&summaries));
    println!("{}", report::gate_table(&gates));
    let errors: u64 = summaries.iter().map(|s| s.errors).sum();
    for s in summaries.iter().filter(|s| s.errors > 0) {
        println!(
            "ERRORS in {}: {} ({})",
            s.id,
            s.errors,
            s.first_error.as_deref().unwrap_or("?")
        );
    }
    for f in &fatal {
        println!("FATAL: {f}");
    }
    let failed_gates = gates.iter().filter(|g| g.status == Status::Fail).count();
    let server_mem = sys::mem(ctx.troupe_pid);

    if let Some(out) = &cli.out {
        let json = serde_json::json!({
            "date": troupe_model::format_ts(troupe_model::now_ms()),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "machine": {
                "nproc": nproc,
                "cpu_model": sys::cpu_model(),
                "server_cpu": ctx.placement.server,
                "load_cpu": ctx.placement.load,
                "nice": cli.nice,
                "loadavg_per_round": loads,
            },
            "settings": {
                "quick": s.quick,
                "rounds": s.rounds,
                "point_secs": s.point.as_secs_f64(),
                "warmup_secs": s.warmup.as_secs_f64(),
                "read_items": s.read_items,
                "scan_rows": s.scan_rows,
            },
            "server_mem_at_end": server_mem,
            "summary": summaries,
            "gates": gates,
            "errors": errors,
            "fatal": fatal,
            "rounds": rounds,
        });
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).ok();
        }
        std::fs::write(out, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("results written to {}", out.display());
    }

    if errors > 0 || !fatal.is_empty() {
        println!("FAILED: errors or correctness violations");
        return Ok(1);
    }
    if failed_gates > 0 {
        if cli.no_gate {
            println!("{failed_gates} gate(s) failed (ignored: --no-gate)");
        } else {
            println!("FAILED: {failed_gates} gate(s)");
            return Ok(1);
        }
    }
    Ok(0)
}

fn progress(round: usize, w: &Workload, s: &bench::Sample, samples: &Round) {
    let ratio = w
        .yardstick
        .as_ref()
        .and_then(|y| samples.get(y))
        .filter(|y| y.rate > 0.0)
        .map(|y| format!(" ratio {:.2}", s.rate / y.rate))
        .unwrap_or_default();
    let cpu = s
        .cpu_us_per_op
        .map(|c| format!(" cpu {c:.1}µs/op"))
        .unwrap_or_default();
    let err = if s.errors > 0 {
        format!(
            " ERRORS {} ({})",
            s.errors,
            s.first_error.as_deref().unwrap_or("")
        )
    } else {
        String::new()
    };
    let extra: String = s
        .extra
        .iter()
        .map(|(k, v)| format!(" {k}={v:.1}"))
        .collect();
    eprintln!(
        "[r{round}] {:<20} {:>12.0} {}{ratio}{cpu} p50 {:.2}ms p99 {:.2}ms{extra}{err}",
        w.id,
        s.rate,
        w.unit,
        s.p50_us / 1000.0,
        s.p99_us / 1000.0
    );
}
