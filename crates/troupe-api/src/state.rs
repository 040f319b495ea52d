//! Shared state of every handler.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use troupe_model::user::User;
use troupe_runner::Runner;
use troupe_storage::Storage;

use crate::error::ApiError;

/// Settings the HTTP layer needs.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Origin clients reach the server at, without `/v2` (e.g. `http://127.0.0.1:8080`).
    pub public_base_url: String,
    /// Scratch space for exports that need a file (XLSX), inside the data dir.
    pub temp_dir: std::path::PathBuf,
    /// Requests per second per user; `None` = unlimited.
    pub rate_limit_per_user: Option<std::num::NonZeroU32>,
    /// Requests per second per resource (dataset, store, queue, run, Actor…); `None` = unlimited.
    pub rate_limit_per_resource: Option<std::num::NonZeroU32>,
    /// A request body that sends nothing for this long is cut off with 408.
    pub body_idle_timeout: Duration,
    /// A client must send its request headers within this time.
    pub header_read_timeout: Duration,
    /// Largest key-value record accepted, in bytes (as sent, i.e. before any decoding).
    pub max_record_bytes: u64,
    /// Webhook delivery (timeouts, retries).
    pub hooks: crate::hooks::HooksConfig,
    /// The server's secret for values signed by `tools/encode-and-sign` (kept in the data dir).
    pub signing_secret: String,
}

/// Default of [`ApiConfig::max_record_bytes`]: 1 GiB.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 1 << 30;

/// Everything a handler can reach: one shared allocation, so the clones axum makes of it for
/// every request (routing, the `State` extractor) cost one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct AppStateInner {
    pub storage: Arc<dyn Storage>,
    pub config: Arc<ApiConfig>,
    pub rate_limits: Arc<crate::ratelimit::RateLimits>,
    /// Starts, stops and watches builds and runs (the API never runs processes itself).
    pub runner: Runner,
    /// Webhook dispatches and the scheduler (started by [`crate::hooks::start`]).
    pub hooks: crate::hooks::Hooks,
    /// Bodies of "last run of an Actor" answers (finished runs), see `routes::runs`.
    pub last_runs: Arc<crate::cache::BodyCache>,
    /// Field statistics computed so far per dataset, see `routes::datasets`.
    pub dataset_stats: Arc<crate::routes::datasets::StatsCache>,
    tokens: Arc<TokenCache>,
}

/// Bytes of cached "last run" bodies (~1.5 KB each).
const LAST_RUN_CACHE_BYTES: usize = 4 << 20;

impl AppState {
    pub fn new(storage: Arc<dyn Storage>, config: ApiConfig, runner: Runner) -> Self {
        let rate_limits = crate::ratelimit::RateLimits::new(
            config.rate_limit_per_user,
            config.rate_limit_per_resource,
        );
        let tokens = Arc::new(TokenCache::default());
        let cache = tokens.clone();
        // A run's token stops working the moment the run ends.
        runner.on_tokens_revoked(Arc::new(move || cache.entries.lock().clear()));
        let hooks = crate::hooks::Hooks::new(config.hooks.clone());
        Self(Arc::new(AppStateInner {
            storage,
            hooks,
            config: Arc::new(config),
            rate_limits: Arc::new(rate_limits),
            runner,
            last_runs: Arc::new(crate::cache::BodyCache::new(LAST_RUN_CACHE_BYTES)),
            dataset_stats: Arc::default(),
            tokens,
        }))
    }

    /// `{public_base_url}/v2`.
    pub fn api_base(&self) -> String {
        format!("{}/v2", self.config.public_base_url)
    }

    /// The user owning `token` (and the run, for a run's token), with a short-lived in-memory
    /// cache in front of storage.
    pub async fn user_for_token(&self, token: &str) -> Result<Option<TokenOwner>, ApiError> {
        let generation = self.storage.token_generation();
        if let Some(owner) = self.tokens.get(token, generation) {
            return Ok(Some(owner));
        }
        let owner = self
            .storage
            .token_owner(token)
            .await?
            .map(|(user, run_id)| TokenOwner {
                user: Arc::new(user),
                run_id: run_id.map(Arc::from),
            });
        if let Some(owner) = &owner {
            self.tokens.put(token, owner.clone(), generation);
        }
        Ok(owner)
    }

    /// Forgets one cached token (after it is revoked in this process).
    pub fn forget_token(&self, token: &str) {
        self.tokens.entries.lock().remove(token);
    }

    /// Forgets cached tokens (after a token is revoked).
    pub fn clear_token_cache(&self) {
        self.tokens.entries.lock().clear();
    }
}

/// How long a token lookup is cached: a token revoked from another process stops working within this.
const TOKEN_TTL: Duration = Duration::from_secs(5);

/// Who a token belongs to: a user, and the run for a run's own token.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    pub user: Arc<User>,
    pub run_id: Option<Arc<str>>,
}

/// A cached lookup: the owner, when it was cached, and the revocation generation it saw.
type CachedUser = (TokenOwner, Instant, u64);

/// Keyed by token. foldhash: a token lookup is on every authenticated request, and SipHash of a
/// 40-character token costs more than the rest of the lookup (the seed is still random per map).
#[derive(Default)]
struct TokenCache {
    entries: Mutex<HashMap<String, CachedUser, foldhash::fast::RandomState>>,
}

impl TokenCache {
    /// A cached user, if cached less than `TOKEN_TTL` ago and no revocation happened since.
    fn get(&self, token: &str, generation: u64) -> Option<TokenOwner> {
        let entries = self.entries.lock();
        let (user, at, seen) = entries.get(token)?;
        (*seen == generation && at.elapsed() < TOKEN_TTL).then(|| user.clone())
    }

    fn put(&self, token: &str, user: TokenOwner, generation: u64) {
        let mut entries = self.entries.lock();
        if entries.len() > 10_000 {
            entries.clear();
        }
        entries.insert(token.to_string(), (user, Instant::now(), generation));
    }
}
