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
    match data_body(value) {
        Ok(body) => json_body(status, body),
        Err(err) => err.into_response(),
    }
}

/// The bytes of `{"data": value}`.
pub fn data_body<T: Serialize>(value: T) -> Result<axum::body::Bytes, crate::error::ApiError> {
    /// Serialised straight to bytes (wrapping with `json!` would deep-copy `value` first).
    #[derive(Serialize)]
    struct Envelope<T> {
        data: T,
    }
    // Sized for a typical object up front (axum's `Json` starts at 128 bytes and regrows).
    let mut body = Vec::with_capacity(1024);
    serde_json::to_writer(&mut body, &Envelope { data: value })
        .map_err(crate::error::ApiError::internal)?;
    Ok(body.into())
}

/// A JSON body (already serialised) with a status.
pub fn json_body(status: StatusCode, body: axum::body::Bytes) -> Response {
    // Built directly: `(status, [(CONTENT_TYPE, …)], bytes).into_response()` first sets
    // `application/octet-stream` (for the bytes) and then overwrites it.
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
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
