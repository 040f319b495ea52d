//! Turns whatever a path names — `datasetId` / `storeId` / `queueId` (an id, `username~name`,
//! `~name` or a bare name), a run (`runId`), or the last run of an Actor or task (`actorId` /
//! `actorTaskId` with the `status`/`origin` filters) — into one storage, and applies the access
//! rule. Each storage endpoint is written once and mounted under every prefix; this module is
//! what makes the prefixes equivalent.

use std::collections::HashMap;
use std::future::Future;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::Method;
use troupe_model::storage::{StorageInfo, StorageKind};
use troupe_storage::kv::StoreAccess;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::state::AppState;

/// What the caller wants to do with the resolved resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    pub fn of(method: &Method) -> Self {
        if method == Method::GET || method == Method::HEAD {
            Access::Read
        } else {
            Access::Write
        }
    }
}

/// How a path named a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressedBy {
    Id,
    Name,
    /// Through a run (by run id or "last run"); the run's own access rules apply.
    Run,
}

/// A resolved storage and how it was named.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub info: StorageInfo,
    pub addressed_by: AddressedBy,
}

/// Path parameter that names a storage of `kind` directly.
fn direct_param(kind: StorageKind) -> &'static str {
    match kind {
        StorageKind::Dataset => "datasetId",
        StorageKind::KeyValueStore => "storeId",
        StorageKind::RequestQueue => "queueId",
    }
}

/// Splits `username~name` / `~name` references.
pub fn split_name_ref(reference: &str) -> Option<(&str, &str)> {
    let (user, name) = reference.split_once('~')?;
    Some((user, name))
}

/// The owner named by the user part of a `username~name` reference: the caller for `~name`
/// (401 without a token), else the user with that username (`None` when there is none).
/// Shared by every resource that takes name references (storages, Actors, tasks).
pub async fn name_ref_owner(
    state: &AppState,
    caller: &Caller,
    username: &str,
) -> ApiResult<Option<String>> {
    if username.is_empty() {
        return Ok(Some(caller.require()?.id.clone()));
    }
    Ok(state.storage.find_user(username).await?.map(|user| user.id))
}

/// Finds an object by id, `username~name`, `~name` or the caller's bare name: `by_id` looks up
/// an id, `by_name(owner_id, name)` a name. Shared by every resource that takes such references
/// (storages, Actors, tasks). The owner id is passed owned: a lookup future that borrowed it
/// would have to be `Send` for every lifetime, which axum's extractors cannot prove.
pub async fn find_by_ref<'r, T, I, N>(
    state: &AppState,
    caller: &Caller,
    reference: &'r str,
    by_id: impl FnOnce(&'r str) -> I,
    by_name: impl Fn(String, &'r str) -> N,
) -> ApiResult<Option<T>>
where
    I: Future<Output = troupe_storage::Result<Option<T>>>,
    N: Future<Output = troupe_storage::Result<Option<T>>>,
{
    if let Some((username, name)) = split_name_ref(reference) {
        let Some(owner_id) = name_ref_owner(state, caller, username).await? else {
            return Ok(None);
        };
        return Ok(by_name(owner_id, name).await?);
    }
    if let Some(found) = by_id(reference).await? {
        return Ok(Some(found));
    }
    match caller.user_id() {
        Some(user_id) => Ok(by_name(user_id.to_string(), reference).await?),
        None => Ok(None),
    }
}

/// Finds a storage by id, `username~name`, `~name` or bare name of the caller.
pub async fn find_storage(
    state: &AppState,
    caller: &Caller,
    kind: StorageKind,
    reference: &str,
) -> ApiResult<Option<(StorageInfo, AddressedBy)>> {
    find_by_ref(
        state,
        caller,
        reference,
        |id| async move {
            let found = state.storage.get_storage(kind, id).await?;
            Ok(found.map(|info| (info, AddressedBy::Id)))
        },
        |owner_id, name| async move {
            let found = state
                .storage
                .get_storage_by_name(kind, &owner_id, name)
                .await?;
            Ok(found.map(|info| (info, AddressedBy::Name)))
        },
    )
    .await
}

/// Private objects (tasks, schedules, webhooks, dispatches): only the owner reaches them; 401
/// without a token, 403 for another user.
pub fn owner_only(caller: &Caller, owner_id: &str) -> ApiResult<()> {
    check_access(
        caller,
        owner_id,
        "RESTRICTED",
        &AddressedBy::Id,
        Access::Write,
        false,
    )
}

/// The one access rule: owners may do anything; others may read what `generalAccess` opens
/// (by id for `ANYONE_WITH_ID_CAN_READ`, by id or name for `ANYONE_WITH_NAME_CAN_READ`) or what a
/// valid `signature` opens. Anonymous callers are told to authenticate; other users get 403.
pub fn check_access(
    caller: &Caller,
    owner_id: &str,
    general_access: &str,
    addressed_by: &AddressedBy,
    access: Access,
    signed: bool,
) -> ApiResult<()> {
    if caller.user_id() == Some(owner_id) {
        return Ok(());
    }
    if access == Access::Read {
        let open = match general_access {
            "ANYONE_WITH_ID_CAN_READ" => *addressed_by != AddressedBy::Name,
            "ANYONE_WITH_NAME_CAN_READ" => true,
            _ => false,
        };
        if open || signed {
            return Ok(());
        }
    }
    match caller.user {
        None => Err(ApiError::token_not_provided()),
        Some(_) => Err(ApiError::insufficient_permissions(
            "You do not have permission to access this resource",
        )),
    }
}

/// Whether the request's `signature` opens `info` for reading: a storage signature (keys
/// listing, dataset items, records), or — on a record route, `record_key` being the path's key —
/// that record's own signature (SDK-CONTRACT 5.8), which opens only that record.
pub fn signature_opens(
    secret: &str,
    storage_id: &str,
    params: &Params,
    record_key: Option<&str>,
    now_ms: i64,
) -> bool {
    let Some(sig) = params.str("signature") else {
        return false;
    };
    troupe_model::signature::verify_storage_signature(secret, storage_id, sig, now_ms)
        || record_key
            .is_some_and(|key| troupe_model::signature::verify_record_signature(secret, key, sig))
}

/// Resolves the storage of `kind` a request path names, checking access.
pub async fn resolve_storage(
    state: &AppState,
    caller: &Caller,
    kind: StorageKind,
    path: &HashMap<String, String>,
    params: &Params,
    access: Access,
    signed_ok: impl Fn(&StorageInfo) -> bool,
) -> ApiResult<Resolved> {
    let not_found = || ApiError::not_found(format!("{} was not found", kind.label()));
    if let Some(reference) = path.get(direct_param(kind)) {
        let (info, addressed_by) = find_storage(state, caller, kind, reference)
            .await?
            .ok_or_else(not_found)?;
        let signed = signed_ok(&info);
        check_access(
            caller,
            &info.user_id,
            &info.general_access,
            &addressed_by,
            access,
            signed,
        )?;
        return Ok(Resolved { info, addressed_by });
    }
    // Run-based prefixes: `/actor-runs/{runId}/…`, `/acts/{actorId}/runs/last/…`,
    // `/actor-tasks/{actorTaskId}/runs/last/…`.
    let storage_id =
        crate::routes::runs::run_storage_id(state, caller, kind, path, params, access).await?;
    let info = state
        .storage
        .get_storage(kind, &storage_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Resolved {
        info,
        addressed_by: AddressedBy::Run,
    })
}

/// The path parameters and the caller of a request.
pub async fn path_and_caller(
    parts: &mut Parts,
    state: &AppState,
) -> ApiResult<(HashMap<String, String>, Caller)> {
    let raw = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|err| ApiError::invalid_parameter(err.to_string()))?;
    let path = path_map(&raw);
    let caller = Caller::from_request_parts(parts, state).await?;
    Ok((path, caller))
}

/// [`path_and_caller`] for a private resource (task, webhook, schedule): a token is required
/// (401 `token-not-provided` without one).
pub async fn private_path_and_caller(
    parts: &mut Parts,
    state: &AppState,
) -> ApiResult<(HashMap<String, String>, Caller)> {
    let (path, caller) = path_and_caller(parts, state).await?;
    caller.require()?;
    Ok((path, caller))
}

/// Raw path parameters as a map (percent-decoded by axum).
pub fn path_map(raw: &RawPathParams) -> HashMap<String, String> {
    raw.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What both storage extractors read from a request, in this order (so a bad path or query
/// parameter is reported before a missing token): path params, query params, caller, access.
async fn storage_request(
    parts: &mut Parts,
    state: &AppState,
) -> ApiResult<(HashMap<String, String>, Params, Caller, Access)> {
    let raw = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|err| ApiError::invalid_parameter(err.to_string()))?;
    let path = path_map(&raw);
    let params = Params::parse(parts.uri.query())?;
    let caller = Caller::from_request_parts(parts, state).await?;
    Ok((path, params, caller, Access::of(&parts.method)))
}

/// Type-level storage kind, so one extractor serves the three kinds.
pub trait KindMarker: Send + Sync + 'static {
    const KIND: StorageKind;
}

/// Marker for datasets.
#[derive(Debug, Clone)]
pub struct DatasetKind;
impl KindMarker for DatasetKind {
    const KIND: StorageKind = StorageKind::Dataset;
}

/// Marker for key-value stores.
#[derive(Debug, Clone)]
pub struct KvStoreKind;
impl KindMarker for KvStoreKind {
    const KIND: StorageKind = StorageKind::KeyValueStore;
}

/// Marker for request queues.
#[derive(Debug, Clone)]
pub struct QueueKind;
impl KindMarker for QueueKind {
    const KIND: StorageKind = StorageKind::RequestQueue;
}

/// The storage of kind `K` that a request path names, access already checked. A storage-wide
/// `signature` (keys listing, dataset items) counts as read access, and so does a record
/// signature on a record route.
#[derive(Debug, Clone)]
pub struct StorageTarget<K: KindMarker>(pub Resolved, std::marker::PhantomData<K>);

impl<K: KindMarker> StorageTarget<K> {
    pub fn info(&self) -> &StorageInfo {
        &self.0.info
    }
}

impl<K: KindMarker> FromRequestParts<AppState> for StorageTarget<K> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (path, params, caller, access) = storage_request(parts, state).await?;
        let record_key = path.get("recordKey").cloned();
        let now = troupe_model::now_ms();
        let resolved = resolve_storage(state, &caller, K::KIND, &path, &params, access, |info| {
            signature_opens(
                &info.url_signing_secret_key,
                &info.id,
                &params,
                record_key.as_deref(),
                now,
            )
        })
        .await?;
        // The handler's own `Params` takes this one instead of parsing the query again.
        parts.extensions.insert(params);
        Ok(StorageTarget(resolved, std::marker::PhantomData))
    }
}

/// The dataset a request path names.
pub type DatasetTarget = StorageTarget<DatasetKind>;
/// The key-value store a request path names.
pub type KvStoreTarget = StorageTarget<KvStoreKind>;
/// The request queue a request path names.
pub type QueueTarget = StorageTarget<QueueKind>;

/// The storage of kind `K` a write request names (dataset pushes, record writes), access
/// checked: what a write needs, without counters. A storage named by id (the hot path) comes
/// from the catalog's access cache; names and run prefixes go through [`resolve_storage`].
#[derive(Debug, Clone)]
pub struct WriteTarget<K: KindMarker>(pub std::sync::Arc<StoreAccess>, std::marker::PhantomData<K>);

impl<K: KindMarker> FromRequestParts<AppState> for WriteTarget<K> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // What `storage_request` reads, in its order, with the path map built only when the
        // storage is not named by id (the common case needs no copy of the path params).
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|err| ApiError::invalid_parameter(err.to_string()))?;
        let params = Params::parse(parts.uri.query())?;
        let caller = Caller::from_request_parts(parts, state).await?;
        let access = Access::of(&parts.method);
        let direct = raw
            .iter()
            .find(|(name, _)| *name == direct_param(K::KIND))
            .map(|(_, value)| value);
        // Signatures open reads only, so they play no part here.
        if let Some(reference) = direct {
            // As in `find_storage`: an id first.
            if split_name_ref(reference).is_none() {
                if let Some(found) = state.storage.get_storage_access(K::KIND, reference).await? {
                    check_access(
                        &caller,
                        &found.user_id,
                        &found.general_access,
                        &AddressedBy::Id,
                        access,
                        false,
                    )?;
                    parts.extensions.insert(params);
                    return Ok(WriteTarget(found, std::marker::PhantomData));
                }
            }
        }
        let path = path_map(&raw);
        let resolved =
            resolve_storage(state, &caller, K::KIND, &path, &params, access, |_| false).await?;
        let info = resolved.info;
        let found = std::sync::Arc::new(StoreAccess {
            num: info.num,
            id: info.id,
            user_id: info.user_id,
            general_access: info.general_access,
            url_signing_secret_key: info.url_signing_secret_key,
        });
        parts.extensions.insert(params);
        Ok(WriteTarget(found, std::marker::PhantomData))
    }
}

/// The dataset a write request names.
pub type DatasetWriteTarget = WriteTarget<DatasetKind>;
/// The key-value store a write request names.
pub type KvStoreWriteTarget = WriteTarget<KvStoreKind>;
/// The request queue a write request names (request updates, locks, deletes).
pub type QueueWriteTarget = WriteTarget<QueueKind>;
