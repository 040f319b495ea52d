use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, Transaction};
use troupe_model::storage::{NewItem, StorageInfo, StorageKind};

use super::catalog::require_storage;
use super::{optional, SqliteStorage};
use crate::datasets::ItemsPage;
use crate::{DatasetStore, Error, Result};

/// Items of one dataset live in the key range `[num << 36, (num + 1) << 36)`.
const INDEX_BITS: u32 = 36;

/// Row key of item `index` of the dataset with catalog number `num`.
pub fn item_key(num: i64, index: u64) -> i64 {
    (num << INDEX_BITS) + index as i64
}

pub(crate) fn delete_items(tx: &Transaction<'_>, num: i64) -> Result<()> {
    tx.execute(
        "DELETE FROM dataset_items WHERE k >= ?1 AND k < ?2",
        params![item_key(num, 0), item_key(num + 1, 0)],
    )?;
    Ok(())
}

#[async_trait]
impl DatasetStore for SqliteStorage {
    async fn push_items(&self, dataset_id: &str, items: Vec<NewItem>) -> Result<StorageInfo> {
        let dataset_id = dataset_id.to_string();
        self.write(move |tx| {
            let mut info = require_storage(tx, StorageKind::Dataset, &dataset_id)?;
            if info.item_count + items.len() as u64 >= (1u64 << INDEX_BITS) {
                return Err(Error::Invalid("Dataset is full".into()));
            }
            let mut bytes = 0u64;
            let mut clean = 0u64;
            {
                let mut stmt = tx.prepare_cached("INSERT INTO dataset_items (k, data) VALUES (?1, ?2)")?;
                for (offset, item) in items.iter().enumerate() {
                    stmt.execute(params![item_key(info.num, info.item_count + offset as u64), item.json.as_bytes()])?;
                    bytes += item.json.len() as u64;
                    clean += u64::from(item.clean);
                }
            }
            let now = troupe_model::now_ms();
            let count = items.len() as u64;
            tx.prepare_cached(
                "UPDATE storages SET item_count = item_count + ?1, clean_item_count = clean_item_count + ?2,
                 storage_bytes = storage_bytes + ?3, write_count = write_count + ?1, modified_at = ?4, accessed_at = ?4
                 WHERE num = ?5",
            )?
            .execute(params![count as i64, clean as i64, bytes as i64, now, info.num])?;
            // The row as it now reads, without reading it again.
            info.item_count += count;
            info.clean_item_count += clean;
            info.storage_bytes += bytes;
            info.write_count += count;
            info.modified_at = now;
            info.accessed_at = now;
            Ok(info)
        })
        .await
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

    async fn record_dataset_read(&self, dataset_id: &str, now_ms: i64) -> Result<()> {
        let dataset_id = dataset_id.to_string();
        self.write(move |tx| {
            tx.execute(
                "UPDATE storages SET accessed_at = max(accessed_at, ?1), read_count = read_count + 1
                 WHERE id = ?2 AND kind = ?3",
                params![now_ms, dataset_id, StorageKind::Dataset.code()],
            )?;
            Ok(())
        })
        .await
    }
}
