use rusqlite::Transaction;

use super::SqliteStorage;
use crate::{KvStore, Result};

impl KvStore for SqliteStorage {}

/// Removes every record of the store `num` (called when the store is deleted).
pub(crate) fn delete_records(
    _storage: &SqliteStorage,
    _tx: &Transaction<'_>,
    _num: i64,
) -> Result<()> {
    Ok(())
}
