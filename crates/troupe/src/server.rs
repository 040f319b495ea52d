//! Server bootstrap: open storage, make sure the default user and its token exist, bind, print
//! the bound address on one stdout line, serve until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use std::time::Duration;
use tokio::net::TcpListener;

use troupe_api::{ApiConfig, AppState};
use troupe_runner::{Runner, RunnerConfig};
use troupe_storage::sqlite::{Durability, SqliteOptions, SqliteStorage};
use troupe_storage::Storage;

/// Everything `troupe serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub token: Option<String>,
    pub username: String,
    pub public_url: Option<String>,
    pub fsync: bool,
    pub rate_limit_per_user: Option<std::num::NonZeroU32>,
    pub rate_limit_per_resource: Option<std::num::NonZeroU32>,
    pub body_idle_timeout: std::time::Duration,
    pub header_read_timeout: std::time::Duration,
    /// Idle unnamed storages older than this are deleted (`None` = keep forever).
    pub retention: Option<std::time::Duration>,
    pub retention_interval: std::time::Duration,
    pub cache_dir: Option<PathBuf>,
    pub max_memory_mbytes: Option<u64>,
    pub sync_run_wait_secs: u64,
    pub max_log_bytes: u64,
    /// Time limit of builds that name none (`None` = no limit).
    pub build_timeout: Option<std::time::Duration>,
    pub max_source_bytes: u64,
    pub allow_local_sources: bool,
    pub max_record_bytes: u64,
    /// Rows per background write purging a deleted storage's content, and the pause after each.
    pub purge_chunk_rows: usize,
    pub purge_pause: std::time::Duration,
    pub hooks: troupe_api::hooks::HooksConfig,
}

/// Name of the file keeping a generated token.
const TOKEN_FILE: &str = "token";

/// The default user's token: given, or read from the data dir, or generated (and then kept
/// and printed once).
fn default_token(data_dir: &Path, given: Option<String>) -> anyhow::Result<String> {
    if let Some(token) = given.filter(|t| !t.is_empty()) {
        return Ok(token);
    }
    let path = data_dir.join(TOKEN_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let token = format!("troupe_{}", troupe_model::id::random_string(40));
    write_private(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    println!("generated API token (kept in {}): {token}", path.display());
    Ok(token)
}

/// The secret `tools/encode-and-sign` signs with: `DATA/signing.secret`, made on first start
/// (readable by the server's user only), so signed values stay valid across restarts.
fn signing_secret(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("signing.secret");
    if let Ok(secret) = std::fs::read_to_string(&path) {
        let secret = secret.trim().to_string();
        if !secret.is_empty() {
            return Ok(secret);
        }
    }
    let secret = troupe_model::id::random_string(48);
    write_private(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()
}

/// Name of the file a running server holds locked in its data dir.
const LOCK_FILE: &str = "serve.lock";
/// How long `serve` waits for the data dir's lock (a server stopping on the same data dir).
const LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// Locks the data dir for this server (an exclusive `flock` on `serve.lock`, released by the
/// kernel when the process ends, however it ends) and writes the server's pid into the file.
/// A second server on the same data dir would serve the same database with caches of its own
/// (storage access, lock hints, recent request ids...) and answer from stale ones. The `users`
/// and `tokens` commands keep no caches and do not take the lock.
async fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = data_dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                anyhow::bail!(
                    "another troupe server (pid {}) is using the data dir {}; stop it first",
                    holder.trim(),
                    data_dir.display()
                );
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

/// Runs the server until a shutdown signal.
pub async fn run(options: ServeOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("creating {}", options.data_dir.display()))?;
    // Held until the server returns.
    let _lock = lock_data_dir(&options.data_dir).await?;
    let durability = if options.fsync {
        Durability::Full
    } else {
        Durability::Normal
    };
    let storage = SqliteStorage::open(
        &options.data_dir,
        SqliteOptions {
            durability,
            purge_chunk_rows: options.purge_chunk_rows,
            purge_pause: options.purge_pause,
        },
    )?;
    let storage: Arc<dyn Storage> = Arc::new(storage);
    let token = default_token(&options.data_dir, options.token.clone())?;
    storage
        .ensure_default_user(&options.username, &token)
        .await?;

    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("binding {}", options.listen))?;
    let bound = listener.local_addr()?;
    let public_base_url = options
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').trim_end_matches("/v2").to_string())
        .unwrap_or_else(|| format!("http://{bound}"));
    if let Some(period) = options.retention {
        crate::retention::spawn(
            storage.clone(),
            options.data_dir.clone(),
            period,
            options.retention_interval,
        );
    }
    let data_dir = options
        .data_dir
        .canonicalize()
        .unwrap_or_else(|_| options.data_dir.clone());
    let cache_dir = options
        .cache_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("cache"));
    std::fs::create_dir_all(&cache_dir)
        .with_context(|| format!("creating {}", cache_dir.display()))?;
    let cache_dir = cache_dir.canonicalize().unwrap_or(cache_dir);
    let runner = Runner::new(
        storage.clone(),
        RunnerConfig {
            data_dir: data_dir.clone(),
            cache_dir,
            api_base_url: format!("http://{bound}"),
            public_base_url: public_base_url.clone(),
            max_memory_mbytes: options
                .max_memory_mbytes
                .unwrap_or_else(troupe_runner::process::total_memory_mbytes),
            persist_state_interval: Duration::from_secs(60),
            graceful_abort_secs: 30,
            sync_run_wait: Duration::from_secs(options.sync_run_wait_secs),
            log_limit: options.max_log_bytes,
            build_timeout: options.build_timeout,
            max_source_bytes: options.max_source_bytes,
            allow_local_sources: options.allow_local_sources,
        },
    );
    let state = AppState::new(
        storage,
        ApiConfig {
            public_base_url: public_base_url.clone(),
            temp_dir: data_dir.join("tmp"),
            rate_limit_per_user: options.rate_limit_per_user,
            rate_limit_per_resource: options.rate_limit_per_resource,
            body_idle_timeout: options.body_idle_timeout,
            header_read_timeout: options.header_read_timeout,
            max_record_bytes: options.max_record_bytes,
            hooks: options.hooks.clone(),
            signing_secret: signing_secret(&options.data_dir)?,
        },
        runner.clone(),
    );
    // Webhooks first, so that the runs recovery ends get their webhooks too.
    troupe_api::hooks::start(&state).await?;
    // Runs a previous server process left behind end now (or are queued again if not started).
    runner.recover().await?;
    // Signal handlers are in place before anyone is told the server listens (a future that
    // installs them when first polled could miss a SIGTERM sent right after the first requests).
    let shutdown = shutdown_signal();
    // One stdout line tests and scripts can parse.
    println!("troupe listening on http://{bound} (API base {public_base_url}/v2)");
    tracing::info!(%bound, "listening");
    let hooks = state.hooks.clone();
    troupe_api::serve(listener, state, shutdown).await?;
    // Nothing started by this server outlives it.
    runner.shutdown().await;
    // The webhooks of the runs it ended are stored before the process exits (delivered now if
    // there is time, else when the server starts again).
    hooks.flush(Duration::from_secs(10)).await;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGTERM or SIGINT; the handlers are installed when this is called.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    }
}
