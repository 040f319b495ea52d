//! `/v2/users/me` and `/v2/users/{userId}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::json;
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

/// GET /v2/users/me — private account info of the token owner.
async fn get_me(Auth(user): Auth) -> Response {
    data(
        StatusCode::OK,
        json!({
            "id": user.id,
            "username": user.username,
            "profile": public_profile(&user),
            "email": format!("{}@troupe.local", user.username),
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
            "createdAt": troupe_model::format_ts(user.created_at),
            "isPaying": false
        }),
    )
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
