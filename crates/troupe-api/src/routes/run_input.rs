//! Writing a run's input record into its default key-value store. Kept in one place so the
//! run routes do not depend on how records are stored.

use bytes::Bytes;

use crate::error::ApiResult;
use crate::state::AppState;

/// Stores `bytes` with `content_type` as record `key` of store `store_id`.
pub async fn put(
    state: &AppState,
    store_id: &str,
    key: &str,
    bytes: Bytes,
    content_type: &str,
) -> ApiResult<()> {
    // The key-value record API is being built in parallel (issue 3); until it lands the input
    // is kept next to the store so nothing is lost.
    let dir = state.config.temp_dir.join("pending-inputs").join(store_id);
    std::fs::create_dir_all(&dir).map_err(crate::error::ApiError::internal)?;
    std::fs::write(dir.join(key), &bytes).map_err(crate::error::ApiError::internal)?;
    std::fs::write(dir.join(format!("{key}.content-type")), content_type)
        .map_err(crate::error::ApiError::internal)?;
    Ok(())
}

/// Reads record `key` of store `store_id`: its bytes and content type.
pub async fn get(
    state: &AppState,
    store_id: &str,
    key: &str,
) -> ApiResult<Option<(Bytes, String)>> {
    let dir = state.config.temp_dir.join("pending-inputs").join(store_id);
    let Ok(bytes) = std::fs::read(dir.join(key)) else {
        return Ok(None);
    };
    let content_type = std::fs::read_to_string(dir.join(format!("{key}.content-type")))
        .unwrap_or_else(|_| "application/octet-stream".into());
    Ok(Some((Bytes::from(bytes), content_type)))
}
