//! The one error type of the HTTP layer. Every failure becomes Apify's envelope
//! `{"error":{"type":...,"message":...}}`; the (status, type) pairs live in the constructors
//! below and nowhere else. Type strings are values of the spec's `ErrorType` enum.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// An API failure: HTTP status, Apify error type, message and optional extra data.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub message: String,
    pub data: Option<Box<Value>>,
    /// Extra header (e.g. `Allow` on 405).
    pub header: Option<Box<(&'static str, String)>>,
}

impl ApiError {
    pub fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type,
            message: message.into(),
            data: None,
            header: None,
        }
    }

    /// 404 `record-not-found`: the one type clients map to "does not exist".
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "record-not-found", message)
    }
    /// 404 `page-not-found` for unknown routes.
    pub fn page_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "page-not-found",
            "The requested page was not found",
        )
    }
    /// 405 with the allowed methods.
    pub fn method_not_allowed(allow: &str) -> Self {
        let mut err = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!(
                "This API endpoint can only be accessed using the following HTTP methods: {allow}"
            ),
        );
        err.header = Some(Box::new(("allow", allow.to_string())));
        err
    }
    /// 400 `invalid-parameter`: a query parameter is malformed or out of range.
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid-parameter", message)
    }
    /// 400 `parameter-required`.
    pub fn parameter_required(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "parameter-required",
            format!("Parameter \"{name}\" is required"),
        )
    }
    /// 400 `invalid-input`: the body is malformed or has wrong types.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid-input", message)
    }
    /// 400 `request-id-invalid`: a request's `id` is not the one derived from its `uniqueKey`.
    pub fn request_id_invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "request-id-invalid", message)
    }
    /// 400 `invalid-client-key`: `clientKey` is not 1 to 32 characters.
    pub fn invalid_client_key(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid-client-key", message)
    }
    /// 403 `request-handled-or-locked`: a lock operation on a request that is handled, locked by
    /// another client, or not locked by the caller.
    pub fn request_handled_or_locked(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "request-handled-or-locked", message)
    }
    /// 400 `schema-validation-error` with `data` (e.g. `invalidItems`).
    pub fn schema_validation(message: impl Into<String>, data: Value) -> Self {
        let mut err = Self::new(StatusCode::BAD_REQUEST, "schema-validation-error", message);
        err.data = Some(Box::new(data));
        err
    }
    /// 413 `request-too-large`.
    pub fn request_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request-too-large",
            format!("The POST payload is too large (limit: {limit} bytes)"),
        )
    }
    /// 408 `operation-timed-out`: the client stopped sending the request body.
    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "operation-timed-out",
            "The request body was not received in time",
        )
    }
    /// 400 `invalid-record-key`: a key-value record key outside `[a-zA-Z0-9!-_.'()]{1,256}`.
    pub fn invalid_record_key() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-record-key",
            "Record key must be 1-256 characters of a-z, A-Z, 0-9 and !-_.'()",
        )
    }
    /// 400 `invalid-content-type-header`.
    pub fn invalid_content_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-content-type-header",
            message,
        )
    }
    /// 413 `record-too-large`: a key-value record over the configured maximum.
    pub fn record_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "record-too-large",
            format!("The record is too large (limit: {limit} bytes)"),
        )
    }
    /// 415 `unsupported-content-encoding`.
    pub fn unsupported_encoding(encoding: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-content-encoding",
            format!("Content-Encoding \"{encoding}\" is not supported (use gzip, br, deflate or identity)"),
        )
    }
    /// 401 `token-not-provided`.
    pub fn token_not_provided() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "token-not-provided",
            "Authentication token was not provided",
        )
    }
    /// 401 `invalid-token`.
    pub fn invalid_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid-token",
            "Authentication token is not valid",
        )
    }
    /// 403 `insufficient-permissions`.
    pub fn insufficient_permissions(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "insufficient-permissions", message)
    }
    /// 409 `name-not-unique`.
    pub fn name_not_unique(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "name-not-unique", message)
    }
    /// 400 `invalid-idempotency-key`.
    pub fn invalid_idempotency_key(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid-idempotency-key", message)
    }
    /// 400 `cron-expression-invalid`.
    pub fn cron_expression_invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "cron-expression-invalid", message)
    }
    /// 404 `schedule-actor-not-found`: a schedule action names an unknown Actor.
    pub fn schedule_actor_not_found(actor: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "schedule-actor-not-found",
            format!("Actor \"{actor}\" of the schedule action was not found"),
        )
    }
    /// 404 `schedule-actor-task-not-found`.
    pub fn schedule_actor_task_not_found(task: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "schedule-actor-task-not-found",
            format!("Actor task \"{task}\" of the schedule action was not found"),
        )
    }
    /// 409 `schedule-name-not-unique`.
    pub fn schedule_name_not_unique(name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "schedule-name-not-unique",
            format!("You already have a schedule named \"{name}\""),
        )
    }
    /// 409 `actor-name-not-unique`.
    pub fn actor_name_not_unique(name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "actor-name-not-unique",
            format!("You already have an Actor named \"{name}\""),
        )
    }
    /// 400 `version-already-exists`.
    pub fn version_already_exists(number: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "version-already-exists",
            format!("Version {number} already exists"),
        )
    }
    /// 400 `env-var-already-exists`.
    pub fn env_var_already_exists(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "env-var-already-exists",
            format!("Environment variable \"{name}\" already exists"),
        )
    }
    /// 400 `unknown-build-tag`: the `build` option names no usable build.
    pub fn unknown_build(build: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unknown-build-tag",
            format!("Build with tag or number \"{build}\" was not found or did not succeed"),
        )
    }
    /// 400 `actor-memory-limit-exceeded`.
    pub fn memory_limit_exceeded(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "actor-memory-limit-exceeded",
            message,
        )
    }
    /// 408 `run-timeout-exceeded` (a sync run is still going).
    pub fn run_timeout_exceeded(run_id: &str) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "run-timeout-exceeded",
            format!("The Actor run {run_id} did not finish in time; it goes on running"),
        )
    }
    /// 400 `run-failed` (a sync run ended without success).
    pub fn run_failed(run_id: &str, status: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "run-failed",
            format!("Actor run did not succeed (run ID: {run_id}, status: {status})"),
        )
    }
    /// 400 `deleting-unfinished-build`.
    pub fn deleting_unfinished_build() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "deleting-unfinished-build",
            "A build can only be deleted once it has finished",
        )
    }
    /// 400 `deleting-default-build`.
    pub fn deleting_default_build() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "deleting-default-build",
            "The default build of an Actor cannot be deleted",
        )
    }
    /// 400 `cannot-remove-running-run`.
    pub fn cannot_remove_running_run() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "cannot-remove-running-run",
            "A run can only be deleted once it has finished",
        )
    }
    /// 500 `internal-server-error`; the cause is logged, the client gets a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-server-error",
            "Internal server error",
        )
    }

    /// Adds `data` to the envelope.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(Box::new(data));
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.error_type,
            self.message
        )
    }
}

/// Whether a response status is the server's fault (logged as such). A deliberate 501 (an
/// operation troupe refuses by design) is an answer like a 4xx, not a fault.
pub fn is_server_fault(status: StatusCode) -> bool {
    status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if is_server_fault(self.status) {
            tracing::warn!(
                status = self.status.as_u16(),
                error_type = self.error_type,
                "request failed"
            );
        } else {
            tracing::debug!(
                status = self.status.as_u16(),
                error_type = self.error_type,
                "request rejected"
            );
        }
        /// `{"error":{"type":…,"message":…[,"data":…]}}`, serialised straight from the fields.
        #[derive(serde::Serialize)]
        struct Envelope<'a> {
            error: Fields<'a>,
        }
        #[derive(serde::Serialize)]
        struct Fields<'a> {
            r#type: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            data: Option<&'a Value>,
        }
        let mut body = Vec::with_capacity(48 + self.error_type.len() + self.message.len());
        if self.data.is_none() && !needs_escape(self.error_type) && !needs_escape(&self.message) {
            // The common case (a plain message, no data) written directly: the same bytes as
            // serde_json would write, without its per-byte escaping loop.
            body.extend_from_slice(b"{\"error\":{\"type\":\"");
            body.extend_from_slice(self.error_type.as_bytes());
            body.extend_from_slice(b"\",\"message\":\"");
            body.extend_from_slice(self.message.as_bytes());
            body.extend_from_slice(b"\"}}");
        } else {
            let envelope = Envelope {
                error: Fields {
                    r#type: self.error_type,
                    message: &self.message,
                    data: self.data.as_deref(),
                },
            };
            serde_json::to_writer(&mut body, &envelope).expect("serialisable");
        }
        let mut response = Response::new(axum::body::Body::from(body));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(header) = self.header {
            let (name, value) = *header;
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// Whether a string needs escaping inside a JSON string (a quote, a backslash or a control
/// character; everything else, UTF-8 included, is written as is).
fn needs_escape(text: &str) -> bool {
    text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

impl From<troupe_storage::Error> for ApiError {
    fn from(err: troupe_storage::Error) -> Self {
        match err {
            troupe_storage::Error::NotFound(message) => ApiError::not_found(message),
            troupe_storage::Error::Conflict(message) => ApiError::name_not_unique(message),
            troupe_storage::Error::Invalid(message) => ApiError::invalid_input(message),
            troupe_storage::Error::Internal(cause) => ApiError::internal(format!("{cause:#}")),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(err: ApiError) -> Vec<u8> {
        use http_body_util::BodyExt;
        let response = err.into_response();
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    /// The direct writer gives the bytes serde_json gives, and escapes when needed.
    #[tokio::test]
    async fn envelope_bytes_match_serde() {
        for message in [
            "The requested page was not found",
            "Key \"a\\b\" is\tnot valid",
            "ünïcödé … and DEL \u{7f}",
            "",
        ] {
            let body = body_of(ApiError::not_found(message)).await;
            let expected = serde_json::to_vec(&serde_json::json!({
                "error": { "type": "record-not-found", "message": message }
            }))
            .unwrap();
            assert_eq!(body, expected, "{message:?}");
        }
        let body = body_of(ApiError::schema_validation(
            "bad items",
            serde_json::json!({"invalidItems": []}),
        ))
        .await;
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value["error"]["data"]["invalidItems"],
            serde_json::json!([])
        );
        assert_eq!(value["error"]["type"], "schema-validation-error");
    }
}
