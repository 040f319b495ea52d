//! Webhooks (with their dispatches) and schedules: what is stored, in the field names of the API.
//! The HTTP layer validates input and shapes responses; these are the records.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::task::TaskOptions;

/// Every `eventTypes` value the API accepts (the spec's `WebhookEventType`).
pub const EVENT_TYPES: &[&str] = &[
    "ACTOR.BUILD.ABORTED",
    "ACTOR.BUILD.CREATED",
    "ACTOR.BUILD.FAILED",
    "ACTOR.BUILD.SUCCEEDED",
    "ACTOR.BUILD.TIMED_OUT",
    "ACTOR.RUN.ABORTED",
    "ACTOR.RUN.CREATED",
    "ACTOR.RUN.FAILED",
    "ACTOR.RUN.RESURRECTED",
    "ACTOR.RUN.SUCCEEDED",
    "ACTOR.RUN.TIMED_OUT",
    "TEST",
];

/// Which jobs a webhook listens to. Any one field that matches is enough.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCondition {
    #[serde(default)]
    pub actor_id: Option<String>,
    #[serde(default)]
    pub actor_task_id: Option<String>,
    #[serde(default)]
    pub actor_run_id: Option<String>,
}

impl WebhookCondition {
    pub fn is_empty(&self) -> bool {
        self.actor_id.is_none() && self.actor_task_id.is_none() && self.actor_run_id.is_none()
    }
}

/// The outcome of a webhook's latest dispatch (`lastDispatch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastDispatch {
    pub status: DispatchStatus,
    pub finished_at: Option<i64>,
}

/// A webhook: on one of `event_types` of a job matching `condition`, POST to `request_url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub modified_at: i64,
    pub is_ad_hoc: bool,
    pub event_types: Vec<String>,
    pub condition: WebhookCondition,
    pub idempotency_key: Option<String>,
    pub ignore_ssl_errors: bool,
    pub do_not_retry: bool,
    pub request_url: String,
    pub payload_template: Option<String>,
    pub headers_template: Option<String>,
    pub description: Option<String>,
    pub should_interpolate_strings: bool,
    /// Kept up to date by the storage when dispatches are created and finish.
    #[serde(default)]
    pub total_dispatches: u64,
    #[serde(default)]
    pub last_dispatch: Option<LastDispatch>,
}

/// `ACTIVE` while calls are still being made, then `SUCCEEDED` or `FAILED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DispatchStatus {
    Active,
    Succeeded,
    Failed,
}

impl DispatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DispatchStatus::Active => "ACTIVE",
            DispatchStatus::Succeeded => "SUCCEEDED",
            DispatchStatus::Failed => "FAILED",
        }
    }
}

/// One HTTP attempt of a dispatch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchCall {
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub error_message: Option<String>,
    pub response_status: Option<u16>,
    pub response_body: Option<String>,
}

/// The request a dispatch sends, rendered from the templates when the event happened. Never
/// shown over the API (headers may carry secrets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub ignore_ssl_errors: bool,
    pub do_not_retry: bool,
}

/// One event delivered (or being delivered) to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDispatch {
    pub id: String,
    pub user_id: String,
    pub webhook_id: String,
    pub created_at: i64,
    pub status: DispatchStatus,
    pub event_type: String,
    pub event_data: Option<Value>,
    /// `{actionType, condition, requestUrl, isAdHoc}` of the webhook at dispatch time.
    pub webhook: Value,
    pub calls: Vec<DispatchCall>,
    pub request: DispatchRequest,
    /// When the next attempt is due (ms); meaningless once not `ACTIVE`.
    pub next_attempt_at: i64,
}

/// A schedule's `runInput` of a RUN_ACTOR action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInput {
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
}

/// What a schedule starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ScheduleAction {
    #[serde(rename = "RUN_ACTOR", rename_all = "camelCase")]
    RunActor {
        id: String,
        actor_id: String,
        #[serde(default)]
        run_input: Option<RunInput>,
        #[serde(default)]
        run_options: Option<TaskOptions>,
    },
    #[serde(rename = "RUN_ACTOR_TASK", rename_all = "camelCase")]
    RunActorTask {
        id: String,
        actor_task_id: String,
        #[serde(default)]
        input: Option<Map<String, Value>>,
    },
}

/// A cron schedule that starts Actors and tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub cron_expression: String,
    pub timezone: String,
    pub is_enabled: bool,
    pub is_exclusive: bool,
    pub created_at: i64,
    pub modified_at: i64,
    pub next_run_at: Option<i64>,
    pub last_run_at: Option<i64>,
    pub description: Option<String>,
    pub title: Option<String>,
    pub notifications: Option<Value>,
    pub actions: Vec<ScheduleAction>,
    /// Runs started by the latest invocation (for `isExclusive`).
    #[serde(default)]
    pub last_run_ids: Vec<String>,
}

/// One line of a schedule's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleLogEntry {
    pub created_at: i64,
    pub level: String,
    pub message: String,
}
