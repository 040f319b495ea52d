//! Command line: `troupe serve` and friends. Every option can also be set through a
//! `TROUPE_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::server::{self, ServeOptions};

#[derive(Debug, Parser)]
#[command(
    name = "troupe",
    version,
    about = "Self-hosted, Apify-compatible Actor platform"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API server.
    Serve(ServeArgs),
    /// Manage users (works on the data dir, also while the server runs).
    Users {
        #[command(subcommand)]
        command: UsersCommand,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Manage API tokens (works on the data dir, also while the server runs).
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Create or update an Actor from a local Apify project folder and build it (like `apify push`).
    Push(crate::remote::PushArgs),
    /// Run an Actor, print its log while it runs, then its OUTPUT record or dataset items.
    Call(crate::remote::CallArgs),
}

#[derive(Debug, clap::Args)]
pub struct DataDirArg {
    /// Folder holding all state.
    #[arg(
        long,
        env = "TROUPE_DATA_DIR",
        default_value = "./troupe-data",
        global = true
    )]
    pub data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user and print a first API token for it.
    Add { username: String },
    /// List users.
    List,
    /// Remove a user and revoke all of their tokens (their resources stay, unreachable).
    Remove { username: String },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token for a user (default: the default user) and print it once.
    Create {
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value = "created with troupe tokens create")]
        description: String,
    },
    /// List a user's tokens (ids only; secrets are never stored).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by its id (takes effect within 5 seconds on a running server).
    Revoke { id: String },
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the bound address is printed).
    #[arg(long, env = "TROUPE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Folder holding all state (database, blobs, builds, run folders).
    #[arg(long, env = "TROUPE_DATA_DIR", default_value = "./troupe-data")]
    pub data_dir: PathBuf,
    /// API token of the default user. Generated on first start and kept in the data dir when unset.
    #[arg(long, env = "TROUPE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Username of the default user (used in `username~name` references).
    #[arg(long, env = "TROUPE_USERNAME", default_value = "troupe")]
    pub username: String,
    /// Origin clients use to reach this server (for URLs in responses); defaults to the bound address.
    #[arg(long, env = "TROUPE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// fsync every commit (survives power loss, slower). Default: survives crashes and kill -9.
    #[arg(long, env = "TROUPE_FSYNC", default_value_t = false)]
    pub fsync: bool,
    /// Rows each background write removes when the content of a deleted storage is purged.
    #[arg(long, env = "TROUPE_PURGE_CHUNK_ROWS", default_value_t = troupe_storage::sqlite::DEFAULT_PURGE_CHUNK_ROWS)]
    pub purge_chunk_rows: usize,
    /// Milliseconds the purger of deleted storages waits after each of its writes (0 = none).
    #[arg(long, env = "TROUPE_PURGE_PAUSE_MS", default_value_t = 0)]
    pub purge_pause_ms: u64,
    /// Requests per second allowed per user (0 = unlimited). Over it: 429 rate-limit-exceeded.
    #[arg(long, env = "TROUPE_RATE_LIMIT_PER_USER", default_value_t = 0)]
    pub rate_limit_per_user: u32,
    /// Requests per second allowed per resource (dataset, store, queue, run, Actor…; 0 = unlimited).
    #[arg(long, env = "TROUPE_RATE_LIMIT_PER_RESOURCE", default_value_t = 0)]
    pub rate_limit_per_resource: u32,
    /// Seconds a request body may stall before the request fails with 408.
    #[arg(long, env = "TROUPE_BODY_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    pub body_idle_timeout_secs: u64,
    /// Seconds a client may take to send its request headers.
    #[arg(long, env = "TROUPE_HEADER_READ_TIMEOUT_SECS", default_value_t = 30)]
    pub header_read_timeout_secs: u64,
    /// Delete finished runs and unnamed storages older / idle longer than this (e.g. `30d`, `12h`); off when unset.
    #[arg(long, env = "TROUPE_RETENTION", value_parser = humantime::parse_duration)]
    pub retention: Option<std::time::Duration>,
    /// How often the retention policy runs.
    #[arg(long, env = "TROUPE_RETENTION_INTERVAL", value_parser = humantime::parse_duration, default_value = "1h")]
    pub retention_interval: std::time::Duration,
    /// Folder for pip and npm caches shared by builds (default: DATA_DIR/cache).
    #[arg(long, env = "TROUPE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Memory (MB) runs may use at once; runs beyond it wait in READY (default: the machine's RAM).
    #[arg(long, env = "TROUPE_MAX_MEMORY_MBYTES")]
    pub max_memory_mbytes: Option<u64>,
    /// Seconds `run-sync` endpoints wait for the run before answering 408 (the run goes on).
    #[arg(long, env = "TROUPE_SYNC_RUN_WAIT_SECS", default_value_t = 300)]
    pub sync_run_wait_secs: u64,
    /// Largest build or run log kept, in bytes; further output is dropped after one note.
    #[arg(long, env = "TROUPE_MAX_LOG_BYTES", default_value_t = troupe_runner::LOG_LIMIT)]
    pub max_log_bytes: u64,
    /// Time limit of a build when the request gives no `timeout` (e.g. `30m`, `2h`; `0` = none).
    #[arg(long, env = "TROUPE_BUILD_TIMEOUT", value_parser = parse_duration_or_zero, default_value = "30m")]
    pub build_timeout: std::time::Duration,
    /// Largest tarball download, and largest unpacked or cloned sources of a build, in bytes.
    #[arg(long, env = "TROUPE_MAX_SOURCE_BYTES", default_value_t = troupe_runner::DEFAULT_MAX_SOURCE_BYTES)]
    pub max_source_bytes: u64,
    /// Let GIT_REPO/GITHUB_GIST versions build from `file://` URLs and paths on this machine
    /// (off by default: any user could build from any git repository on the server's disk).
    #[arg(long, env = "TROUPE_ALLOW_LOCAL_SOURCES")]
    pub allow_local_sources: bool,
    /// Largest key-value store record accepted, in bytes (default 1 GiB).
    #[arg(long, env = "TROUPE_MAX_RECORD_BYTES", default_value_t = troupe_api::DEFAULT_MAX_RECORD_BYTES)]
    pub max_record_bytes: u64,
    /// Delay before a failed webhook call is retried; each further retry waits twice as long.
    #[arg(long, env = "TROUPE_WEBHOOK_RETRY_DELAY", value_parser = humantime::parse_duration, default_value = "1m")]
    pub webhook_retry_delay: std::time::Duration,
    /// Calls per webhook dispatch, the first one included (1 = never retry).
    #[arg(long, env = "TROUPE_WEBHOOK_MAX_ATTEMPTS", default_value_t = 12)]
    pub webhook_max_attempts: u32,
    /// Time limit of one webhook call.
    #[arg(long, env = "TROUPE_WEBHOOK_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub webhook_timeout: std::time::Duration,
}

/// A duration (`30m`, `90s`, `2h`) or `0`.
fn parse_duration_or_zero(text: &str) -> Result<std::time::Duration, String> {
    if text.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Users { command, data } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::admin::users(&data.data_dir, command))
        }
        Command::Tokens { command, data } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::admin::tokens(&data.data_dir, command))
        }
        Command::Push(args) => tokio::runtime::Runtime::new()?.block_on(crate::remote::push(args)),
        Command::Call(args) => {
            let code = tokio::runtime::Runtime::new()?.block_on(crate::remote::call(args))?;
            std::process::exit(code)
        }
        Command::Serve(args) => {
            // Before the runtime starts its threads (see memory.rs).
            crate::memory::configure();
            crate::memory::spawn_trimmer();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                // Writes queued on a runtime thread wake the writer when the thread parks.
                .on_thread_park(troupe_storage::sqlite::wake_deferred_writers)
                .build()?;
            runtime.block_on(server::run(ServeOptions {
                listen: args.listen,
                data_dir: args.data_dir,
                token: args.token,
                username: args.username,
                public_url: args.public_url,
                fsync: args.fsync,
                rate_limit_per_user: std::num::NonZeroU32::new(args.rate_limit_per_user),
                rate_limit_per_resource: std::num::NonZeroU32::new(args.rate_limit_per_resource),
                body_idle_timeout: std::time::Duration::from_secs(
                    args.body_idle_timeout_secs.max(1),
                ),
                header_read_timeout: std::time::Duration::from_secs(
                    args.header_read_timeout_secs.max(1),
                ),
                retention: args.retention,
                retention_interval: args.retention_interval,
                cache_dir: args.cache_dir,
                max_memory_mbytes: args.max_memory_mbytes,
                sync_run_wait_secs: args.sync_run_wait_secs,
                max_log_bytes: args.max_log_bytes,
                build_timeout: (!args.build_timeout.is_zero()).then_some(args.build_timeout),
                max_source_bytes: args.max_source_bytes.max(1),
                allow_local_sources: args.allow_local_sources,
                max_record_bytes: args.max_record_bytes,
                purge_chunk_rows: args.purge_chunk_rows.max(1),
                purge_pause: std::time::Duration::from_millis(args.purge_pause_ms),
                hooks: troupe_api::hooks::HooksConfig {
                    retry_base: args.webhook_retry_delay,
                    max_attempts: args.webhook_max_attempts.max(1),
                    call_timeout: args.webhook_timeout,
                },
            }))
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("troupe=info,troupe_api=info,warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
