//! Actor tasks (ENDPOINTS.md §2.8): CRUD, the stored input, starting runs (through the same
//! `runs::start_run` as Actors, with the task's input and options filled in), the sync variants,
//! the task's runs, and the resolution of a task's last run for the `runs/last` group (§2.9,
//! mounted by the router with the other run prefixes).

use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use troupe_model::actor::{Actor, Run};
use troupe_model::list::Page;
use troupe_model::task::{Task, TaskOptions};
use troupe_model::{format_ts, now_ms};

use super::actors::{find_actor, sync_items_response, sync_output_response, user_agent, wait_sync};
use super::runs::{
    check_memory, last_run_filters, read_input, respond_started, run_short_json, start_run,
    RunOptions, StartRun,
};
use super::{created, data, no_content};
use crate::auth::{Auth, Caller};
use crate::body::{body_object, is_valid_name, ApifyJson};
use crate::client::ClientIp;
use crate::error::{ApiError, ApiResult};
use crate::items::ItemsQuery;
use crate::params::Params;
use crate::resolve::{
    check_access, find_by_ref, owner_only, private_path_and_caller, Access, AddressedBy,
};
use crate::state::AppState;

/// Every task route, with absolute paths.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/actor-tasks", get(list_tasks).post(create_task))
        .route(
            "/v2/actor-tasks/{actorTaskId}",
            get(get_task).put(update_task).delete(delete_task),
        )
        .route(
            "/v2/actor-tasks/{actorTaskId}/input",
            get(get_input).put(put_input),
        )
        .route(
            "/v2/actor-tasks/{actorTaskId}/runs",
            get(list_task_runs).post(run_task),
        )
        .route(
            "/v2/actor-tasks/{actorTaskId}/run-sync",
            get(run_sync).post(run_sync),
        )
        .route(
            "/v2/actor-tasks/{actorTaskId}/run-sync-get-dataset-items",
            get(run_sync_get_dataset_items).post(run_sync_get_dataset_items),
        )
        .route("/v2/actor-tasks/{actorTaskId}/webhooks", get(list_webhooks))
}

fn task_not_found() -> ApiError {
    ApiError::not_found("Actor task was not found")
}

/// Finds a task by id, `username~name` (also `username/name`), `~name` or the caller's bare name.
pub async fn find_task(
    state: &AppState,
    caller: &Caller,
    reference: &str,
) -> ApiResult<Option<Task>> {
    find_by_ref(
        state,
        caller,
        &reference.replacen('/', "~", 1),
        |id| async move { state.storage.get_task(id).await },
        |owner_id, name| async move { state.storage.get_task_by_name(&owner_id, name).await },
    )
    .await
}

/// The last run of the task `task_ref` (for `/v2/actor-tasks/{actorTaskId}/runs/last…`): the
/// token owner's run of that task with the latest `startedAt` matching `status`/`origin`.
pub async fn last_task_run(
    state: &AppState,
    caller: &Caller,
    task_ref: &str,
    params: &Params,
) -> ApiResult<Run> {
    let user = caller.require()?;
    let (status, origin) = last_run_filters(params)?;
    let task = find_task(state, caller, task_ref)
        .await?
        .ok_or_else(task_not_found)?;
    state
        .storage
        .last_task_run(&user.id, &task.id, status, origin)
        .await?
        .ok_or_else(|| ApiError::not_found("Actor run was not found"))
}

/// The task a request path names. Tasks are private: a token is required (401) and only the
/// owner reaches them (403 for other users).
pub struct TaskTarget(pub Task, pub Caller);

impl FromRequestParts<AppState> for TaskTarget {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (path, caller) = private_path_and_caller(parts, state).await?;
        let reference = path.get("actorTaskId").ok_or_else(task_not_found)?;
        let task = find_task(state, &caller, reference)
            .await?
            .ok_or_else(task_not_found)?;
        owner_only(&caller, &task.user_id)?;
        Ok(TaskTarget(task, caller))
    }
}

/// Task names: 3-63 characters of `a-z0-9-`, not starting or ending with `-` (as Actor names).
fn validate_name(name: &str) -> ApiResult<()> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::invalid_input(format!(
            "Invalid task name \"{name}\": use 3 to 63 lowercase letters, digits and hyphens"
        )))
    }
}

/// Fields of the task object that a body cannot set through `extra`.
const RESERVED: &[&str] = &[
    "id",
    "userId",
    "actId",
    "name",
    "username",
    "createdAt",
    "modifiedAt",
    "removedAt",
    "stats",
    "options",
    "input",
    "standbyUrl",
];

/// The task object in Apify's shape (§4.8).
fn task_json(task: &Task, total_runs: u64) -> Value {
    let mut object = json!({
        "id": task.id,
        "userId": task.user_id,
        "actId": task.act_id,
        "name": task.name,
        "username": task.username,
        "createdAt": format_ts(task.created_at),
        "modifiedAt": format_ts(task.modified_at),
        "removedAt": null,
        "stats": { "totalRuns": total_runs },
        "options": task.options,
        "input": task.input,
    });
    let fields = object.as_object_mut().expect("object");
    for (k, v) in &task.extra {
        fields.insert(k.clone(), v.clone());
    }
    object
}

async fn total_runs(state: &AppState, task: &Task) -> ApiResult<u64> {
    let params = troupe_model::list::ListParams {
        offset: 0,
        limit: 0,
        desc: false,
    };
    Ok(state
        .storage
        .list_task_runs(&task.user_id, &task.id, Default::default(), params)
        .await?
        .total)
}

async fn full_json(state: &AppState, task: &Task) -> ApiResult<Value> {
    Ok(task_json(task, total_runs(state, task).await?))
}

/// `options` of a body applied over `current`: a given field replaces, `null` clears.
pub(crate) fn parse_options(current: &TaskOptions, value: &Value) -> ApiResult<TaskOptions> {
    let Value::Object(body) = value else {
        return Err(ApiError::invalid_input(
            "Field \"options\" must be an object",
        ));
    };
    let mut options = current.clone();
    let bad = |name: &str, what: &str| {
        ApiError::invalid_input(format!("Field \"options.{name}\" must be {what}"))
    };
    for (key, v) in body {
        let uint = || -> ApiResult<Option<u64>> {
            match v {
                Value::Null => Ok(None),
                _ => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| bad(key, "a non-negative integer")),
            }
        };
        match key.as_str() {
            "build" => {
                options.build = match v {
                    Value::Null => None,
                    Value::String(s) if !s.is_empty() => Some(s.clone()),
                    _ => return Err(bad(key, "a non-empty string")),
                }
            }
            "timeoutSecs" => options.timeout_secs = uint()?,
            "memoryMbytes" => {
                let memory = uint()?;
                if let Some(m) = memory {
                    check_memory(m).map_err(ApiError::invalid_input)?;
                }
                options.memory_mbytes = memory;
            }
            "maxItems" => options.max_items = uint()?,
            "maxTotalChargeUsd" => {
                options.max_total_charge_usd = match v {
                    Value::Null => None,
                    _ => Some(
                        v.as_f64()
                            .filter(|f| *f >= 0.0)
                            .ok_or_else(|| bad(key, "a non-negative number"))?,
                    ),
                }
            }
            "restartOnError" => {
                options.restart_on_error = match v {
                    Value::Null => None,
                    Value::Bool(b) => Some(*b),
                    _ => return Err(bad(key, "a boolean")),
                }
            }
            // Unknown option names are ignored (as upstream).
            _ => {}
        }
    }
    Ok(options)
}

/// A task input: a JSON object, or `null` for none.
fn parse_input(value: &Value) -> ApiResult<Option<Map<String, Value>>> {
    match value {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map.clone())),
        _ => Err(ApiError::invalid_input(
            "Field \"input\" must be a JSON object",
        )),
    }
}
/// The task's Actor, which its owner must be allowed to run (own or public).
async fn task_actor(state: &AppState, caller: &Caller, act_ref: &str) -> ApiResult<Actor> {
    let actor = find_actor(state, caller, act_ref)
        .await?
        .ok_or_else(|| ApiError::not_found("Actor was not found"))?;
    let public = actor.extra.get("isPublic") == Some(&Value::Bool(true));
    check_access(
        caller,
        &actor.user_id,
        if public {
            "ANYONE_WITH_ID_CAN_READ"
        } else {
            "RESTRICTED"
        },
        &AddressedBy::Id,
        Access::Read,
        false,
    )?;
    Ok(actor)
}

// ---- CRUD ----

/// GET /v2/actor-tasks — the caller's tasks (`offset`, `limit`, `desc`).
async fn list_tasks(
    State(state): State<AppState>,
    Auth(user): Auth,
    params: Params,
) -> ApiResult<Response> {
    let list = params.list_params()?;
    let page = state.storage.list_tasks(&user.id, list).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for task in &page.items {
        let actor = state.storage.get_actor(&task.act_id).await?;
        let mut item = json!({
            "id": task.id,
            "userId": task.user_id,
            "actId": task.act_id,
            "actName": actor.as_ref().map(|a| a.name.clone()),
            "actUsername": actor.as_ref().map(|a| a.username.clone()),
            "name": task.name,
            "username": task.username,
            "createdAt": format_ts(task.created_at),
            "modifiedAt": format_ts(task.modified_at),
            "stats": { "totalRuns": total_runs(&state, task).await? },
        });
        if let Some(title) = task.extra.get("title") {
            item["title"] = title.clone();
        }
        items.push(item);
    }
    Ok(data(StatusCode::OK, Page::new(list, page.total, items)))
}

/// POST /v2/actor-tasks — `actId` (id or `username~name`) required; `name` defaults to
/// `{actor-name}-task` (then `-2`, `-3`… when taken); `options`, `input` and free-form fields
/// (`title`, `description`, `actorStandby`…) optional. 201 + Task.
async fn create_task(
    State(state): State<AppState>,
    caller: Caller,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    let user = caller.require()?.clone();
    let body = body_object(body)?;
    let act_ref = match body.get("actId") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(ApiError::invalid_input(
                "Field \"actId\" is required and must be a string",
            ))
        }
    };
    let name = match body.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => {
            validate_name(name)?;
            Some(name.clone())
        }
        Some(_) => return Err(ApiError::invalid_input("Field \"name\" must be a string")),
    };
    let options = match body.get("options") {
        None | Some(Value::Null) => TaskOptions::default(),
        Some(v) => parse_options(&TaskOptions::default(), v)?,
    };
    let input = match body.get("input") {
        None => None,
        Some(v) => parse_input(v)?,
    };
    let actor = task_actor(&state, &caller, &act_ref).await?;
    let name = match name {
        Some(name) => name,
        None => default_name(&state, &user.id, &actor.name).await?,
    };
    let now = now_ms();
    let mut extra = Map::new();
    for (k, v) in &body {
        if !RESERVED.contains(&k.as_str()) {
            extra.insert(k.clone(), v.clone());
        }
    }
    let task = Task {
        id: troupe_model::new_id(),
        user_id: user.id.clone(),
        username: user.username.clone(),
        act_id: actor.id.clone(),
        name,
        created_at: now,
        modified_at: now,
        options,
        input,
        extra,
    };
    let task = state.storage.create_task(task).await?;
    let location = format!("{}/actor-tasks/{}", state.api_base(), task.id);
    Ok(created(&location, task_json(&task, 0)))
}

/// A free name `{actor}-task`, `{actor}-task-2`, … (cut to fit 63 characters).
async fn default_name(state: &AppState, user_id: &str, actor_name: &str) -> ApiResult<String> {
    let base: String = format!("{actor_name}-task").chars().take(58).collect();
    for n in 1..1000 {
        let name = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        if state
            .storage
            .get_task_by_name(user_id, &name)
            .await?
            .is_none()
        {
            return Ok(name);
        }
    }
    Err(ApiError::name_not_unique("Give the task a name"))
}

/// GET /v2/actor-tasks/{actorTaskId}
async fn get_task(
    State(state): State<AppState>,
    TaskTarget(task, _): TaskTarget,
) -> ApiResult<Response> {
    Ok(data(StatusCode::OK, full_json(&state, &task).await?))
}

/// PUT /v2/actor-tasks/{actorTaskId} — partial update: `name`, `options` (field by field),
/// `input` (replaced), free-form fields. Everything is validated before anything changes.
async fn update_task(
    State(state): State<AppState>,
    TaskTarget(task, _): TaskTarget,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    let body = body_object(body)?;
    let name = match body.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => {
            validate_name(name)?;
            Some(name.clone())
        }
        Some(_) => return Err(ApiError::invalid_input("Field \"name\" must be a string")),
    };
    let options = match body.get("options") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_options(&task.options, v)?),
    };
    let input = match body.get("input") {
        None => None,
        Some(v) => Some(parse_input(v)?),
    };
    let extra: Map<String, Value> = body
        .into_iter()
        .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
        .collect();
    let task = state
        .storage
        .update_task(
            &task.id,
            Box::new(move |t: &mut Task| {
                if let Some(name) = name {
                    t.name = name;
                }
                if let Some(options) = options {
                    t.options = options;
                }
                if let Some(input) = input {
                    t.input = input;
                }
                for (k, v) in extra {
                    t.extra.insert(k, v);
                }
                t.modified_at = now_ms();
                Ok(())
            }),
        )
        .await?;
    Ok(data(StatusCode::OK, full_json(&state, &task).await?))
}

/// DELETE /v2/actor-tasks/{actorTaskId} — the task's runs (and their storages) stay.
async fn delete_task(
    State(state): State<AppState>,
    TaskTarget(task, _): TaskTarget,
) -> ApiResult<Response> {
    state.storage.delete_task(&task.id).await?;
    Ok(no_content())
}

/// GET /v2/actor-tasks/{actorTaskId}/input — the stored input as a bare object (`{}` when none).
async fn get_input(TaskTarget(task, _): TaskTarget) -> Response {
    bare(&Value::Object(task.input.unwrap_or_default()))
}

/// PUT /v2/actor-tasks/{actorTaskId}/input — merges the body's fields over the stored input
/// (top level; a field set to `null` is stored as `null`) and answers with the new input.
async fn put_input(
    State(state): State<AppState>,
    TaskTarget(task, _): TaskTarget,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    let body = body_object(body)?;
    let task = state
        .storage
        .update_task(
            &task.id,
            Box::new(move |t: &mut Task| {
                let input = t.input.get_or_insert_with(Map::new);
                for (k, v) in body {
                    input.insert(k, v);
                }
                t.modified_at = now_ms();
                Ok(())
            }),
        )
        .await?;
    Ok(bare(&Value::Object(task.input.unwrap_or_default())))
}

fn bare(value: &Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

// ---- runs ----

/// GET /v2/actor-tasks/{actorTaskId}/runs — the caller's runs started from this task
/// (`status` comma list, `startedAfter`, `startedBefore`, `offset`, `limit`, `desc`).
async fn list_task_runs(
    State(state): State<AppState>,
    TaskTarget(task, caller): TaskTarget,
    params: Params,
) -> ApiResult<Response> {
    let user = caller.require()?;
    let list = params.list_params()?;
    let filter = super::runs::run_filter(&params, None)?;
    let page = state
        .storage
        .list_task_runs(&user.id, &task.id, filter, list)
        .await?;
    Ok(data(StatusCode::OK, page.map(|run| run_short_json(&run))))
}

/// The run input of a task start: the task's stored input with the body's fields merged over
/// it. The body must be a JSON object (or empty / `null` for none).
async fn merged_input(
    task: &Task,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Option<(Bytes, String)>> {
    let overrides = match read_input(headers, body).await? {
        None => None,
        Some((bytes, content_type)) => {
            if !content_type.starts_with("application/json") {
                return Err(ApiError::invalid_input(
                    "A task's input overrides must be a JSON object (Content-Type: application/json)",
                ));
            }
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => Some(map),
                _ => {
                    return Err(ApiError::invalid_input(
                        "A task's input overrides must be a JSON object",
                    ))
                }
            }
        }
    };
    let input = match (task.input.clone(), overrides) {
        (None, None) => return Ok(None),
        (Some(input), None) => input,
        (None, Some(overrides)) => overrides,
        (Some(mut input), Some(overrides)) => {
            input.extend(overrides);
            input
        }
    };
    let bytes = serde_json::to_vec(&Value::Object(input)).map_err(ApiError::internal)?;
    Ok(Some((
        Bytes::from(bytes),
        "application/json; charset=utf-8".to_string(),
    )))
}

/// Starts a run of the task: query options first, then the task's options, then (inside
/// `start_run`) the Actor's `defaultRunOptions`. Nothing is created when anything is invalid.
async fn start_task(
    state: &AppState,
    task: &Task,
    caller: &Caller,
    params: &Params,
    headers: &HeaderMap,
    client_ip: ClientIp,
    body: Body,
) -> ApiResult<Run> {
    let user = caller.require()?.clone();
    let mut options = RunOptions::from_params(params)?;
    params.u64("waitForFinish")?;
    let input = merged_input(task, headers, body).await?;
    let actor = task_actor(state, caller, &task.act_id).await?;
    let defaults = &task.options;
    options.build = options.build.or_else(|| defaults.build.clone());
    options.timeout_secs = options.timeout_secs.or(defaults.timeout_secs);
    options.memory_mbytes = options.memory_mbytes.or(defaults.memory_mbytes);
    options.max_items = options.max_items.or(defaults.max_items);
    options.restart_on_error = options.restart_on_error.or(defaults.restart_on_error);
    start_run(
        state,
        &user,
        StartRun {
            actor,
            options,
            input,
            origin: "API".into(),
            task_id: Some(task.id.clone()),
            client_ip: client_ip.text(),
            user_agent: user_agent(headers),
            schedule: None,
        },
    )
    .await
}

/// POST /v2/actor-tasks/{actorTaskId}/runs — 201 + Run (optional `waitForFinish`).
async fn run_task(
    State(state): State<AppState>,
    TaskTarget(task, caller): TaskTarget,
    params: Params,
    headers: HeaderMap,
    client_ip: ClientIp,
    body: Body,
) -> ApiResult<Response> {
    let run = start_task(&state, &task, &caller, &params, &headers, client_ip, body).await?;
    let user = caller.require()?;
    respond_started(&state, run, &params, user).await
}

/// GET|POST /v2/actor-tasks/{actorTaskId}/run-sync — as the Actor's `run-sync`.
async fn run_sync(
    State(state): State<AppState>,
    TaskTarget(task, caller): TaskTarget,
    params: Params,
    headers: HeaderMap,
    client_ip: ClientIp,
    body: Body,
) -> ApiResult<Response> {
    let run = start_task(&state, &task, &caller, &params, &headers, client_ip, body).await?;
    let run = wait_sync(&state, run).await?;
    sync_output_response(&state, &run, &params).await
}

/// GET|POST /v2/actor-tasks/{actorTaskId}/run-sync-get-dataset-items — as the Actor's.
async fn run_sync_get_dataset_items(
    State(state): State<AppState>,
    TaskTarget(task, caller): TaskTarget,
    params: Params,
    headers: HeaderMap,
    client_ip: ClientIp,
    body: Body,
) -> ApiResult<Response> {
    let query = ItemsQuery::from_params(&params)?;
    let run = start_task(&state, &task, &caller, &params, &headers, client_ip, body).await?;
    let run = wait_sync(&state, run).await?;
    sync_items_response(&state, &run, query).await
}

/// GET /v2/actor-tasks/{actorTaskId}/webhooks — the caller's webhooks whose condition names
/// this task.
async fn list_webhooks(
    State(state): State<AppState>,
    TaskTarget(task, caller): TaskTarget,
    params: Params,
) -> ApiResult<Response> {
    let user = caller.require()?;
    super::webhooks::list_for(
        &state,
        &user.id,
        troupe_storage::WebhookFilter::Task(task.id),
        &params,
    )
    .await
}
