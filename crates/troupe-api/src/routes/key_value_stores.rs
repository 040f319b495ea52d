//! Key-value stores (ENDPOINTS.md §2.11). The per-store router is mounted under every prefix
//! that names a store (`/v2/key-value-stores/{storeId}`, a run's default store, the last run's).
//!
//! Records are kept byte for byte with the `Content-Type` and `Content-Encoding` they were sent
//! with. Bodies stream both ways: a PUT buffers at most [`BUFFER_LIMIT`] bytes before handing
//! the rest of the body to storage as a stream, and a GET streams files from storage.

use std::io::Read;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, RawPathParams, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use troupe_model::storage::{StorageInfo, StorageKind};
use troupe_storage::kv::{
    valid_record_key, KeysQuery, NewRecord, RecordContent, RecordMeta, RecordSource,
};
use troupe_storage::Storage;

use super::{data, storages};
use crate::auth::Caller;
use crate::body::content_encodings;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::resolve::{
    check_access, signature_opens, Access, AddressedBy, KvStoreKind, KvStoreTarget,
    KvStoreWriteTarget,
};
use crate::router::Routes;
use crate::state::AppState;

/// A PUT body up to this size is read into memory and handed to storage whole (storage keeps
/// it inline); anything longer streams through.
const BUFFER_LIMIT: usize = 128 * 1024;

/// Most keys per listing page (also the default).
const MAX_KEYS_LIMIT: u64 = 1000;

/// Chunk size of decoded and ZIP streams.
const CHUNK: usize = 64 * 1024;

/// Content type of records sent without one.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// `/v2/key-value-stores` (list, create / get-or-create).
pub fn collection_routes() -> Router<AppState> {
    storages::collection_routes(StorageKind::KeyValueStore)
}

/// Routes of one store, relative to the store (`/`, `/keys`, `/records`, `/records/{recordKey}`).
pub fn store_routes() -> Routes {
    storages::object_routes::<KvStoreKind>()
        .route("/keys", get(list_keys))
        .route("/records", get(download_records))
        .route(
            "/records/{recordKey}",
            get(get_record)
                .put(put_record)
                .post(put_record)
                .delete(delete_record),
        )
}

/// The `recordKey` of the path, validated (400 `invalid-record-key` otherwise).
pub struct RecordKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RecordKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid_record_key())?;
        let key = raw
            .iter()
            .find(|(name, _)| *name == "recordKey")
            .map(|(_, value)| value)
            .ok_or_else(ApiError::invalid_record_key)?;
        if !valid_record_key(key) {
            return Err(ApiError::invalid_record_key());
        }
        Ok(RecordKey(key.to_string()))
    }
}

/// Public URL of a record, signed when the store has a signing secret.
fn record_url(api_base: &str, info: &StorageInfo, key: &str) -> String {
    let mut url = format!("{api_base}/key-value-stores/{}/records/{key}", info.id);
    if !info.url_signing_secret_key.is_empty() {
        url.push_str("?signature=");
        url.push_str(&troupe_model::signature::record_signature(
            &info.url_signing_secret_key,
            key,
        ));
    }
    url
}

/// `collection` needs a store schema, which troupe does not keep.
fn reject_collection(params: &Params) -> ApiResult<()> {
    if params.str("collection").is_some() {
        return Err(ApiError::invalid_parameter(
            "Parameter \"collection\" needs a key-value store schema; this store has none",
        ));
    }
    Ok(())
}

/// GET .../keys — keys in UTF-8 byte order, paged by `exclusiveStartKey`.
async fn list_keys(
    State(state): State<AppState>,
    target: KvStoreTarget,
    params: Params,
) -> ApiResult<Response> {
    reject_collection(&params)?;
    let limit = match params.u64("limit")? {
        None => MAX_KEYS_LIMIT,
        Some(0) => {
            return Err(ApiError::invalid_parameter(
                "Parameter \"limit\" must be between 1 and 1000",
            ))
        }
        Some(limit) => limit.min(MAX_KEYS_LIMIT),
    };
    let exclusive_start_key = params.str("exclusiveStartKey").map(str::to_string);
    let info = target.info();
    let page = state
        .storage
        .list_keys(
            info,
            KeysQuery {
                exclusive_start_key: exclusive_start_key.clone(),
                prefix: params.str("prefix").map(str::to_string),
                limit,
            },
        )
        .await?;
    let base = state.api_base();
    let next = if page.is_truncated {
        page.keys.last().map(|entry| entry.key.clone())
    } else {
        None
    };
    let items: Vec<Value> = page
        .keys
        .iter()
        .map(|entry| {
            json!({
                "key": entry.key,
                "size": entry.size,
                "recordPublicUrl": record_url(&base, info, &entry.key),
            })
        })
        .collect();
    Ok(data(
        StatusCode::OK,
        json!({
            "items": items,
            "count": page.keys.len(),
            "limit": limit,
            "exclusiveStartKey": exclusive_start_key,
            "isTruncated": page.is_truncated,
            "nextExclusiveStartKey": next,
        }),
    ))
}

/// The stored content encodings of a record, outermost last.
pub(crate) fn stored_encodings(meta: &RecordMeta) -> Vec<String> {
    meta.content_encoding
        .as_deref()
        .map(|value| {
            value
                .split(',')
                .map(|part| part.trim().to_ascii_lowercase())
                .filter(|part| !part.is_empty() && part != "identity")
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `Accept-Encoding` allows every one of `encodings` (RFC 9110 12.5.3: `*` covers
/// encodings not listed, `q=0` refuses).
fn accepts(headers: &HeaderMap, encodings: &[String]) -> bool {
    let mut listed: Vec<(String, bool)> = Vec::new();
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for part in value.split(',') {
            let mut pieces = part.split(';');
            let name = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            let refused = pieces.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .or_else(|| p.strip_prefix("Q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            listed.push((name, !refused));
        }
    }
    encodings.iter().all(|encoding| {
        let alias = if encoding == "x-gzip" {
            "gzip"
        } else {
            encoding
        };
        let found = listed.iter().find(|(name, _)| {
            name == encoding || name == alias || (alias == "gzip" && name == "x-gzip")
        });
        match found {
            Some((_, ok)) => *ok,
            None => listed.iter().any(|(name, ok)| name == "*" && *ok),
        }
    })
}

/// Wraps `input` in decoders undoing `encodings` (applied in order, so undone in reverse).
pub(crate) fn decoder(input: Box<dyn Read + Send>, encodings: &[String]) -> Box<dyn Read + Send> {
    let mut reader = input;
    for encoding in encodings.iter().rev() {
        reader = match encoding.as_str() {
            "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            "br" => Box::new(brotli::Decompressor::new(reader, CHUNK)),
            "deflate" => Box::new(ZlibOrRawDeflate::new(reader)),
            // Unknown encodings are refused on write; pass anything else through untouched.
            _ => reader,
        };
    }
    reader
}

/// `deflate` means zlib-wrapped (RFC 9110), but raw deflate is common: sniff the header.
struct ZlibOrRawDeflate {
    inner: Option<Box<dyn Read + Send>>,
    pending: Option<Box<dyn Read + Send>>,
}

impl ZlibOrRawDeflate {
    fn new(input: Box<dyn Read + Send>) -> Self {
        Self {
            inner: None,
            pending: Some(input),
        }
    }
}

impl Read for ZlibOrRawDeflate {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(mut input) = self.pending.take() {
            let mut head = [0u8; 2];
            let mut got = 0;
            while got < 2 {
                let n = input.read(&mut head[got..])?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            let zlib = got == 2
                && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0
                && head[0] & 0x0f == 8;
            let chained: Box<dyn Read + Send> =
                Box::new(std::io::Cursor::new(head[..got].to_vec()).chain(input));
            self.inner = Some(if zlib {
                Box::new(flate2::read::ZlibDecoder::new(chained))
            } else {
                Box::new(flate2::read::DeflateDecoder::new(chained))
            });
        }
        self.inner.as_mut().expect("initialised").read(buf)
    }
}

/// A body produced by a blocking reader, in chunks over a small channel (bounded memory).
fn blocking_body(mut reader: Box<dyn Read + Send>) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || loop {
        let mut buf = vec![0u8; CHUNK];
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "decoding a stored record failed");
                let _ = tx.blocking_send(Err(err));
                return;
            }
        }
    });
    Body::from_stream(ReceiverStream::new(rx))
}

pub(crate) fn content_reader(content: RecordContent) -> Box<dyn Read + Send> {
    match content {
        RecordContent::Inline(bytes) => Box::new(std::io::Cursor::new(bytes)),
        RecordContent::File(file) => Box::new(file),
    }
}

fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(DEFAULT_CONTENT_TYPE))
}

/// GET|HEAD .../records/{recordKey} — the stored bytes with the stored headers; decoded on the
/// fly when the client does not accept the stored encoding.
///
/// Hot path: a store named by id is looked up together with the record in one storage call;
/// names and run prefixes go through the shared resolver first.
async fn get_record(
    State(state): State<AppState>,
    RecordKey(key): RecordKey,
    caller: Caller,
    params: Params,
    request: axum::extract::Request,
) -> ApiResult<Response> {
    let (mut parts, _) = request.into_parts();
    let attachment = params.bool("attachment", false)?;
    let head = parts.method == Method::HEAD;
    let store_ref = RawPathParams::from_request_parts(&mut parts, &state)
        .await
        .ok()
        .and_then(|raw| {
            raw.iter()
                .find(|(name, _)| *name == "storeId")
                .map(|(_, value)| value.to_string())
        });
    let mut found = None;
    if let Some(store_ref) = store_ref.filter(|r| !r.contains('~')) {
        if let Some((info, record)) = state
            .storage
            .get_store_record(&store_ref, &key, head)
            .await?
        {
            let signed = signature_opens(
                &info.url_signing_secret_key,
                &info.id,
                &params,
                Some(&key),
                troupe_model::now_ms(),
            );
            check_access(
                &caller,
                &info.user_id,
                &info.general_access,
                &AddressedBy::Id,
                Access::Read,
                signed,
            )?;
            found = Some(record);
        }
    }
    let record = match found {
        Some(record) => record,
        None => {
            let target = KvStoreTarget::from_request_parts(&mut parts, &state).await?;
            state.storage.get_record(target.info(), &key, head).await?
        }
    }
    .ok_or_else(|| ApiError::not_found("Record was not found"))?;
    let headers = &parts.headers;
    let encodings = stored_encodings(&record.meta);
    let raw = encodings.is_empty() || accepts(headers, &encodings);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::OK;
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        header_value(&record.meta.content_type),
    );
    if raw {
        if let Some(encoding) = &record.meta.content_encoding {
            if !encodings.is_empty() {
                out.insert(header::CONTENT_ENCODING, header_value(encoding));
            }
        }
        out.insert(header::CONTENT_LENGTH, HeaderValue::from(record.meta.size));
    }
    if !encodings.is_empty() {
        out.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    if attachment {
        out.insert(
            header::CONTENT_DISPOSITION,
            header_value(&format!("attachment; filename=\"{key}\"")),
        );
    }
    let Some(content) = record.content else {
        return Ok(response);
    };
    *response.body_mut() = match (raw, content) {
        (true, RecordContent::Inline(bytes)) => Body::from(bytes),
        (true, RecordContent::File(file)) => crate::file_body::file_body(file, record.meta.size),
        (false, content) => blocking_body(decoder(content_reader(content), &encodings)),
    };
    Ok(response)
}

/// The encodings and content type of a record upload.
fn record_headers(headers: &HeaderMap) -> ApiResult<(Vec<String>, String)> {
    let encodings = content_encodings(headers)?;
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => DEFAULT_CONTENT_TYPE.to_string(),
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| ApiError::invalid_content_type("Content-Type header must be ASCII"))?;
            let value = value.trim();
            if value.is_empty() {
                DEFAULT_CONTENT_TYPE.to_string()
            } else {
                value.to_string()
            }
        }
    };
    Ok((encodings, content_type))
}

/// Reads (and drops) what is left of a refused body, up to a few MiB, so the connection can be
/// reused; past that the server answers and closes the connection.
async fn drain(stream: &mut axum::body::BodyDataStream) {
    let mut left = 8 * BUFFER_LIMIT;
    while let Some(Ok(chunk)) = stream.next().await {
        if chunk.len() >= left {
            return;
        }
        left -= chunk.len();
    }
}

/// Why a streamed PUT body failed.
const BODY_OK: u8 = 0;
const BODY_TOO_LARGE: u8 = 1;
const BODY_BROKEN: u8 = 2;

/// PUT|POST .../records/{recordKey} — store the body as sent; 201 `{}`.
async fn put_record(
    State(state): State<AppState>,
    RecordKey(key): RecordKey,
    target: KvStoreWriteTarget,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let mut stream = body.into_data_stream();
    let (encodings, content_type) = match record_headers(&headers) {
        Ok(parsed) => parsed,
        Err(err) => {
            drain(&mut stream).await;
            return Err(err);
        }
    };
    let content_encoding = (!encodings.is_empty()).then(|| encodings.join(", "));
    let max = state.config.max_record_bytes;
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if length > max {
            drain(&mut stream).await;
            return Err(ApiError::record_too_large(max));
        }
    }

    // Read up to BUFFER_LIMIT bytes; a body that ends by then is stored from memory.
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    let mut ended = false;
    while total <= BUFFER_LIMIT {
        match stream.next().await {
            None => {
                ended = true;
                break;
            }
            Some(Ok(chunk)) => {
                total += chunk.len();
                chunks.push(chunk);
            }
            Some(Err(err)) => {
                return Err(ApiError::invalid_input(format!(
                    "Failed to read the request body: {err}"
                )))
            }
        }
    }
    if total as u64 > max {
        return Err(ApiError::record_too_large(max));
    }
    let status = Arc::new(AtomicU8::new(BODY_OK));
    let source = if ended {
        let head = if chunks.len() == 1 {
            chunks.pop().expect("one chunk")
        } else {
            let mut all = Vec::with_capacity(total);
            for chunk in &chunks {
                all.extend_from_slice(chunk);
            }
            Bytes::from(all)
        };
        if !encodings.is_empty() {
            check_encoded(&head, &encodings)?;
        }
        RecordSource::Bytes(head)
    } else {
        let magic: Vec<u8> = chunks
            .iter()
            .flat_map(|c| c.iter())
            .take(2)
            .copied()
            .collect();
        if encodings
            .last()
            .is_some_and(|e| e == "gzip" || e == "x-gzip")
            && magic != b"\x1f\x8b"
        {
            drain(&mut stream).await;
            return Err(ApiError::invalid_input(
                "Request body is not valid gzip data",
            ));
        }
        let state = (stream, total as u64, status.clone(), false);
        let rest = futures::stream::unfold(
            state,
            move |(mut stream, mut seen, status, done)| async move {
                if done {
                    return None;
                }
                match stream.next().await? {
                    Ok(chunk) => {
                        seen += chunk.len() as u64;
                        if seen <= max {
                            return Some((Ok(chunk), (stream, seen, status, false)));
                        }
                        status.store(BODY_TOO_LARGE, Ordering::Relaxed);
                        // Let a client that is still sending finish (up to a bound) so it reads
                        // the 413 instead of a reset connection.
                        drain(&mut stream).await;
                        let err = std::io::Error::other("record too large");
                        Some((Err(err), (stream, seen, status, true)))
                    }
                    Err(err) => {
                        status.store(BODY_BROKEN, Ordering::Relaxed);
                        Some((
                            Err(std::io::Error::other(err)),
                            (stream, seen, status, true),
                        ))
                    }
                }
            },
        );
        // The chunks read so far, then the rest as it arrives: handed on as they are, no copy.
        let all = futures::stream::iter(chunks.into_iter().map(Ok)).chain(rest);
        RecordSource::Chunks(Box::pin(all))
    };
    let info = &target.0;
    let result = state
        .storage
        .put_record(
            info,
            &key,
            NewRecord {
                content_type,
                content_encoding,
            },
            source,
        )
        .await;
    if let Err(err) = result {
        return Err(match status.load(Ordering::Relaxed) {
            BODY_TOO_LARGE => ApiError::record_too_large(max),
            BODY_BROKEN => ApiError::invalid_input("Failed to read the request body"),
            _ => err.into(),
        });
    }
    let location = format!(
        "{}/key-value-stores/{}/records/{key}",
        state.api_base(),
        info.id
    );
    // A static `{}` body: nothing to serialize or allocate.
    let json = HeaderValue::from_static("application/json");
    let mut response = (StatusCode::CREATED, [(header::CONTENT_TYPE, json)], "{}").into_response();
    if let Ok(location) = HeaderValue::try_from(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// A body kept encoded must still be what its `Content-Encoding` says (checked in full for
/// bodies held in memory; streamed bodies get a header check only).
fn check_encoded(body: &Bytes, encodings: &[String]) -> ApiResult<()> {
    let mut reader = decoder(Box::new(std::io::Cursor::new(body.clone())), encodings);
    let mut buf = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(err) => {
                return Err(ApiError::invalid_input(format!(
                    "Request body is not valid {} data: {err}",
                    encodings.join(", ")
                )))
            }
        }
    }
}

/// DELETE .../records/{recordKey} — 204 whether or not the record existed (SDK-CONTRACT 2.5).
async fn delete_record(
    State(state): State<AppState>,
    RecordKey(key): RecordKey,
    target: KvStoreWriteTarget,
) -> ApiResult<Response> {
    state.storage.delete_record(&target.0, &key).await?;
    Ok(super::no_content())
}

/// A `std::io::Write` that forwards chunks to a response body channel.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Writes every selected record (decoded) into a ZIP stream.
fn write_zip(
    handle: &tokio::runtime::Handle,
    storage: &dyn Storage,
    info: &StorageInfo,
    prefix: Option<String>,
    out: ChannelWriter,
) -> anyhow::Result<()> {
    let mut zip = zip::ZipWriter::new_stream(out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    let mut start: Option<String> = None;
    loop {
        let page = handle.block_on(storage.list_keys(
            info,
            KeysQuery {
                exclusive_start_key: start.clone(),
                prefix: prefix.clone(),
                limit: MAX_KEYS_LIMIT,
            },
        ))?;
        for entry in &page.keys {
            let Some(record) = handle.block_on(storage.get_record(info, &entry.key, false))? else {
                continue; // deleted meanwhile
            };
            let encodings = stored_encodings(&record.meta);
            let Some(content) = record.content else {
                continue;
            };
            zip.start_file(entry.key.as_str(), options)?;
            let mut reader = decoder(content_reader(content), &encodings);
            std::io::copy(&mut reader, &mut zip)?;
        }
        if !page.is_truncated {
            break;
        }
        start = page.keys.last().map(|entry| entry.key.clone());
    }
    let mut out = zip.finish()?.into_inner();
    std::io::Write::flush(&mut out)?;
    Ok(())
}

/// GET .../records — every record (or those whose key starts with `prefix`) as one ZIP file,
/// streamed; entries hold the decoded record bodies, named by key.
async fn download_records(
    State(state): State<AppState>,
    target: KvStoreTarget,
    params: Params,
) -> ApiResult<Response> {
    reject_collection(&params)?;
    let prefix = params.str("prefix").map(str::to_string);
    let info = target.info().clone();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let storage = state.storage.clone();
    let handle = tokio::runtime::Handle::current();
    let disposition = format!("attachment; filename=\"{}.zip\"", info.id);
    tokio::task::spawn_blocking(move || {
        let out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        if let Err(err) = write_zip(&handle, storage.as_ref(), &info, prefix, out) {
            let client_gone = err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe);
            if client_gone {
                tracing::debug!("records ZIP: client went away");
                return;
            }
            // Headers are gone already: the only way to signal is to cut the stream.
            tracing::warn!(error = %err, "records ZIP aborted");
            let _ = tx.blocking_send(Err(std::io::Error::other(err.to_string())));
        }
    });
    let mut response = Body::from_stream(ReceiverStream::new(rx)).into_response();
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    out.insert(header::CONTENT_DISPOSITION, header_value(&disposition));
    Ok(response)
}
