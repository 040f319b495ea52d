//! Request queue contents and locks (issue: request queues).

use async_trait::async_trait;

#[async_trait]
pub trait QueueStore {}
