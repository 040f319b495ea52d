//! Actors, their versions and env vars, per-Actor builds and runs (ENDPOINTS.md §2.1-2.5). The
//! router is built once ([`routes`]) and nested under both `/v2/acts` and `/v2/actors`.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{json, Map, Value};
use troupe_model::actor::{
    Actor, Build, DefaultRunOptions, EnvVar, JobStatus, TaggedBuild, Version,
};
use troupe_model::storage::StorageKind;
use troupe_model::{format_ts, now_ms};
use troupe_runner::build::{validate_env_var_name, validate_version};

use super::builds::{build_json, build_routes, build_short_json, respond_build, usable};
use super::runs::{
    check_memory, list_runs, read_input, respond_started, run_routes, start_run, RunOptions,
    StartRun,
};
use super::{created, data, no_content};
use crate::auth::{Auth, Caller};
use crate::body::ApifyJson;
use crate::client::ClientIp;
use crate::error::{ApiError, ApiResult};
use crate::items::{items_response, ItemsQuery};
use crate::params::Params;
use crate::resolve::{check_access, find_by_ref, path_and_caller, Access, AddressedBy};
use crate::router::Routes;
use crate::state::AppState;

/// The Actor router, relative to `/v2/acts` or `/v2/actors`.
pub fn routes() -> Routes {
    Routes::new()
        .route("/", get(list_actors).post(create_actor))
        .route(
            "/{actorId}",
            get(get_actor).put(update_actor).delete(delete_actor),
        )
        .route(
            "/{actorId}/versions",
            get(list_versions).post(create_version),
        )
        .route(
            "/{actorId}/versions/{versionNumber}",
            get(get_version)
                .put(update_version)
                .post(update_version)
                .delete(delete_version),
        )
        .route(
            "/{actorId}/versions/{versionNumber}/env-vars",
            get(list_env_vars).post(create_env_var),
        )
        .route(
            "/{actorId}/versions/{versionNumber}/env-vars/{envVarName}",
            get(get_env_var)
                .put(update_env_var)
                .post(update_env_var)
                .delete(delete_env_var),
        )
        .route("/{actorId}/builds", get(list_builds).post(create_build))
        .route("/{actorId}/builds/default", get(get_default_build))
        .nest("/{actorId}/builds/{buildId}", build_routes())
        .route("/{actorId}/runs", get(list_actor_runs).post(run_actor))
        .route("/{actorId}/webhooks", get(list_actor_webhooks))
        .route(
            "/{actorId}/validate-input",
            axum::routing::post(super::platform::validate_input),
        )
        .route("/{actorId}/run-sync", get(run_sync).post(run_sync))
        .route(
            "/{actorId}/run-sync-get-dataset-items",
            get(run_sync_get_dataset_items).post(run_sync_get_dataset_items),
        )
        .nest("/{actorId}/runs/{runId}", run_routes())
}

/// Finds an Actor by id, `username~name` (also `username/name`), `~name` or the caller's bare
/// name.
pub async fn find_actor(
    state: &AppState,
    caller: &Caller,
    reference: &str,
) -> ApiResult<Option<Actor>> {
    find_by_ref(
        state,
        caller,
        &reference.replacen('/', "~", 1),
        |id| async move { state.storage.get_actor(id).await },
        |owner_id, name| async move { state.storage.get_actor_by_name(&owner_id, name).await },
    )
    .await
}

/// Like [`find_actor`], but only the id (the Actor is not loaded).
pub async fn find_actor_id(
    state: &AppState,
    caller: &Caller,
    reference: &str,
) -> ApiResult<Option<String>> {
    find_by_ref(
        state,
        caller,
        &reference.replacen('/', "~", 1),
        |id| async move {
            Ok(state
                .storage
                .actor_exists(id)
                .await?
                .then(|| id.to_string()))
        },
        |owner_id, name| async move { state.storage.actor_id_by_name(&owner_id, name).await },
    )
    .await
}

/// The Actor a request path names, access checked: its owner may do anything; others may read
/// a public Actor.
pub struct ActorTarget(pub Actor, pub Caller);

impl FromRequestParts<AppState> for ActorTarget {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (path, caller) = path_and_caller(parts, state).await?;
        let reference = path
            .get("actorId")
            .ok_or_else(|| ApiError::not_found("Actor was not found"))?;
        let actor = find_actor(state, &caller, reference)
            .await?
            .ok_or_else(|| ApiError::not_found("Actor was not found"))?;
        let public = actor.extra.get("isPublic") == Some(&Value::Bool(true));
        let access =
            if parts.uri.path().ends_with("/runs") || parts.uri.path().contains("/run-sync") {
                // Starting or listing runs is the owner's business.
                Access::Write
            } else {
                Access::of(&parts.method)
            };
        check_access(
            &caller,
            &actor.user_id,
            if public {
                "ANYONE_WITH_ID_CAN_READ"
            } else {
                "RESTRICTED"
            },
            &AddressedBy::Id,
            access,
            false,
        )?;
        Ok(ActorTarget(actor, caller))
    }
}

/// Actor names: 3-63 characters of `a-z0-9-`, not starting or ending with `-`.
fn validate_actor_name(name: &str) -> Result<(), String> {
    if crate::body::is_valid_name(name) {
        Ok(())
    } else {
        Err(format!(
            "Invalid Actor name \"{name}\": use 3 to 63 lowercase letters, digits and hyphens"
        ))
    }
}

/// A version as JSON; secret env var values are withheld unless `secrets`.
pub fn version_json(version: &Version, secrets: bool) -> Value {
    let mut value = serde_json::to_value(version).unwrap_or(Value::Null);
    if let Some(vars) = value.get_mut("envVars").and_then(Value::as_array_mut) {
        for var in vars {
            if !secrets && var["isSecret"] == Value::Bool(true) {
                if let Some(o) = var.as_object_mut() {
                    o.remove("value");
                }
            }
        }
    }
    if let Some(o) = value.as_object_mut() {
        if o.get("buildTag").is_some_and(Value::is_null) {
            o.insert("buildTag".into(), json!("latest"));
        }
    }
    value
}

fn env_var_json(var: &EnvVar) -> Value {
    let mut value = json!({ "name": var.name, "isSecret": var.is_secret });
    if !var.is_secret {
        value["value"] = json!(var.value);
    }
    value
}

/// Keys of the Actor object troupe computes itself.
const RESERVED: &[&str] = &[
    "id",
    "userId",
    "username",
    "name",
    "createdAt",
    "modifiedAt",
    "stats",
    "versions",
    "defaultRunOptions",
    "taggedBuilds",
];

/// The Actor object in Apify's shape.
async fn actor_json(state: &AppState, actor: &Actor, owner: bool) -> ApiResult<Value> {
    let runs = state
        .storage
        .list_runs(
            &actor.user_id,
            troupe_storage::RunFilter {
                act_id: Some(actor.id.clone()),
                statuses: vec![],
                ..Default::default()
            },
            troupe_model::ListParams {
                offset: 0,
                limit: 1,
                desc: true,
            },
        )
        .await?;
    let builds = state
        .storage
        .list_builds(
            &actor.user_id,
            Some(&actor.id),
            troupe_model::ListParams {
                offset: 0,
                limit: 1,
                desc: true,
            },
        )
        .await?;
    let mut object = json!({
        "id": actor.id,
        "userId": actor.user_id,
        "name": actor.name,
        "username": actor.username,
        "description": null,
        "title": null,
        "isPublic": false,
        "restartOnError": actor.default_run_options.restart_on_error,
        "actorPermissionLevel": "FULL_PERMISSIONS",
        "createdAt": format_ts(actor.created_at),
        "modifiedAt": format_ts(actor.modified_at),
        "stats": {
            "totalBuilds": builds.total,
            "totalRuns": runs.total,
            "totalUsers": 1,
            "totalUsers7Days": 1,
            "totalUsers30Days": 1,
            "totalUsers90Days": 1,
            "totalMetamorphs": 0,
        },
        "versions": actor.versions.iter().map(|v| version_json(v, owner)).collect::<Vec<_>>(),
        "defaultRunOptions": actor.default_run_options,
        "taggedBuilds": actor.tagged_builds.iter().map(|(tag, t)| (tag.clone(), json!({
            "buildId": t.build_id,
            "buildNumber": t.build_number,
            "buildNumberInt": troupe_model::actor::build_number_int(&t.build_number),
            "finishedAt": t.finished_at.map(format_ts),
        }))).collect::<Map<String, Value>>(),
        "pricingInfos": [],
        "categories": [],
        "isDeprecated": false,
        "deploymentKey": "",
    });
    // Absent (not null) before the first run: the spec types it as a timestamp string.
    if let Some(run) = runs.items.first() {
        object["stats"]["lastRunStartedAt"] = json!(format_ts(run.started_at));
    }
    let fields = object.as_object_mut().expect("object");
    for (k, v) in &actor.extra {
        fields.insert(k.clone(), v.clone());
    }
    Ok(object)
}

fn actor_short_json(actor: &Actor) -> Value {
    let mut object = json!({
        "id": actor.id,
        "createdAt": format_ts(actor.created_at),
        "modifiedAt": format_ts(actor.modified_at),
        "name": actor.name,
        "username": actor.username,
    });
    // `title` is a string when the Actor has one, absent otherwise (never null).
    if let Some(title) = actor.extra.get("title").filter(|t| t.is_string()) {
        object["title"] = title.clone();
    }
    object
}

fn parse_version(value: Value) -> ApiResult<Version> {
    if !value.is_object() {
        return Err(ApiError::invalid_input("A version must be a JSON object"));
    }
    let version: Version = serde_json::from_value(value)
        .map_err(|err| ApiError::invalid_input(format!("Invalid version: {err}")))?;
    validate_version(&version).map_err(ApiError::invalid_input)?;
    let mut names = std::collections::HashSet::new();
    for var in &version.env_vars {
        if !names.insert(var.name.clone()) {
            return Err(ApiError::env_var_already_exists(&var.name));
        }
    }
    Ok(version)
}

fn parse_versions(value: &Value) -> ApiResult<Vec<Version>> {
    let Value::Array(items) = value else {
        return Err(ApiError::invalid_input(
            "Field \"versions\" must be an array",
        ));
    };
    let mut out: Vec<Version> = Vec::new();
    for item in items {
        let version = parse_version(item.clone())?;
        if out
            .iter()
            .any(|v| v.version_number == version.version_number)
        {
            return Err(ApiError::version_already_exists(&version.version_number));
        }
        out.push(version);
    }
    Ok(out)
}

/// Merges `value` (an object) over `current` default run options and validates them.
fn parse_run_options(current: &DefaultRunOptions, value: &Value) -> ApiResult<DefaultRunOptions> {
    let Value::Object(patch) = value else {
        return Err(ApiError::invalid_input(
            "Field \"defaultRunOptions\" must be an object",
        ));
    };
    let mut merged = serde_json::to_value(current).map_err(ApiError::internal)?;
    for (k, v) in patch {
        if !v.is_null() {
            merged[k] = v.clone();
        }
    }
    let options: DefaultRunOptions = serde_json::from_value(merged)
        .map_err(|err| ApiError::invalid_input(format!("Invalid defaultRunOptions: {err}")))?;
    check_memory(options.memory_mbytes).map_err(ApiError::invalid_input)?;
    if options.build.is_empty() {
        return Err(ApiError::invalid_input(
            "defaultRunOptions.build must not be empty",
        ));
    }
    Ok(options)
}

/// Copies the free-form fields of a create/update body into `extra`.
fn apply_extra(extra: &mut Map<String, Value>, body: &Map<String, Value>) -> ApiResult<()> {
    for (k, v) in body {
        if RESERVED.contains(&k.as_str()) {
            continue;
        }
        if k == "isPublic" && !v.is_boolean() && !v.is_null() {
            return Err(ApiError::invalid_input(
                "Field \"isPublic\" must be a boolean",
            ));
        }
        extra.insert(k.clone(), v.clone());
    }
    Ok(())
}

/// GET /v2/acts — the caller's Actors.
async fn list_actors(
    State(state): State<AppState>,
    Auth(user): Auth,
    params: Params,
) -> ApiResult<Response> {
    let page = state
        .storage
        .list_actors(&user.id, params.list_params()?)
        .await?;
    Ok(data(StatusCode::OK, page.map(|a| actor_short_json(&a))))
}

/// POST /v2/acts — create an Actor (versions inline).
async fn create_actor(
    State(state): State<AppState>,
    Auth(user): Auth,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    let Value::Object(body) = body else {
        return Err(ApiError::invalid_input(
            "Request body must be a JSON object",
        ));
    };
    let name = match body.get("name") {
        Some(Value::String(name)) => name.clone(),
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_input("Field \"name\" is required"))
        }
        Some(_) => return Err(ApiError::invalid_input("Field \"name\" must be a string")),
    };
    validate_actor_name(&name).map_err(ApiError::invalid_input)?;
    let versions = match body.get("versions") {
        None | Some(Value::Null) => vec![],
        Some(v) => parse_versions(v)?,
    };
    let default_run_options = match body.get("defaultRunOptions") {
        None | Some(Value::Null) => DefaultRunOptions::default(),
        Some(v) => parse_run_options(&DefaultRunOptions::default(), v)?,
    };
    let mut extra = Map::new();
    apply_extra(&mut extra, &body)?;
    let now = now_ms();
    let actor = Actor {
        id: troupe_model::new_id(),
        user_id: user.id.clone(),
        username: user.username.clone(),
        name: name.clone(),
        created_at: now,
        modified_at: now,
        versions,
        default_run_options,
        tagged_builds: BTreeMap::new(),
        build_counters: BTreeMap::new(),
        extra,
    };
    let actor = state
        .storage
        .create_actor(actor)
        .await
        .map_err(|err| match err {
            troupe_storage::Error::Conflict(_) => ApiError::actor_name_not_unique(&name),
            other => other.into(),
        })?;
    let object = actor_json(&state, &actor, true).await?;
    Ok(created(
        &format!("{}/acts/{}", state.api_base(), actor.id),
        object,
    ))
}

async fn get_actor(
    State(state): State<AppState>,
    ActorTarget(actor, caller): ActorTarget,
) -> ApiResult<Response> {
    let owner = caller.user_id() == Some(actor.user_id.as_str());
    Ok(data(
        StatusCode::OK,
        actor_json(&state, &actor, owner).await?,
    ))
}

/// PUT /v2/acts/{actorId} — partial update; `taggedBuilds` is patched tag by tag.
async fn update_actor(
    State(state): State<AppState>,
    ActorTarget(actor, _): ActorTarget,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    let Value::Object(body) = body else {
        return Err(ApiError::invalid_input(
            "Request body must be a JSON object",
        ));
    };
    let name = match body.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => {
            validate_actor_name(name).map_err(ApiError::invalid_input)?;
            Some(name.clone())
        }
        Some(_) => return Err(ApiError::invalid_input("Field \"name\" must be a string")),
    };
    let versions = match body.get("versions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_versions(v)?),
    };
    let options = match body.get("defaultRunOptions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_run_options(&actor.default_run_options, v)?),
    };
    // Tag patches: tag → {buildId} sets it (the build must be this Actor's), null removes it.
    let mut tags: Vec<(String, Option<TaggedBuild>)> = Vec::new();
    match body.get("taggedBuilds") {
        None | Some(Value::Null) => {}
        Some(Value::Object(patch)) => {
            for (tag, value) in patch {
                match value {
                    Value::Null => tags.push((tag.clone(), None)),
                    Value::Object(o) => {
                        let build_id =
                            o.get("buildId").and_then(Value::as_str).ok_or_else(|| {
                                ApiError::invalid_input(format!(
                                    "taggedBuilds.{tag}.buildId is required"
                                ))
                            })?;
                        let build = state
                            .storage
                            .get_build(build_id)
                            .await?
                            .filter(|b| b.act_id == actor.id)
                            .ok_or_else(|| {
                                ApiError::invalid_input(format!(
                                    "Build \"{build_id}\" does not belong to this Actor"
                                ))
                            })?;
                        tags.push((
                            tag.clone(),
                            Some(TaggedBuild {
                                build_id: build.id,
                                build_number: build.build_number,
                                finished_at: build.finished_at,
                            }),
                        ));
                    }
                    _ => return Err(ApiError::invalid_input("Invalid taggedBuilds entry")),
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid_input(
                "Field \"taggedBuilds\" must be an object",
            ))
        }
    }
    let mut extra = actor.extra.clone();
    apply_extra(&mut extra, &body)?;
    let new_name = name.clone();
    let updated = state
        .storage
        .update_actor(
            &actor.id,
            Box::new(move |a: &mut Actor| {
                if let Some(name) = name {
                    a.name = name;
                }
                if let Some(versions) = versions {
                    a.versions = versions;
                }
                if let Some(options) = options {
                    a.default_run_options = options;
                }
                for (tag, value) in tags {
                    match value {
                        Some(t) => {
                            a.tagged_builds.insert(tag, t);
                        }
                        None => {
                            a.tagged_builds.remove(&tag);
                        }
                    }
                }
                a.extra = extra;
                a.modified_at = now_ms();
                Ok(())
            }),
        )
        .await
        .map_err(|err| match err {
            troupe_storage::Error::Conflict(_) => {
                ApiError::actor_name_not_unique(new_name.as_deref().unwrap_or(""))
            }
            other => other.into(),
        })?;
    Ok(data(
        StatusCode::OK,
        actor_json(&state, &updated, true).await?,
    ))
}

async fn delete_actor(
    State(state): State<AppState>,
    ActorTarget(actor, _): ActorTarget,
) -> ApiResult<Response> {
    let runs = state
        .storage
        .list_runs(
            &actor.user_id,
            troupe_storage::RunFilter {
                act_id: Some(actor.id.clone()),
                statuses: vec![
                    JobStatus::Ready,
                    JobStatus::Running,
                    JobStatus::Aborting,
                    JobStatus::TimingOut,
                ],
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    for run in runs.items {
        let _ = state.runner.abort_run(&run.id, false).await;
    }
    state.storage.delete_actor(&actor.id).await?;
    Ok(no_content())
}

// ---- versions ----

fn find_version<'a>(actor: &'a Actor, number: &str) -> ApiResult<&'a Version> {
    actor
        .versions
        .iter()
        .find(|v| v.version_number == number)
        .ok_or_else(|| ApiError::not_found(format!("Version {number} was not found")))
}

async fn list_versions(ActorTarget(actor, caller): ActorTarget) -> Response {
    let owner = caller.user_id() == Some(actor.user_id.as_str());
    let items: Vec<Value> = actor
        .versions
        .iter()
        .map(|v| version_json(v, owner))
        .collect();
    data(
        StatusCode::OK,
        json!({ "total": items.len(), "items": items }),
    )
}

async fn create_version(
    State(state): State<AppState>,
    ActorTarget(actor, _): ActorTarget,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    let version = parse_version(body)?;
    let number = version.version_number.clone();
    let stored = version.clone();
    state
        .storage
        .update_actor(
            &actor.id,
            Box::new(move |a: &mut Actor| {
                if a.versions
                    .iter()
                    .any(|v| v.version_number == stored.version_number)
                {
                    return Err(troupe_storage::Error::Invalid(String::new()));
                }
                a.versions.push(stored);
                a.modified_at = now_ms();
                Ok(())
            }),
        )
        .await
        .map_err(|err| match err {
            troupe_storage::Error::Invalid(_) => ApiError::version_already_exists(&number),
            other => other.into(),
        })?;
    Ok(created(
        &format!("{}/acts/{}/versions/{number}", state.api_base(), actor.id),
        version_json(&version, true),
    ))
}

async fn get_version(
    ActorTarget(actor, caller): ActorTarget,
    Path((_, number)): Path<(String, String)>,
) -> ApiResult<Response> {
    let owner = caller.user_id() == Some(actor.user_id.as_str());
    Ok(data(
        StatusCode::OK,
        version_json(find_version(&actor, &number)?, owner),
    ))
}

/// PUT (or POST) a version — fields given replace the stored ones.
async fn update_version(
    State(state): State<AppState>,
    ActorTarget(actor, _): ActorTarget,
    Path((_, number)): Path<(String, String)>,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    let Value::Object(patch) = body else {
        return Err(ApiError::invalid_input(
            "Request body must be a JSON object",
        ));
    };
    let current = find_version(&actor, &number)?;
    let mut merged = version_json(current, true);
    for (k, v) in patch {
        merged[&k] = v;
    }
    let version = parse_version(merged)?;
    if version.version_number != number
        && actor
            .versions
            .iter()
            .any(|v| v.version_number == version.version_number)
    {
        return Err(ApiError::version_already_exists(&version.version_number));
    }
    let stored = version.clone();
    state
        .storage
        .update_actor(
            &actor.id,
            Box::new(move |a: &mut Actor| {
                let slot = a
                    .versions
                    .iter_mut()
                    .find(|v| v.version_number == number)
                    .ok_or_else(|| {
                        troupe_storage::Error::NotFound(format!("Version {number} was not found"))
                    })?;
                *slot = stored;
                a.modified_at = now_ms();
                Ok(())
            }),
        )
        .await?;
    Ok(data(StatusCode::OK, version_json(&version, true)))
}

async fn delete_version(
    State(state): State<AppState>,
    ActorTarget(actor, _): ActorTarget,
    Path((_, number)): Path<(String, String)>,
) -> ApiResult<Response> {
    find_version(&actor, &number)?;
    state
        .storage
        .update_actor(
            &actor.id,
            Box::new(move |a: &mut Actor| {
                a.versions.retain(|v| v.version_number != number);
                a.modified_at = now_ms();
                Ok(())
            }),
        )
        .await?;
    Ok(no_content())
}

// ---- env vars ----

async fn list_env_vars(
    ActorTarget(actor, _): ActorTarget,
    Path((_, number)): Path<(String, String)>,
) -> ApiResult<Response> {
    let version = find_version(&actor, &number)?;
    let items: Vec<Value> = version.env_vars.iter().map(env_var_json).collect();
    Ok(data(
        StatusCode::OK,
        json!({ "total": items.len(), "items": items }),
    ))
}

fn parse_env_var(body: Value, current: Option<&EnvVar>) -> ApiResult<EnvVar> {
    let Value::Object(patch) = body else {
        return Err(ApiError::invalid_input(
            "Request body must be a JSON object",
        ));
    };
    let mut merged = current
        .map(|c| serde_json::to_value(c).unwrap_or_default())
        .unwrap_or_else(|| json!({}));
    for (k, v) in patch {
        merged[&k] = v;
    }
    let var: EnvVar = serde_json::from_value(merged)
        .map_err(|err| ApiError::invalid_input(format!("Invalid environment variable: {err}")))?;
    validate_env_var_name(&var.name).map_err(ApiError::invalid_input)?;
    Ok(var)
}

/// Applies `change` to the env vars of version `number` of the Actor.
async fn change_env_vars(
    state: &AppState,
    actor: &Actor,
    number: String,
    change: impl FnOnce(&mut Vec<EnvVar>) -> Result<(), ApiError> + Send + 'static,
) -> ApiResult<()> {
    let failure = std::sync::Arc::new(parking_lot::Mutex::new(None));
    let slot = failure.clone();
    let result = state
        .storage
        .update_actor(
            &actor.id,
            Box::new(move |a: &mut Actor| {
                let version = a
                    .versions
                    .iter_mut()
                    .find(|v| v.version_number == number)
                    .ok_or_else(|| {
                        troupe_storage::Error::NotFound(format!("Version {number} was not found"))
                    })?;
                if let Err(err) = change(&mut version.env_vars) {
                    *slot.lock() = Some(err);
                    return Err(troupe_storage::Error::Invalid(String::new()));
                }
                a.modified_at = now_ms();
                Ok(())
            }),
        )
        .await;
    if let Some(err) = failure.lock().take() {
        return Err(err);
    }
    result?;
    Ok(())
}

async fn create_env_var(
    State(state): State<AppState>,
    ActorTarget(actor, _): ActorTarget,
    Path((_, number)): Path<(String, String)>,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    find_version(&actor, &number)?;
    let var = parse_env_var(body, None)?;
    let stored = var.clone();
    change_env_vars(&state, &actor, number.clone(), move |vars| {
        if vars.iter().any(|v| v.name == stored.name) {
            return Err(ApiError::env_var_already_exists(&stored.name));
        }
        vars.push(stored);
        Ok(())
    })
    .await?;
    Ok(created(
        &format!(
            "{}/acts/{}/versions/{number}/env-vars/{}",
            state.api_base(),
            actor.id,
            var.name
        ),
        env_var_json(&var),
    ))
}

async fn get_env_var(
    ActorTarget(actor, _): ActorTarget,
    Path((_, number, name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let version = find_version(&actor, &number)?;
    let var = version
        .env_vars
        .iter()
        .find(|v| v.name == name)
        .ok_or_else(|| ApiError::not_found(format!("Environment variable {name} was not found")))?;
    Ok(data(StatusCode::OK, env_var_json(var)))
}

async fn update_env_var(
    State(state): State<AppState>,
    ActorTarget(actor, _): ActorTarget,
    Path((_, number, name)): Path<(String, String, String)>,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    let version = find_version(&actor, &number)?;
    let current = version
        .env_vars
        .iter()
        .find(|v| v.name == name)
        .ok_or_else(|| ApiError::not_found(format!("Environment variable {name} was not found")))?;
    let var = parse_env_var(body, Some(current))?;
    if var.name != name {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "cannot-rename-env-var",
            "An environment variable cannot be renamed",
        ));
    }
    let stored = var.clone();
    change_env_vars(&state, &actor, number, move |vars| {
        if let Some(slot) = vars.iter_mut().find(|v| v.name == stored.name) {
            *slot = stored;
        }
        Ok(())
    })
    .await?;
    Ok(data(StatusCode::OK, env_var_json(&var)))
}

async fn delete_env_var(
    State(state): State<AppState>,
    ActorTarget(actor, _): ActorTarget,
    Path((_, number, name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let version = find_version(&actor, &number)?;
    if !version.env_vars.iter().any(|v| v.name == name) {
        return Err(ApiError::not_found(format!(
            "Environment variable {name} was not found"
        )));
    }
    change_env_vars(&state, &actor, number, move |vars| {
        vars.retain(|v| v.name != name);
        Ok(())
    })
    .await?;
    Ok(no_content())
}

// ---- builds ----

async fn list_builds(
    State(state): State<AppState>,
    ActorTarget(actor, caller): ActorTarget,
    params: Params,
) -> ApiResult<Response> {
    let user = caller.require()?;
    let page = state
        .storage
        .list_builds(&user.id, Some(&actor.id), params.list_params()?)
        .await?;
    Ok(data(StatusCode::OK, page.map(|b| build_short_json(&b))))
}

/// POST /v2/acts/{actorId}/builds?version=X.Y[&tag=][&useCache=][&timeout=][&waitForFinish=]
async fn create_build(
    State(state): State<AppState>,
    ActorTarget(actor, caller): ActorTarget,
    params: Params,
) -> ApiResult<Response> {
    let user = caller.require()?.clone();
    let number = params
        .str("version")
        .ok_or_else(|| ApiError::parameter_required("version"))?
        .to_string();
    let use_cache = params.bool("useCache", true)?;
    params.bool("betaPackages", false)?;
    // Seconds; 0 = no limit; absent = the server's --build-timeout.
    let timeout_secs = match params.u64("timeout")? {
        Some(secs) => secs,
        None => state
            .runner
            .config()
            .build_timeout
            .map_or(0, |t| t.as_secs().max(1)),
    };
    let version = actor
        .versions
        .iter()
        .find(|v| v.version_number == number)
        .cloned()
        .ok_or_else(|| {
            ApiError::invalid_parameter(format!("Version {number} of this Actor does not exist"))
        })?;
    if !troupe_runner::build::BUILDABLE_SOURCE_TYPES.contains(&version.source_type.as_str()) {
        return Err(ApiError::invalid_input(format!(
            "Source type {} cannot be built by troupe (use SOURCE_FILES, GIT_REPO, TARBALL or GITHUB_GIST)",
            version.source_type
        )));
    }
    let tag = params
        .str("tag")
        .map(str::to_string)
        .or_else(|| version.build_tag.clone())
        .unwrap_or_else(|| "latest".into());
    let counter_key = number.clone();
    let updated = state
        .storage
        .update_actor(
            &actor.id,
            Box::new(move |a: &mut Actor| {
                *a.build_counters.entry(counter_key).or_insert(0) += 1;
                Ok(())
            }),
        )
        .await?;
    let n = updated.build_counters.get(&number).copied().unwrap_or(1);
    let build = Build {
        id: troupe_model::new_id(),
        act_id: actor.id.clone(),
        user_id: user.id.clone(),
        started_at: now_ms(),
        finished_at: None,
        status: JobStatus::Ready,
        status_message: None,
        build_number: format!("{number}.{n}"),
        version_number: number,
        tag,
        origin: "API".into(),
        use_cache,
        timeout_secs,
        version,
        start: None,
        actor_definition: None,
        input_schema: None,
        readme: None,
        git_branch_name: None,
    };
    state.storage.create_build(build.clone()).await?;
    state.runner.emit(Some(troupe_runner::JobEvent::Build {
        event_type: "ACTOR.BUILD.CREATED",
        build: build.clone(),
    }));
    state.runner.start_build(&build.id);
    let location = format!("{}/actor-builds/{}", state.api_base(), build.id);
    let mut response =
        respond_build(&state, build, &params, Some(&user.id), StatusCode::CREATED).await?;
    if let Ok(value) = location.parse() {
        response
            .headers_mut()
            .insert(axum::http::header::LOCATION, value);
    }
    Ok(response)
}

/// GET /v2/acts/{actorId}/builds/default — the build the default `build` tag points at.
async fn get_default_build(
    State(state): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let actor = find_actor(&state, &caller, &reference)
        .await?
        .ok_or_else(|| ApiError::not_found("Actor was not found"))?;
    let build = default_build(&state, &actor).await?;
    respond_build(&state, build, &params, caller.user_id(), StatusCode::OK).await
}

/// The build the Actor's default build tag (`defaultRunOptions.build`) points at.
pub async fn default_build(state: &AppState, actor: &Actor) -> ApiResult<Build> {
    let not_found = || ApiError::not_found("The Actor has no default build");
    let tagged = actor
        .tagged_builds
        .get(&actor.default_run_options.build)
        .ok_or_else(not_found)?;
    state
        .storage
        .get_build(&tagged.build_id)
        .await?
        .ok_or_else(not_found)
}

/// The build a `build` option (tag, build number or build id) names; it must have succeeded.
pub async fn resolve_build(
    state: &AppState,
    actor: &Actor,
    option: Option<&str>,
) -> ApiResult<Build> {
    let option = option.unwrap_or(&actor.default_run_options.build);
    let mut id = actor.tagged_builds.get(option).map(|t| t.build_id.clone());
    if id.is_none() && option.split('.').count() == 3 {
        let builds = state
            .storage
            .list_builds(&actor.user_id, Some(&actor.id), Default::default())
            .await?;
        id = builds
            .items
            .into_iter()
            .find(|b| b.build_number == option)
            .map(|b| b.id);
    }
    let id = id.unwrap_or_else(|| option.to_string());
    match state.storage.get_build(&id).await? {
        Some(build) if build.act_id == actor.id && usable(&build) => Ok(build),
        _ => Err(ApiError::unknown_build(option)),
    }
}

// ---- runs ----

async fn list_actor_runs(
    State(state): State<AppState>,
    ActorTarget(actor, caller): ActorTarget,
    params: Params,
) -> ApiResult<Response> {
    let user = caller.require()?.clone();
    list_runs(&state, &user, Some(actor.id), &params).await
}

/// GET /v2/actors/{actorId}/webhooks — the caller's webhooks whose condition names this Actor.
async fn list_actor_webhooks(
    State(state): State<AppState>,
    ActorTarget(actor, caller): ActorTarget,
    params: Params,
) -> ApiResult<Response> {
    let user = caller.require()?;
    super::webhooks::list_for(
        &state,
        &user.id,
        troupe_storage::WebhookFilter::Actor(actor.id),
        &params,
    )
    .await
}

pub fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn start_from_request(
    state: &AppState,
    actor: Actor,
    caller: &Caller,
    params: &Params,
    headers: &HeaderMap,
    client_ip: ClientIp,
    body: Body,
) -> ApiResult<troupe_model::actor::Run> {
    let user = caller.require()?.clone();
    let options = RunOptions::from_params(params)?;
    params.u64("waitForFinish")?;
    let input = read_input(headers, body).await?;
    start_run(
        state,
        &user,
        StartRun {
            actor,
            options,
            input,
            origin: "API".into(),
            task_id: None,
            client_ip: client_ip.text(),
            user_agent: user_agent(headers),
            schedule: None,
        },
    )
    .await
}

/// POST /v2/acts/{actorId}/runs — body + content type become INPUT; 201 + Run.
async fn run_actor(
    State(state): State<AppState>,
    ActorTarget(actor, caller): ActorTarget,
    params: Params,
    headers: HeaderMap,
    client_ip: ClientIp,
    body: Body,
) -> ApiResult<Response> {
    let run =
        start_from_request(&state, actor, &caller, &params, &headers, client_ip, body).await?;
    let user = caller.require()?;
    respond_started(&state, run, &params, user).await
}

/// Starts a run and waits for it (≤ 300 s): 408 when still going, 400 `run-failed` when it did
/// not succeed.
async fn run_and_wait(
    state: &AppState,
    actor: Actor,
    caller: &Caller,
    params: &Params,
    headers: &HeaderMap,
    client_ip: ClientIp,
    body: Body,
) -> ApiResult<troupe_model::actor::Run> {
    let run = start_from_request(state, actor, caller, params, headers, client_ip, body).await?;
    wait_sync(state, run).await
}

/// Waits for a run started by a sync endpoint (≤ 300 s): 408 when still going, 400
/// `run-failed` when it did not succeed. Shared by Actors and tasks.
pub async fn wait_sync(
    state: &AppState,
    run: troupe_model::actor::Run,
) -> ApiResult<troupe_model::actor::Run> {
    let run = state
        .runner
        .wait_run(&run.id, state.runner.config().sync_run_wait)
        .await
        .map_err(super::runs::runner_error)?
        .unwrap_or(run);
    if !run.status.is_terminal() {
        return Err(ApiError::run_timeout_exceeded(&run.id));
    }
    if run.status != JobStatus::Succeeded {
        return Err(ApiError::run_failed(&run.id, run.status.as_str()));
    }
    Ok(run)
}

/// GET|POST /v2/acts/{actorId}/run-sync — 201 with the OUTPUT (or `outputRecordKey`) record.
async fn run_sync(
    State(state): State<AppState>,
    ActorTarget(actor, caller): ActorTarget,
    params: Params,
    headers: HeaderMap,
    client_ip: ClientIp,
    body: Body,
) -> ApiResult<Response> {
    let run = run_and_wait(&state, actor, &caller, &params, &headers, client_ip, body).await?;
    sync_output_response(&state, &run, &params).await
}

/// The answer of a finished `run-sync`: 201 with the output record. Shared by Actors and tasks.
pub async fn sync_output_response(
    state: &AppState,
    run: &troupe_model::actor::Run,
    params: &Params,
) -> ApiResult<Response> {
    let key = params.str("outputRecordKey").unwrap_or("OUTPUT");
    let record = super::run_input::get(state, &run.default_key_value_store_id, key).await?;
    let mut response = match record {
        Some((bytes, content_type)) => ([("content-type", content_type)], bytes).into_response(),
        None => Body::empty().into_response(),
    };
    *response.status_mut() = StatusCode::CREATED;
    super::super::router::set_header(&mut response, "x-apify-run-id", &run.id);
    Ok(response)
}

/// GET|POST /v2/acts/{actorId}/run-sync-get-dataset-items — 201 with the default dataset's
/// items in any format (the dataset export code, with the same query parameters).
async fn run_sync_get_dataset_items(
    State(state): State<AppState>,
    ActorTarget(actor, caller): ActorTarget,
    params: Params,
    headers: HeaderMap,
    client_ip: ClientIp,
    body: Body,
) -> ApiResult<Response> {
    let query = ItemsQuery::from_params(&params)?;
    let run = run_and_wait(&state, actor, &caller, &params, &headers, client_ip, body).await?;
    sync_items_response(&state, &run, query).await
}

/// The answer of a finished `run-sync-get-dataset-items`: 201 with the items. Shared by Actors
/// and tasks.
pub async fn sync_items_response(
    state: &AppState,
    run: &troupe_model::actor::Run,
    query: ItemsQuery,
) -> ApiResult<Response> {
    let info = state
        .storage
        .get_storage(StorageKind::Dataset, &run.default_dataset_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Dataset was not found"))?;
    let url = format!("{}/datasets/{}/items", state.api_base(), info.id);
    let mut response = items_response(
        state.storage.clone(),
        &info,
        query,
        url,
        state.config.temp_dir.clone(),
    )
    .await?;
    if response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::CREATED;
    }
    super::super::router::set_header(&mut response, "x-apify-run-id", &run.id);
    Ok(response)
}

#[allow(dead_code)]
fn _assert_build_json_used(b: &Build) -> Value {
    build_json(b, None)
}
