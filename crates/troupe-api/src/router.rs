//! Puts the route groups together under `/v2` and applies the HTTP conventions once for every
//! endpoint: CORS, tracing by route template (never the raw URI, which may carry `?token=`),
//! `?method=` override, and the error envelope for 404/405.

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::cors::{Any, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::routes::{
    actors, builds, datasets, key_value_stores, logs, request_queues, runs, schedules, tasks,
    users, webhooks,
};
use crate::state::AppState;

/// Prefixes that name one run: the run itself (`{p}`, `{p}/abort`, `{p}/log`...) is mounted
/// under each, and so are its default storages (`{p}/dataset`, `{p}/key-value-store`,
/// `{p}/request-queue`), besides their own collections. `runs::resolve_run` turns each into a run.
const RUN_PREFIXES: &[&str] = &[
    "/v2/actor-runs/{runId}",
    "/v2/acts/{actorId}/runs/last",
    "/v2/actors/{actorId}/runs/last",
    "/v2/actor-tasks/{actorTaskId}/runs/last",
];

/// The whole API as an axum router.
pub fn app(state: AppState) -> Router {
    // Built once, nested under both prefixes.
    let actor_routes = actors::routes();
    let mut router = Router::new()
        .merge(users::routes())
        .nest("/v2/acts", actor_routes.clone())
        .nest("/v2/actors", actor_routes)
        .merge(builds::collection_routes())
        .nest("/v2/actor-builds/{buildId}", builds::build_routes())
        .merge(runs::collection_routes())
        .merge(tasks::routes())
        .merge(webhooks::routes())
        .merge(schedules::routes())
        .merge(logs::routes())
        .merge(datasets::collection_routes())
        .merge(key_value_stores::collection_routes())
        .merge(request_queues::collection_routes())
        .nest("/v2/datasets/{datasetId}", datasets::dataset_routes())
        .nest(
            "/v2/key-value-stores/{storeId}",
            key_value_stores::store_routes(),
        )
        .nest(
            "/v2/request-queues/{queueId}",
            request_queues::queue_routes(),
        );
    for prefix in RUN_PREFIXES {
        router = router
            .nest(prefix, runs::run_routes())
            .nest(&format!("{prefix}/dataset"), datasets::dataset_routes())
            .nest(
                &format!("{prefix}/key-value-store"),
                key_value_stores::store_routes(),
            )
            .nest(
                &format!("{prefix}/request-queue"),
                request_queues::queue_routes(),
            );
    }
    router = router.fallback(|| async { ApiError::page_not_found() });
    // Rate limiting costs a layer on every request: only mount it when configured.
    if state.rate_limits.enabled() {
        router = router.layer(middleware::from_fn_with_state(
            state.clone(),
            crate::ratelimit::rate_limit,
        ));
    }
    router
        .layer(
            // A span per request, by route template. DEBUG level: with the default filter it is
            // never built (building and formatting it cost ~2 µs a request).
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map(MatchedPath::as_str)
                    .unwrap_or("<unmatched>");
                tracing::debug_span!("request", method = %request.method(), route)
            }),
        )
        .layer(cors())
        .with_state(state)
}

/// The router actually served: [`app`] behind the `?method=` override (which must run before
/// routing) and the envelope for axum's bare 405s.
pub fn service_router(state: AppState) -> Router {
    Router::new()
        .fallback_service(app(state))
        .layer(middleware::from_fn(envelope_for_bare_errors))
        .layer(middleware::from_fn(method_override))
}

fn cors() -> CorsLayer {
    let exposed: Vec<HeaderName> = [
        "x-apify-pagination-offset",
        "x-apify-pagination-limit",
        "x-apify-pagination-count",
        "x-apify-pagination-total",
        "x-apify-pagination-desc",
        "x-ratelimit-limit",
        "content-disposition",
        "location",
    ]
    .into_iter()
    .map(HeaderName::from_static)
    .collect();
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers(exposed)
}

/// `?method=PUT` (etc.) turns the request into that method, for clients that can only GET/POST.
async fn method_override(mut request: Request, next: Next) -> Response {
    if let Some(query) = request.uri().query() {
        if let Some(method) = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("method="))
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
        {
            *request.method_mut() = method;
        }
    }
    next.run(request).await
}

/// axum answers a wrong method with a bare 405 (and `Allow`, added after route layers ran, so
/// this must wrap the whole router); give it Apify's envelope.
async fn envelope_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        let allow = response
            .headers()
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        return ApiError::method_not_allowed(&allow).into_response();
    }
    response
}

/// An empty body (used by HEAD handlers).
pub fn empty() -> Body {
    Body::empty()
}

/// Adds a header to a response if the value is valid.
pub fn set_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}
