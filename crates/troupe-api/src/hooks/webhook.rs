//! Webhook bodies (create, update, the ad-hoc `webhooks` run option), the rendered request of
//! a dispatch, and the JSON shapes of webhooks and dispatches.

use base64::Engine;
use serde_json::{json, Map, Value};
use troupe_model::format_ts;
use troupe_model::hooks::{
    DispatchRequest, Webhook, WebhookCondition, WebhookDispatch, EVENT_TYPES,
};

use super::template;
use crate::body::{bad_field as bad, nullable_string, opt_bool};
use crate::error::{ApiError, ApiResult};

/// Headers a `headersTemplate` cannot set (troupe sets them).
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "x-apify-webhook",
    "x-apify-webhook-dispatch-id",
    "x-apify-request-origin",
];

/// Longest `idempotencyKey` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 256;

/// The condition as sent: ids or name references, resolved by the route.
#[derive(Debug, Clone, Default)]
pub struct ConditionInput {
    pub actor_id: Option<String>,
    pub actor_task_id: Option<String>,
    pub actor_run_id: Option<String>,
}

/// The webhook fields of a body, each checked. `None` = not given; for nullable fields
/// `Some(None)` = given as `null`.
#[derive(Debug, Clone, Default)]
pub struct WebhookInput {
    pub event_types: Option<Vec<String>>,
    pub request_url: Option<String>,
    pub condition: Option<ConditionInput>,
    pub payload_template: Option<Option<String>>,
    pub headers_template: Option<Option<String>>,
    pub description: Option<Option<String>>,
    pub idempotency_key: Option<String>,
    pub is_ad_hoc: Option<bool>,
    pub ignore_ssl_errors: Option<bool>,
    pub do_not_retry: Option<bool>,
    pub should_interpolate_strings: Option<bool>,
}

/// Checks the `requestUrl`: an absolute `http` or `https` URL.
pub fn check_url(url: &str) -> ApiResult<()> {
    match reqwest::Url::parse(url) {
        Ok(parsed)
            if matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some() =>
        {
            Ok(())
        }
        _ => Err(bad(
            "requestUrl",
            "must be an absolute http:// or https:// URL",
        )),
    }
}

/// Reads and checks every webhook field present in `body` (unknown fields are ignored).
pub fn parse_input(body: &Map<String, Value>) -> ApiResult<WebhookInput> {
    let mut input = WebhookInput::default();
    match body.get("eventTypes") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let mut types = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(t) if EVENT_TYPES.contains(&t) => {
                        if !types.iter().any(|x| x == t) {
                            types.push(t.to_string());
                        }
                    }
                    _ => {
                        return Err(bad(
                            "eventTypes",
                            &format!(
                                "has an unknown event type {item}; use {}",
                                EVENT_TYPES.join(", ")
                            ),
                        ))
                    }
                }
            }
            if types.is_empty() {
                return Err(bad("eventTypes", "must list at least one event type"));
            }
            input.event_types = Some(types);
        }
        Some(_) => return Err(bad("eventTypes", "must be an array of event types")),
    }
    match body.get("requestUrl") {
        None | Some(Value::Null) => {}
        Some(Value::String(url)) => {
            check_url(url)?;
            input.request_url = Some(url.clone());
        }
        Some(_) => return Err(bad("requestUrl", "must be a string")),
    }
    match body.get("condition") {
        None | Some(Value::Null) => {}
        Some(Value::Object(c)) => {
            let mut condition = ConditionInput::default();
            for (key, slot) in [
                ("actorId", &mut condition.actor_id),
                ("actorTaskId", &mut condition.actor_task_id),
                ("actorRunId", &mut condition.actor_run_id),
            ] {
                match c.get(key) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(s)) if !s.is_empty() => *slot = Some(s.clone()),
                    Some(_) => {
                        return Err(bad(
                            &format!("condition.{key}"),
                            "must be a non-empty string",
                        ))
                    }
                }
            }
            input.condition = Some(condition);
        }
        Some(_) => return Err(bad("condition", "must be an object")),
    }
    input.payload_template = nullable_string(body, "payloadTemplate")?;
    input.headers_template = nullable_string(body, "headersTemplate")?;
    input.description = nullable_string(body, "description")?;
    match body.get("idempotencyKey") {
        None | Some(Value::Null) => {}
        Some(Value::String(key)) if !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY => {
            input.idempotency_key = Some(key.clone())
        }
        Some(_) => {
            return Err(ApiError::invalid_idempotency_key(format!(
                "Field \"idempotencyKey\" must be a string of 1 to {MAX_IDEMPOTENCY_KEY} characters"
            )))
        }
    }
    input.is_ad_hoc = opt_bool(body, "isAdHoc")?;
    input.ignore_ssl_errors = opt_bool(body, "ignoreSslErrors")?;
    input.do_not_retry = opt_bool(body, "doNotRetry")?;
    input.should_interpolate_strings = opt_bool(body, "shouldInterpolateStrings")?;
    if let Some(Some(t)) = &input.payload_template {
        template::check(t, false)
            .map_err(|why| bad("payloadTemplate", &format!("is invalid: {why}")))?;
    }
    if let Some(Some(t)) = &input.headers_template {
        let value = template::check(t, false)
            .map_err(|why| bad("headersTemplate", &format!("is invalid: {why}")))?;
        headers_of(&value).map_err(|why| bad("headersTemplate", &why))?;
    }
    Ok(input)
}

/// The ad-hoc webhooks of a run start: `webhooks` is Base64 (standard or URL-safe) of a JSON
/// array of `{eventTypes, requestUrl, payloadTemplate?, headersTemplate?, ...}`.
pub fn parse_ad_hoc(param: &str) -> ApiResult<Vec<WebhookInput>> {
    let invalid = |why: &str| {
        ApiError::invalid_parameter(format!(
            "Parameter \"webhooks\" must be a Base64-encoded JSON array of webhooks: {why}"
        ))
    };
    let trimmed = param.trim();
    let bytes = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ]
    .iter()
    .find_map(|engine| engine.decode(trimmed).ok())
    .ok_or_else(|| invalid("it is not Base64"))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid("it is not JSON"))?;
    let Value::Array(items) = value else {
        return Err(invalid("it is not an array"));
    };
    let mut out = Vec::new();
    for item in items {
        let Value::Object(body) = item else {
            return Err(invalid("an item is not an object"));
        };
        let input = parse_input(&body)?;
        if input.event_types.is_none() || input.request_url.is_none() {
            return Err(invalid("every webhook needs eventTypes and requestUrl"));
        }
        out.push(input);
    }
    Ok(out)
}

/// A new webhook from checked input (the caller made sure the required fields are there).
pub fn new_webhook(
    user_id: &str,
    input: WebhookInput,
    condition: WebhookCondition,
    now: i64,
) -> Webhook {
    Webhook {
        id: troupe_model::new_id(),
        user_id: user_id.to_string(),
        created_at: now,
        modified_at: now,
        is_ad_hoc: input.is_ad_hoc.unwrap_or(condition.actor_run_id.is_some()),
        event_types: input.event_types.unwrap_or_default(),
        condition,
        idempotency_key: input.idempotency_key,
        ignore_ssl_errors: input.ignore_ssl_errors.unwrap_or(false),
        do_not_retry: input.do_not_retry.unwrap_or(false),
        request_url: input.request_url.unwrap_or_default(),
        payload_template: input.payload_template.flatten(),
        headers_template: input.headers_template.flatten(),
        description: input.description.flatten(),
        should_interpolate_strings: input.should_interpolate_strings.unwrap_or(false),
        total_dispatches: 0,
        last_dispatch: None,
    }
}

/// Applies the given fields (all but the condition, which the route resolves) to `webhook`.
pub fn apply(webhook: &mut Webhook, input: WebhookInput) {
    if let Some(v) = input.event_types {
        webhook.event_types = v;
    }
    if let Some(v) = input.request_url {
        webhook.request_url = v;
    }
    if let Some(v) = input.payload_template {
        webhook.payload_template = v;
    }
    if let Some(v) = input.headers_template {
        webhook.headers_template = v;
    }
    if let Some(v) = input.description {
        webhook.description = v;
    }
    if let Some(v) = input.is_ad_hoc {
        webhook.is_ad_hoc = v;
    }
    if let Some(v) = input.ignore_ssl_errors {
        webhook.ignore_ssl_errors = v;
    }
    if let Some(v) = input.do_not_retry {
        webhook.do_not_retry = v;
    }
    if let Some(v) = input.should_interpolate_strings {
        webhook.should_interpolate_strings = v;
    }
}

/// The headers a rendered `headersTemplate` asks for: an object of names to values (strings
/// as they are, other values as JSON, `null` left out), reserved names dropped.
fn headers_of(value: &Value) -> Result<Vec<(String, String)>, String> {
    let Value::Object(map) = value else {
        return Err("must render to a JSON object of header names and values".into());
    };
    let mut out = Vec::new();
    for (name, value) in map {
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("has an invalid header name \"{name}\""));
        }
        if http::HeaderValue::from_str(&text).is_err() {
            return Err(format!("has an invalid value for header \"{name}\""));
        }
        out.push((name.clone(), text));
    }
    Ok(out)
}

/// The request of one dispatch: the payload (`payloadTemplate` or the default payload), the
/// template headers, and troupe's own headers.
pub fn render_request(
    webhook: &Webhook,
    vars: &Value,
    dispatch_id: &str,
) -> Result<DispatchRequest, String> {
    let interpolate = webhook.should_interpolate_strings;
    let body = match &webhook.payload_template {
        Some(t) => template::render(t, vars, interpolate)
            .map_err(|why| format!("The payload template cannot be used: {why}"))?,
        None => json!({
            "userId": vars["userId"],
            "createdAt": vars["createdAt"],
            "eventType": vars["eventType"],
            "eventData": vars["eventData"],
            "resource": vars["resource"],
        }),
    };
    let mut headers = match &webhook.headers_template {
        Some(t) => {
            let value = template::render(t, vars, interpolate)
                .map_err(|why| format!("The headers template cannot be used: {why}"))?;
            headers_of(&value).map_err(|why| format!("The headers template {why}"))?
        }
        None => vec![],
    };
    headers.push((
        "Content-Type".into(),
        "application/json; charset=utf-8".into(),
    ));
    headers.push(("X-Apify-Webhook".into(), webhook.id.clone()));
    headers.push((
        "X-Apify-Webhook-Dispatch-Id".into(),
        dispatch_id.to_string(),
    ));
    headers.push(("X-Apify-Request-Origin".into(), "WEBHOOK".into()));
    Ok(DispatchRequest {
        url: webhook.request_url.clone(),
        headers,
        body: body.to_string(),
        ignore_ssl_errors: webhook.ignore_ssl_errors,
        do_not_retry: webhook.do_not_retry,
    })
}

/// `condition` with only the fields that are set.
pub fn condition_json(c: &WebhookCondition) -> Value {
    let mut map = Map::new();
    if let Some(v) = &c.actor_id {
        map.insert("actorId".into(), json!(v));
    }
    if let Some(v) = &c.actor_task_id {
        map.insert("actorTaskId".into(), json!(v));
    }
    if let Some(v) = &c.actor_run_id {
        map.insert("actorRunId".into(), json!(v));
    }
    Value::Object(map)
}

/// The webhook object (also the list item: the spec's `WebhookShort` is a subset).
pub fn webhook_json(w: &Webhook) -> Value {
    json!({
        "id": w.id,
        "createdAt": format_ts(w.created_at),
        "modifiedAt": format_ts(w.modified_at),
        "userId": w.user_id,
        "isAdHoc": w.is_ad_hoc,
        "isApifyIntegration": false,
        "isEnabled": true,
        "actionType": "HTTP_REQUEST",
        "shouldInterpolateStrings": w.should_interpolate_strings,
        "eventTypes": w.event_types,
        "condition": condition_json(&w.condition),
        "idempotencyKey": w.idempotency_key,
        "ignoreSslErrors": w.ignore_ssl_errors,
        "doNotRetry": w.do_not_retry,
        "requestUrl": w.request_url,
        "payloadTemplate": w.payload_template,
        "headersTemplate": w.headers_template,
        "description": w.description,
        "lastDispatch": w.last_dispatch.as_ref().map(|d| json!({
            "status": d.status.as_str(),
            "finishedAt": d.finished_at.map(format_ts),
        })),
        "stats": { "totalDispatches": w.total_dispatches },
    })
}

/// The dispatch object (the rendered request is not part of it).
pub fn dispatch_json(d: &WebhookDispatch) -> Value {
    let calls: Vec<Value> = d
        .calls
        .iter()
        .map(|c| {
            json!({
                "startedAt": format_ts(c.started_at),
                "finishedAt": c.finished_at.map(format_ts),
                "errorMessage": c.error_message,
                "responseStatus": c.response_status,
                "responseBody": c.response_body,
            })
        })
        .collect();
    json!({
        "id": d.id,
        "userId": d.user_id,
        "webhookId": d.webhook_id,
        "createdAt": format_ts(d.created_at),
        "status": d.status.as_str(),
        "eventType": d.event_type,
        "eventData": d.event_data,
        "webhook": d.webhook,
        "calls": calls,
    })
}
