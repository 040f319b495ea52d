//! Logs of runs and builds (ENDPOINTS.md §2.13): `GET /v2/logs/{id}`,
//! `/v2/actor-runs/{runId}/log`, `/v2/actor-builds/{buildId}/log`. Plain text, each line
//! starting with an ISO timestamp; `stream=1` keeps the response open and delivers new lines
//! until the job ends; `download=1` answers as an attachment. `raw` is accepted (troupe never
//! rewrites the program's output, so raw and formatted logs are the same).

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

use super::builds::BuildTarget;
use super::runs::RunTarget;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::resolve::{check_access, Access, AddressedBy};
use crate::state::AppState;

/// `/v2/logs/{buildOrRunId}`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v2/logs/{id}", get(get_log))
}

/// Which job a log belongs to.
#[derive(Clone, Copy)]
enum Job {
    Run,
    Build,
}

async fn get_log(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    if let Some(run) = state.storage.get_run(&id).await? {
        check_access(
            &caller,
            &run.user_id,
            &run.general_access,
            &AddressedBy::Id,
            Access::Read,
            false,
        )?;
        return log_response(&state, Job::Run, &id, &params);
    }
    if let Some(build) = state.storage.get_build(&id).await? {
        // A build id is a credential of its own (Apify serves build logs without a token).
        let _ = build;
        return log_response(&state, Job::Build, &id, &params);
    }
    Err(ApiError::not_found("Log was not found"))
}

/// GET .../actor-runs/{runId}/log
pub async fn get_run_log(
    State(state): State<AppState>,
    RunTarget(run): RunTarget,
    params: Params,
) -> ApiResult<Response> {
    log_response(&state, Job::Run, &run.id, &params)
}

/// GET .../actor-builds/{buildId}/log
pub async fn get_build_log(
    State(state): State<AppState>,
    BuildTarget(build): BuildTarget,
    params: Params,
) -> ApiResult<Response> {
    log_response(&state, Job::Build, &build.id, &params)
}

fn log_response(state: &AppState, job: Job, id: &str, params: &Params) -> ApiResult<Response> {
    let stream = params.bool("stream", false)?;
    let download = params.bool("download", false)?;
    params.bool("raw", false)?;
    let path = troupe_runner::log_path(&state.runner.config().data_dir, id);
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
    if download {
        builder = builder.header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{id}.log\""),
        );
    }
    let body = if stream {
        Body::from_stream(follow(state.clone(), job, id.to_string(), path))
    } else {
        match std::fs::File::open(&path) {
            // The log as it is now (logs only grow, so its first `len` bytes stay as they are),
            // with a Content-Length, sent from the page cache chunk by chunk, never read whole.
            Ok(file) => {
                let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                builder = builder.header(header::CONTENT_LENGTH, len);
                crate::file_body::file_body(file, len)
            }
            Err(_) => Body::empty(),
        }
    };
    builder.body(body).map_err(ApiError::internal)
}

struct Follow {
    state: AppState,
    job: Job,
    id: String,
    path: PathBuf,
    offset: u64,
    last_pass: bool,
    /// Any job's status changed.
    changes: tokio::sync::watch::Receiver<u64>,
    /// This job's log got new lines (while its writer is open).
    flushes: Option<tokio::sync::watch::Receiver<u64>>,
}

/// The log from the start, then whatever is appended, until the job is finished.
fn follow(
    state: AppState,
    job: Job,
    id: String,
    path: PathBuf,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let changes = state.runner.changes();
    // Taken before the first read, so no flush after that read goes unnoticed.
    let flushes = state.runner.log_flushes(&id);
    let start = Follow {
        state,
        job,
        id,
        path,
        offset: 0,
        last_pass: false,
        changes,
        flushes,
    };
    futures::stream::unfold(start, |mut f| async move {
        loop {
            let chunk = read_from(&f.path, f.offset);
            if !chunk.is_empty() {
                f.offset += chunk.len() as u64;
                return Some((Ok(Bytes::from(chunk)), f));
            }
            if f.last_pass {
                return None;
            }
            if f.flushes.is_none() {
                f.flushes = f.state.runner.log_flushes(&f.id);
                if f.flushes.is_some() {
                    // The job's writer just opened: read what it wrote before this.
                    continue;
                }
            }
            if let Some(flushes) = &mut f.flushes {
                // New lines are read as soon as they are flushed; the status is looked at
                // when it changes, when the writer is closed, or after a quiet 200 ms.
                tokio::select! {
                    flushed = flushes.changed() => match flushed {
                        Ok(()) => continue,
                        Err(_) => f.flushes = None,
                    },
                    _ = f.changes.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            if job_finished(&f.state, f.job, &f.id).await {
                // One more read picks up the last lines written before the status changed.
                f.last_pass = true;
                continue;
            }
            if f.flushes.is_none() {
                let _ = tokio::time::timeout(Duration::from_millis(200), f.changes.changed()).await;
            }
        }
    })
}

fn read_from(path: &std::path::Path, offset: u64) -> Vec<u8> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = file.take(256 * 1024).read_to_end(&mut buf);
    buf
}

async fn job_finished(state: &AppState, job: Job, id: &str) -> bool {
    match job {
        Job::Run => match state.storage.get_run(id).await {
            Ok(Some(run)) => run.status.is_terminal() && !state.runner.is_live(id),
            _ => true,
        },
        Job::Build => match state.storage.get_build(id).await {
            Ok(Some(build)) => build.status.is_terminal(),
            _ => true,
        },
    }
}
