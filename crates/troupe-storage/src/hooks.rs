//! Webhooks with their dispatches, and schedules with their logs.

use async_trait::async_trait;
use troupe_model::hooks::{Schedule, ScheduleLogEntry, Webhook, WebhookDispatch};
use troupe_model::list::{ListParams, Page};

use crate::{Mutator, Result};

/// Which webhooks a listing shows (besides the owner).
#[derive(Debug, Clone, Default)]
pub enum WebhookFilter {
    #[default]
    All,
    /// Webhooks whose condition names this Actor.
    Actor(String),
    /// Webhooks whose condition names this task.
    Task(String),
}

/// Most entries a schedule's log keeps (older ones are dropped).
pub const SCHEDULE_LOG_LIMIT: usize = 1000;

#[async_trait]
pub trait WebhookStore {
    /// Stores a new webhook. When the owner already has one with the same `idempotency_key`,
    /// nothing is stored and that one is returned with `false`.
    async fn create_webhook(&self, webhook: Webhook) -> Result<(Webhook, bool)>;
    async fn get_webhook(&self, id: &str) -> Result<Option<Webhook>>;
    /// The owner's webhooks by creation time.
    async fn list_webhooks(
        &self,
        user_id: &str,
        filter: WebhookFilter,
        params: ListParams,
    ) -> Result<Page<Webhook>>;
    /// Changes a webhook; `NotFound` for an unknown id.
    async fn update_webhook(&self, id: &str, change: Mutator<Webhook>) -> Result<Webhook>;
    /// Deletes a webhook (its dispatches stay). False when it did not exist.
    async fn delete_webhook(&self, id: &str) -> Result<bool>;
    /// The user's webhooks whose condition names this Actor, task or run (index seeks).
    async fn matching_webhooks(
        &self,
        user_id: &str,
        actor_id: &str,
        task_id: Option<&str>,
        run_id: Option<&str>,
    ) -> Result<Vec<Webhook>>;

    /// Stores a dispatch and counts it on its webhook (`totalDispatches`, `lastDispatch`).
    async fn create_dispatch(&self, dispatch: WebhookDispatch) -> Result<()>;
    async fn get_dispatch(&self, id: &str) -> Result<Option<WebhookDispatch>>;
    /// The user's dispatches (of one webhook when given) by creation time.
    async fn list_dispatches(
        &self,
        user_id: &str,
        webhook_id: Option<&str>,
        params: ListParams,
    ) -> Result<Page<WebhookDispatch>>;
    /// Changes a dispatch and mirrors its status on its webhook's `lastDispatch`.
    async fn update_dispatch(
        &self,
        id: &str,
        change: Mutator<WebhookDispatch>,
    ) -> Result<WebhookDispatch>;
    /// Dispatches still `ACTIVE` (to resume after a restart), oldest first.
    async fn active_dispatches(&self) -> Result<Vec<WebhookDispatch>>;
}

#[async_trait]
pub trait ScheduleStore {
    /// Stores a new schedule; `Conflict` when the owner already has one with that name.
    async fn create_schedule(&self, schedule: Schedule) -> Result<Schedule>;
    async fn get_schedule(&self, id: &str) -> Result<Option<Schedule>>;
    async fn get_schedule_by_name(&self, user_id: &str, name: &str) -> Result<Option<Schedule>>;
    /// The owner's schedules by creation time.
    async fn list_schedules(&self, user_id: &str, params: ListParams) -> Result<Page<Schedule>>;
    /// Changes a schedule; `NotFound` for an unknown id, `Conflict` on a name clash.
    async fn update_schedule(&self, id: &str, change: Mutator<Schedule>) -> Result<Schedule>;
    /// Deletes a schedule with its log. False when it did not exist.
    async fn delete_schedule(&self, id: &str) -> Result<bool>;
    /// Enabled schedules whose `nextRunAt` is at or before `now_ms` (index range).
    async fn due_schedules(&self, now_ms: i64) -> Result<Vec<Schedule>>;
    /// The earliest `nextRunAt` of any enabled schedule.
    async fn next_schedule_time(&self) -> Result<Option<i64>>;
    /// Appends to a schedule's log, keeping the newest [`SCHEDULE_LOG_LIMIT`] entries.
    async fn add_schedule_log(&self, schedule_id: &str, entry: ScheduleLogEntry) -> Result<()>;
    /// A schedule's log, oldest first.
    async fn schedule_log(&self, schedule_id: &str) -> Result<Vec<ScheduleLogEntry>>;
}
