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
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/users/me", get(get_me))
        .route("/v2/users/{userId}", get(get_user))
}

/// A user's public profile (troupe keeps only the name).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PublicProfile<'a> {
    name: &'a str,
    picture_url: Option<&'a str>,
    bio: Option<&'a str>,
    github_username: Option<&'a str>,
    website_url: Option<&'a str>,
    twitter_username: Option<&'a str>,
}

fn public_profile(user: &User) -> PublicProfile<'_> {
    PublicProfile {
        name: &user.username,
        picture_url: None,
        bio: None,
        github_username: None,
        website_url: None,
        twitter_username: None,
    }
}

/// `{username}@troupe.local`, written straight into the output.
struct Email<'a>(&'a str);

impl Serialize for Email<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}@troupe.local", self.0))
    }
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
            "effectivePlatformFeatures": effective_platform_features(),
            "isPaying": false
        });
        RawValue::from_string(value.to_string()).expect("valid JSON")
    })
}

/// GET /v2/users/me — private account info of the token owner. A run's own token (the one in
/// its `APIFY_TOKEN`) gets what Apify gives run-scoped tokens: no `profile`, `email` or `plan`.
async fn get_me(caller: Caller) -> ApiResult<Response> {
    let user = caller.require()?;
    if caller.run_id.is_some() {
        return Ok(data(
            StatusCode::OK,
            json!({
                "id": user.id,
                "username": user.username,
                "proxy": { "password": "", "groups": [] },
                "effectivePlatformFeatures": effective_platform_features(),
                "createdAt": troupe_model::format_ts(user.created_at),
                "isPaying": false,
            }),
        ));
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Me<'a> {
        id: &'a str,
        username: &'a str,
        profile: PublicProfile<'a>,
        email: Email<'a>,
        created_at: String,
    }
    let me = Me {
        id: &user.id,
        username: &user.username,
        profile: public_profile(user),
        email: Email(&user.username),
        created_at: troupe_model::format_ts(user.created_at),
    };
    // `{"data":{…per-user fields…,…constant fields…}}` without building a tree for the rest.
    let constant = constant_account_fields().get();
    let mut body = Vec::with_capacity(256 + constant.len());
    body.extend_from_slice(b"{\"data\":");
    serde_json::to_writer(&mut body, &me).expect("serialisable");
    body.pop(); // the closing brace of `me`
    body.push(b',');
    body.extend_from_slice(&constant.as_bytes()[1..]);
    body.push(b'}');
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Bytes::from(body),
    )
        .into_response())
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
    #[derive(Serialize)]
    struct PublicUser<'a> {
        id: &'a str,
        username: &'a str,
        profile: PublicProfile<'a>,
    }
    Ok(data(
        StatusCode::OK,
        PublicUser {
            id: &user.id,
            username: &user.username,
            profile: public_profile(&user),
        },
    ))
}

/// What the account can use, in the shape of Apify's `effectivePlatformFeatures`: everything
/// troupe has is enabled; Apify Proxy and the public Actor store do not exist here.
fn effective_platform_features() -> Value {
    let feature = |enabled: bool, reason: &str| {
        json!({
            "isEnabled": enabled,
            "disabledReason": if enabled { Value::Null } else { json!(reason) },
            "disabledReasonType": if enabled { Value::Null } else { json!("DISABLED") },
            "isTrial": false,
            "trialExpirationAt": null,
        })
    };
    let no_proxy = "troupe has no proxy";
    let no_store = "troupe has no public Actor store";
    json!({
        "ACTORS": feature(true, ""),
        "STORAGE": feature(true, ""),
        "SCHEDULER": feature(true, ""),
        "WEBHOOKS": feature(true, ""),
        "PROXY": feature(false, no_proxy),
        "PROXY_EXTERNAL_ACCESS": feature(false, no_proxy),
        "PROXY_RESIDENTIAL": feature(false, no_proxy),
        "PROXY_SERPS": feature(false, no_proxy),
        "ACTORS_PUBLIC_ALL": feature(false, no_store),
        "ACTORS_PUBLIC_DEVELOPER": feature(false, no_store),
    })
}
