//! One module per Apify resource group. Each exposes the routers it owns; [`crate::router`]
//! mounts them (storage routers several times, under every prefix that reaches them).

pub mod actors;
pub mod builds;
pub mod datasets;
pub mod key_value_stores;
pub mod logs;
pub mod platform;
pub mod request_queues;
pub mod run_input;
pub mod runs;
pub mod schedules;
pub mod storages;
pub mod tasks;
pub mod users;
pub mod webhooks;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// `{"data": value}` with a status.
pub fn data<T: Serialize>(status: StatusCode, value: T) -> Response {
    /// Serialised straight to bytes (wrapping with `json!` would deep-copy `value` first).
    #[derive(Serialize)]
    struct Envelope<T> {
        data: T,
    }
    // Sized for a typical object up front (axum's `Json` starts at 128 bytes and regrows).
    let mut body = Vec::with_capacity(1024);
    if let Err(err) = serde_json::to_writer(&mut body, &Envelope { data: value }) {
        return crate::error::ApiError::internal(err).into_response();
    }
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        axum::body::Bytes::from(body),
    )
        .into_response()
}

/// `{"data": value}` with 201 and a `Location` header.
pub fn created<T: Serialize>(location: &str, value: T) -> Response {
    let mut response = data(StatusCode::CREATED, value);
    if let Ok(location) = HeaderValue::from_str(location) {
        response
            .headers_mut()
            .insert(axum::http::header::LOCATION, location);
    }
    response
}

/// 204 without a body.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Header value helper.
pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
