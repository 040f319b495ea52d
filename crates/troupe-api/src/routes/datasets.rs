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
use crate::resolve::{DatasetKind, DatasetTarget, DatasetWriteTarget};
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

/// Records a read of the items (`readCount`, `accessedAt`, which the dataset object and the
/// retention policy show): buffered in memory, so reads stay free of writes.
fn record_read(state: &AppState, info: &troupe_model::storage::StorageInfo) {
    state
        .storage
        .note_dataset_read(info.num, troupe_model::now_ms());
}

/// POST .../items — append one object or an array of objects (all or nothing); 201 `{}`.
async fn push_items(
    State(state): State<AppState>,
    target: DatasetWriteTarget,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let bytes = read_decoded(&headers, body, DEFAULT_BODY_LIMIT).await?;
    let items = parse_push_body(&bytes)?;
    let info = &target.0;
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

/// GET .../statistics — `fieldStatistics` of every top-level field the items have (troupe keeps
/// no dataset fields schema, so every field counts): `min`/`max` (numbers: the value; strings and
/// arrays: the length; objects: the number of keys), `nullCount` (items where it is `null`) and
/// `emptyCount` (items without it); `null` for an empty dataset. Datasets are append-only, so the
/// figures of a dataset are kept ([`StatsCache`]) and a later call reads only the items pushed
/// since (off the async runtime).
async fn get_statistics(
    State(state): State<AppState>,
    target: DatasetTarget,
) -> ApiResult<Response> {
    let id = target.info().id.clone();
    let storage = state.storage.clone();
    let mut stats = state.dataset_stats.take(&id);
    let (id, stats) = tokio::task::spawn_blocking(move || {
        storage
            .visit_items(&id, stats.items, u64::MAX, false, &mut |raw| {
                stats.add(raw);
                true
            })
            .map(|_| (id, stats))
    })
    .await
    .map_err(crate::error::ApiError::internal)??;
    let body = json!({ "fieldStatistics": stats.to_json() });
    state.dataset_stats.put(id, stats);
    Ok(super::data(StatusCode::OK, body))
}

/// Datasets whose statistics are kept (each at most [`MAX_STATISTICS_FIELDS`] fields).
const STATS_CACHE_DATASETS: usize = 32;

/// The field statistics of the first `items` items of recently asked datasets, by dataset id.
/// Items are never changed or removed once pushed, and a dataset id is never reused, so an entry
/// stays true; the next call adds the items pushed since.
#[derive(Default)]
pub struct StatsCache {
    entries: parking_lot::Mutex<std::collections::HashMap<String, FieldStats>>,
}

impl StatsCache {
    /// The kept figures of `id` (taken out while the caller extends them), or none yet.
    fn take(&self, id: &str) -> FieldStats {
        self.entries.lock().remove(id).unwrap_or_default()
    }

    /// Keeps `stats` unless a concurrent call already kept figures covering more items.
    fn put(&self, id: String, stats: FieldStats) {
        let mut entries = self.entries.lock();
        if entries
            .get(&id)
            .is_some_and(|kept| kept.items >= stats.items)
        {
            return;
        }
        if entries.len() >= STATS_CACHE_DATASETS && !entries.contains_key(&id) {
            if let Some(victim) = entries.keys().next().cloned() {
                entries.remove(&victim);
            }
        }
        entries.insert(id, stats);
    }
}

/// A whole number as an integer (`3`, not `3.0`).
fn number(value: f64) -> serde_json::Value {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        json!(value as i64)
    } else {
        json!(value)
    }
}

/// Most fields [`get_statistics`] reports (the tabular exports' column limit).
const MAX_STATISTICS_FIELDS: usize = 2000;

#[derive(Default)]
pub struct FieldStats {
    items: u64,
    fields: std::collections::BTreeMap<String, FieldStat>,
}

#[derive(Default)]
struct FieldStat {
    present: u64,
    nulls: u64,
    min: Option<f64>,
    max: Option<f64>,
}

impl FieldStats {
    fn add(&mut self, raw: &[u8]) {
        self.items += 1;
        let Ok(serde_json::Value::Object(item)) = serde_json::from_slice(raw) else {
            return;
        };
        for (key, value) in item {
            let full = self.fields.len() >= MAX_STATISTICS_FIELDS;
            let stat = match self.fields.get_mut(&key) {
                Some(stat) => stat,
                None if full => continue,
                None => self.fields.entry(key).or_default(),
            };
            stat.present += 1;
            let measure = match &value {
                serde_json::Value::Null => {
                    stat.nulls += 1;
                    None
                }
                serde_json::Value::Number(n) => n.as_f64(),
                serde_json::Value::String(s) => Some(s.chars().count() as f64),
                serde_json::Value::Array(a) => Some(a.len() as f64),
                serde_json::Value::Object(o) => Some(o.len() as f64),
                serde_json::Value::Bool(_) => None,
            };
            if let Some(m) = measure {
                stat.min = Some(stat.min.map_or(m, |x| x.min(m)));
                stat.max = Some(stat.max.map_or(m, |x| x.max(m)));
            }
        }
    }

    fn to_json(&self) -> serde_json::Value {
        if self.items == 0 {
            return serde_json::Value::Null;
        }
        let items = self.items;
        serde_json::Value::Object(
            self.fields
                .iter()
                .map(|(key, stat)| {
                    (
                        key.clone(),
                        json!({
                            "min": stat.min.map(number),
                            "max": stat.max.map(number),
                            "nullCount": stat.nulls,
                            "emptyCount": items - stat.present,
                        }),
                    )
                })
                .collect(),
        )
    }
}
