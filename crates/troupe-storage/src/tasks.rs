//! Actor tasks, and the queries over runs that a task owns (its listing and its last run).

use async_trait::async_trait;
use troupe_model::actor::{JobStatus, Run};
use troupe_model::list::{ListParams, Page};
use troupe_model::task::Task;

use crate::{Mutator, Result, RunFilter};

#[async_trait]
pub trait TaskStore {
    /// Stores a new task; `Conflict` when the owner already has one with that name.
    async fn create_task(&self, task: Task) -> Result<Task>;
    async fn get_task(&self, id: &str) -> Result<Option<Task>>;
    async fn get_task_by_name(&self, user_id: &str, name: &str) -> Result<Option<Task>>;
    /// The owner's tasks, oldest first (or newest with `desc`).
    async fn list_tasks(&self, user_id: &str, params: ListParams) -> Result<Page<Task>>;
    /// Changes a task; `NotFound` for an unknown id, `Conflict` on a name clash.
    async fn update_task(&self, id: &str, change: Mutator<Task>) -> Result<Task>;
    /// Deletes a task (its runs stay). False when it did not exist.
    async fn delete_task(&self, id: &str) -> Result<bool>;
    /// The user's runs started from `task_id`, by start time, matching `filter` (its `act_id`
    /// is not used).
    async fn list_task_runs(
        &self,
        user_id: &str,
        task_id: &str,
        filter: RunFilter,
        params: ListParams,
    ) -> Result<Page<Run>>;
    /// The user's run of `task_id` with the latest `startedAt` matching the filters (index seek).
    async fn last_task_run(
        &self,
        user_id: &str,
        task_id: &str,
        status: Option<JobStatus>,
        origin: Option<&str>,
    ) -> Result<Option<Run>>;
}
