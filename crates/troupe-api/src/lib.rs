//! The Apify API v2 over HTTP (axum). Handlers are thin: they extract and validate input,
//! resolve which resource a path means ([`resolve`]), and call storage or the runner.

pub mod auth;
pub mod body;
pub mod cache;
pub mod client;
pub mod error;
pub mod file_body;
pub mod hooks;
pub mod items;
pub mod params;
pub mod ratelimit;
pub mod resolve;
pub mod router;
pub mod routes;
pub mod state;

pub use router::app;
pub use state::{ApiConfig, AppState, DEFAULT_MAX_RECORD_BYTES};

use std::future::Future;

use tokio::net::TcpListener;

/// How long in-flight connections get to finish after shutdown starts.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the API on an already-bound listener until `shutdown` completes. Slow clients are cut
/// off: headers must arrive within the configured time, and a body that stalls for the configured idle timeout
/// fails with 408.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let idle = state.config.body_idle_timeout;
    let header_read_timeout = state.config.header_read_timeout;
    let app = router::service_router(state).map_request(
        move |request: axum::http::Request<hyper::body::Incoming>| {
            request.map(|body| axum::body::Body::new(body::IdleTimeoutBody::new(idle, body)))
        },
    );
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The peer address rides along with every request of the connection
        // ([`client::PeerAddr`]): one small extension, no other work per request.
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::http::Request<_>| {
                request.extensions_mut().insert(client::PeerAddr(peer));
                request
            },
        ));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::info!("closing connections still open after the grace period"),
    }
    Ok(())
}
