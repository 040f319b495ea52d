use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, OptionalExtension, Transaction};
use troupe_model::storage::{NewItem, StorageKind};

use super::catalog::{CatalogDeltas, Delta};
use super::group::{BatchContext, Changes};
use super::stmts::with_stmt;
use super::{optional, SqliteStorage};
use crate::datasets::{ItemsPage, PushedItems};
use crate::{DatasetStore, Error, Result};

/// Items of one dataset live in the key range `[num << 36, (num + 1) << 36)`.
const INDEX_BITS: u32 = 36;

/// Row key of item `index` of the dataset with catalog number `num`.
pub fn item_key(num: i64, index: u64) -> i64 {
    (num << INDEX_BITS) + index as i64
}

/// Deletes the first `rows` (at least 1) remaining items of the deleted dataset `num` (see
/// `super::purge`); returns how many it deleted (fewer: none is left).
pub(crate) fn purge_items(tx: &Transaction<'_>, num: i64, rows: usize) -> Result<usize> {
    let (first, end) = (item_key(num, 0), item_key(num + 1, 0));
    let last: Option<i64> = tx
        .prepare_cached(
            "SELECT k FROM dataset_items WHERE k >= ?1 AND k < ?2 ORDER BY k LIMIT 1 OFFSET ?3",
        )?
        .query_row(params![first, end, rows as i64 - 1], |row| row.get(0))
        .optional()?;
    Ok(match last {
        Some(last) => tx
            .prepare_cached("DELETE FROM dataset_items WHERE k >= ?1 AND k <= ?2")?
            .execute(params![first, last])?,
        None => tx
            .prepare_cached("DELETE FROM dataset_items WHERE k >= ?1 AND k < ?2")?
            .execute(params![first, end])?,
    })
}

/// Row counts of the multi-row INSERTs a push is cut into, largest first. Rows of one statement
/// are appended through one cursor that stays at the end of the table, without a seek from the
/// root per row, and share the per-statement costs.
const INSERT_SIZES: [usize; 3] = [64, 8, 1];

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO dataset_items (k, data) VALUES (?, ?)");
    for _ in 1..rows {
        sql.push_str(", (?, ?)");
    }
    sql
}

static INSERT_SQL: std::sync::LazyLock<[String; 3]> =
    std::sync::LazyLock::new(|| INSERT_SIZES.map(insert_sql));

/// Inserts `items` as items `first..` of the dataset with catalog number `num`.
fn insert_items(tx: &Transaction<'_>, num: i64, first: u64, items: &[NewItem]) -> Result<()> {
    let mut index = first;
    let mut rest = items;
    for (size, sql) in INSERT_SIZES.iter().zip(INSERT_SQL.iter()) {
        if rest.len() < *size {
            continue;
        }
        with_stmt(tx, sql.as_str(), |stmt| {
            while rest.len() >= *size {
                let (chunk, tail) = rest.split_at(*size);
                for (i, item) in chunk.iter().enumerate() {
                    stmt.raw_bind_parameter(2 * i + 1, item_key(num, index))?;
                    stmt.raw_bind_parameter(2 * i + 2, item.json.as_bytes())?;
                    index += 1;
                }
                stmt.raw_execute()?;
                rest = tail;
            }
            Ok(())
        })?;
    }
    debug_assert!(rest.is_empty());
    Ok(())
}

#[async_trait]
impl DatasetStore for SqliteStorage {
    async fn push_items(&self, dataset_id: &str, items: Vec<NewItem>) -> Result<PushedItems> {
        let dataset_id = dataset_id.to_string();
        let count = items.len() as i64;
        // A push that takes one INSERT (1, 8 or 64 items) changes nothing else: no savepoint.
        let changes = if items.is_empty() || INSERT_SIZES.contains(&items.len()) {
            Changes::OneStatement
        } else {
            Changes::Many
        };
        let bytes: usize = items.iter().map(|item| item.json.len()).sum();
        let clean = items.iter().filter(|item| item.clean).count() as i64;
        let push = move |tx: &Transaction<'_>, batch: &mut BatchContext| {
            let now = troupe_model::now_ms();
            // One lookup, the INSERTs, and the counters are written once per batch (see
            // `CatalogDeltas`), on top of which this push reads them.
            let (num, item_count, clean_item_count): (i64, i64, i64) = optional(with_stmt(
                tx,
                "SELECT num, item_count, clean_item_count FROM storages WHERE id = ?1 AND kind = ?2",
                |s| {
                    s.query_row(params![dataset_id, StorageKind::Dataset.code()], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                },
            ))?
            .ok_or_else(|| Error::NotFound("Dataset was not found".into()))?;
            let deltas = batch.state::<CatalogDeltas>();
            let pending = deltas.pending(num);
            let (item_count, clean_item_count) = (
                item_count + pending.items,
                clean_item_count + pending.clean_items,
            );
            let first = item_count as u64;
            if first + count as u64 >= 1u64 << INDEX_BITS {
                return Err(Error::Invalid("Dataset is full".into()));
            }
            insert_items(tx, num, first, &items)?;
            deltas.add(
                num,
                Delta {
                    bytes: bytes as i64,
                    writes: count,
                    items: count,
                    clean_items: clean,
                    now,
                    ..Delta::default()
                },
            );
            Ok(PushedItems {
                item_count: first + count as u64,
                clean_item_count: (clean_item_count + clean) as u64,
            })
        };
        self.write_batched(changes, push).await
    }

    async fn read_items(
        &self,
        dataset_id: &str,
        offset: u64,
        limit: u64,
        desc: bool,
    ) -> Result<ItemsPage> {
        let (this, dataset_id) = (self.clone(), dataset_id.to_string());
        super::run_blocking(move || {
            let mut items = Vec::new();
            let (total, _) = this.visit_items(&dataset_id, offset, limit, desc, &mut |raw| {
                items.push(Bytes::copy_from_slice(raw));
                true
            })?;
            Ok(ItemsPage { total, items })
        })
        .await
    }

    fn visit_items(
        &self,
        dataset_id: &str,
        offset: u64,
        limit: u64,
        desc: bool,
        visit: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(u64, u64)> {
        self.scan_blocking(|conn| {
            let (num, total): (i64, i64) = optional(
                conn.prepare_cached(
                    "SELECT num, item_count FROM storages WHERE id = ?1 AND kind = ?2",
                )?
                .query_row(params![dataset_id, StorageKind::Dataset.code()], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                }),
            )?
            .ok_or_else(|| Error::NotFound("Dataset was not found".into()))?;
            let total = total as u64;
            if offset >= total || limit == 0 {
                return Ok((total, 0));
            }
            let count = limit.min(total - offset);
            let (first, last) = if desc {
                (total - offset - count, total - offset)
            } else {
                (offset, offset + count)
            };
            let mut stmt = conn.prepare_cached(if desc {
                "SELECT data FROM dataset_items WHERE k >= ?1 AND k < ?2 ORDER BY k DESC"
            } else {
                "SELECT data FROM dataset_items WHERE k >= ?1 AND k < ?2 ORDER BY k ASC"
            })?;
            let mut rows = stmt.query(params![item_key(num, first), item_key(num, last)])?;
            let mut visited = 0;
            while let Some(row) = rows.next()? {
                let data = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
                visited += 1;
                if !visit(data) {
                    break;
                }
            }
            Ok((total, visited))
        })
    }

    fn note_dataset_read(&self, dataset_num: i64, now_ms: i64) {
        // Buffered with the key-value stores' counters (same catalog columns).
        self.note_access(dataset_num, false, now_ms);
    }
}
