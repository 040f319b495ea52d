//! The P2 operations that make sense on a self-hosted, single-server platform (ENDPOINTS.md
//! §2.1, §2.4, §2.5, §2.16, §2.17): input validation and the generated OpenAPI document of a
//! build, pay-per-event charges (refused: troupe Actors are free), account limits and usage
//! (troupe bills nothing), the public Actors of this server as its store, `browser-info`, and
//! signed values (`tools/encode-and-sign`, `tools/decode-and-verify`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Extension;
use axum::Router;
use base64::Engine;
use chrono::{Datelike, TimeZone, Utc};
use serde_json::{json, Map, Value};
use troupe_model::list::ListParams;
use troupe_model::{format_ts, now_ms};
use troupe_storage::RunFilter;

use super::actors::{resolve_build, ActorTarget};
use super::builds::BuildTarget;
use super::data;
use super::runs::RunTarget;
use crate::auth::{Auth, Caller};
use crate::body::{read_decoded, ApifyJson, DEFAULT_BODY_LIMIT};
use crate::client::{client_ip, PeerAddr};
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::state::AppState;

/// Routes outside the Actor, build and run routers.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/browser-info", any(browser_info))
        .route("/v2/tools/encode-and-sign", post(encode_and_sign))
        .route("/v2/tools/decode-and-verify", post(decode_and_verify))
        .route("/v2/users/me/limits", get(get_limits).put(put_limits))
        .route("/v2/users/me/usage/monthly", get(monthly_usage))
        .route("/v2/store", get(store))
}

// ---------------------------------------------------------------------------------------------
// browser-info

/// ANY /v2/browser-info — the caller's address and request headers, unwrapped (no token needed).
/// `clientIp` is what a reverse proxy in front reports in a trusted header
/// ([`crate::client::TRUSTED_HEADERS`]), else the address of the connection's peer.
async fn browser_info(
    method: Method,
    headers: HeaderMap,
    peer: Option<Extension<PeerAddr>>,
    params: Params,
    body: Bytes,
) -> ApiResult<Response> {
    let skip_headers = params.bool("skipHeaders", false)?;
    let raw_headers = params.bool("rawHeaders", false)?;
    let client_ip = client_ip(&headers, peer.map(|Extension(p)| p.0)).map(|ip| ip.to_string());
    let mut object = json!({
        "method": method.as_str(),
        "clientIp": client_ip,
        "countryCode": null,
        "bodyLength": body.len(),
    });
    if !skip_headers {
        let mut map = Map::new();
        for (name, value) in &headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match map.get_mut(name.as_str()) {
                Some(Value::Array(values)) => values.push(Value::String(value)),
                Some(existing) => {
                    let first = existing.take();
                    *existing = json!([first, value]);
                }
                None => {
                    map.insert(name.as_str().to_string(), Value::String(value));
                }
            }
        }
        object["headers"] = Value::Object(map);
    }
    if raw_headers {
        let raw: Vec<Value> = headers
            .iter()
            .flat_map(|(name, value)| {
                [
                    Value::String(name.as_str().to_string()),
                    Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
                ]
            })
            .collect();
        object["rawHeaders"] = Value::Array(raw);
    }
    Ok((StatusCode::OK, axum::Json(object)).into_response())
}

// ---------------------------------------------------------------------------------------------
// Signed values

/// What an encoded value holds: the payload as JSON text, who signed it, and the signature.
#[derive(serde::Serialize, serde::Deserialize)]
struct Signed {
    payload: String,
    #[serde(rename = "userId")]
    user_id: String,
    signature: String,
}

fn sign(state: &AppState, user_id: &str, payload: &str) -> String {
    troupe_model::signature::hmac_base62(
        &state.config.signing_secret,
        &format!("tools:{user_id}:{payload}"),
    )
}

/// POST /v2/tools/encode-and-sign — `{encoded}`: the body (any JSON object) signed for the caller.
async fn encode_and_sign(
    State(state): State<AppState>,
    Auth(user): Auth,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    if !body.is_object() {
        return Err(ApiError::invalid_input("The body must be a JSON object"));
    }
    let payload = body.to_string();
    let signed = Signed {
        signature: sign(&state, &user.id, &payload),
        payload,
        user_id: user.id.clone(),
    };
    let text = serde_json::to_vec(&signed).map_err(ApiError::internal)?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    Ok(data(StatusCode::OK, json!({ "encoded": encoded })))
}

/// POST /v2/tools/decode-and-verify — `{decoded, encodedByUserId, isVerifiedUser}` for a value made
/// by `encode-and-sign` on this server (no token needed). A value that does not decode is 400
/// `invalid-value`; one whose signature does not match (altered, or made elsewhere) is 400
/// `invalid-signature`.
async fn decode_and_verify(
    State(state): State<AppState>,
    _caller: Caller,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    let Some(encoded) = body.get("encoded").and_then(Value::as_str) else {
        return Err(ApiError::invalid_input(
            "The body must be {\"encoded\": \"...\"}",
        ));
    };
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-value",
            "The encoded value cannot be decoded",
        )
    };
    let text = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| invalid())?;
    let signed: Signed = serde_json::from_slice(&text).map_err(|_| invalid())?;
    let decoded: Value = serde_json::from_str(&signed.payload).map_err(|_| invalid())?;
    let expected = sign(&state, &signed.user_id, &signed.payload);
    if !constant_time_eq(expected.as_bytes(), signed.signature.as_bytes()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-signature",
            "The signature of the encoded value does not match",
        ));
    }
    Ok(data(
        StatusCode::OK,
        json!({
            "decoded": decoded,
            "encodedByUserId": signed.user_id,
            "isVerifiedUser": false,
        }),
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------------------------
// Limits and usage

/// `(start, end)` of the calendar month (UTC) holding `at_ms`, as Apify's usage cycle.
fn month_cycle(at_ms: i64) -> (i64, i64) {
    let at = Utc
        .timestamp_millis_opt(at_ms)
        .single()
        .unwrap_or_else(Utc::now);
    let start = Utc
        .with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .expect("first of a month");
    let (y, m) = if at.month() == 12 {
        (at.year() + 1, 1)
    } else {
        (at.year(), at.month() + 1)
    };
    let next = Utc
        .with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .expect("first of a month");
    (start.timestamp_millis(), next.timestamp_millis() - 1)
}

/// GET /v2/users/me/limits — troupe bills nothing and caps no usage: every monetary and proxy
/// limit is 0 (none), the memory limit is the server's run memory budget, and `current` counts
/// the caller's Actors, tasks and unfinished runs.
async fn get_limits(State(state): State<AppState>, Auth(user): Auth) -> ApiResult<Response> {
    let one = ListParams {
        offset: 0,
        limit: 1,
        desc: false,
    };
    let actors = state.storage.list_actors(&user.id, one).await?.total;
    let tasks = state.storage.list_tasks(&user.id, one).await?.total;
    let active = state
        .storage
        .list_runs(
            &user.id,
            RunFilter {
                act_id: None,
                statuses: vec![
                    troupe_model::actor::JobStatus::Ready,
                    troupe_model::actor::JobStatus::Running,
                    troupe_model::actor::JobStatus::Aborting,
                    troupe_model::actor::JobStatus::TimingOut,
                ],
                ..Default::default()
            },
            one,
        )
        .await?
        .total;
    let (start, end) = month_cycle(now_ms());
    let budget_gb = state.runner.config().max_memory_mbytes as f64 / 1024.0;
    Ok(data(
        StatusCode::OK,
        json!({
            "monthlyUsageCycle": { "startAt": format_ts(start), "endAt": format_ts(end) },
            "limits": {
                "maxMonthlyUsageUsd": 0,
                "maxMonthlyActorComputeUnits": 0,
                "maxMonthlyExternalDataTransferGbytes": 0,
                "maxMonthlyProxySerps": 0,
                "maxMonthlyResidentialProxyGbytes": 0,
                "maxActorMemoryGbytes": budget_gb,
                "maxActorCount": troupe_model::list::MAX_LIST_LIMIT * 1000,
                "maxActorTaskCount": troupe_model::list::MAX_LIST_LIMIT * 1000,
                "maxConcurrentActorJobs": troupe_model::list::MAX_LIST_LIMIT * 1000,
                "maxTeamAccountSeatCount": 0,
                "dataRetentionDays": 0,
            },
            "current": {
                "monthlyUsageUsd": 0,
                "monthlyActorComputeUnits": 0,
                "monthlyExternalDataTransferGbytes": 0,
                "monthlyProxySerps": 0,
                "monthlyResidentialProxyGbytes": 0,
                "actorMemoryGbytes": 0,
                "actorCount": actors,
                "actorTaskCount": tasks,
                "activeActorJobCount": active,
                "teamAccountSeatCount": 0,
            },
        }),
    ))
}

/// PUT /v2/users/me/limits — deliberately not implemented: troupe has no usage billing to cap,
/// and data retention is a server setting (`--retention`). 501 `not-implemented`, nothing changes.
async fn put_limits(Auth(_user): Auth) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not-implemented",
        "troupe has no account limits to change: it bills no usage, and data retention is the server's --retention setting",
    )
}

/// GET /v2/users/me/usage/monthly[?date=YYYY-MM-DD] — the cycle holding `date` (default: now)
/// with no usage (troupe bills nothing).
async fn monthly_usage(Auth(_user): Auth, params: Params) -> ApiResult<Response> {
    let at = match params.str("date") {
        None => now_ms(),
        Some(date) => chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc().timestamp_millis())
            .ok_or_else(|| {
                ApiError::invalid_parameter("Parameter \"date\" must be a date (YYYY-MM-DD)")
            })?,
    };
    let (start, end) = month_cycle(at);
    Ok(data(
        StatusCode::OK,
        json!({
            "usageCycle": { "startAt": format_ts(start), "endAt": format_ts(end) },
            "monthlyServiceUsage": {},
            "dailyServiceUsages": [],
            "totalUsageCreditsUsdBeforeVolumeDiscount": 0,
            "totalUsageCreditsUsdAfterVolumeDiscount": 0,
        }),
    ))
}

// ---------------------------------------------------------------------------------------------
// Store

/// GET /v2/store — the Actors of this server that their owners made public (`isPublic`), every
/// user's; `search` (name, title, description), `username`, `category`, `pricingModel` (only
/// `FREE` matches), `sortBy` (`title`, `createdAt`, default the name), `offset`/`limit`.
async fn store(State(state): State<AppState>, params: Params) -> ApiResult<Response> {
    let list = params.list_params()?;
    let search = params.str("search").map(str::to_lowercase);
    let username = params.str("username");
    let category = params.str("category");
    if let Some(model) = params.str("pricingModel") {
        const MODELS: [&str; 4] = [
            "FREE",
            "FLAT_PRICE_PER_MONTH",
            "PRICE_PER_DATASET_ITEM",
            "PAY_PER_EVENT",
        ];
        if !MODELS.contains(&model) {
            return Err(ApiError::invalid_parameter(format!(
                "Parameter \"pricingModel\" must be one of {}",
                MODELS.join(", ")
            )));
        }
    }
    let free_only = params.str("pricingModel").is_none_or(|m| m == "FREE");
    let mut actors = Vec::new();
    for user in state.storage.list_users().await? {
        if username.is_some_and(|u| u != user.username) {
            continue;
        }
        let page = state
            .storage
            .list_actors(&user.id, ListParams::default())
            .await?;
        actors.extend(
            page.items
                .into_iter()
                .filter(|a| a.extra.get("isPublic") == Some(&Value::Bool(true))),
        );
    }
    let text = |a: &troupe_model::actor::Actor, key: &str| {
        a.extra
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    actors.retain(|a| {
        free_only
            && search.as_ref().is_none_or(|s| {
                a.name.to_lowercase().contains(s)
                    || text(a, "title").to_lowercase().contains(s)
                    || text(a, "description").to_lowercase().contains(s)
            })
            && category.is_none_or(|c| {
                a.extra
                    .get("categories")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| cs.iter().any(|x| x.as_str() == Some(c)))
            })
    });
    match params.str("sortBy") {
        Some("title") => actors.sort_by_key(|a| text(a, "title")),
        Some("createdAt") => actors.sort_by_key(|a| a.created_at),
        _ => actors.sort_by(|a, b| (&a.username, &a.name).cmp(&(&b.username, &b.name))),
    }
    if list.desc {
        actors.reverse();
    }
    let total = actors.len() as u64;
    let base = state.api_base();
    let items: Vec<Value> = actors
        .iter()
        .skip(list.offset as usize)
        .take(list.limit as usize)
        .map(|a| {
            let title = text(a, "title");
            json!({
                "id": a.id,
                "title": if title.is_empty() { a.name.clone() } else { title },
                "name": a.name,
                "username": a.username,
                "description": a.extra.get("description").cloned().unwrap_or(Value::Null),
                "categories": a.extra.get("categories").cloned().unwrap_or(json!([])),
                "url": format!("{base}/acts/{}", a.id),
                "stats": {},
                "currentPricingInfo": { "pricingModel": "FREE" },
            })
        })
        .collect();
    Ok(data(
        StatusCode::OK,
        json!({
            "total": total,
            "offset": list.offset,
            "limit": list.limit,
            "count": items.len(),
            "desc": list.desc,
            "items": items,
        }),
    ))
}

// ---------------------------------------------------------------------------------------------
// Actor input and builds

/// POST /v2/actors/{actorId}/validate-input[?build=] — checks a JSON input against the input
/// schema of a build (default: the Actor's default build): `{"valid": true}` (unwrapped), or 400
/// `invalid-input` saying what is wrong. A build without an input schema accepts any object.
pub async fn validate_input(
    State(state): State<AppState>,
    ActorTarget(actor, _): ActorTarget,
    params: Params,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Response> {
    let bytes = read_decoded(&headers, body, DEFAULT_BODY_LIMIT).await?;
    let input: Value = serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::invalid_input("The input is not valid JSON"))?;
    let build = resolve_build(&state, &actor, params.str("build")).await?;
    let schema = build
        .input_schema
        .as_deref()
        .and_then(|s| serde_json::from_str::<Value>(s).ok());
    check_input(schema.as_ref(), &input)
        .map_err(|message| ApiError::invalid_input(format!("Input is not valid: {message}")))?;
    Ok((StatusCode::OK, axum::Json(json!({ "valid": true }))).into_response())
}

/// Checks `input` against an Apify input schema: an object; every `required` field present and
/// not `null`; each given field of the declared `type`, one of its `enum` values, within
/// `minimum`/`maximum` (numbers), `minLength`/`maxLength` (strings) and `minItems`/`maxItems`
/// (arrays). Fields the schema does not declare are allowed.
pub fn check_input(schema: Option<&Value>, input: &Value) -> Result<(), String> {
    let Some(object) = input.as_object() else {
        return Err("the input must be a JSON object".into());
    };
    let Some(schema) = schema else {
        return Ok(());
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if object.get(name).is_none_or(Value::is_null) {
                return Err(format!("field input.{name} is required"));
            }
        }
    }
    let Some(properties) = properties else {
        return Ok(());
    };
    for (name, property) in properties {
        let Some(value) = object.get(name) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let number = |key: &str| property.get(key).and_then(Value::as_f64);
        let ty = property.get("type").and_then(Value::as_str).unwrap_or("");
        let type_ok = match ty {
            "string" => value.is_string(),
            "integer" => value.as_f64().is_some_and(|f| f.fract() == 0.0),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => true,
        };
        if !type_ok {
            return Err(format!("field input.{name} must be {ty}"));
        }
        if let Some(options) = property.get("enum").and_then(Value::as_array) {
            if !options.contains(value) {
                return Err(format!(
                    "field input.{name} must be one of {}",
                    Value::Array(options.clone())
                ));
            }
        }
        let measured = match value {
            Value::Number(n) => n.as_f64().map(|v| (v, "minimum", "maximum")),
            Value::String(s) => Some((s.chars().count() as f64, "minLength", "maxLength")),
            Value::Array(a) => Some((a.len() as f64, "minItems", "maxItems")),
            _ => None,
        };
        if let Some((v, min_key, max_key)) = measured {
            if let Some(min) = number(min_key) {
                if v < min {
                    return Err(format!("field input.{name} is below its {min_key} {min}"));
                }
            }
            if let Some(max) = number(max_key) {
                if v > max {
                    return Err(format!("field input.{name} is above its {max_key} {max}"));
                }
            }
        }
    }
    Ok(())
}

/// GET .../builds/{buildId}/openapi.json — an OpenAPI 3 document for running this build's Actor
/// (`run-sync-get-dataset-items`, `runs`, `run-sync`), its input schema as the request body
/// schema. Unwrapped; no token needed (as the build itself).
pub async fn build_openapi(
    State(state): State<AppState>,
    BuildTarget(build): BuildTarget,
) -> ApiResult<Response> {
    let actor = state
        .storage
        .get_actor(&build.act_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Actor was not found"))?;
    Ok((
        StatusCode::OK,
        axum::Json(openapi_document(&state, &actor, &build)),
    )
        .into_response())
}

/// The input schema as a JSON schema (only the keywords JSON schema knows).
fn input_json_schema(schema: Option<&Value>) -> Value {
    const KEEP: [&str; 15] = [
        "type",
        "title",
        "description",
        "enum",
        "default",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "items",
        "properties",
        "pattern",
        "nullable",
    ];
    let mut properties = Map::new();
    if let Some(declared) = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
    {
        for (name, property) in declared {
            let kept: Map<String, Value> = property
                .as_object()
                .map(|p| {
                    p.iter()
                        .filter(|(k, _)| KEEP.contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            properties.insert(name.clone(), Value::Object(kept));
        }
    }
    let mut out = json!({ "type": "object", "properties": properties });
    if let Some(required) = schema.and_then(|s| s.get("required")) {
        out["required"] = required.clone();
    }
    out
}

fn openapi_document(
    state: &AppState,
    actor: &troupe_model::actor::Actor,
    build: &troupe_model::actor::Build,
) -> Value {
    let schema = build
        .input_schema
        .as_deref()
        .and_then(|s| serde_json::from_str::<Value>(s).ok());
    let path = format!("/acts/{}~{}", actor.username, actor.name);
    let token = json!([{
        "name": "token", "in": "query", "required": true,
        "description": "API token", "schema": { "type": "string" },
    }]);
    let body = json!({
        "required": true,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/inputSchema" } } },
    });
    let operation = |id: &str, summary: &str, response: Value| {
        json!({
            "post": {
                "operationId": format!("{id}-{}-{}", actor.username, actor.name),
                "x-openai-isConsequential": false,
                "summary": summary,
                "tags": ["Run Actor"],
                "requestBody": body,
                "parameters": token,
                "responses": { "200": response },
            }
        })
    };
    let title = actor
        .extra
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or(&actor.name);
    json!({
        "openapi": "3.0.1",
        "info": {
            "title": title,
            "description": actor.extra.get("description").cloned().unwrap_or(Value::String(String::new())),
            "version": build.build_number,
            "x-build-id": build.id,
        },
        "servers": [{ "url": state.api_base() }],
        "paths": {
            format!("{path}/run-sync-get-dataset-items"): operation(
                "run-sync-get-dataset-items",
                "Executes an Actor, waits for its completion, and returns Actor's dataset items in response.",
                json!({ "description": "OK" }),
            ),
            format!("{path}/runs"): operation(
                "runs-sync",
                "Executes an Actor and returns information about the initiated run in response.",
                json!({
                    "description": "OK",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/runsResponseSchema" } } },
                }),
            ),
            format!("{path}/run-sync"): operation(
                "run-sync",
                "Executes an Actor, waits for completion, and returns the OUTPUT from Key-value store in response.",
                json!({ "description": "OK" }),
            ),
        },
        "components": {
            "schemas": {
                "inputSchema": input_json_schema(schema.as_ref()),
                "runsResponseSchema": {
                    "type": "object",
                    "properties": {
                        "data": {
                            "type": "object",
                            "properties": {
                                "id": { "type": "string" },
                                "actId": { "type": "string" },
                                "userId": { "type": "string" },
                                "startedAt": { "type": "string", "format": "date-time" },
                                "finishedAt": { "type": "string", "format": "date-time" },
                                "status": { "type": "string" },
                                "defaultKeyValueStoreId": { "type": "string" },
                                "defaultDatasetId": { "type": "string" },
                                "defaultRequestQueueId": { "type": "string" },
                            },
                        },
                    },
                },
            },
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Charge

/// POST /v2/actor-runs/{runId}/charge — pay-per-event charging. troupe Actors are all `FREE`
/// (`APIFY_ACTOR_PRICING_INFO`), so a well-formed charge is refused as Apify refuses it for an
/// Actor that is not pay-per-event: 400 `cannot-charge-non-pay-per-event-actor`, nothing recorded.
/// A malformed body is 400 `invalid-input`; only the run's owner (or the run itself) may charge.
pub async fn charge_run(
    RunTarget(run): RunTarget,
    caller: Caller,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    let user = caller.require()?;
    if user.id != run.user_id {
        return Err(ApiError::insufficient_permissions(
            "Only the run's owner can charge events in it",
        ));
    }
    let event = body.get("eventName").and_then(Value::as_str);
    let count = body.get("count").map(|c| c.as_u64().filter(|&n| n >= 1));
    match (event, count) {
        (Some(name), Some(Some(_)) | None) if !name.is_empty() => {}
        _ => {
            return Err(ApiError::invalid_input(
                "The body must be {\"eventName\": string, \"count\": positive integer}",
            ))
        }
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "cannot-charge-non-pay-per-event-actor",
        "This Actor is not pay-per-event (troupe runs every Actor as FREE), so its runs cannot charge events",
    ))
}
