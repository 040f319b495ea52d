//! Optional retention policy: a background worker that deletes unnamed storages idle for longer
//! than the configured period (as Apify does for unnamed storages) and finished runs started
//! longer ago (with their logs and working folders; their unnamed default storages follow by the
//! storage rule). Each deletion is its own short transaction, so requests keep flowing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use troupe_storage::Storage;

/// Storages deleted per batch before yielding.
const BATCH: u64 = 100;

/// Starts the worker; it runs until the process ends.
pub fn spawn(storage: Arc<dyn Storage>, data_dir: PathBuf, period: Duration, interval: Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match sweep(storage.as_ref(), &data_dir, period).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(
                    deleted,
                    "retention: deleted old runs and idle unnamed storages"
                ),
                Err(err) => tracing::warn!(error = %err, "retention sweep failed"),
            }
        }
    });
}

/// Deletes everything past retention once; returns how many runs and storages went.
pub async fn sweep(
    storage: &dyn Storage,
    data_dir: &std::path::Path,
    period: Duration,
) -> anyhow::Result<u64> {
    let cutoff = troupe_model::now_ms() - i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
    let mut deleted = 0;
    loop {
        let runs = storage.expired_runs(cutoff, BATCH).await?;
        for run_id in &runs {
            if storage.delete_run(run_id).await? {
                troupe_runner::remove_run_files(data_dir, run_id);
                deleted += 1;
            }
        }
        if (runs.len() as u64) < BATCH {
            break;
        }
        tokio::task::yield_now().await;
    }
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
