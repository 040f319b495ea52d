//! Optional retention policy: a background worker that deletes unnamed storages (and, once
//! runs exist, finished runs) idle for longer than the configured period, as Apify does for
//! unnamed storages. Each deletion is its own short transaction, so requests keep flowing.

use std::sync::Arc;
use std::time::Duration;

use troupe_storage::Storage;

/// Storages deleted per batch before yielding.
const BATCH: u64 = 100;

/// Starts the worker; it runs until the process ends.
pub fn spawn(storage: Arc<dyn Storage>, period: Duration, interval: Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match sweep(storage.as_ref(), period).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "retention: deleted idle unnamed storages"),
                Err(err) => tracing::warn!(error = %err, "retention sweep failed"),
            }
        }
    });
}

/// Deletes everything past retention once; returns how many storages went.
pub async fn sweep(storage: &dyn Storage, period: Duration) -> anyhow::Result<u64> {
    let cutoff = troupe_model::now_ms() - i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
    let mut deleted = 0;
    loop {
        let expired = storage.expired_unnamed_storages(cutoff, BATCH).await?;
        for (kind, id) in &expired {
            if storage.delete_storage(*kind, id).await? {
                deleted += 1;
            }
        }
        if (expired.len() as u64) < BATCH {
            return Ok(deleted);
        }
        tokio::task::yield_now().await;
    }
}
