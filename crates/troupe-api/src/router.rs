//! Puts the route groups together under `/v2` and applies the HTTP conventions once for every
//! endpoint: CORS, tracing by route template (never the raw URI, which may carry `?token=`),
//! `?method=` override, and the error envelope for 404/405.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::routing::MethodRouter;
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::routes::{
    actors, builds, datasets, key_value_stores, logs, platform, request_queues, runs, schedules,
    tasks, users, webhooks,
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
    let mut router = Router::new()
        .merge(users::routes())
        .merge(platform::routes())
        .merge(builds::collection_routes())
        .merge(runs::collection_routes())
        .merge(tasks::routes())
        .merge(webhooks::routes())
        .merge(schedules::routes())
        .merge(logs::routes())
        .merge(datasets::collection_routes())
        .merge(key_value_stores::collection_routes())
        .merge(request_queues::collection_routes());
    // Built once, mounted under both prefixes.
    let actor_routes = actors::routes();
    router = actor_routes.clone().mount(router, "/v2/acts");
    router = actor_routes.mount(router, "/v2/actors");
    router = builds::build_routes().mount(router, "/v2/actor-builds/{buildId}");
    router = datasets::dataset_routes().mount(router, "/v2/datasets/{datasetId}");
    router = key_value_stores::store_routes().mount(router, "/v2/key-value-stores/{storeId}");
    router = request_queues::queue_routes().mount(router, "/v2/request-queues/{queueId}");
    for prefix in RUN_PREFIXES {
        router = runs::run_routes().mount(router, prefix);
        router = datasets::dataset_routes().mount(router, &format!("{prefix}/dataset"));
        router =
            key_value_stores::store_routes().mount(router, &format!("{prefix}/key-value-store"));
        router = request_queues::queue_routes().mount(router, &format!("{prefix}/request-queue"));
    }
    router = router.fallback(|| async { ApiError::page_not_found() });
    // Rate limiting costs a layer on every request: only mount it when configured.
    if state.rate_limits.enabled() {
        router = router.layer(middleware::from_fn_with_state(
            state.clone(),
            crate::ratelimit::rate_limit,
        ));
    }
    // A span per request, by route template, with `RUST_LOG=troupe_api=debug`. A layer costs a
    // boxed service per route and request, so it is only mounted when the span can be recorded.
    if tracing::enabled!(tracing::Level::DEBUG) {
        router = router.layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<Body>| {
                    let route = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map(MatchedPath::as_str)
                        .unwrap_or("<unmatched>");
                    tracing::debug_span!("request", method = %request.method(), route)
                })
                // Server errors are logged by `ApiService` for every request.
                .on_failure(()),
        );
    }
    router.with_state(state)
}

/// Routes relative to a mount point. [`Routes::mount`] adds them to a router under their full
/// paths: unlike `Router::nest`, nothing strips the prefix off each request's URI (a layer, a
/// boxed service and a rebuilt URI per request and nesting level).
#[derive(Clone, Default)]
pub struct Routes(Vec<(String, MethodRouter<AppState>)>);

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `path` (relative; `/` is the mount point itself).
    pub fn route(mut self, path: &str, method_router: MethodRouter<AppState>) -> Self {
        self.0.push((path.to_string(), method_router));
        self
    }

    /// Adds `routes` under `prefix` (relative).
    pub fn nest(mut self, prefix: &str, routes: Routes) -> Self {
        for (path, method_router) in routes.0 {
            self.0.push((join_path(prefix, &path), method_router));
        }
        self
    }

    /// Adds the routes to `router` under `prefix`.
    pub fn mount(self, mut router: Router<AppState>, prefix: &str) -> Router<AppState> {
        for (path, method_router) in self.0 {
            router = router.route(&join_path(prefix, &path), method_router);
        }
        router
    }
}

/// `prefix` + `path`, where the path `/` is the prefix itself (as `Router::nest` does it).
fn join_path(prefix: &str, path: &str) -> String {
    if path == "/" {
        prefix.to_string()
    } else {
        format!("{prefix}{path}")
    }
}

/// The service actually served: [`app`] behind the conventions every endpoint shares, applied
/// once around the whole router (a `Router::layer` would box each of them again per route and
/// request): the `?method=` override (before routing), CORS, and Apify's envelope for axum's bare
/// 405s (which get `Allow` only after the route's own layers ran).
pub fn service_router(state: AppState) -> ApiService {
    ApiService { router: app(state) }
}

/// See [`service_router`].
#[derive(Clone)]
pub struct ApiService {
    router: Router,
}

impl<B> tower::Service<Request<B>> for ApiService
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ApiFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        method_override(&mut request);
        // Every OPTIONS request is answered as a CORS preflight. It still goes through routing,
        // which tells (in `Allow`) what the path supports.
        let preflight = request.method() == Method::OPTIONS;
        ApiFuture {
            inner: tower::Service::call(&mut self.router, request),
            preflight,
        }
    }
}

/// Response future of [`ApiService`].
pub struct ApiFuture {
    inner: RouteFuture<Infallible>,
    preflight: bool,
}

impl Future for ApiFuture {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(response) = ready!(Pin::new(&mut self.inner).poll(cx));
        if self.preflight {
            return Poll::Ready(Ok(preflight_response(&response)));
        }
        let mut response = envelope_for_bare_errors(response);
        if crate::error::is_server_fault(response.status()) {
            tracing::error!(status = response.status().as_u16(), "response failed");
        }
        let headers = response.headers_mut();
        headers.append(header::VARY, HeaderValue::from_static(CORS_VARY));
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(CORS_EXPOSE),
        );
        Poll::Ready(Ok(response))
    }
}

/// `Vary` of every response (CORS answers depend on these request headers).
const CORS_VARY: &str = "origin, access-control-request-method, access-control-request-headers";

/// Response headers browser code may read.
const CORS_EXPOSE: &str = "x-apify-pagination-offset,x-apify-pagination-limit,x-apify-pagination-count,x-apify-pagination-total,x-apify-pagination-desc,x-ratelimit-limit,content-disposition,location";

/// The answer to a preflight: any origin, method and header; `Allow` as routing found it.
fn preflight_response(routed: &Response) -> Response {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static(CORS_VARY));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    if let Some(allow) = routed.headers().get(header::ALLOW) {
        headers.insert(header::ALLOW, allow.clone());
    }
    response
}

/// `?method=PUT` (etc.) turns the request into that method, for clients that can only GET/POST.
fn method_override<B>(request: &mut Request<B>) {
    if let Some(query) = request.uri().query() {
        if let Some(method) = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("method="))
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
        {
            *request.method_mut() = method;
        }
    }
}

/// axum answers a wrong method with a bare 405 (and `Allow`); give it Apify's envelope.
fn envelope_for_bare_errors(response: Response) -> Response {
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        let allow = response
            .headers()
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return ApiError::method_not_allowed(allow).into_response();
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
