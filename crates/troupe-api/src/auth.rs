//! Authentication: the token comes from `Authorization: Bearer` (wins when both are present)
//! or `?token=`.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use troupe_model::user::User;

use crate::error::ApiError;
use crate::state::AppState;

/// The caller of a request: a user when a valid token was given. A token that was given but is
/// unknown is rejected here (401 `invalid-token`) even on endpoints that work anonymously.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Shared with the token cache (a request clones a pointer, not the user).
    pub user: Option<Arc<User>>,
    /// Set when the token is a run's own token (`APIFY_TOKEN` inside a run).
    pub run_id: Option<Arc<str>>,
}

impl Caller {
    /// The user, or 401 `token-not-provided`.
    pub fn require(&self) -> Result<&User, ApiError> {
        self.user
            .as_deref()
            .ok_or_else(ApiError::token_not_provided)
    }

    pub fn user_id(&self) -> Option<&str> {
        self.user.as_ref().map(|u| u.id.as_str())
    }
}

/// A caller that must be authenticated.
#[derive(Debug, Clone)]
pub struct Auth(pub Arc<User>);

fn token_from_parts(parts: &Parts) -> Option<Cow<'_, str>> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        if let Ok(value) = value.to_str() {
            let value = value.trim();
            if let Some(token) = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
            {
                let token = token.trim();
                if !token.is_empty() {
                    return Some(Cow::Borrowed(token));
                }
            }
        }
    }
    let query = parts.uri.query()?;
    form_urlencoded_token(query).map(Cow::Owned)
}

fn form_urlencoded_token(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, v)| k == "token" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let caller = match token_from_parts(parts) {
            None => Caller {
                user: None,
                run_id: None,
            },
            Some(token) => match state.user_for_token(&token).await? {
                Some(owner) => Caller {
                    user: Some(owner.user),
                    run_id: owner.run_id,
                },
                None => return Err(ApiError::invalid_token()),
            },
        };
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller
            .user
            .map(Auth)
            .ok_or_else(ApiError::token_not_provided)
    }
}
