//! Key-value store records (issue: key-value stores).

use async_trait::async_trait;

#[async_trait]
pub trait KvStore {}
