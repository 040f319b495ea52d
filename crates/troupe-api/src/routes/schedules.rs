//! Schedules (ENDPOINTS.md §2.15): CRUD and the invocation log. Firing is
//! [`crate::hooks::scheduler`]'s job; every change here wakes it.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};
use troupe_model::hooks::{RunInput, Schedule, ScheduleAction};
use troupe_model::task::TaskOptions;
use troupe_model::{format_ts, now_ms};

use super::actors::find_actor;
use super::tasks::{find_task, parse_options};
use super::{created, data, no_content};
use crate::auth::{Auth, Caller};
use crate::body::{
    bad_field as bad, body_object, is_valid_name, nullable_string, opt_bool, ApifyJson,
};
use crate::error::{ApiError, ApiResult};
use crate::hooks::scheduler::{next_run, parse_cron, parse_timezone};
use crate::params::Params;
use crate::resolve::{owner_only, private_path_and_caller, split_name_ref};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/schedules", get(list_schedules).post(create_schedule))
        .route(
            "/v2/schedules/{scheduleId}",
            get(get_schedule)
                .put(update_schedule)
                .delete(delete_schedule),
        )
        .route("/v2/schedules/{scheduleId}/log", get(get_log))
}

fn schedule_not_found() -> ApiError {
    ApiError::not_found("Schedule was not found")
}

/// The schedule a path names (id, or the caller's schedule name, also as `~name`); only its
/// owner reaches it.
pub struct ScheduleTarget(pub Schedule, pub Caller);

impl FromRequestParts<AppState> for ScheduleTarget {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (path, caller) = private_path_and_caller(parts, state).await?;
        let user = caller.require()?.clone();
        let reference = path.get("scheduleId").ok_or_else(schedule_not_found)?;
        let schedule = match split_name_ref(reference) {
            Some(("", name)) => state.storage.get_schedule_by_name(&user.id, name).await?,
            Some(_) => None,
            None => match state.storage.get_schedule(reference).await? {
                Some(s) => Some(s),
                None => {
                    state
                        .storage
                        .get_schedule_by_name(&user.id, reference)
                        .await?
                }
            },
        }
        .ok_or_else(schedule_not_found)?;
        owner_only(&caller, &schedule.user_id)?;
        Ok(ScheduleTarget(schedule, caller))
    }
}

/// The schedule object. `nextRunAt` is null while the schedule is disabled.
fn schedule_json(s: &Schedule) -> Value {
    json!({
        "id": s.id,
        "userId": s.user_id,
        "name": s.name,
        "cronExpression": s.cron_expression,
        "timezone": s.timezone,
        "isEnabled": s.is_enabled,
        "isExclusive": s.is_exclusive,
        "createdAt": format_ts(s.created_at),
        "modifiedAt": format_ts(s.modified_at),
        "nextRunAt": s.next_run_at.filter(|_| s.is_enabled).map(format_ts),
        "lastRunAt": s.last_run_at.map(format_ts),
        "description": s.description,
        "title": s.title,
        "notifications": s.notifications.clone().unwrap_or_else(|| json!({ "email": false })),
        "actions": s.actions,
    })
}
/// Schedule names: 3-63 characters of `a-z0-9-`, not starting or ending with `-`.
fn check_name(name: &str) -> ApiResult<()> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::invalid_input(format!(
            "Invalid schedule name \"{name}\": use 3 to 63 lowercase letters, digits and hyphens"
        )))
    }
}
/// One action of a body, its Actor or task resolved to an id the caller may start.
async fn parse_action(
    state: &AppState,
    caller: &Caller,
    index: usize,
    value: &Value,
) -> ApiResult<ScheduleAction> {
    let user_id = caller.require()?.id.clone();
    let field = |name: &str| format!("actions[{index}].{name}");
    let Value::Object(action) = value else {
        return Err(bad(&format!("actions[{index}]"), "must be an object"));
    };
    let reference = |name: &str| -> ApiResult<String> {
        match action.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(bad(&field(name), "is required and must be a string")),
        }
    };
    match action.get("type").and_then(Value::as_str) {
        Some("RUN_ACTOR") => {
            let actor_ref = reference("actorId")?;
            let actor = find_actor(state, caller, &actor_ref)
                .await?
                .filter(|a| {
                    a.user_id == user_id || a.extra.get("isPublic") == Some(&Value::Bool(true))
                })
                .ok_or_else(|| ApiError::schedule_actor_not_found(&actor_ref))?;
            let run_input = match action.get("runInput") {
                None | Some(Value::Null) => None,
                Some(Value::Object(ri)) => {
                    let text = |name: &str| -> ApiResult<Option<String>> {
                        match ri.get(name) {
                            None | Some(Value::Null) => Ok(None),
                            Some(Value::String(s)) => Ok(Some(s.clone())),
                            Some(_) => {
                                Err(bad(&field(&format!("runInput.{name}")), "must be a string"))
                            }
                        }
                    };
                    let input = RunInput {
                        body: text("body")?,
                        content_type: text("contentType")?,
                    };
                    let json_type = input
                        .content_type
                        .as_deref()
                        .is_none_or(|t| t.starts_with("application/json"));
                    if let Some(body) = &input.body {
                        if json_type
                            && !body.trim().is_empty()
                            && serde_json::from_str::<serde::de::IgnoredAny>(body).is_err()
                        {
                            return Err(bad(&field("runInput.body"), "is not valid JSON"));
                        }
                    }
                    Some(input)
                }
                Some(_) => return Err(bad(&field("runInput"), "must be an object")),
            };
            let run_options = match action.get("runOptions") {
                None | Some(Value::Null) => None,
                Some(v) => Some(parse_options(&TaskOptions::default(), v)?),
            };
            Ok(ScheduleAction::RunActor {
                id: troupe_model::new_id(),
                actor_id: actor.id,
                run_input,
                run_options,
            })
        }
        Some("RUN_ACTOR_TASK") => {
            let task_ref = reference("actorTaskId")?;
            let task = find_task(state, caller, &task_ref)
                .await?
                .filter(|t| t.user_id == user_id)
                .ok_or_else(|| ApiError::schedule_actor_task_not_found(&task_ref))?;
            let input = match action.get("input") {
                None | Some(Value::Null) => None,
                Some(Value::Object(map)) => Some(map.clone()),
                Some(_) => return Err(bad(&field("input"), "must be an object")),
            };
            Ok(ScheduleAction::RunActorTask {
                id: troupe_model::new_id(),
                actor_task_id: task.id,
                input,
            })
        }
        _ => Err(bad(&field("type"), "must be RUN_ACTOR or RUN_ACTOR_TASK")),
    }
}

/// Applies the fields present in `body` to `schedule` (everything checked before anything is
/// changed), then recomputes `nextRunAt` from now.
async fn apply_body(
    state: &AppState,
    caller: &Caller,
    schedule: &mut Schedule,
    body: &Map<String, Value>,
) -> ApiResult<()> {
    if let Some(name) = nullable_string(body, "name")? {
        match name {
            Some(name) => {
                check_name(&name)?;
                schedule.name = name;
            }
            None => return Err(bad("name", "cannot be null")),
        }
    }
    match body.get("cronExpression") {
        None | Some(Value::Null) => {}
        Some(Value::String(expr)) => {
            parse_cron(expr).map_err(ApiError::cron_expression_invalid)?;
            schedule.cron_expression = expr.trim().to_string();
        }
        Some(_) => {
            return Err(ApiError::cron_expression_invalid(
                "Field \"cronExpression\" must be a string",
            ))
        }
    }
    match body.get("timezone") {
        None | Some(Value::Null) => {}
        Some(Value::String(tz)) => {
            parse_timezone(tz).map_err(ApiError::invalid_input)?;
            schedule.timezone = tz.clone();
        }
        Some(_) => return Err(bad("timezone", "must be a string")),
    }
    if let Some(v) = opt_bool(body, "isEnabled")? {
        schedule.is_enabled = v;
    }
    if let Some(v) = opt_bool(body, "isExclusive")? {
        schedule.is_exclusive = v;
    }
    if let Some(v) = nullable_string(body, "description")? {
        schedule.description = v;
    }
    if let Some(v) = nullable_string(body, "title")? {
        schedule.title = v;
    }
    match body.get("notifications") {
        None => {}
        Some(Value::Null) => schedule.notifications = None,
        Some(Value::Object(map)) => {
            if map
                .get("email")
                .is_some_and(|e| !e.is_boolean() && !e.is_null())
            {
                return Err(bad("notifications.email", "must be a boolean"));
            }
            schedule.notifications = Some(Value::Object(map.clone()));
        }
        Some(_) => return Err(bad("notifications", "must be an object")),
    }
    match body.get("actions") {
        None => {}
        Some(Value::Null) => schedule.actions = vec![],
        Some(Value::Array(items)) => {
            let mut actions = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                actions.push(parse_action(state, caller, i, item).await?);
            }
            schedule.actions = actions;
        }
        Some(_) => return Err(bad("actions", "must be an array")),
    }
    schedule.next_run_at = next_run(&schedule.cron_expression, &schedule.timezone, now_ms());
    if schedule.next_run_at.is_none() {
        return Err(ApiError::cron_expression_invalid(format!(
            "Cron expression \"{}\" never matches a future time",
            schedule.cron_expression
        )));
    }
    Ok(())
}
fn conflict(err: troupe_storage::Error, name: &str) -> ApiError {
    match err {
        troupe_storage::Error::Conflict(_) => ApiError::schedule_name_not_unique(name),
        other => other.into(),
    }
}

/// GET /v2/schedules
async fn list_schedules(
    State(state): State<AppState>,
    Auth(user): Auth,
    params: Params,
) -> ApiResult<Response> {
    let list = params.list_params()?;
    let page = state.storage.list_schedules(&user.id, list).await?;
    Ok(data(StatusCode::OK, page.map(|s| schedule_json(&s))))
}

/// POST /v2/schedules — `cronExpression` required; `timezone` defaults to UTC, `isEnabled` to
/// true, `isExclusive` to false, `name` to `schedule-{id}`. 201 + Schedule.
async fn create_schedule(
    State(state): State<AppState>,
    caller: Caller,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    let user = caller.require()?.clone();
    let body = body_object(body)?;
    if !matches!(body.get("cronExpression"), Some(Value::String(_))) {
        return Err(ApiError::cron_expression_invalid(
            "Field \"cronExpression\" is required",
        ));
    }
    let now = now_ms();
    let id = troupe_model::new_id();
    let mut schedule = Schedule {
        name: format!("schedule-{}", id.to_ascii_lowercase()),
        id,
        user_id: user.id.clone(),
        cron_expression: String::new(),
        timezone: "UTC".into(),
        is_enabled: true,
        is_exclusive: false,
        created_at: now,
        modified_at: now,
        next_run_at: None,
        last_run_at: None,
        description: None,
        title: None,
        notifications: None,
        actions: vec![],
        last_run_ids: vec![],
    };
    apply_body(&state, &caller, &mut schedule, &body).await?;
    let name = schedule.name.clone();
    let schedule = state
        .storage
        .create_schedule(schedule)
        .await
        .map_err(|e| conflict(e, &name))?;
    state.hooks.schedules_changed();
    let location = format!("{}/schedules/{}", state.api_base(), schedule.id);
    Ok(created(&location, schedule_json(&schedule)))
}

/// GET /v2/schedules/{scheduleId}
async fn get_schedule(ScheduleTarget(schedule, _): ScheduleTarget) -> Response {
    data(StatusCode::OK, schedule_json(&schedule))
}

/// PUT /v2/schedules/{scheduleId} — partial update; `actions`, when given, replace the list.
async fn update_schedule(
    State(state): State<AppState>,
    ScheduleTarget(schedule, caller): ScheduleTarget,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    let body = body_object(body)?;
    // Checked (and Actors / tasks resolved) on a copy; stored in one transaction.
    let mut changed = schedule.clone();
    apply_body(&state, &caller, &mut changed, &body).await?;
    let now = now_ms();
    let name = changed.name.clone();
    let updated = state
        .storage
        .update_schedule(
            &schedule.id,
            Box::new(move |s: &mut Schedule| {
                let (last_run_at, last_run_ids) = (s.last_run_at, s.last_run_ids.clone());
                *s = changed;
                s.last_run_at = last_run_at;
                s.last_run_ids = last_run_ids;
                s.modified_at = now.max(s.modified_at);
                Ok(())
            }),
        )
        .await
        .map_err(|e| conflict(e, &name))?;
    state.hooks.schedules_changed();
    Ok(data(StatusCode::OK, schedule_json(&updated)))
}

/// DELETE /v2/schedules/{scheduleId} — 204.
async fn delete_schedule(
    State(state): State<AppState>,
    ScheduleTarget(schedule, _): ScheduleTarget,
) -> ApiResult<Response> {
    state.storage.delete_schedule(&schedule.id).await?;
    state.hooks.schedules_changed();
    Ok(no_content())
}

/// GET /v2/schedules/{scheduleId}/log — `{data: [{message, level, createdAt}]}`, oldest first,
/// at most the last 1000 entries.
async fn get_log(
    State(state): State<AppState>,
    ScheduleTarget(schedule, _): ScheduleTarget,
) -> ApiResult<Response> {
    let entries = state.storage.schedule_log(&schedule.id).await?;
    let items: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "message": e.message,
                "level": e.level,
                "createdAt": format_ts(e.created_at),
            })
        })
        .collect();
    Ok(data(StatusCode::OK, items))
}
