//! Actors (with their versions, env vars and build tags), builds, runs, and the per-run API
//! tokens. Objects are read and changed whole: `update_*` runs a closure on the current value
//! inside one write transaction, so concurrent changes never lose each other.

use async_trait::async_trait;
use troupe_model::actor::{Actor, Build, JobStatus, Run};
use troupe_model::list::{ListParams, Page};

use crate::Result;

/// A change applied to an object inside a write transaction; an `Err` rolls it back.
pub type Mutator<T> = Box<dyn FnOnce(&mut T) -> Result<()> + Send>;

/// Which runs a listing shows.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs of this Actor.
    pub act_id: Option<String>,
    /// Only runs in one of these statuses (empty = any).
    pub statuses: Vec<JobStatus>,
    /// Only runs started at or after this time (ms since the epoch).
    pub started_after: Option<i64>,
    /// Only runs started at or before this time (ms since the epoch).
    pub started_before: Option<i64>,
}

#[async_trait]
pub trait ActorStore {
    /// Stores a new Actor; `Conflict` when the owner already has one with that name.
    async fn create_actor(&self, actor: Actor) -> Result<Actor>;
    async fn get_actor(&self, id: &str) -> Result<Option<Actor>>;
    async fn get_actor_by_name(&self, user_id: &str, name: &str) -> Result<Option<Actor>>;
    /// Whether an Actor with this id exists (without loading it).
    async fn actor_exists(&self, id: &str) -> Result<bool> {
        Ok(self.get_actor(id).await?.is_some())
    }
    /// The id of `user_id`'s Actor named `name` (without loading it).
    async fn actor_id_by_name(&self, user_id: &str, name: &str) -> Result<Option<String>> {
        Ok(self.get_actor_by_name(user_id, name).await?.map(|a| a.id))
    }
    /// The owner's Actors, oldest first (or newest with `desc`).
    async fn list_actors(&self, user_id: &str, params: ListParams) -> Result<Page<Actor>>;
    /// Changes an Actor; `NotFound` for an unknown id, `Conflict` on a name clash.
    async fn update_actor(&self, id: &str, change: Mutator<Actor>) -> Result<Actor>;
    /// Deletes an Actor with its builds and runs. False when it did not exist.
    async fn delete_actor(&self, id: &str) -> Result<bool>;
}

#[async_trait]
pub trait BuildStore {
    async fn create_build(&self, build: Build) -> Result<()>;
    async fn get_build(&self, id: &str) -> Result<Option<Build>>;
    /// The user's builds (of one Actor when `act_id` is given), by start time.
    async fn list_builds(
        &self,
        user_id: &str,
        act_id: Option<&str>,
        params: ListParams,
    ) -> Result<Page<Build>>;
    async fn update_build(&self, id: &str, change: Mutator<Build>) -> Result<Build>;
    async fn delete_build(&self, id: &str) -> Result<bool>;
    /// Builds in READY or RUNNING (left over after a restart).
    async fn unfinished_builds(&self) -> Result<Vec<Build>>;
}

#[async_trait]
pub trait RunStore {
    async fn create_run(&self, run: Run) -> Result<()>;
    async fn get_run(&self, id: &str) -> Result<Option<Run>>;
    /// The user's runs by start time, filtered.
    async fn list_runs(
        &self,
        user_id: &str,
        filter: RunFilter,
        params: ListParams,
    ) -> Result<Page<Run>>;
    /// The user's run of `act_id` with the latest `startedAt` matching the filters (index seek).
    async fn last_run(
        &self,
        user_id: &str,
        act_id: &str,
        status: Option<JobStatus>,
        origin: Option<&str>,
    ) -> Result<Option<Run>>;
    async fn update_run(&self, id: &str, change: Mutator<Run>) -> Result<Run>;
    async fn delete_run(&self, id: &str) -> Result<bool>;
    /// Ids of up to `limit` finished runs started before `cutoff_ms`, oldest first (retention).
    async fn expired_runs(&self, cutoff_ms: i64, limit: u64) -> Result<Vec<String>>;
    /// Runs not in a terminal status (READY first-come-first-served order).
    async fn unfinished_runs(&self) -> Result<Vec<Run>>;
    /// A number that changes whenever a run of the Actor or task `owner_id` is created,
    /// changed or deleted, or the Actor is deleted — before the change is acknowledged. A cache
    /// of what depends on those runs (e.g. "last run" answers) is current while the number read
    /// *before* reading the runs is still the number now. `None`: not tracked, do not cache.
    fn runs_version(&self, _owner_id: &str) -> Option<u64> {
        None
    }
}
