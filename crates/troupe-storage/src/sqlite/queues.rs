use rusqlite::Transaction;

use super::SqliteStorage;
use crate::{QueueStore, Result};

impl QueueStore for SqliteStorage {}

/// Removes every request of the queue `num` (called when the queue is deleted).
pub(crate) fn delete_requests(_tx: &Transaction<'_>, _num: i64) -> Result<()> {
    Ok(())
}
