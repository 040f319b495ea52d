//! A run's input and output records in its default key-value store, for the run routes
//! (start, metamorph, run-sync): thin wrappers over the key-value record storage.

use std::io::Read;

use bytes::Bytes;
use troupe_model::storage::StorageKind;
use troupe_storage::kv::{NewRecord, RecordContent, RecordSource};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Stores `bytes` (already decoded) with `content_type` as record `key` of store `store_id`.
pub async fn put(
    state: &AppState,
    store_id: &str,
    key: &str,
    bytes: Bytes,
    content_type: &str,
) -> ApiResult<()> {
    let info = state
        .storage
        .get_storage(StorageKind::KeyValueStore, store_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Key-value store was not found"))?;
    let content_type = if content_type.trim().is_empty() {
        "application/octet-stream".to_string()
    } else {
        content_type.to_string()
    };
    state
        .storage
        .put_record(
            &info,
            key,
            NewRecord {
                content_type,
                content_encoding: None,
            },
            RecordSource::Bytes(bytes),
        )
        .await?;
    Ok(())
}

/// Reads record `key` of store `store_id`: its bytes (decoded if it was stored encoded) and
/// content type.
pub async fn get(
    state: &AppState,
    store_id: &str,
    key: &str,
) -> ApiResult<Option<(Bytes, String)>> {
    let Some(info) = state
        .storage
        .get_storage(StorageKind::KeyValueStore, store_id)
        .await?
    else {
        return Ok(None);
    };
    let Some(record) = state.storage.get_record(&info, key, false).await? else {
        return Ok(None);
    };
    let encodings = super::key_value_stores::stored_encodings(&record.meta);
    let content = record.content.expect("content was asked for");
    if encodings.is_empty() {
        if let RecordContent::Inline(bytes) = content {
            return Ok(Some((bytes, record.meta.content_type)));
        }
    }
    let bytes = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        super::key_value_stores::decoder(
            super::key_value_stores::content_reader(content),
            &encodings,
        )
        .read_to_end(&mut out)
        .map(|_| out)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(Some((Bytes::from(bytes), record.meta.content_type)))
}
