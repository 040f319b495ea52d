//! Request bodies: read with a size limit, decoded per `Content-Encoding` (gzip, br, deflate,
//! identity; the official clients compress every body over 1 KiB), parsed as JSON with errors in
//! Apify's envelope. The limit applies to the decoded size as well.

use std::io::Read;

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Default limit of a JSON body (Apify's 9 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 9 * 1024 * 1024;

/// The content encodings of a request, outermost last, without `identity`.
fn encodings(headers: &HeaderMap) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for value in headers.get_all(axum::http::header::CONTENT_ENCODING) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::unsupported_encoding("<non-ascii>"))?;
        for part in value.split(',') {
            let part = part.trim().to_ascii_lowercase();
            match part.as_str() {
                "" | "identity" => {}
                "gzip" | "x-gzip" | "br" | "deflate" => out.push(part),
                other => return Err(ApiError::unsupported_encoding(other)),
            }
        }
    }
    Ok(out)
}

/// Reads the raw body (still encoded), failing with 413 past `limit` bytes.
pub async fn read_raw(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => {
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::request_too_large(limit))
            } else if is_body_timeout(err.as_ref()) {
                Err(ApiError::body_timeout())
            } else {
                Err(ApiError::invalid_input(format!(
                    "Failed to read the request body: {err}"
                )))
            }
        }
    }
}

/// True when a body read failed because the client stopped sending (see `serve`).
pub fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(error) = current {
        // The timeout error travels boxed inside axum's body error; match by type or by message.
        if error.downcast_ref::<BodyIdleTimeout>().is_some()
            || error
                .downcast_ref::<tower_http::timeout::TimeoutError>()
                .is_some()
            || error
                .to_string()
                .contains("not received within the designated timeout")
        {
            return true;
        }
        current = error.source();
    }
    false
}

/// The error of a request body that stalled for longer than the idle timeout.
#[derive(Debug)]
pub struct BodyIdleTimeout;

impl std::fmt::Display for BodyIdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("data was not received within the designated timeout")
    }
}

impl std::error::Error for BodyIdleTimeout {}

/// A request body that fails with [`BodyIdleTimeout`] when no frame arrives for `timeout`
/// while someone waits for one. Unlike `tower_http::timeout::TimeoutBody`, the timer is only
/// armed when the body has nothing ready (a small body that arrived with its headers never
/// touches the timer wheel), and the size hint and end of stream pass through.
pub struct IdleTimeoutBody<B> {
    timeout: std::time::Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    body: B,
}

impl<B> IdleTimeoutBody<B> {
    pub fn new(timeout: std::time::Duration, body: B) -> Self {
        Self {
            timeout,
            sleep: None,
            body,
        }
    }
}

impl<B> hyper::body::Body for IdleTimeoutBody<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut this.body).poll_frame(cx) {
            // Progress: the idle clock starts again at the next wait.
            this.sleep = None;
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyIdleTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Reads and decodes the body; the decoded size is limited to `limit` bytes too.
pub async fn read_decoded(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let encodings = encodings(headers)?;
    let raw = read_raw(body, limit).await?;
    decode(raw, &encodings, limit)
}

/// Undoes `encodings` (applied in order, so decoded in reverse).
pub fn decode(mut data: Bytes, encodings: &[String], limit: usize) -> Result<Bytes, ApiError> {
    for encoding in encodings.iter().rev() {
        let reader: Box<dyn Read + '_> = match encoding.as_str() {
            "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(&data[..])),
            "deflate" => {
                // `deflate` means zlib-wrapped per RFC 9110, but raw deflate is common: sniff.
                if data.len() >= 2
                    && (u16::from(data[0]) << 8 | u16::from(data[1])) % 31 == 0
                    && data[0] & 0x0f == 8
                {
                    Box::new(flate2::read::ZlibDecoder::new(&data[..]))
                } else {
                    Box::new(flate2::read::DeflateDecoder::new(&data[..]))
                }
            }
            "br" => Box::new(brotli::Decompressor::new(&data[..], 64 * 1024)),
            _ => return Err(ApiError::unsupported_encoding(encoding)),
        };
        let mut out = Vec::new();
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|err| {
                ApiError::invalid_input(format!("Request body is not valid {encoding} data: {err}"))
            })?;
        if out.len() > limit {
            return Err(ApiError::request_too_large(limit));
        }
        data = Bytes::from(out);
    }
    Ok(data)
}

/// Whether the request declares a decodable body encoding (used by endpoints that keep it).
pub fn content_encodings(headers: &HeaderMap) -> Result<Vec<String>, ApiError> {
    encodings(headers)
}

/// Parses JSON, reporting where it broke.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_input(
            "Request body is empty; a JSON body is required",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|err| ApiError::invalid_input(format!("Invalid JSON in request body: {err}")))
}

/// Checks that `bytes` are one JSON value and returns it as raw text (for handlers that read
/// a few fields and keep the rest as received); errors as [`parse_json`].
pub fn parse_json_raw(bytes: &[u8]) -> Result<&serde_json::value::RawValue, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_input(
            "Request body is empty; a JSON body is required",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|err| ApiError::invalid_input(format!("Invalid JSON in request body: {err}")))
}

/// A decoded request body, read with the default limit.
pub struct DecodedBody(pub Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for DecodedBody {
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        Ok(DecodedBody(
            read_decoded(&parts.headers, body, DEFAULT_BODY_LIMIT).await?,
        ))
    }
}

/// A JSON body (decoded, limited, parsed into `T`), with errors in the Apify envelope.
pub struct ApifyJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequest<S> for ApifyJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let DecodedBody(bytes) = DecodedBody::from_request(req, state).await?;
        Ok(ApifyJson(parse_json(&bytes)?))
    }
}

// ---- fields of JSON object bodies ----

/// A body that must be a JSON object.
pub fn body_object(
    body: serde_json::Value,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    match body {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(ApiError::invalid_input(
            "Request body must be a JSON object",
        )),
    }
}

/// `Field "FIELD" WHAT` as `invalid-input`.
pub fn bad_field(field: &str, what: &str) -> ApiError {
    ApiError::invalid_input(format!("Field \"{field}\" {what}"))
}

/// An optional boolean field (`null` = not given).
pub fn opt_bool(
    body: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<Option<bool>, ApiError> {
    match body.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad_field(field, "must be a boolean")),
    }
}

/// An optional string field that `null` clears: `None` = not given, `Some(None)` = null.
pub fn nullable_string(
    body: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<Option<Option<String>>, ApiError> {
    match body.get(field) {
        None => Ok(None),
        Some(serde_json::Value::Null) => Ok(Some(None)),
        Some(serde_json::Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(bad_field(field, "must be a string or null")),
    }
}

/// Actor, task and schedule names: 3-63 characters of `a-z0-9-`, not starting or ending with
/// `-`.
pub fn is_valid_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn decodes_gzip_deflate_and_brotli() {
        let text = b"{\"hello\":\"world\"}".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            decode(Bytes::from(gz), &["gzip".into()], 1 << 20).unwrap(),
            &text[..]
        );

        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zl.write_all(&text).unwrap();
        assert_eq!(
            decode(
                Bytes::from(zl.finish().unwrap()),
                &["deflate".into()],
                1 << 20
            )
            .unwrap(),
            &text[..]
        );

        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&text).unwrap();
        assert_eq!(
            decode(
                Bytes::from(raw.finish().unwrap()),
                &["deflate".into()],
                1 << 20
            )
            .unwrap(),
            &text[..]
        );

        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22)
            .write_all(&text)
            .unwrap();
        assert_eq!(
            decode(Bytes::from(br), &["br".into()], 1 << 20).unwrap(),
            &text[..]
        );
    }

    #[test]
    fn decoded_size_is_limited() {
        let text = vec![b'a'; 10_000];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        let err = decode(Bytes::from(gz.finish().unwrap()), &["gzip".into()], 1000).unwrap_err();
        assert_eq!(err.error_type, "request-too-large");
    }
}
