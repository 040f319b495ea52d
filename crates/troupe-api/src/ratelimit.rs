//! Optional rate limits (off by default): requests per second per user (anonymous callers share
//! one bucket) and per resource (the first id in the path: a dataset, store, queue, run, Actor…).
//! Over the limit: 429 `rate-limit-exceeded`; every response then carries `X-RateLimit-Limit`.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Keyed limiters built from the configuration.
pub struct RateLimits {
    per_user: Option<(u32, DefaultKeyedRateLimiter<String>)>,
    per_resource: Option<(u32, DefaultKeyedRateLimiter<String>)>,
}

impl RateLimits {
    pub fn new(per_user: Option<NonZeroU32>, per_resource: Option<NonZeroU32>) -> Self {
        let make = |limit: NonZeroU32| (limit.get(), RateLimiter::keyed(Quota::per_second(limit)));
        Self {
            per_user: per_user.map(make),
            per_resource: per_resource.map(make),
        }
    }

    pub fn enabled(&self) -> bool {
        self.per_user.is_some() || self.per_resource.is_some()
    }

    /// The figure reported in `X-RateLimit-Limit` (the strictest configured limit).
    fn reported_limit(&self) -> u32 {
        [self.per_user.as_ref(), self.per_resource.as_ref()]
            .into_iter()
            .flatten()
            .map(|(l, _)| *l)
            .min()
            .unwrap_or(0)
    }
}

fn check(limiter: &DefaultKeyedRateLimiter<String>, key: String) -> bool {
    if limiter.len() > 100_000 {
        limiter.retain_recent();
    }
    limiter.check_key(&key).is_ok()
}

/// Middleware applying [`RateLimits`] (a no-op when none is configured).
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits: Arc<RateLimits> = state.rate_limits.clone();
    // CORS preflights are answered without counting them.
    if !limits.enabled() || request.method() == axum::http::Method::OPTIONS {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let mut allowed = true;
    if let Some((_, limiter)) = &limits.per_user {
        let key = match Caller::from_request_parts(&mut parts, &state).await {
            Ok(caller) => caller
                .user
                .map(|u| u.id.clone())
                .unwrap_or_else(|| "anonymous".into()),
            Err(err) => return err.into_response(),
        };
        allowed &= check(limiter, key);
    }
    if let Some((_, limiter)) = &limits.per_resource {
        if let Ok(raw) = RawPathParams::from_request_parts(&mut parts, &state).await {
            if let Some((name, value)) = raw.iter().next() {
                allowed &= check(limiter, format!("{name}={value}"));
            }
        }
    }
    let mut response = if allowed {
        next.run(Request::from_parts(parts, body)).await
    } else {
        ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate-limit-exceeded",
            "You have exceeded the rate limit. Slow down and retry with exponential backoff",
        )
        .into_response()
    };
    if let Ok(value) = HeaderValue::from_str(&limits.reported_limit().to_string()) {
        response.headers_mut().insert("x-ratelimit-limit", value);
    }
    response
}
