//! `/v2/users/me` and `/v2/users/{userId}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use std::sync::{Arc, OnceLock, Weak};

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
    let Some(user_arc) = caller.user.as_ref() else {
        return Err(ApiError::token_not_provided());
    };
    Ok(super::json_body(StatusCode::OK, me_body(user_arc)))
}

/// Bodies of `users/me` recently answered, keyed by the `Arc<User>` the token cache hands out:
/// the same allocation for as long as the token stays cached, so a cached body is exactly as
/// fresh as the user record the handler would otherwise serialise again (users are immutable
/// behind the `Arc`; the `Weak` keeps the allocation, so an address cannot be reused while an
/// entry names it). Bounded to a few entries.
static ME_BODIES: parking_lot::Mutex<Vec<(Weak<User>, axum::body::Bytes)>> =
    parking_lot::Mutex::new(Vec::new());
const ME_BODIES_MAX: usize = 16;

fn me_body(user: &Arc<User>) -> axum::body::Bytes {
    if let Some((_, body)) = ME_BODIES
        .lock()
        .iter()
        .find(|(cached, _)| std::ptr::eq(cached.as_ptr(), Arc::as_ptr(user)))
    {
        return body.clone();
    }
    let body = serialize_me(user);
    let mut cached = ME_BODIES.lock();
    cached.retain(|(entry, _)| entry.strong_count() > 0);
    if cached.len() >= ME_BODIES_MAX {
        cached.remove(0);
    }
    cached.push((Arc::downgrade(user), body.clone()));
    body
}

/// `{"data":{…}}` of `users/me` for a user's own token.
fn serialize_me(user: &User) -> axum::body::Bytes {
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
    axum::body::Bytes::from(body)
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
