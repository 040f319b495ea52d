//! `/v2/users/me` and `/v2/users/{userId}`.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::OnceLock;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use troupe_model::user::User;

use super::data;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/users/me", get(get_me))
        .route("/v2/users/{userId}", get(get_user))
}

fn public_profile(user: &User) -> serde_json::Value {
    json!({ "name": user.username, "pictureUrl": null, "bio": null, "githubUsername": null, "websiteUrl": null, "twitterUsername": null })
}

/// The parts of `users/me` that are the same for every user (troupe has no plans or proxy),
/// serialised once.
fn constant_account_fields() -> &'static RawValue {
    static FIELDS: OnceLock<Box<RawValue>> = OnceLock::new();
    FIELDS.get_or_init(|| {
        let value = json!({
            "proxy": { "password": "", "groups": [] },
            "plan": {
                "id": "SELF_HOSTED",
                "description": "troupe self-hosted",
                "isEnabled": true,
                "monthlyBasePriceUsd": 0,
                "monthlyUsageCreditsUsd": 0,
                "enabledPlatformFeatures": ["ACTORS", "STORAGE"],
                "maxMonthlyUsageUsd": 0,
                "maxActorMemoryGbytes": 32,
                "maxMonthlyActorComputeUnits": 0,
                "maxMonthlyResidentialProxyGbytes": 0,
                "maxMonthlyProxySerps": 0,
                "maxMonthlyExternalDataTransferGbytes": 0,
                "maxActorCount": 1000000,
                "maxActorTaskCount": 1000000,
                "dataRetentionDays": 0,
                "availableProxyGroups": {},
                "teamAccountSeatCount": 0,
                "supportLevel": "NONE",
                "availableAddOns": []
            },
            "effectivePlatformFeatures": {},
            "isPaying": false
        });
        RawValue::from_string(value.to_string()).expect("valid JSON")
    })
}

/// GET /v2/users/me — private account info of the token owner.
async fn get_me(Auth(user): Auth) -> Response {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Me<'a> {
        id: &'a str,
        username: &'a str,
        profile: Value,
        email: String,
        created_at: String,
    }
    let me = Me {
        id: &user.id,
        username: &user.username,
        profile: public_profile(&user),
        email: format!("{}@troupe.local", user.username),
        created_at: troupe_model::format_ts(user.created_at),
    };
    // `{"data":{…per-user fields…,…constant fields…}}` without building a tree for the rest.
    let mut body = String::with_capacity(1024);
    body.push_str("{\"data\":");
    body.push_str(&serde_json::to_string(&me).expect("serialisable"));
    body.pop(); // the closing brace of `me`
    body.push(',');
    body.push_str(&constant_account_fields().get()[1..]);
    body.push('}');
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// GET /v2/users/{userId} — public profile by id or username; no token needed.
async fn get_user(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> ApiResult<Response> {
    let user = state
        .storage
        .find_user(&user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("User was not found"))?;
    Ok(data(
        StatusCode::OK,
        json!({ "id": user.id, "username": user.username, "profile": public_profile(&user) }),
    ))
}
