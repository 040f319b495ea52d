//! Users and their API tokens (tokens are stored as SHA-256 hashes).

use async_trait::async_trait;
use troupe_model::user::{TokenInfo, User};

use crate::Result;

#[async_trait]
pub trait UserStore {
    /// Creates the default user if there is none, and makes sure `token` belongs to it.
    async fn ensure_default_user(&self, username: &str, token: &str) -> Result<User>;
    /// The user owning `token`, if the token is known.
    async fn user_by_token(&self, token: &str) -> Result<Option<User>>;
    /// The user owning `token` and, for a run's token, that run's id.
    async fn token_owner(&self, token: &str) -> Result<Option<(User, Option<String>)>>;
    /// A user by id or by username.
    async fn find_user(&self, id_or_username: &str) -> Result<Option<User>>;
    /// Adds a user; `Conflict` when the username is taken.
    async fn create_user(&self, username: &str) -> Result<User>;
    /// All users, oldest first.
    async fn list_users(&self) -> Result<Vec<User>>;
    /// Removes a user and all of their tokens (not the default user). False when unknown.
    async fn remove_user(&self, user_id: &str) -> Result<bool>;
    /// Creates a token for a user (optionally bound to a run); returns its info and the secret,
    /// which is never stored in clear.
    async fn create_token(
        &self,
        user_id: &str,
        description: &str,
        run_id: Option<&str>,
    ) -> Result<(TokenInfo, String)>;
    /// The user's tokens (without secrets).
    async fn list_tokens(&self, user_id: &str) -> Result<Vec<TokenInfo>>;
    /// Revokes a token by its id. False when unknown.
    async fn revoke_token(&self, token_id: &str) -> Result<bool>;
    /// Revokes every token bound to a run (when the run ends). Returns how many.
    async fn revoke_run_tokens(&self, run_id: &str) -> Result<u64>;
    /// A number that changes whenever this process revokes or removes a token or user: a cache of
    /// token lookups is stale when it differs from the value seen at caching time.
    fn token_generation(&self) -> u64;
}
