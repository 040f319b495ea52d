//! Webhooks and webhook dispatches (ENDPOINTS.md §2.14): CRUD, test, the dispatch listings,
//! and the per-Actor / per-task webhook lists (mounted by the Actor and task routers).
//! Delivery itself lives in [`crate::hooks`].

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use troupe_model::hooks::{Webhook, WebhookCondition, WebhookDispatch};
use troupe_model::now_ms;
use troupe_storage::WebhookFilter;

use super::actors::find_actor;
use super::tasks::find_task;
use super::{created, data, no_content};
use crate::auth::{Auth, Caller};
use crate::body::{body_object, ApifyJson};
use crate::error::{ApiError, ApiResult};
use crate::hooks::webhook::{
    dispatch_json, new_webhook, parse_input, webhook_json, ConditionInput, WebhookInput,
};
use crate::params::Params;
use crate::resolve::{owner_only, private_path_and_caller};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/webhooks", get(list_webhooks).post(create_webhook))
        .route(
            "/v2/webhooks/{webhookId}",
            get(get_webhook).put(update_webhook).delete(delete_webhook),
        )
        .route("/v2/webhooks/{webhookId}/test", post(test_webhook))
        .route(
            "/v2/webhooks/{webhookId}/dispatches",
            get(list_webhook_dispatches),
        )
        .route("/v2/webhook-dispatches", get(list_dispatches))
        .route("/v2/webhook-dispatches/{dispatchId}", get(get_dispatch))
}

fn webhook_not_found() -> ApiError {
    ApiError::not_found("Webhook was not found")
}

/// The webhook a path names, owner checked.
pub struct WebhookTarget(pub Webhook, pub Caller);

impl FromRequestParts<AppState> for WebhookTarget {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (path, caller) = private_path_and_caller(parts, state).await?;
        let id = path.get("webhookId").ok_or_else(webhook_not_found)?;
        let webhook = state
            .storage
            .get_webhook(id)
            .await?
            .ok_or_else(webhook_not_found)?;
        owner_only(&caller, &webhook.user_id)?;
        Ok(WebhookTarget(webhook, caller))
    }
}

/// A page of the user's webhooks (all, or those of one Actor or task).
pub async fn list_for(
    state: &AppState,
    user_id: &str,
    filter: WebhookFilter,
    params: &Params,
) -> ApiResult<Response> {
    let list = params.list_params()?;
    let page = state.storage.list_webhooks(user_id, filter, list).await?;
    Ok(data(StatusCode::OK, page.map(|w| webhook_json(&w))))
}

/// The condition with every reference resolved to an id the caller may use: an Actor they
/// own or a public one, their own task or run. Unknown ones are 404 `record-not-found`.
async fn resolve_condition(
    state: &AppState,
    caller: &Caller,
    input: ConditionInput,
) -> ApiResult<WebhookCondition> {
    let user_id = caller.require()?.id.clone();
    let mut condition = WebhookCondition::default();
    if let Some(reference) = input.actor_id {
        let actor = find_actor(state, caller, &reference)
            .await?
            .filter(|a| a.user_id == user_id || a.extra.get("isPublic") == Some(&Value::Bool(true)))
            .ok_or_else(|| ApiError::not_found("Actor of the webhook condition was not found"))?;
        condition.actor_id = Some(actor.id);
    }
    if let Some(reference) = input.actor_task_id {
        let task = find_task(state, caller, &reference)
            .await?
            .filter(|t| t.user_id == user_id)
            .ok_or_else(|| {
                ApiError::not_found("Actor task of the webhook condition was not found")
            })?;
        condition.actor_task_id = Some(task.id);
    }
    if let Some(id) = input.actor_run_id {
        let run = state
            .storage
            .get_run(&id)
            .await?
            .filter(|r| r.user_id == user_id)
            .ok_or_else(|| {
                ApiError::not_found("Actor run of the webhook condition was not found")
            })?;
        condition.actor_run_id = Some(run.id);
    }
    Ok(condition)
}
/// GET /v2/webhooks
async fn list_webhooks(
    State(state): State<AppState>,
    Auth(user): Auth,
    params: Params,
) -> ApiResult<Response> {
    list_for(&state, &user.id, WebhookFilter::All, &params).await
}

/// POST /v2/webhooks — `eventTypes`, `requestUrl` and a `condition` naming an Actor, task or
/// run are required. With an `idempotencyKey` the caller already used, the existing webhook is
/// returned (200) and nothing changes.
async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    let user = caller.require()?.clone();
    let body = body_object(body)?;
    let input: WebhookInput = parse_input(&body)?;
    if input.event_types.is_none() {
        return Err(ApiError::invalid_input("Field \"eventTypes\" is required"));
    }
    if input.request_url.is_none() {
        return Err(ApiError::invalid_input("Field \"requestUrl\" is required"));
    }
    let condition = match input.condition.clone() {
        Some(c) => resolve_condition(&state, &caller, c).await?,
        None => WebhookCondition::default(),
    };
    if condition.is_empty() {
        return Err(ApiError::invalid_input(
            "Field \"condition\" must name an actorId, actorTaskId or actorRunId",
        ));
    }
    let webhook = new_webhook(&user.id, input, condition, now_ms());
    let (webhook, is_new) = state.storage.create_webhook(webhook).await?;
    if !is_new {
        return Ok(data(StatusCode::OK, webhook_json(&webhook)));
    }
    let location = format!("{}/webhooks/{}", state.api_base(), webhook.id);
    Ok(created(&location, webhook_json(&webhook)))
}

/// GET /v2/webhooks/{webhookId}
async fn get_webhook(WebhookTarget(webhook, _): WebhookTarget) -> Response {
    data(StatusCode::OK, webhook_json(&webhook))
}

/// PUT /v2/webhooks/{webhookId} — partial update. `condition` fields that are given replace
/// the stored ones; an empty `condition` object (what the Python client sends when no
/// condition argument is passed) changes nothing.
async fn update_webhook(
    State(state): State<AppState>,
    WebhookTarget(webhook, caller): WebhookTarget,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    let body = body_object(body)?;
    let input = parse_input(&body)?;
    let condition = match input.condition.clone() {
        Some(c) => {
            let resolved = resolve_condition(&state, &caller, c).await?;
            (!resolved.is_empty()).then_some(resolved)
        }
        None => None,
    };
    let now = now_ms();
    let updated = state
        .storage
        .update_webhook(
            &webhook.id,
            Box::new(move |w: &mut Webhook| {
                crate::hooks::webhook::apply(w, input);
                if let Some(condition) = condition {
                    w.condition = condition;
                }
                w.modified_at = now.max(w.modified_at);
                Ok(())
            }),
        )
        .await?;
    Ok(data(StatusCode::OK, webhook_json(&updated)))
}

/// DELETE /v2/webhooks/{webhookId} — 204; its dispatches stay listed.
async fn delete_webhook(
    State(state): State<AppState>,
    WebhookTarget(webhook, _): WebhookTarget,
) -> ApiResult<Response> {
    state.storage.delete_webhook(&webhook.id).await?;
    Ok(no_content())
}

/// POST /v2/webhooks/{webhookId}/test — a `TEST` dispatch (no event data, no resource),
/// delivered like any other; 201 with the dispatch as stored before the first call.
async fn test_webhook(
    State(state): State<AppState>,
    WebhookTarget(webhook, _): WebhookTarget,
) -> ApiResult<Response> {
    let dispatch = crate::hooks::new_dispatch(&webhook, "TEST", None, Value::Null);
    state.storage.create_dispatch(dispatch.clone()).await?;
    crate::hooks::spawn_delivery(&state, dispatch.clone());
    Ok(data(StatusCode::CREATED, dispatch_json(&dispatch)))
}

/// GET /v2/webhooks/{webhookId}/dispatches
async fn list_webhook_dispatches(
    State(state): State<AppState>,
    WebhookTarget(webhook, _): WebhookTarget,
    params: Params,
) -> ApiResult<Response> {
    let list = params.list_params()?;
    let page = state
        .storage
        .list_dispatches(&webhook.user_id, Some(&webhook.id), list)
        .await?;
    Ok(data(StatusCode::OK, page.map(|d| dispatch_json(&d))))
}

/// GET /v2/webhook-dispatches
async fn list_dispatches(
    State(state): State<AppState>,
    Auth(user): Auth,
    params: Params,
) -> ApiResult<Response> {
    let list = params.list_params()?;
    let page = state.storage.list_dispatches(&user.id, None, list).await?;
    Ok(data(StatusCode::OK, page.map(|d| dispatch_json(&d))))
}

/// GET /v2/webhook-dispatches/{dispatchId}
async fn get_dispatch(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Response> {
    caller.require()?;
    let dispatch: WebhookDispatch = state
        .storage
        .get_dispatch(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("Webhook dispatch was not found"))?;
    owner_only(&caller, &dispatch.user_id)?;
    Ok(data(StatusCode::OK, dispatch_json(&dispatch)))
}
