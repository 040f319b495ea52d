//! Request queue vocabulary: the request id every SDK derives from `uniqueKey`
//! (SDK-CONTRACT.md §3.3) and the validation of request bodies the clients send.

use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::time::{format_ts, parse_ts};

/// Length of a request id.
pub const REQUEST_ID_LEN: usize = 15;
/// Most requests in one batch add or batch delete.
pub const MAX_BATCH: usize = 25;
/// Most requests one `head/lock` call may lock.
pub const MAX_LOCK_LIMIT: u64 = 25;
/// Most requests one `head` call returns (larger limits are capped).
pub const MAX_HEAD_LIMIT: u64 = 1000;
/// Most requests one `requests` listing page returns.
pub const MAX_LIST_LIMIT: u64 = 10_000;
/// Longest lock a client may take (30 days).
pub const MAX_LOCK_SECS: u64 = 30 * 24 * 3600;
/// Longest `clientKey`.
pub const MAX_CLIENT_KEY_LEN: usize = 32;
/// HTTP methods a request may carry.
pub const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The request id of a `uniqueKey`: SHA-256 of its UTF-8 bytes, standard base64, without `+`,
/// `/` and `=`, first 15 characters. Both SDKs compute it themselves and address requests by it.
pub fn request_id(unique_key: &str) -> String {
    let digest = Sha256::digest(unique_key.as_bytes());
    let encoded = base64::engine::general_purpose::STANDARD.encode(digest);
    encoded
        .chars()
        .filter(|c| !matches!(c, '+' | '/' | '='))
        .take(REQUEST_ID_LEN)
        .collect()
}

/// A validated request, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRequest {
    /// Derived from `unique_key`.
    pub id: String,
    pub unique_key: String,
    pub url: String,
    pub method: String,
    pub retry_count: i64,
    /// Milliseconds; `Some` = handled.
    pub handled_at: Option<i64>,
    /// The whole request as JSON, with `id` set and `handledAt` normalized; unknown fields kept.
    pub json: String,
}

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// Malformed: wrong types, missing `url` / `uniqueKey`, bad values.
    Invalid(String),
    /// The supplied `id` is not the one derived from `uniqueKey` (or not the path's id).
    IdMismatch(String),
}

impl RequestError {
    pub fn message(&self) -> &str {
        match self {
            RequestError::Invalid(m) | RequestError::IdMismatch(m) => m,
        }
    }
}

fn invalid(message: impl Into<String>) -> RequestError {
    RequestError::Invalid(message.into())
}

/// Validates one request body. `path_id` is the id in the URL (`PUT …/requests/{id}`); a body
/// `id`, when present, and the path id must both equal the id derived from `uniqueKey`.
pub fn parse_request(value: Value, path_id: Option<&str>) -> Result<QueueRequest, RequestError> {
    let Value::Object(mut map) = value else {
        return Err(invalid("Request must be a JSON object"));
    };
    let unique_key = match map.get("uniqueKey") {
        Some(Value::String(key)) => key.clone(),
        None | Some(Value::Null) => return Err(invalid("Request field \"uniqueKey\" is required")),
        Some(_) => return Err(invalid("Request field \"uniqueKey\" must be a string")),
    };
    let url = match map.get("url") {
        Some(Value::String(url)) => url.clone(),
        None | Some(Value::Null) => return Err(invalid("Request field \"url\" is required")),
        Some(_) => return Err(invalid("Request field \"url\" must be a string")),
    };
    if !is_http_url(&url) {
        return Err(invalid(format!(
            "Request field \"url\" must be an absolute http(s) URL, got \"{url}\""
        )));
    }
    let id = request_id(&unique_key);
    match map.get("id") {
        None | Some(Value::Null) => {}
        Some(Value::String(given)) if *given == id => {}
        Some(Value::String(given)) => {
            return Err(RequestError::IdMismatch(format!(
                "Request ID \"{given}\" does not match its uniqueKey (expected \"{id}\")"
            )))
        }
        Some(_) => return Err(invalid("Request field \"id\" must be a string")),
    }
    if let Some(path_id) = path_id {
        if path_id != id {
            return Err(RequestError::IdMismatch(format!(
                "Request ID \"{path_id}\" does not match the request's uniqueKey (expected \"{id}\")"
            )));
        }
    }
    let method = match map.get("method") {
        None | Some(Value::Null) => "GET".to_string(),
        Some(Value::String(m)) if METHODS.contains(&m.as_str()) => m.clone(),
        Some(_) => {
            return Err(invalid(format!(
                "Request field \"method\" must be one of: {}",
                METHODS.join(", ")
            )))
        }
    };
    let retry_count = match map.get("retryCount") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= i64::MAX as u64) => {
            n.as_u64().unwrap_or(0) as i64
        }
        Some(_) => {
            return Err(invalid(
                "Request field \"retryCount\" must be a non-negative integer",
            ))
        }
    };
    for field in ["userData", "headers"] {
        if !matches!(
            map.get(field),
            None | Some(Value::Null) | Some(Value::Object(_))
        ) {
            return Err(invalid(format!(
                "Request field \"{field}\" must be an object"
            )));
        }
    }
    if !matches!(
        map.get("payload"),
        None | Some(Value::Null) | Some(Value::String(_)) | Some(Value::Object(_))
    ) {
        return Err(invalid("Request field \"payload\" must be a string"));
    }
    let handled_at = match map.get("handledAt") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(parse_ts(s).ok_or_else(|| {
            invalid(format!(
                "Request field \"handledAt\" is not a valid timestamp: \"{s}\""
            ))
        })?),
        Some(_) => {
            return Err(invalid(
                "Request field \"handledAt\" must be a timestamp string or null",
            ))
        }
    };
    set_id_first(&mut map, &id);
    match handled_at {
        Some(ms) => {
            map.insert("handledAt".into(), Value::String(format_ts(ms)));
        }
        None => {
            map.remove("handledAt");
        }
    }
    let json = serde_json::to_string(&Value::Object(map))
        .map_err(|err| invalid(format!("Request cannot be stored: {err}")))?;
    Ok(QueueRequest {
        id,
        unique_key,
        url,
        method,
        retry_count,
        handled_at,
        json,
    })
}

/// Puts `id` as the first field (stable, readable output).
fn set_id_first(map: &mut Map<String, Value>, id: &str) {
    map.remove("id");
    let rest = std::mem::take(map);
    map.insert("id".into(), Value::String(id.to_string()));
    map.extend(rest);
}

fn is_http_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else {
        return false;
    };
    !rest.is_empty() && !rest.starts_with('/') && !url.chars().any(char::is_whitespace)
}

/// `clientKey`: 1 to 32 characters.
pub fn validate_client_key(key: &str) -> Result<(), String> {
    let len = key.chars().count();
    if len == 0 || len > MAX_CLIENT_KEY_LEN {
        return Err(format!(
            "Parameter \"clientKey\" must have 1 to {MAX_CLIENT_KEY_LEN} characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_id_test_vectors() {
        assert_eq!(request_id("https://example.com"), "EAaArVRs5qV39C9");
        assert_eq!(request_id("https://crawlee.dev/"), "FRyCGCDqkwxqk6u");
        assert_eq!(
            request_id("GET|e3b0c442|e3b0c442|https://example.com/ä?q=1"),
            "gVmfTnqZnzPP1MV"
        );
        assert_eq!(request_id(""), "47DEQpj8HBSaTIm");
    }

    #[test]
    fn parses_and_keeps_unknown_fields() {
        let r = parse_request(
            json!({"url": "https://a.example/x", "uniqueKey": "k", "userData": {"label": "L"}, "custom": [1, 2]}),
            None,
        )
        .unwrap();
        assert_eq!(r.id, request_id("k"));
        assert_eq!(r.method, "GET");
        assert_eq!(r.retry_count, 0);
        assert!(r.handled_at.is_none());
        let back: Value = serde_json::from_str(&r.json).unwrap();
        assert_eq!(back["id"], r.id.as_str());
        assert_eq!(back["custom"], json!([1, 2]));
        assert_eq!(back["userData"]["label"], "L");
    }

    #[test]
    fn normalizes_handled_at_from_both_clients() {
        for form in [
            "2026-08-21T10:23:31.607Z",
            "2026-08-21 10:23:31.607000+00:00",
        ] {
            let r = parse_request(
                json!({"url": "http://a.example", "uniqueKey": "k", "handledAt": form}),
                None,
            )
            .unwrap();
            let back: Value = serde_json::from_str(&r.json).unwrap();
            assert_eq!(back["handledAt"], "2026-08-21T10:23:31.607Z");
            assert!(r.handled_at.is_some());
        }
        let r = parse_request(
            json!({"url": "http://a.example", "uniqueKey": "k", "handledAt": null}),
            None,
        )
        .unwrap();
        assert!(r.handled_at.is_none());
        assert!(!r.json.contains("handledAt"));
    }

    #[test]
    fn rejects_bad_requests() {
        let bad = [
            json!([]),
            json!({"url": "http://a.example"}),
            json!({"uniqueKey": "k"}),
            json!({"url": 5, "uniqueKey": "k"}),
            json!({"url": "ftp://a.example", "uniqueKey": "k"}),
            json!({"url": "not a url", "uniqueKey": "k"}),
            json!({"url": "http://a.example", "uniqueKey": "k", "method": "get"}),
            json!({"url": "http://a.example", "uniqueKey": "k", "retryCount": -1}),
            json!({"url": "http://a.example", "uniqueKey": "k", "userData": "x"}),
            json!({"url": "http://a.example", "uniqueKey": "k", "handledAt": "yesterday"}),
        ];
        for value in bad {
            assert!(
                matches!(
                    parse_request(value.clone(), None),
                    Err(RequestError::Invalid(_))
                ),
                "{value}"
            );
        }
        assert!(matches!(
            parse_request(
                json!({"url": "http://a.example", "uniqueKey": "k", "id": "wrongwrongwrong"}),
                None
            ),
            Err(RequestError::IdMismatch(_))
        ));
        assert!(matches!(
            parse_request(
                json!({"url": "http://a.example", "uniqueKey": "k"}),
                Some("EAaArVRs5qV39C9")
            ),
            Err(RequestError::IdMismatch(_))
        ));
        let id = request_id("k");
        assert!(parse_request(
            json!({"url": "http://a.example", "uniqueKey": "k", "id": id}),
            Some(&id)
        )
        .is_ok());
    }

    #[test]
    fn client_keys() {
        assert!(validate_client_key("a").is_ok());
        assert!(validate_client_key(&"x".repeat(32)).is_ok());
        assert!(validate_client_key(&"x".repeat(33)).is_err());
        assert!(validate_client_key("").is_err());
    }
}
