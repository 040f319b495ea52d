//! Users and their API tokens (tokens are stored as SHA-256 hashes).

use async_trait::async_trait;
use troupe_model::user::User;

use crate::Result;

#[async_trait]
pub trait UserStore {
    /// Creates the default user if there is none, and makes sure `token` belongs to it.
    async fn ensure_default_user(&self, username: &str, token: &str) -> Result<User>;
    /// The user owning `token`, if the token is known.
    async fn user_by_token(&self, token: &str) -> Result<Option<User>>;
    /// A user by id or by username.
    async fn find_user(&self, id_or_username: &str) -> Result<Option<User>>;
}
