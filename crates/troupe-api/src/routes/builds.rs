//! Actor builds (ENDPOINTS.md §2.4): the build object and its operations, written once relative
//! to the build and mounted under `/v2/actor-builds/{buildId}` and the deprecated
//! `/v2/acts|actors/{actorId}/builds/{buildId}`; and the global listing.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use troupe_model::actor::{Build, JobStatus};
use troupe_model::format_ts;

use super::actors::{default_build, find_actor, version_json};
use super::runs::{runner_error, wait_param};
use super::{data, no_content};
use crate::auth::{Auth, Caller};
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::resolve::{check_access, path_and_caller, Access, AddressedBy};
use crate::router::Routes;
use crate::state::AppState;

/// The build a request path names. Reading needs only the id (Apify serves builds without a
/// token); changing it needs its owner.
pub struct BuildTarget(pub Build);

impl FromRequestParts<AppState> for BuildTarget {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (path, caller) = path_and_caller(parts, state).await?;
        let not_found = || ApiError::not_found("Actor build was not found");
        let id = path.get("buildId").ok_or_else(not_found)?;
        let build = match path.get("actorId") {
            // Under an Actor, `default` is its default build (as `.../builds/default`).
            Some(actor_ref) => {
                let actor = find_actor(state, &caller, actor_ref)
                    .await?
                    .ok_or_else(|| ApiError::not_found("Actor was not found"))?;
                let build = if id == "default" {
                    default_build(state, &actor).await?
                } else {
                    state.storage.get_build(id).await?.ok_or_else(not_found)?
                };
                if actor.id != build.act_id {
                    return Err(not_found());
                }
                build
            }
            None => state.storage.get_build(id).await?.ok_or_else(not_found)?,
        };
        let access = Access::of(&parts.method);
        check_access(
            &caller,
            &build.user_id,
            "ANYONE_WITH_ID_CAN_READ",
            &AddressedBy::Id,
            access,
            false,
        )?;
        Ok(BuildTarget(build))
    }
}

/// Routes of one build, relative to it.
pub fn build_routes() -> Routes {
    Routes::new()
        .route("/", get(get_build).delete(delete_build))
        .route("/abort", post(abort_build))
        .route("/log", get(super::logs::get_build_log))
        .route("/openapi.json", get(super::platform::build_openapi))
}

/// `/v2/actor-builds`.
pub fn collection_routes() -> Router<AppState> {
    Router::new().route("/v2/actor-builds", get(list_all_builds))
}

/// The build object in Apify's shape.
pub fn build_json(build: &Build, caller: Option<&str>) -> Value {
    let end = build.finished_at.unwrap_or_else(troupe_model::now_ms);
    let duration = (end - build.started_at).max(0);
    let mut version = version_json(&build.version, false);
    if let Some(fields) = version.as_object_mut() {
        fields.remove("sourceFiles");
        // Anyone with the build id reads the build: credentials in source URLs stay out.
        for key in ["gitRepoUrl", "tarballUrl", "gitHubGistUrl"] {
            if let Some(Value::String(url)) = fields.get_mut(key) {
                *url = troupe_runner::source::redact(url);
            }
        }
    }
    let mut object = json!({
        "id": build.id,
        "actId": build.act_id,
        "userId": build.user_id,
        "startedAt": format_ts(build.started_at),
        "finishedAt": build.finished_at.map(format_ts),
        "status": build.status.as_str(),
        "statusMessage": build.status_message,
        "meta": { "origin": build.origin },
        "stats": {
            "durationMillis": duration,
            "runTimeSecs": duration as f64 / 1000.0,
            "computeUnits": 0,
        },
        "options": {
            "useCache": build.use_cache,
            "betaPackages": false,
            "memoryMbytes": 4096,
            "diskMbytes": 8192,
            "timeoutSecs": build.timeout_secs,
        },
        "inputSchema": build.input_schema,
        "readme": build.readme,
        "buildNumber": build.build_number,
        "buildNumberInt": build.build_number_int(),
        "actVersion": without_nulls(version),
        "actorDefinition": build.actor_definition,
    });
    if caller == Some(build.user_id.as_str()) {
        let fields = object.as_object_mut().expect("object");
        fields.insert("usage".into(), json!({ "ACTOR_COMPUTE_UNITS": 0 }));
        fields.insert("usageTotalUsd".into(), json!(0));
        fields.insert("usageUsd".into(), json!({ "ACTOR_COMPUTE_UNITS": 0 }));
    }
    object
}

pub fn build_short_json(build: &Build) -> Value {
    json!({
        "id": build.id,
        "actId": build.act_id,
        "userId": build.user_id,
        "status": build.status.as_str(),
        "startedAt": format_ts(build.started_at),
        "finishedAt": build.finished_at.map(format_ts),
        "usageTotalUsd": 0,
        "buildNumber": build.build_number,
        "buildNumberInt": build.build_number_int(),
        "meta": { "origin": build.origin },
    })
}

/// Waits for a build (if asked) and answers with it.
pub async fn respond_build(
    state: &AppState,
    build: Build,
    params: &Params,
    caller: Option<&str>,
    status: StatusCode,
) -> ApiResult<Response> {
    let wait = wait_param(params)?;
    let build = if wait.is_zero() || build.status.is_terminal() {
        build
    } else {
        state
            .runner
            .wait_build(&build.id, wait)
            .await
            .map_err(runner_error)?
            .unwrap_or(build)
    };
    Ok(data(status, build_json(&build, caller)))
}

async fn get_build(
    State(state): State<AppState>,
    caller: Caller,
    BuildTarget(build): BuildTarget,
    params: Params,
) -> ApiResult<Response> {
    respond_build(&state, build, &params, caller.user_id(), StatusCode::OK).await
}

async fn abort_build(
    State(state): State<AppState>,
    caller: Caller,
    BuildTarget(build): BuildTarget,
) -> ApiResult<Response> {
    let build = state
        .runner
        .abort_build(&build.id)
        .await
        .map_err(runner_error)?;
    Ok(data(StatusCode::OK, build_json(&build, caller.user_id())))
}

/// DELETE — finished builds only, and not one a tag points at.
async fn delete_build(
    State(state): State<AppState>,
    BuildTarget(build): BuildTarget,
) -> ApiResult<Response> {
    if !build.status.is_terminal() {
        return Err(ApiError::deleting_unfinished_build());
    }
    if let Some(actor) = state.storage.get_actor(&build.act_id).await? {
        let default_tag = &actor.default_run_options.build;
        if actor
            .tagged_builds
            .get(default_tag)
            .is_some_and(|t| t.build_id == build.id)
        {
            return Err(ApiError::deleting_default_build());
        }
    }
    state.storage.delete_build(&build.id).await?;
    let data_dir = &state.runner.config().data_dir;
    let _ = std::fs::remove_dir_all(data_dir.join("builds").join(&build.id));
    let _ = std::fs::remove_file(troupe_runner::log_path(data_dir, &build.id));
    Ok(no_content())
}

async fn list_all_builds(
    State(state): State<AppState>,
    Auth(user): Auth,
    params: Params,
) -> ApiResult<Response> {
    let page = state
        .storage
        .list_builds(&user.id, None, params.list_params()?)
        .await?;
    Ok(data(StatusCode::OK, page.map(|b| build_short_json(&b))))
}

/// True when the build can be used by runs.
pub fn usable(build: &Build) -> bool {
    build.status == JobStatus::Succeeded && build.start.is_some()
}

/// The build's snapshot of its version, with unset fields left out (the spec types them as
/// strings/arrays, not nullable).
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        other => other,
    }
}
