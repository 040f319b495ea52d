//! Request queues (issue: request queues).

use axum::Router;

use crate::state::AppState;

/// Collection routes (`/v2/request-queues`).
pub fn collection_routes() -> Router<AppState> {
    Router::new()
}

/// Routes of one queue, relative to the queue (`/`, `/requests`, `/head`...).
pub fn queue_routes() -> Router<AppState> {
    Router::new()
}
