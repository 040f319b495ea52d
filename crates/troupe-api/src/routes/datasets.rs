//! Datasets (ENDPOINTS.md §2.10). The per-dataset router is mounted under every prefix that
//! names a dataset (`/v2/datasets/{datasetId}`, a run's default dataset, the last run's).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use troupe_model::storage::StorageKind;

use super::storages;
use crate::body::{read_decoded, DEFAULT_BODY_LIMIT};
use crate::error::ApiResult;
use crate::items::{items_response, parse_push_body, ItemsQuery};
use crate::params::Params;
use crate::resolve::{DatasetKind, DatasetTarget};
use crate::router::Routes;
use crate::state::AppState;

/// `/v2/datasets` (list, create).
pub fn collection_routes() -> Router<AppState> {
    storages::collection_routes(StorageKind::Dataset)
}

/// Routes of one dataset, relative to it.
pub fn dataset_routes() -> Routes {
    storages::object_routes::<DatasetKind>()
        .route("/items", get(get_items).post(push_items))
        .route("/statistics", get(get_statistics))
}

/// GET|HEAD .../items — the items in any format, streamed.
async fn get_items(
    State(state): State<AppState>,
    method: Method,
    target: DatasetTarget,
    params: Params,
) -> ApiResult<Response> {
    let query = ItemsQuery::from_params(&params)?;
    let info = target.info();
    record_read(&state, info);
    if method == Method::HEAD {
        // Headers only: no need to read (or transform) a single item.
        let total = info.item_count;
        let count = query
            .limit
            .unwrap_or(u64::MAX)
            .min(total - query.offset.min(total));
        return Ok((
            [
                ("content-type", query.format.content_type().to_string()),
                ("x-apify-pagination-offset", query.offset.to_string()),
                (
                    "x-apify-pagination-limit",
                    query.reported_limit().to_string(),
                ),
                ("x-apify-pagination-count", count.to_string()),
                ("x-apify-pagination-total", total.to_string()),
                ("x-apify-pagination-desc", query.desc.to_string()),
            ],
            (),
        )
            .into_response());
    }
    let url = format!("{}/datasets/{}/items", state.api_base(), info.id);
    items_response(
        state.storage.clone(),
        info,
        query,
        url,
        state.config.temp_dir.clone(),
    )
    .await
}

/// Records a read of the items (`accessedAt`, `readCount`, which the retention policy and the
/// dataset object show) off the request path, at most once a minute per dataset so reads stay
/// free of writes.
fn record_read(state: &AppState, info: &troupe_model::storage::StorageInfo) {
    const EVERY_MS: i64 = 60_000;
    let now = troupe_model::now_ms();
    if now - info.accessed_at < EVERY_MS {
        return;
    }
    let storage = state.storage.clone();
    let id = info.id.clone();
    tokio::spawn(async move {
        if let Err(err) = storage.record_dataset_read(&id, now).await {
            tracing::warn!(error = %err, "recording a dataset read failed");
        }
    });
}

/// POST .../items — append one object or an array of objects (all or nothing); 201 `{}`.
async fn push_items(
    State(state): State<AppState>,
    target: DatasetTarget,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let bytes = read_decoded(&headers, body, DEFAULT_BODY_LIMIT).await?;
    let items = parse_push_body(&bytes)?;
    let info = target.info();
    if !items.is_empty() {
        state.storage.push_items(&info.id, items).await?;
    }
    let location = format!("{}/datasets/{}/items", state.api_base(), info.id);
    let mut response = (StatusCode::CREATED, axum::Json(json!({}))).into_response();
    if let Ok(value) = location.parse() {
        response
            .headers_mut()
            .insert(axum::http::header::LOCATION, value);
    }
    Ok(response)
}

/// GET .../statistics — per-field statistics (troupe keeps no field schema, so none).
async fn get_statistics(_target: DatasetTarget) -> Response {
    super::data(StatusCode::OK, json!({ "fieldStatistics": null }))
}
