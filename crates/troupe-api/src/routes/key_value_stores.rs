//! Key-value stores (issue: key-value stores).

use axum::Router;

use crate::state::AppState;

/// Collection routes (`/v2/key-value-stores`).
pub fn collection_routes() -> Router<AppState> {
    Router::new()
}

/// Routes of one store, relative to the store (`/`, `/keys`, `/records/{recordKey}`...).
pub fn store_routes() -> Router<AppState> {
    Router::new()
}
