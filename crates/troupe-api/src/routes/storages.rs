//! What datasets, key-value stores and request queues share, written once: the collection
//! (list, create / get-or-create by name) and the storage object (get, update, delete).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use troupe_model::storage::{
    validate_storage_name, StorageInfo, StorageKind, StorageListFilter, StorageOrigin,
    StorageUpdate,
};
use troupe_model::{format_ts, GENERAL_ACCESS_VALUES};

use super::{created, data, no_content};
use crate::auth::{Auth, Caller};
use crate::body::ApifyJson;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::resolve::{KindMarker, StorageTarget};
use crate::router::Routes;
use crate::state::AppState;

/// `GET` and `POST` on `/v2/{collection}`.
pub fn collection_routes(kind: StorageKind) -> Router<AppState> {
    Router::new().route(
        &format!("/v2/{}", kind.collection()),
        get(move |state, auth, params| list_storages(kind, state, auth, params))
            .post(move |state, auth, params| create_storage(kind, state, auth, params)),
    )
}

/// `GET`, `PUT` and `DELETE` on the storage itself (mounted at every prefix naming it).
pub fn object_routes<K: KindMarker>() -> Routes {
    Routes::new().route(
        "/",
        get(get_storage::<K>)
            .put(update_storage::<K>)
            .delete(delete_storage::<K>),
    )
}

/// The storage object in Apify's shape. The signing secret is shown to the owner only.
pub fn storage_json(state: &AppState, info: &StorageInfo, caller: Option<&str>) -> Value {
    let base = state.api_base();
    let id = &info.id;
    let owner = caller == Some(info.user_id.as_str());
    let mut object = json!({
        "id": id,
        "name": info.name,
        "userId": info.user_id,
        "username": info.username,
        "createdAt": format_ts(info.created_at),
        "modifiedAt": format_ts(info.modified_at),
        "accessedAt": format_ts(info.accessed_at),
        "actId": info.act_id,
        "actRunId": info.act_run_id,
        "consoleUrl": format!("{base}/{}/{id}", info.kind.collection()),
        "generalAccess": info.general_access,
    });
    let fields = object.as_object_mut().expect("object");
    if owner {
        fields.insert(
            "urlSigningSecretKey".into(),
            json!(info.url_signing_secret_key),
        );
    }
    match info.kind {
        StorageKind::Dataset => {
            fields.insert("itemCount".into(), json!(info.item_count));
            fields.insert("cleanItemCount".into(), json!(info.clean_item_count));
            fields.insert(
                "itemsPublicUrl".into(),
                json!(format!("{base}/datasets/{id}/items")),
            );
            fields.insert(
                "stats".into(),
                json!({ "readCount": info.read_count, "writeCount": info.write_count, "storageBytes": info.storage_bytes, "inflatedBytes": info.storage_bytes }),
            );
        }
        StorageKind::KeyValueStore => {
            fields.insert(
                "keysPublicUrl".into(),
                json!(format!("{base}/key-value-stores/{id}/keys")),
            );
            fields.insert(
                "recordsPublicUrl".into(),
                json!(format!("{base}/key-value-stores/{id}/records")),
            );
            fields.insert(
                "stats".into(),
                json!({
                    "readCount": info.read_count, "writeCount": info.write_count, "deleteCount": info.delete_count,
                    "listCount": info.list_count, "storageBytes": info.storage_bytes, "s3StorageBytes": info.storage_bytes
                }),
            );
        }
        StorageKind::RequestQueue => {
            fields.insert("totalRequestCount".into(), json!(info.total_request_count));
            fields.insert(
                "handledRequestCount".into(),
                json!(info.handled_request_count),
            );
            fields.insert(
                "pendingRequestCount".into(),
                json!(info
                    .total_request_count
                    .saturating_sub(info.handled_request_count)),
            );
            fields.insert(
                "hadMultipleClients".into(),
                json!(info.had_multiple_clients),
            );
            fields.insert(
                "stats".into(),
                json!({
                    "readCount": info.read_count, "writeCount": info.write_count, "deleteCount": info.delete_count,
                    "headItemReadCount": 0, "storageBytes": info.storage_bytes
                }),
            );
        }
    }
    object
}

/// GET /v2/{collection} — the caller's storages (named only unless `unnamed=1`).
async fn list_storages(
    kind: StorageKind,
    State(state): State<AppState>,
    Auth(user): Auth,
    params: Params,
) -> ApiResult<Response> {
    let list = params.list_params()?;
    let filter = StorageListFilter {
        unnamed: params.bool("unnamed", false)?,
    };
    let page = state
        .storage
        .list_storages(kind, &user.id, filter, list)
        .await?;
    let unnamed = filter.unnamed;
    let page = page.map(|info| {
        let mut object = storage_json(&state, &info, Some(&user.id));
        // Dataset and request queue list items must carry a string `name` (the strict Python
        // client rejects `null` there): unnamed ones are listed with `""`.
        if matches!(kind, StorageKind::Dataset | StorageKind::RequestQueue) && info.name.is_none() {
            object["name"] = json!("");
        }
        object
    });
    let mut body = serde_json::to_value(page).map_err(ApiError::internal)?;
    body["unnamed"] = json!(unnamed);
    Ok(data(StatusCode::OK, body))
}

/// POST /v2/{collection}[?name=] — create, or get-or-create by name (201 new / 200 existing).
async fn create_storage(
    kind: StorageKind,
    State(state): State<AppState>,
    Auth(user): Auth,
    params: Params,
) -> ApiResult<Response> {
    let name = params.str("name");
    if let Some(name) = name {
        validate_storage_name(name).map_err(ApiError::invalid_parameter)?;
    }
    let (info, was_created) = state
        .storage
        .create_storage(kind, &user, name, StorageOrigin::default())
        .await?;
    let object = storage_json(&state, &info, Some(&user.id));
    if was_created {
        Ok(created(
            &format!("{}/{}/{}", state.api_base(), kind.collection(), info.id),
            object,
        ))
    } else {
        Ok(data(StatusCode::OK, object))
    }
}

/// GET on a storage — its metadata.
async fn get_storage<K: KindMarker>(
    State(state): State<AppState>,
    caller: Caller,
    target: StorageTarget<K>,
) -> Response {
    data(
        StatusCode::OK,
        storage_json(&state, target.info(), caller.user_id()),
    )
}

/// PUT on a storage — rename (`name`, `null` for unnamed) and/or change `generalAccess`.
async fn update_storage<K: KindMarker>(
    State(state): State<AppState>,
    caller: Caller,
    target: StorageTarget<K>,
    ApifyJson(body): ApifyJson<Value>,
) -> ApiResult<Response> {
    let Value::Object(body) = body else {
        return Err(ApiError::invalid_input(
            "Request body must be a JSON object",
        ));
    };
    let mut update = StorageUpdate::default();
    match body.get("name") {
        None => {}
        Some(Value::Null) => update.name = Some(None),
        Some(Value::String(name)) if name.is_empty() => update.name = Some(None),
        Some(Value::String(name)) => {
            validate_storage_name(name).map_err(ApiError::invalid_input)?;
            update.name = Some(Some(name.clone()));
        }
        Some(_) => {
            return Err(ApiError::invalid_input(
                "Field \"name\" must be a string or null",
            ))
        }
    }
    match body.get("generalAccess") {
        None | Some(Value::Null) => {}
        Some(Value::String(access)) if GENERAL_ACCESS_VALUES.contains(&access.as_str()) => {
            update.general_access = Some(access.clone());
        }
        Some(_) => {
            return Err(ApiError::invalid_input(format!(
                "Field \"generalAccess\" must be one of: {}",
                GENERAL_ACCESS_VALUES.join(", ")
            )))
        }
    }
    let info = state
        .storage
        .update_storage(K::KIND, &target.info().id, update)
        .await?;
    Ok(data(
        StatusCode::OK,
        storage_json(&state, &info, caller.user_id()),
    ))
}

/// DELETE on a storage — removes it and its content.
async fn delete_storage<K: KindMarker>(
    State(state): State<AppState>,
    target: StorageTarget<K>,
) -> ApiResult<Response> {
    state
        .storage
        .delete_storage(K::KIND, &target.info().id)
        .await?;
    Ok(no_content())
}
