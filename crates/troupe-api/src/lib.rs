//! The Apify API v2 over HTTP (axum). Handlers are thin: they extract and validate input,
//! resolve which resource a path means ([`resolve`]), and call storage or the runner.

pub mod auth;
pub mod body;
pub mod error;
pub mod items;
pub mod params;
pub mod resolve;
pub mod router;
pub mod routes;
pub mod state;

pub use router::app;
pub use state::{ApiConfig, AppState};

use std::future::Future;

use tokio::net::TcpListener;

/// Serves the API on an already-bound listener until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = router::service(state);
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
}
