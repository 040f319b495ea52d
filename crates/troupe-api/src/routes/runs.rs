//! Actor runs (ENDPOINTS.md §2.5): the run object and its operations, written once relative to
//! the run (`run_routes`) and mounted under `/v2/actor-runs/{runId}` and the deprecated
//! `/v2/acts|actors/{actorId}/runs/{runId}`; the global listing; starting runs (shared with the
//! per-Actor routes); and the resolution of a run's default storages for the run-based prefixes.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, RawPathParams, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use troupe_model::actor::{Actor, Build, JobStatus, Run, RunCounters, RunExtras, RUN_ORIGINS};
use troupe_model::storage::{StorageKind, StorageOrigin};
use troupe_model::user::User;
use troupe_model::{format_ts, now_ms, DEFAULT_GENERAL_ACCESS, GENERAL_ACCESS_VALUES};
use troupe_storage::RunFilter;

use super::actors::{find_actor, find_actor_id, resolve_build};
use super::{data, no_content};
use crate::auth::{Auth, Caller};
use crate::body::{read_decoded, ApifyJson, DEFAULT_BODY_LIMIT};
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::resolve::{check_access, path_and_caller, path_map, Access, AddressedBy};
use crate::router::Routes;
use crate::state::AppState;

/// Longest `waitForFinish` honoured (seconds).
pub const MAX_WAIT_SECS: u64 = 60;

/// The id of the default storage of `kind` of the run a path names (`runId`, or the last run
/// of `actorId` matching `status`/`origin`).
pub async fn run_storage_id(
    state: &AppState,
    caller: &Caller,
    kind: StorageKind,
    path: &HashMap<String, String>,
    params: &Params,
    access: Access,
) -> ApiResult<String> {
    let run = resolve_run(state, caller, path, params, access).await?;
    Ok(match kind {
        StorageKind::Dataset => run.default_dataset_id,
        StorageKind::KeyValueStore => run.default_key_value_store_id,
        StorageKind::RequestQueue => run.default_request_queue_id,
    })
}

/// Finds the run a path names and checks access: `runId` (with `actorId`, the run must belong
/// to that Actor), or the last run of `actorId` (path `runs/last`, or no `runId` at all).
pub async fn resolve_run(
    state: &AppState,
    caller: &Caller,
    path: &HashMap<String, String>,
    params: &Params,
    access: Access,
) -> ApiResult<Run> {
    let not_found = || ApiError::not_found("Actor run was not found");
    let run_id = path.get("runId").map(String::as_str);
    let actor_ref = path.get("actorId");
    if let (Some(run_id), false) = (run_id, run_id == Some("last") && actor_ref.is_some()) {
        let run = state.storage.get_run(run_id).await?.ok_or_else(not_found)?;
        if let Some(actor_ref) = actor_ref {
            let actor_id = find_actor_id(state, caller, actor_ref)
                .await?
                .ok_or_else(|| ApiError::not_found("Actor was not found"))?;
            if actor_id != run.act_id {
                return Err(not_found());
            }
        }
        check_access(
            caller,
            &run.user_id,
            &run.general_access,
            &AddressedBy::Id,
            access,
            false,
        )?;
        return Ok(run);
    }
    if let Some(task_ref) = path.get("actorTaskId") {
        return super::tasks::last_task_run(state, caller, task_ref, params).await;
    }
    let Some(actor_ref) = actor_ref else {
        return Err(not_found());
    };
    last_actor_run(state, caller, actor_ref, params).await
}

/// The caller's last run of the Actor `actor_ref` matching the `status`/`origin` filters.
async fn last_actor_run(
    state: &AppState,
    caller: &Caller,
    actor_ref: &str,
    params: &Params,
) -> ApiResult<Run> {
    // "Last run" is always resolved for the token's owner.
    let user = caller.require()?;
    let (status, origin) = last_run_filters(params)?;
    let actor_id = find_actor_id(state, caller, actor_ref)
        .await?
        .ok_or_else(|| ApiError::not_found("Actor was not found"))?;
    state
        .storage
        .last_run(&user.id, &actor_id, status, origin)
        .await?
        .ok_or_else(|| ApiError::not_found("Actor run was not found"))
}

/// The `status` (one value) and `origin` filters of a "last run" path.
pub fn last_run_filters(params: &Params) -> ApiResult<(Option<JobStatus>, Option<&str>)> {
    let status = match params.str("status") {
        None => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "Parameter \"status\" has an invalid value \"{s}\""
            ))
        })?),
    };
    let origin = params.str("origin");
    if let Some(origin) = origin {
        if !RUN_ORIGINS.contains(&origin) {
            return Err(ApiError::invalid_parameter(format!(
                "Parameter \"origin\" must be one of: {}",
                RUN_ORIGINS.join(", ")
            )));
        }
    }
    Ok((status, origin))
}

/// The run a request path names, access checked.
pub struct RunTarget(pub Run);

impl FromRequestParts<AppState> for RunTarget {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (path, caller) = path_and_caller(parts, state).await?;
        let params = Params::parse(parts.uri.query())?;
        let access = Access::of(&parts.method);
        Ok(RunTarget(
            resolve_run(state, &caller, &path, &params, access).await?,
        ))
    }
}

/// Routes of one run, relative to it.
pub fn run_routes() -> Routes {
    Routes::new()
        .route("/", get(get_run).put(update_run).delete(delete_run))
        .route("/abort", post(abort_run))
        .route("/metamorph", post(metamorph_run))
        .route("/reboot", post(reboot_run))
        .route("/resurrect", post(resurrect_run))
        .route("/charge", post(super::platform::charge_run))
        .route("/log", get(super::logs::get_run_log))
        .route("/events-websocket", get(events_websocket))
}

/// `/v2/actor-runs` (the caller's runs of every Actor).
pub fn collection_routes() -> Router<AppState> {
    Router::new().route("/v2/actor-runs", get(list_all_runs))
}

/// The run object in Apify's shape (every field the strict Python client requires), serialised
/// straight from the run (no JSON tree on the way).
pub fn run_json<'a>(state: &AppState, run: &'a Run, caller: Option<&str>) -> RunJson<'a> {
    let owner = caller == Some(run.user_id.as_str());
    let end = run.finished_at.unwrap_or_else(now_ms);
    let duration = (end - run.started_at).max(0);
    let c = &run.counters;
    let usage = owner.then_some(ComputeUnits {
        actor_compute_units: 0,
    });
    RunJson {
        id: &run.id,
        act_id: &run.act_id,
        user_id: &run.user_id,
        actor_task_id: run.actor_task_id.as_deref(),
        started_at: format_ts(run.started_at),
        finished_at: run.finished_at.map(format_ts),
        status: run.status.as_str(),
        status_message: run.status_message.as_deref(),
        is_status_message_terminal: run.is_status_message_terminal,
        meta: RunMeta {
            origin: &run.origin,
            client_ip: run.client_ip.as_deref(),
            user_agent: run.user_agent.as_deref(),
            schedule_id: run.schedule_id.as_deref(),
            scheduled_at: run.scheduled_at.map(format_ts),
        },
        stats: RunStats {
            input_body_len: c.input_body_len,
            migration_count: 0,
            reboot_count: c.reboot_count,
            restart_count: c.restart_count,
            resurrect_count: c.resurrect_count,
            mem_avg_bytes: c.mem_max_bytes,
            mem_max_bytes: c.mem_max_bytes,
            mem_current_bytes: c.mem_current_bytes,
            cpu_avg_usage: c.cpu_max_usage,
            cpu_max_usage: c.cpu_max_usage,
            cpu_current_usage: c.cpu_current_usage,
            net_rx_bytes: 0,
            net_tx_bytes: 0,
            duration_millis: duration,
            run_time_secs: duration as f64 / 1000.0,
            metamorph: c.metamorph_count,
            compute_units: 0,
        },
        options: RunOptionsJson {
            build: &run.build_option,
            timeout_secs: run.timeout_secs,
            memory_mbytes: run.memory_mbytes,
            disk_mbytes: run.memory_mbytes * 2,
            max_items: run.max_items,
        },
        build_id: &run.build_id,
        build_number: &run.build_number,
        build_number_int: troupe_model::actor::build_number_int(&run.build_number),
        exit_code: run.exit_code,
        general_access: &run.general_access,
        default_key_value_store_id: &run.default_key_value_store_id,
        default_dataset_id: &run.default_dataset_id,
        default_request_queue_id: &run.default_request_queue_id,
        storage_ids: StorageIds {
            datasets: AliasIds::new(run, "datasets", &run.default_dataset_id),
            key_value_stores: AliasIds::new(run, "keyValueStores", &run.default_key_value_store_id),
            request_queues: AliasIds::new(run, "requestQueues", &run.default_request_queue_id),
        },
        container_url: run
            .extras
            .container_port
            .map(|port| format!("http://127.0.0.1:{port}")),
        is_container_server_ready: false,
        git_branch_name: run.extras.git_branch_name.as_deref(),
        charged_event_counts: Empty {},
        metamorphs: &run.metamorphs,
        platform_usage_billing_model: "USER",
        console_url: format!("{}/actor-runs/{}", state.api_base(), run.id),
        usage,
        usage_total_usd: owner.then_some(0),
        usage_usd: usage,
    }
}

/// See [`run_json`]; fields in Apify's order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunJson<'a> {
    id: &'a str,
    act_id: &'a str,
    user_id: &'a str,
    actor_task_id: Option<&'a str>,
    started_at: String,
    finished_at: Option<String>,
    status: &'a str,
    status_message: Option<&'a str>,
    is_status_message_terminal: Option<bool>,
    meta: RunMeta<'a>,
    stats: RunStats,
    options: RunOptionsJson<'a>,
    build_id: &'a str,
    build_number: &'a str,
    build_number_int: u64,
    exit_code: Option<i32>,
    general_access: &'a str,
    default_key_value_store_id: &'a str,
    default_dataset_id: &'a str,
    default_request_queue_id: &'a str,
    storage_ids: StorageIds<'a>,
    /// The run's web server (`ACTOR_WEB_SERVER_URL`), once a process was started.
    #[serde(skip_serializing_if = "Option::is_none")]
    container_url: Option<String>,
    is_container_server_ready: bool,
    git_branch_name: Option<&'a str>,
    charged_event_counts: Empty,
    metamorphs: &'a [Value],
    platform_usage_billing_model: &'static str,
    console_url: String,
    /// The three usage fields only for the run's owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<ComputeUnits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_total_usd: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_usd: Option<ComputeUnits>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunMeta<'a> {
    origin: &'a str,
    client_ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    schedule_id: Option<&'a str>,
    scheduled_at: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunStats {
    input_body_len: u64,
    migration_count: u64,
    reboot_count: u64,
    restart_count: u64,
    resurrect_count: u64,
    mem_avg_bytes: u64,
    mem_max_bytes: u64,
    mem_current_bytes: u64,
    cpu_avg_usage: f64,
    cpu_max_usage: f64,
    cpu_current_usage: f64,
    net_rx_bytes: u64,
    net_tx_bytes: u64,
    duration_millis: i64,
    run_time_secs: f64,
    metamorph: u64,
    compute_units: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunOptionsJson<'a> {
    build: &'a str,
    timeout_secs: u64,
    memory_mbytes: u64,
    disk_mbytes: u64,
    max_items: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StorageIds<'a> {
    datasets: AliasIds<'a>,
    key_value_stores: AliasIds<'a>,
    request_queues: AliasIds<'a>,
}

/// `{"default": id, alias: id, ...}` of one storage kind.
struct AliasIds<'a> {
    default: &'a str,
    run: &'a Run,
    kind: &'static str,
}

impl<'a> AliasIds<'a> {
    fn new(run: &'a Run, kind: &'static str, default: &'a str) -> Self {
        Self { default, run, kind }
    }
}

impl Serialize for AliasIds<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("default", self.default)?;
        for (kind, alias, id) in &self.run.extras.storage_aliases {
            if kind == self.kind {
                map.serialize_entry(alias, id)?;
            }
        }
        map.end()
    }
}

/// `{}`.
#[derive(Serialize)]
struct Empty {}

#[derive(Serialize, Clone, Copy)]
struct ComputeUnits {
    #[serde(rename = "ACTOR_COMPUTE_UNITS")]
    actor_compute_units: u64,
}

/// `waitForFinish` in seconds, capped at [`MAX_WAIT_SECS`].
pub fn wait_param(params: &Params) -> ApiResult<Duration> {
    Ok(Duration::from_secs(
        params.u64("waitForFinish")?.unwrap_or(0).min(MAX_WAIT_SECS),
    ))
}

/// Waits for a run (if asked) and answers with it.
async fn respond_run(
    state: &AppState,
    run: Run,
    wait: Duration,
    caller: Option<&str>,
    status: StatusCode,
) -> ApiResult<Response> {
    let run = if wait.is_zero() || run.status.is_terminal() {
        run
    } else {
        state
            .runner
            .wait_run(&run.id, wait)
            .await
            .map_err(runner_error)?
            .unwrap_or(run)
    };
    Ok(data(status, run_json(state, &run, caller)))
}

pub fn runner_error(err: troupe_runner::Error) -> ApiError {
    match err {
        troupe_runner::Error::Storage(err) => err.into(),
        troupe_runner::Error::Invalid(message) => ApiError::memory_limit_exceeded(message),
    }
}

/// GET .../runs/{runId}[?waitForFinish=N]
async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
    request: axum::extract::Request,
) -> ApiResult<Response> {
    let (mut parts, _) = request.into_parts();
    let raw = RawPathParams::from_request_parts(&mut parts, &state)
        .await
        .map_err(|err| ApiError::invalid_parameter(err.to_string()))?;
    let mut actor_ref = None;
    let mut other = false;
    for (name, value) in raw.iter() {
        match name {
            "actorId" => actor_ref = Some(value),
            _ => other = true,
        }
    }
    if let (Some(actor_ref), false) = (actor_ref, other) {
        return get_last_actor_run(&state, &caller, actor_ref, &params).await;
    }
    let run = resolve_run(&state, &caller, &path_map(&raw), &params, Access::Read).await?;
    let wait = wait_param(&params)?;
    respond_run(&state, run, wait, caller.user_id(), StatusCode::OK).await
}

/// GET /v2/acts/{actorId}/runs/last: the hot "last run" lookup. A finished run's answer is
/// cached by (user, Actor id, filters) at the Actor's runs version (see
/// `RunStore::runs_version`): any write to a run of the Actor, or its deletion, makes the
/// next request read storage again. Actors named by name are not cached (a name can come to mean
/// another Actor).
async fn get_last_actor_run(
    state: &AppState,
    caller: &Caller,
    actor_ref: &str,
    params: &Params,
) -> ApiResult<Response> {
    let user = caller.require()?;
    let (status, origin) = last_run_filters(params)?;
    // Read before storage is: a write acknowledged later changes it.
    let version = state.storage.runs_version(actor_ref);
    let key = version.map(|_| {
        format!(
            "{}\n{actor_ref}\n{}\n{}",
            user.id,
            status.map_or("", JobStatus::as_str),
            origin.unwrap_or("")
        )
    });
    if let (Some(version), Some(key)) = (version, &key) {
        if let Some(body) = state.last_runs.get(key, version) {
            wait_param(params)?;
            return Ok(super::json_body(StatusCode::OK, body));
        }
    }
    let run = last_actor_run(state, caller, actor_ref, params).await?;
    let wait = wait_param(params)?;
    let finished = run.status.is_terminal() && run.finished_at.is_some();
    if let (true, true, Some(version), Some(key)) =
        (finished, run.act_id == actor_ref, version, key)
    {
        let body = super::data_body(run_json(state, &run, Some(&user.id)))?;
        state.last_runs.put(key, version, body.clone());
        return Ok(super::json_body(StatusCode::OK, body));
    }
    respond_run(state, run, wait, caller.user_id(), StatusCode::OK).await
}

/// PUT .../runs/{runId} — `statusMessage`, `isStatusMessageTerminal`, `generalAccess`.
async fn update_run(
    State(state): State<AppState>,
    caller: Caller,
    RunTarget(run): RunTarget,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    let Value::Object(body) = body else {
        return Err(ApiError::invalid_input(
            "Request body must be a JSON object",
        ));
    };
    let message = match body.get("statusMessage") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.chars().take(4096).collect::<String>())),
        Some(_) => {
            return Err(ApiError::invalid_input(
                "Field \"statusMessage\" must be a string",
            ))
        }
    };
    let terminal = match body.get("isStatusMessageTerminal") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(ApiError::invalid_input(
                "Field \"isStatusMessageTerminal\" must be a boolean",
            ))
        }
    };
    let access = match body.get("generalAccess") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) if GENERAL_ACCESS_VALUES.contains(&a.as_str()) => Some(a.clone()),
        Some(_) => {
            return Err(ApiError::invalid_input(format!(
                "Field \"generalAccess\" must be one of: {}",
                GENERAL_ACCESS_VALUES.join(", ")
            )))
        }
    };
    let run = state
        .storage
        .update_run(
            &run.id,
            Box::new(move |r: &mut Run| {
                if let Some(message) = message {
                    r.status_message = message;
                    r.is_status_message_terminal = Some(terminal.unwrap_or(false));
                } else if let Some(terminal) = terminal {
                    r.is_status_message_terminal = Some(terminal);
                }
                if let Some(access) = access {
                    r.general_access = access;
                }
                Ok(())
            }),
        )
        .await?;
    state.runner.notify();
    Ok(data(
        StatusCode::OK,
        run_json(&state, &run, caller.user_id()),
    ))
}

/// DELETE .../runs/{runId} — finished runs only (their storages stay).
async fn delete_run(
    State(state): State<AppState>,
    RunTarget(run): RunTarget,
) -> ApiResult<Response> {
    if !run.status.is_terminal() {
        return Err(ApiError::cannot_remove_running_run());
    }
    state.storage.delete_run(&run.id).await?;
    troupe_runner::remove_run_files(&state.runner.config().data_dir, &run.id);
    Ok(no_content())
}

/// POST .../abort[?gracefully=1]
async fn abort_run(
    State(state): State<AppState>,
    caller: Caller,
    RunTarget(run): RunTarget,
    params: Params,
) -> ApiResult<Response> {
    let graceful = params.bool("gracefully", false)?;
    let run = state
        .runner
        .abort_run(&run.id, graceful)
        .await
        .map_err(runner_error)?;
    Ok(data(
        StatusCode::OK,
        run_json(&state, &run, caller.user_id()),
    ))
}

/// POST .../reboot — restart the process of a RUNNING run, same storages.
async fn reboot_run(
    State(state): State<AppState>,
    caller: Caller,
    RunTarget(run): RunTarget,
) -> ApiResult<Response> {
    require_live(&state, &run, "rebooted")?;
    let run = state
        .storage
        .update_run(
            &run.id,
            Box::new(|r: &mut Run| {
                r.counters.reboot_count += 1;
                Ok(())
            }),
        )
        .await?;
    state.runner.restart_run(&run.id);
    Ok(data(
        StatusCode::OK,
        run_json(&state, &run, caller.user_id()),
    ))
}

/// A run whose process is running (reboot and metamorph restart it), else `job-finished`.
fn require_live(state: &AppState, run: &Run, done: &str) -> ApiResult<()> {
    if run.status == JobStatus::Running && state.runner.is_live(&run.id) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "job-finished",
            format!("Only a RUNNING run can be {done}"),
        ))
    }
}

/// POST .../metamorph?targetActorId=&build= — the body becomes `INPUT-METAMORPH-N` and the
/// target Actor's build replaces the process, same run id and storages.
async fn metamorph_run(
    State(state): State<AppState>,
    caller: Caller,
    RunTarget(run): RunTarget,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let user = caller.require()?.clone();
    require_live(&state, &run, "metamorphed")?;
    let target_ref = params
        .str("targetActorId")
        .ok_or_else(|| ApiError::parameter_required("targetActorId"))?;
    let target = find_actor(&state, &caller, target_ref)
        .await?
        .ok_or_else(|| ApiError::not_found("Target Actor was not found"))?;
    let build = resolve_build(&state, &target, params.str("build")).await?;
    let input = read_input(&headers, body).await?;
    let n = run.counters.metamorph_count + 1;
    let key = format!("INPUT-METAMORPH-{n}");
    if let Some((bytes, content_type)) = input {
        put_input_record(
            &state,
            &user,
            &run.default_key_value_store_id,
            &key,
            bytes,
            &content_type,
        )
        .await?;
    }
    let entry = json!({
        "createdAt": format_ts(now_ms()),
        "actorId": target.id,
        "buildId": build.id,
        "inputKey": key,
    });
    let run = state
        .storage
        .update_run(
            &run.id,
            Box::new(move |r: &mut Run| {
                r.counters.metamorph_count = n;
                r.build_id = build.id.clone();
                r.build_number = build.build_number.clone();
                // `gitBranchName` follows `buildId`.
                r.extras.git_branch_name = build.git_branch_name.clone();
                r.input_key = key;
                r.metamorphs.push(entry);
                Ok(())
            }),
        )
        .await?;
    state.runner.restart_run(&run.id);
    Ok(data(
        StatusCode::OK,
        run_json(&state, &run, caller.user_id()),
    ))
}

/// POST .../resurrect — a finished run starts again with the same id and storages.
async fn resurrect_run(
    State(state): State<AppState>,
    caller: Caller,
    RunTarget(run): RunTarget,
    params: Params,
) -> ApiResult<Response> {
    caller.require()?;
    if !run.status.is_terminal() {
        return Ok(data(
            StatusCode::OK,
            run_json(&state, &run, caller.user_id()),
        ));
    }
    let options = RunOptions::from_params(&params)?;
    let actor = state
        .storage
        .get_actor(&run.act_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Actor was not found"))?;
    let build = match &options.build {
        Some(b) => Some(resolve_build(&state, &actor, Some(b)).await?),
        None => None,
    };
    let run = state
        .storage
        .update_run(
            &run.id,
            Box::new(move |r: &mut Run| {
                r.status = JobStatus::Ready;
                r.finished_at = None;
                r.exit_code = None;
                r.status_message = None;
                r.is_status_message_terminal = None;
                r.attempt_started_at = 0;
                r.counters.resurrect_count += 1;
                if let Some(build) = build {
                    r.build_id = build.id;
                    r.build_number = build.build_number;
                    r.build_option = options.build.unwrap_or_default();
                }
                if let Some(t) = options.timeout_secs {
                    r.timeout_secs = t;
                }
                if let Some(m) = options.memory_mbytes {
                    r.memory_mbytes = m;
                }
                if let Some(max) = options.max_items {
                    r.max_items = Some(max);
                }
                if let Some(restart) = options.restart_on_error {
                    r.extras.restart_on_error = restart;
                }
                Ok(())
            }),
        )
        .await?;
    state.runner.emit(Some(troupe_runner::JobEvent::Run {
        event_type: "ACTOR.RUN.RESURRECTED",
        run: run.clone(),
    }));
    state.runner.start_run(&run).map_err(runner_error)?;
    state.runner.notify();
    Ok(data(
        StatusCode::OK,
        run_json(&state, &run, caller.user_id()),
    ))
}

/// GET /v2/actor-runs — the caller's runs (`status` comma list, `desc`, paging).
async fn list_all_runs(
    State(state): State<AppState>,
    Auth(user): Auth,
    params: Params,
) -> ApiResult<Response> {
    list_runs(&state, &user, None, &params).await
}

/// Lists runs, of one Actor or all.
pub async fn list_runs(
    state: &AppState,
    user: &User,
    act_id: Option<String>,
    params: &Params,
) -> ApiResult<Response> {
    let list = params.list_params()?;
    let filter = run_filter(params, act_id)?;
    let page = state.storage.list_runs(&user.id, filter, list).await?;
    let page = page.map(|run| run_short_json(&run));
    Ok(data(StatusCode::OK, page))
}

/// The filters of a run listing: `status` (comma list), `startedAfter` and `startedBefore`
/// (ISO 8601, both inclusive).
pub fn run_filter(params: &Params, act_id: Option<String>) -> ApiResult<RunFilter> {
    let mut statuses = Vec::new();
    for s in params.list("status") {
        statuses.push(JobStatus::parse(&s).ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "Parameter \"status\" has an invalid value \"{s}\""
            ))
        })?);
    }
    let time = |name: &str| -> ApiResult<Option<i64>> {
        params
            .str(name)
            .map(|s| {
                troupe_model::time::parse_ts(s).ok_or_else(|| {
                    ApiError::invalid_parameter(format!(
                        "Parameter \"{name}\" must be an ISO 8601 date-time, got \"{s}\""
                    ))
                })
            })
            .transpose()
    };
    Ok(RunFilter {
        act_id,
        statuses,
        started_after: time("startedAfter")?,
        started_before: time("startedBefore")?,
    })
}

pub fn run_short_json(run: &Run) -> Value {
    json!({
        "id": run.id,
        "actId": run.act_id,
        "userId": run.user_id,
        "actorTaskId": run.actor_task_id,
        "status": run.status.as_str(),
        "startedAt": format_ts(run.started_at),
        "finishedAt": run.finished_at.map(format_ts),
        "buildId": run.build_id,
        "buildNumber": run.build_number,
        "buildNumberInt": troupe_model::actor::build_number_int(&run.build_number),
        "meta": { "origin": run.origin },
        "usageTotalUsd": 0,
        "defaultKeyValueStoreId": run.default_key_value_store_id,
        "defaultDatasetId": run.default_dataset_id,
        "defaultRequestQueueId": run.default_request_queue_id,
    })
}

/// GET .../events-websocket — the run's platform events (SDK-CONTRACT.md §4). Only the run's
/// owner (its token) may listen; the socket closes when the run ends.
async fn events_websocket(
    State(state): State<AppState>,
    caller: Caller,
    RunTarget(run): RunTarget,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    if caller.user_id() != Some(run.user_id.as_str()) {
        return Err(ApiError::insufficient_permissions(
            "Only the run's owner can listen to its events",
        ));
    }
    let events = state
        .runner
        .subscribe_events(&run.id)
        .ok_or_else(|| ApiError::not_found("The run is not running"))?;
    Ok(ws.on_upgrade(move |socket| forward_events(socket, events)))
}

async fn forward_events(
    mut socket: WebSocket,
    mut events: tokio::sync::broadcast::Receiver<String>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(text) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

/// Run options from the query (`build`, `timeout`, `memory`, `maxItems`, and the ad-hoc
/// `webhooks`).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub build: Option<String>,
    pub timeout_secs: Option<u64>,
    pub memory_mbytes: Option<u64>,
    pub max_items: Option<u64>,
    pub restart_on_error: Option<bool>,
    /// Ad-hoc webhooks of the run (checked, created with it).
    pub webhooks: Vec<crate::hooks::webhook::WebhookInput>,
}

impl RunOptions {
    pub fn from_params(params: &Params) -> ApiResult<Self> {
        let memory = params.u64("memory")?;
        if let Some(m) = memory {
            check_memory(m).map_err(ApiError::invalid_parameter)?;
        }
        Ok(Self {
            build: params.str("build").map(str::to_string),
            timeout_secs: params.u64("timeout")?,
            memory_mbytes: memory,
            max_items: params.u64("maxItems")?,
            restart_on_error: match params.str("restartOnError") {
                Some(_) => Some(params.bool("restartOnError", false)?),
                None => None,
            },
            webhooks: match params.str("webhooks") {
                Some(value) => crate::hooks::webhook::parse_ad_hoc(value)?,
                None => vec![],
            },
        })
    }
}

/// Memory must be a power of two between 128 and 32768 MB.
pub fn check_memory(m: u64) -> Result<(), String> {
    if (128..=32768).contains(&m) && m.is_power_of_two() {
        Ok(())
    } else {
        Err(format!(
            "Memory must be a power of 2 between 128 and 32768 MB (got {m})"
        ))
    }
}

/// Reads a start-run body: empty, or JSON `null`, means no input.
pub async fn read_input(headers: &HeaderMap, body: Body) -> ApiResult<Option<(Bytes, String)>> {
    let bytes = read_decoded(headers, body, DEFAULT_BODY_LIMIT).await?;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json; charset=utf-8")
        .to_string();
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() || (content_type.starts_with("application/json") && trimmed == b"null") {
        return Ok(None);
    }
    if content_type.starts_with("application/json")
        && serde_json::from_slice::<serde::de::IgnoredAny>(trimmed).is_err()
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "run-input-body-not-valid-json",
            "The input body is not valid JSON",
        ));
    }
    Ok(Some((bytes, content_type)))
}

/// Stores a run's input record in its default key-value store.
pub async fn put_input_record(
    state: &AppState,
    _owner: &User,
    store_id: &str,
    key: &str,
    bytes: Bytes,
    content_type: &str,
) -> ApiResult<()> {
    crate::routes::run_input::put(state, store_id, key, bytes, content_type).await
}

/// Fills the fields an input lacks with the `default` values of the build's input schema, as
/// Apify does when a run starts (`prefill` is only for forms and is not applied). Applies when the
/// input is a JSON object or absent; any other input (text, binary, a JSON array) and a missing or
/// unreadable schema leave it untouched. An input that lacks nothing is kept byte for byte.
pub fn with_schema_defaults(
    input: Option<(Bytes, String)>,
    schema: Option<&str>,
) -> Option<(Bytes, String)> {
    let Some(defaults) = schema.and_then(schema_defaults) else {
        return input;
    };
    let mut object = match &input {
        None => serde_json::Map::new(),
        Some((bytes, content_type)) if content_type.starts_with("application/json") => {
            match serde_json::from_slice::<Value>(bytes) {
                Ok(Value::Object(object)) => object,
                _ => return input,
            }
        }
        Some(_) => return input,
    };
    let mut added = false;
    for (key, value) in defaults {
        if !object.contains_key(&key) {
            object.insert(key, value);
            added = true;
        }
    }
    if !added {
        return input;
    }
    let content_type = input
        .map(|(_, content_type)| content_type)
        .unwrap_or_else(|| "application/json; charset=utf-8".to_string());
    let bytes = serde_json::to_vec(&Value::Object(object)).ok()?;
    Some((Bytes::from(bytes), content_type))
}

/// `(property, default)` pairs of an input schema's top-level `properties`.
fn schema_defaults(schema: &str) -> Option<Vec<(String, Value)>> {
    let schema: Value = serde_json::from_str(schema).ok()?;
    let properties = schema.get("properties")?.as_object()?;
    let defaults: Vec<(String, Value)> = properties
        .iter()
        .filter_map(|(key, property)| Some((key.clone(), property.get("default")?.clone())))
        .collect();
    (!defaults.is_empty()).then_some(defaults)
}

/// The storages an Actor declares by alias in `actor.json` (`storages.datasets`,
/// `storages.keyValueStores`, `storages.requestQueues`: objects of alias → schema), except
/// `default` (the run's default storage): `(collection key, alias)` pairs, in a stable order.
pub fn declared_storage_aliases(definition: Option<&Value>) -> Vec<(&'static str, String)> {
    let Some(storages) = definition
        .and_then(|d| d.get("storages"))
        .and_then(Value::as_object)
    else {
        return vec![];
    };
    let mut aliases = Vec::new();
    for key in ["datasets", "keyValueStores", "requestQueues"] {
        if let Some(declared) = storages.get(key).and_then(Value::as_object) {
            for alias in declared.keys() {
                if alias != "default" && !alias.is_empty() && alias.len() <= 63 {
                    aliases.push((key, alias.clone()));
                }
            }
        }
    }
    aliases
}

/// What starting a run needs.
pub struct StartRun {
    pub actor: Actor,
    pub options: RunOptions,
    pub input: Option<(Bytes, String)>,
    pub origin: String,
    pub task_id: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// `(scheduleId, scheduledAt)` of a run a schedule started.
    pub schedule: Option<(String, i64)>,
}

/// Records a run (fresh default storages, INPUT) and hands it to the runner. Nothing is
/// created when the options are invalid.
pub async fn start_run(state: &AppState, user: &User, request: StartRun) -> ApiResult<Run> {
    let actor = &request.actor;
    let defaults = &actor.default_run_options;
    let build_option = request
        .options
        .build
        .clone()
        .unwrap_or_else(|| defaults.build.clone());
    let build: Build = resolve_build(state, actor, Some(&build_option)).await?;
    let memory = request
        .options
        .memory_mbytes
        .unwrap_or(defaults.memory_mbytes);
    check_memory(memory).map_err(ApiError::invalid_parameter)?;
    let budget = state.runner.config().max_memory_mbytes;
    if memory > budget {
        return Err(ApiError::memory_limit_exceeded(format!(
            "The run needs {memory} MB but the server's memory budget is {budget} MB"
        )));
    }
    let run_id = troupe_model::new_id();
    let origin = StorageOrigin {
        act_id: Some(actor.id.clone()),
        act_run_id: Some(run_id.clone()),
    };
    let mut ids = Vec::new();
    for kind in [
        StorageKind::Dataset,
        StorageKind::KeyValueStore,
        StorageKind::RequestQueue,
    ] {
        let (info, _) = state
            .storage
            .create_storage(kind, user, None, origin.clone())
            .await?;
        ids.push(info.id);
    }
    let mut storage_aliases = Vec::new();
    for (kind_key, alias) in declared_storage_aliases(build.actor_definition.as_ref()) {
        let kind = match kind_key {
            "datasets" => StorageKind::Dataset,
            "keyValueStores" => StorageKind::KeyValueStore,
            _ => StorageKind::RequestQueue,
        };
        let (info, _) = state
            .storage
            .create_storage(kind, user, None, origin.clone())
            .await?;
        storage_aliases.push((kind_key.to_string(), alias, info.id));
    }
    let input = with_schema_defaults(request.input, build.input_schema.as_deref());
    let input_len = input.as_ref().map(|(b, _)| b.len()).unwrap_or(0);
    if let Some((bytes, content_type)) = input {
        put_input_record(state, user, &ids[1], "INPUT", bytes, &content_type).await?;
    }
    let now = now_ms();
    let run = Run {
        id: run_id,
        act_id: actor.id.clone(),
        user_id: user.id.clone(),
        actor_task_id: request.task_id,
        started_at: now,
        finished_at: None,
        status: JobStatus::Ready,
        status_message: None,
        is_status_message_terminal: None,
        origin: request.origin,
        client_ip: request.client_ip,
        user_agent: request.user_agent,
        build_id: build.id.clone(),
        build_number: build.build_number.clone(),
        build_option,
        exit_code: None,
        general_access: DEFAULT_GENERAL_ACCESS.to_string(),
        default_dataset_id: ids[0].clone(),
        default_key_value_store_id: ids[1].clone(),
        default_request_queue_id: ids[2].clone(),
        timeout_secs: request
            .options
            .timeout_secs
            .unwrap_or(defaults.timeout_secs),
        memory_mbytes: memory,
        max_items: request.options.max_items.or(defaults.max_items),
        input_key: "INPUT".into(),
        counters: RunCounters {
            input_body_len: input_len as u64,
            ..Default::default()
        },
        metamorphs: vec![],
        process: None,
        attempt_started_at: 0,
        schedule_id: request.schedule.as_ref().map(|(id, _)| id.clone()),
        scheduled_at: request.schedule.map(|(_, at)| at),
        extras: RunExtras {
            restart_on_error: request
                .options
                .restart_on_error
                .unwrap_or(defaults.restart_on_error),
            container_port: None,
            storage_aliases,
            git_branch_name: build.git_branch_name.clone(),
        },
    };
    state.storage.create_run(run.clone()).await?;
    // Ad-hoc webhooks exist before the run can emit anything.
    for input in request.options.webhooks {
        let condition = troupe_model::hooks::WebhookCondition {
            actor_run_id: Some(run.id.clone()),
            ..Default::default()
        };
        let mut webhook = crate::hooks::webhook::new_webhook(&user.id, input, condition, now);
        webhook.is_ad_hoc = true;
        state.storage.create_webhook(webhook).await?;
    }
    // Reported before the runner can report the run's end.
    state.runner.emit(Some(troupe_runner::JobEvent::Run {
        event_type: "ACTOR.RUN.CREATED",
        run: run.clone(),
    }));
    state.runner.start_run(&run).map_err(runner_error)?;
    Ok(run)
}

/// Answers a freshly started run (201, `Location`, optional `waitForFinish`).
pub async fn respond_started(
    state: &AppState,
    run: Run,
    params: &Params,
    caller: &User,
) -> ApiResult<Response> {
    let wait = wait_param(params)?;
    let location = format!("{}/actor-runs/{}", state.api_base(), run.id);
    let mut response = respond_run(state, run, wait, Some(&caller.id), StatusCode::CREATED).await?;
    if let Ok(value) = location.parse() {
        response
            .headers_mut()
            .insert(axum::http::header::LOCATION, value);
    }
    Ok(response.into_response())
}
