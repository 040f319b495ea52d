//! Request queue vocabulary: the request id every SDK derives from `uniqueKey`
//! (SDK-CONTRACT.md §3.3) and the validation of request bodies the clients send.

use base64::Engine;
use std::borrow::Cow;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
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
    // 32 bytes encode to 44 characters; at most a few are `+` or `/`, and 15 others remain
    // (were there fewer, the id would just be shorter, as the SDKs compute it).
    let mut encoded = [0u8; 44];
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(digest, &mut encoded)
        .expect("44 bytes hold 32 encoded");
    let mut id = [0u8; REQUEST_ID_LEN];
    let mut len = 0;
    for &c in &encoded[..written] {
        if len == REQUEST_ID_LEN {
            break;
        }
        if !matches!(c, b'+' | b'/' | b'=') {
            id[len] = c;
            len += 1;
        }
    }
    std::str::from_utf8(&id[..len])
        .expect("base64 is ASCII")
        .to_owned()
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
    if !value.is_object() {
        return Err(invalid("Request must be a JSON object"));
    }
    let text = value.to_string();
    let raw: &RawValue = serde_json::from_str(&text)
        .map_err(|err| invalid(format!("Request cannot be stored: {err}")))?;
    parse_request_raw(raw, path_id)
}

/// [`parse_request`] on the request's JSON text as received (already known to be valid JSON):
/// the known fields are read from their raw text and the other fields are copied through
/// byte for byte, without building a tree of the whole request.
pub fn parse_request_raw(
    raw: &RawValue,
    path_id: Option<&str>,
) -> Result<QueueRequest, RequestError> {
    let Ok(fields) = serde_json::from_str::<Fields<'_>>(raw.get()) else {
        return Err(invalid("Request must be a JSON object"));
    };
    parse_fields(fields, raw.get().len(), path_id)
}

/// [`parse_request_raw`] straight from a request body in one pass, when the body is one JSON
/// object (what clients send); `None` for anything else (malformed JSON, another value): the
/// caller then checks the body as JSON first and calls [`parse_request_raw`], which tells what
/// is wrong, so answers are the same either way.
pub fn parse_request_body(
    body: &[u8],
    path_id: Option<&str>,
) -> Option<Result<QueueRequest, RequestError>> {
    // UTF-8 checked once (as `parse_request_batch` does): read from a `str`, serde_json checks
    // neither each string nor each raw value again.
    let text = std::str::from_utf8(body).ok()?;
    let fields = serde_json::from_str::<Fields<'_>>(text).ok()?;
    Some(parse_fields(fields, body.len(), path_id))
}

/// One request of a batch body read by [`parse_request_batch`]: its fields, not validated yet.
pub struct BatchEntry<'a> {
    fields: Fields<'a>,
    len: usize,
}

impl BatchEntry<'_> {
    /// Validates the request as [`parse_request_raw`] does.
    pub fn parse(self) -> Result<QueueRequest, RequestError> {
        parse_fields(self.fields, self.len, None)
    }
}

/// A batch-add body read in one pass when it is a JSON array of JSON objects (what clients
/// send): each object's fields, to validate with [`BatchEntry::parse`]. `None` for anything
/// else (malformed JSON, another shape, an entry that is not an object): the caller then reads
/// the body the slow way ([`parse_request_raw`] per entry), which says what is wrong.
pub fn parse_request_batch(body: &[u8]) -> Option<Vec<BatchEntry<'_>>> {
    // UTF-8 checked once for the whole body: read from a `str`, serde_json checks neither each
    // string nor each raw value again (a body that is not UTF-8 is refused either way: JSON
    // holds non-ASCII bytes only inside strings, which `from_slice` checks).
    let text = std::str::from_utf8(body).ok()?;
    serde_json::from_str::<Vec<Entry<'_>>>(text)
        .ok()
        .map(|entries| entries.into_iter().map(|Entry(e)| e).collect())
}

/// A batch entry as read: an object's fields and the length of its text.
struct Entry<'a>(BatchEntry<'a>);

impl<'de> Deserialize<'de> for Entry<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = Fields::deserialize(deserializer)?;
        // (Capacity hint for the stored JSON: the fields' text.)
        let len = fields
            .0
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        Ok(Entry(BatchEntry { fields, len }))
    }
}

/// Validates a request from its fields (`len`: about the length of its JSON text).
fn parse_fields(
    Fields(fields): Fields<'_>,
    len: usize,
    path_id: Option<&str>,
) -> Result<QueueRequest, RequestError> {
    // The known fields' raw values, found in one pass (keys are distinct: see `Fields`).
    let mut known: [Option<&str>; 9] = [None; 9];
    for (key, value) in &fields {
        let slot = match key.as_ref() {
            "uniqueKey" => 0,
            "url" => 1,
            "id" => 2,
            "method" => 3,
            "retryCount" => 4,
            "userData" => 5,
            "headers" => 6,
            "payload" => 7,
            "handledAt" => 8,
            _ => continue,
        };
        known[slot] = Some(value.get());
    }
    let [unique_key, url, id_field, method, retry_count, user_data, headers, payload, handled_at] =
        known;
    let unique_key = match unique_key.map(Raw::of) {
        Some(Raw::String(key)) => key.into_owned(),
        None | Some(Raw::Null) => return Err(invalid("Request field \"uniqueKey\" is required")),
        Some(_) => return Err(invalid("Request field \"uniqueKey\" must be a string")),
    };
    let url = match url.map(Raw::of) {
        Some(Raw::String(url)) => url.into_owned(),
        None | Some(Raw::Null) => return Err(invalid("Request field \"url\" is required")),
        Some(_) => return Err(invalid("Request field \"url\" must be a string")),
    };
    if !is_http_url(&url) {
        return Err(invalid(format!(
            "Request field \"url\" must be an absolute http(s) URL, got \"{url}\""
        )));
    }
    let id = request_id(&unique_key);
    match id_field.map(Raw::of) {
        None | Some(Raw::Null) => {}
        Some(Raw::String(given)) if given == id => {}
        Some(Raw::String(given)) => {
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
    let method = match method.map(Raw::of) {
        None | Some(Raw::Null) => "GET".to_string(),
        Some(Raw::String(m)) if METHODS.contains(&m.as_ref()) => m.into_owned(),
        Some(_) => {
            return Err(invalid(format!(
                "Request field \"method\" must be one of: {}",
                METHODS.join(", ")
            )))
        }
    };
    let retry_count = match retry_count {
        None | Some("null") => 0,
        Some(text) => match serde_json::from_str::<u64>(text) {
            Ok(n) if n <= i64::MAX as u64 => n as i64,
            _ => {
                return Err(invalid(
                    "Request field \"retryCount\" must be a non-negative integer",
                ))
            }
        },
    };
    for (name, value) in [("userData", user_data), ("headers", headers)] {
        if !matches!(value.map(Raw::of), None | Some(Raw::Null | Raw::Object)) {
            return Err(invalid(format!(
                "Request field \"{name}\" must be an object"
            )));
        }
    }
    if !matches!(
        payload.map(Raw::of),
        None | Some(Raw::Null | Raw::String(_) | Raw::Object)
    ) {
        return Err(invalid("Request field \"payload\" must be a string"));
    }
    let handled_at = match handled_at.map(Raw::of) {
        None | Some(Raw::Null) => None,
        Some(Raw::String(s)) if s.trim().is_empty() => None,
        Some(Raw::String(s)) => Some(parse_ts(&s).ok_or_else(|| {
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
    // `id` first, then the other fields in their order with their text as received;
    // `handledAt` normalized in place (dropped when empty).
    // (Built from `str` pieces: UTF-8 by construction.)
    let mut json = String::with_capacity(len + 32);
    json.push_str("{\"id\":");
    write_json_str(&mut json, &id);
    for (key, value) in &fields {
        let value = match key.as_ref() {
            "id" => continue,
            "handledAt" => match handled_at {
                Some(ms) => {
                    json.push_str(",\"handledAt\":\"");
                    json.push_str(&format_ts(ms));
                    json.push('"');
                    continue;
                }
                None => continue,
            },
            _ => value.get(),
        };
        json.push(',');
        write_json_str(&mut json, key);
        json.push(':');
        json.push_str(value);
    }
    json.push('}');
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

/// Whether `s` is written as a JSON string without escapes (what serde_json escapes: `"`, `\\`
/// and control characters below U+0020). One branch-free pass (vectorized).
pub fn json_str_plain(s: &str) -> bool {
    !s.bytes().fold(false, |bad, b| {
        bad | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// `s` as a JSON string (as serde_json writes it).
fn write_json_str(out: &mut String, s: &str) {
    if json_str_plain(s) {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("a string serializes"));
    }
}

/// A JSON object's fields in order, values as raw text; a repeated key keeps its first position
/// and its last value (as `serde_json::Map` with `preserve_order` does).
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                // (Room for what a request usually has: no regrowing on the way.)
                let mut fields: Vec<(Cow<'de, str>, &'de RawValue)> =
                    Vec::with_capacity(map.size_hint().unwrap_or(8).min(16));
                while let Some(Key(key)) = map.next_key()? {
                    let value: &'de RawValue = map.next_value()?;
                    match fields.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = value,
                        None => fields.push((key, value)),
                    }
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// An object key, borrowed from the input unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

/// The kind of a raw JSON value (strings decoded), enough to validate a field.
enum Raw<'a> {
    Null,
    String(Cow<'a, str>),
    Object,
    Other,
}

impl<'a> Raw<'a> {
    fn of(text: &'a str) -> Raw<'a> {
        match text.as_bytes().first() {
            Some(b'n') => Raw::Null,
            Some(b'{') => Raw::Object,
            // A JSON string without escapes is its text between the quotes (`text` is valid
            // JSON: no raw control characters).
            Some(b'"') if text.len() >= 2 && !text.as_bytes()[1..].contains(&b'\\') => {
                Raw::String(Cow::Borrowed(&text[1..text.len() - 1]))
            }
            Some(b'"') => match serde_json::from_str::<Key<'a>>(text) {
                Ok(Key(s)) => Raw::String(s),
                Err(_) => Raw::Other,
            },
            _ => Raw::Other,
        }
    }
}

fn is_http_url(url: &str) -> bool {
    let starts = |scheme: &str| {
        url.as_bytes()
            .get(..scheme.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(scheme.as_bytes()))
    };
    // (A matched scheme is ASCII: the slices below are at character boundaries.)
    let rest = if starts("https://") {
        &url[8..]
    } else if starts("http://") {
        &url[7..]
    } else {
        return false;
    };
    !rest.is_empty() && !rest.starts_with('/') && !has_whitespace(url)
}

/// `s.chars().any(char::is_whitespace)`, byte by byte while the text is ASCII.
fn has_whitespace(s: &str) -> bool {
    if !s.is_ascii() {
        return s.chars().any(char::is_whitespace);
    }
    // Space, or \t \n \x0b \x0c \r (9 to 13); branch-free, so it vectorizes.
    s.bytes().fold(false, |found, b| {
        found | (b == b' ') | (b.wrapping_sub(9) < 5)
    })
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
    fn raw_parse_copies_fields_through() {
        let body = r#"{ "custom" : [1, 2.50, {"a": "\u00e9"}], "url":"https://a.example/x",
            "id": null, "uniqueKey": "k\"q", "handledAt": "2026-08-21 10:23:31.607000+00:00",
            "we\u0069rd": 1, "custom": {"last": true}, "userData": {} }"#;
        let raw: &RawValue = serde_json::from_str(body).unwrap();
        let r = parse_request_raw(raw, None).unwrap();
        assert_eq!(r.unique_key, "k\"q");
        assert_eq!(r.id, request_id("k\"q"));
        assert_eq!(r.handled_at, parse_ts("2026-08-21T10:23:31.607Z"));
        // id first; a repeated key keeps its first place and its last value; values verbatim.
        assert_eq!(
            r.json,
            format!(
                r#"{{"id":"{}","custom":{{"last": true}},"url":"https://a.example/x","uniqueKey":"k\"q","handledAt":"2026-08-21T10:23:31.607Z","weird":1,"userData":{{}}}}"#,
                r.id
            )
        );
        let back: Value = serde_json::from_str(&r.json).unwrap();
        assert_eq!(back["custom"], json!({"last": true}));
        // Not an object, or not a request.
        for body in [
            "[]",
            "5",
            "\"x\"",
            "null",
            r#"{"url": "http://a.example", "uniqueKey": 5}"#,
        ] {
            let raw: &RawValue = serde_json::from_str(body).unwrap();
            assert!(
                matches!(parse_request_raw(raw, None), Err(RequestError::Invalid(_))),
                "{body}"
            );
        }
        let raw: &RawValue = serde_json::from_str(
            r#"{"url": "http://a.example", "uniqueKey": "k", "retryCount": 2.0}"#,
        )
        .unwrap();
        assert!(parse_request_raw(raw, None).is_err());
        let raw: &RawValue =
            serde_json::from_str(r#"{"url": "http://a.example", "uniqueKey": "k", "payload": {"a": 1}, "retryCount": 3, "method": "POST"}"#).unwrap();
        let r = parse_request_raw(raw, None).unwrap();
        assert_eq!((r.retry_count, r.method.as_str()), (3, "POST"));
    }

    /// The one-pass batch reader answers as the entry-by-entry one for arrays of objects
    /// (valid or not as requests), and declines anything else.
    #[test]
    fn batch_parse_matches_entry_parse() {
        let bodies = [
            r#"[{"url":"https://a.example/1","uniqueKey":"k1"},{"url":"HTTP://b.example","uniqueKey":"k\"2","method":"POST","userData":{"x":[1,{"y":null}]},"x":1,"x":2}]"#,
            r#" [ { "uniqueKey" : "\u00e9", "url" : "https://a.example/\u00e9", "handledAt": "2026-08-21T10:23:31.607Z" } ] "#,
            r#"[{"url":"https://a.example/1"},{"url":"ftp://a","uniqueKey":"k"},{"url":"https://a .example","uniqueKey":"k"},{"url":"https://a.example\u00a0x","uniqueKey":"k"},{"url":"https://a.example","uniqueKey":"k","id":"nope"}]"#,
            r#"[{"url":"https://a.example","uniqueKey":"k","retryCount":-1},{"url":"https://a.example\tx","uniqueKey":"k"},{}]"#,
            "[]",
        ];
        for body in bodies {
            let fast: Vec<_> = parse_request_batch(body.as_bytes())
                .unwrap_or_else(|| panic!("{body}"))
                .into_iter()
                .map(BatchEntry::parse)
                .collect();
            let slow: Vec<&RawValue> = serde_json::from_str(body).unwrap();
            let slow: Vec<_> = slow
                .into_iter()
                .map(|e| parse_request_raw(e, None))
                .collect();
            assert_eq!(fast, slow, "{body}");
        }
        for body in [
            "",
            " ",
            "{}",
            "[1]",
            r#"[{"url":"https://a.example","uniqueKey":"k"}, null]"#,
            r#"[{"url":"https://a.example","uniqueKey":"k"}] x"#,
            r#"[{"url":"https://a.example","uniqueKey":"k"}"#,
        ] {
            assert!(parse_request_batch(body.as_bytes()).is_none(), "{body}");
        }
        assert!(parse_request_batch(b"[{\"uniqueKey\":\"\xff\"}]").is_none());
    }

    /// The one-pass body reader of `PUT …/requests/{id}` answers as the raw-value path for
    /// objects (valid or not as requests, path id matching or not), and declines anything else.
    #[test]
    fn body_parse_matches_raw_parse() {
        let id = request_id("k1");
        let bodies = [
            r#"{"url":"https://a.example/1","uniqueKey":"k1"}"#.to_string(),
            format!(
                r#" {{ "id": "{id}", "url":"HTTP://b.example","uniqueKey":"k1","method":"POST","userData":{{"x":[1,{{"y":null}}]}},"x":1,"x":2, "handledAt": "2026-08-21T10:23:31.607Z" }} "#
            ),
            r#"{"url":"https://a.example/1","uniqueKey":"k2"}"#.to_string(),
            r#"{"url":"https://a.example/1","uniqueKey":"k1","id":"nope"}"#.to_string(),
            r#"{"url":"ftp://a","uniqueKey":"k1"}"#.to_string(),
            r#"{"url":"https://a.example","uniqueKey":"k1","retryCount":-1}"#.to_string(),
            r#"{"url":"https://a.example","uniqueKey":"k1","handledAt":"yesterday"}"#.to_string(),
            r#"{"uniqueKey":"é", "url":"https://a.example/é"}"#.to_string(),
            "{}".to_string(),
        ];
        for body in &bodies {
            for path_id in [Some(id.as_str()), Some("other"), None] {
                let fast = parse_request_body(body.as_bytes(), path_id)
                    .unwrap_or_else(|| panic!("{body}"));
                let raw: &RawValue = serde_json::from_str(body).unwrap();
                assert_eq!(fast, parse_request_raw(raw, path_id), "{body}");
            }
        }
        for body in [
            "",
            " ",
            "[]",
            "1",
            "null",
            r#"{"url":"https://a.example","uniqueKey":"k1"} x"#,
            r#"{"url":"https://a.example","uniqueKey":"k1""#,
        ] {
            assert!(
                parse_request_body(body.as_bytes(), None).is_none(),
                "{body}"
            );
        }
        assert!(parse_request_body(b"{\"uniqueKey\":\"\xff\"}", None).is_none());
    }

    /// The fast paths of the parse (strings without escapes taken as they are, keys and ids
    /// written without serde) give what serde gives, escapes or not.
    #[test]
    fn plain_and_escaped_strings_parse_as_serde_reads_them() {
        for s in ["", "k", "a\"b", "a\\b", "\u{1}", "\n", "\u{7f}", "é", "/x"] {
            assert_eq!(
                json_str_plain(s),
                serde_json::to_string(s).unwrap() == format!("\"{s}\""),
                "{s:?}"
            );
        }
        let keys = [
            r#""k""#,
            r#""k\"q""#,
            r#""\u00e9\n""#,
            r#""é\\""#,
            r#""https://a.example/x""#,
            r#""\/""#,
        ];
        for key in keys {
            let body = format!(
                r#"[{{"url":"https://a.example/\u00e9?q={n}","uniqueKey":{key},"we\"ird":1,"plain":{key}}}]"#,
                n = key.len()
            );
            let r = parse_request_batch(body.as_bytes())
                .unwrap()
                .pop()
                .unwrap()
                .parse()
                .unwrap();
            let want: String = serde_json::from_str(key).unwrap();
            assert_eq!(r.unique_key, want, "{key}");
            assert_eq!(r.url, format!("https://a.example/é?q={}", key.len()));
            let back: Value = serde_json::from_str(&r.json).unwrap();
            assert_eq!(back["uniqueKey"], want.as_str());
            assert_eq!(back["plain"], want.as_str());
            assert_eq!(back["we\"ird"], 1);
            assert_eq!(back["id"], request_id(&want).as_str());
            // Values are copied through as received; keys written as serde writes them.
            assert!(
                r.json.contains(&format!(r#","uniqueKey":{key},"#)),
                "{}",
                r.json
            );
            assert!(r.json.contains(r#","we\"ird":1,"#), "{}", r.json);
        }
    }

    #[test]
    fn whitespace_in_urls() {
        for (url, ok) in [
            ("https://a.example/x", true),
            ("https://a.example/\u{e9}", true),
            ("https://a.example/ x", false),
            ("https://a.example/\u{b}x", false),
            ("https://a.example/\u{a0}x", false),
            ("https://a.example/\u{3000}", false),
            ("https://a.example/\u{1f}", true),
            ("https://a.example/\tx", false),
            ("https://a.example/\rx", false),
            ("https://a.example/\u{c}x", false),
            ("https://a.example/\u{8}x", true),
            ("https://a.example/\u{e}x", true),
            ("HtTpS://a.example", true),
            ("HTTP://a", true),
            ("http://", false),
            ("https:/", false),
            ("http:/é", false),
            ("http://é", true),
            ("httpé://a", false),
            ("ftp://a.example", false),
            ("https:///x", false),
        ] {
            assert_eq!(is_http_url(url), ok, "{url:?}");
        }
    }

    #[test]
    fn client_keys() {
        assert!(validate_client_key("a").is_ok());
        assert!(validate_client_key(&"x".repeat(32)).is_ok());
        assert!(validate_client_key(&"x".repeat(33)).is_err());
        assert!(validate_client_key("").is_err());
    }
}
