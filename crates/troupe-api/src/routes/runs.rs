//! Actor runs. For now only the storage resolution hook used by the run-based prefixes.

use std::collections::HashMap;

use troupe_model::storage::StorageKind;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::resolve::Access;
use crate::state::AppState;

/// The id of the default storage of `kind` of the run a path names (`runId`, or the last run
/// of `actorId` / `actorTaskId` matching `status`/`origin`).
pub async fn run_storage_id(
    _state: &AppState,
    _caller: &Caller,
    _kind: StorageKind,
    _path: &HashMap<String, String>,
    _params: &Params,
    _access: Access,
) -> ApiResult<String> {
    Err(ApiError::not_found("Actor run was not found"))
}
