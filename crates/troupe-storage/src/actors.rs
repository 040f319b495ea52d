//! Actors, versions, builds, runs and tasks (issue: actors, builds and runs).

use async_trait::async_trait;

#[async_trait]
pub trait ActorStore {}
