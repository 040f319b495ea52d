use async_trait::async_trait;
use rusqlite::{params, Row};
use sha2::{Digest, Sha256};
use troupe_model::user::User;

use super::{optional, SqliteStorage};
use crate::{Result, UserStore};

/// Hex SHA-256 of a token, the form tokens are stored in.
pub(crate) fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        created_at: row.get(2)?,
    })
}

#[async_trait]
impl UserStore for SqliteStorage {
    async fn ensure_default_user(&self, username: &str, token: &str) -> Result<User> {
        let username = username.to_string();
        let token_hash = hash_token(token);
        self.write(move |tx| {
            let existing = optional(tx.query_row(
                "SELECT id, username, created_at FROM users WHERE is_default = 1",
                [],
                user_from_row,
            ))?;
            let user = match existing {
                Some(user) => user,
                None => {
                    let user = User { id: troupe_model::new_id(), username, created_at: troupe_model::now_ms() };
                    tx.execute(
                        "INSERT INTO users (id, username, created_at, is_default) VALUES (?1, ?2, ?3, 1)",
                        params![user.id, user.username, user.created_at],
                    )?;
                    user
                }
            };
            tx.execute(
                "INSERT INTO tokens (token_hash, user_id, created_at, description) VALUES (?1, ?2, ?3, 'default')
                 ON CONFLICT(token_hash) DO UPDATE SET user_id = excluded.user_id",
                params![token_hash, user.id, troupe_model::now_ms()],
            )?;
            Ok(user)
        })
        .await
    }

    async fn user_by_token(&self, token: &str) -> Result<Option<User>> {
        let token_hash = hash_token(token);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT u.id, u.username, u.created_at FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?1",
            )?;
            Ok(optional(stmt.query_row([token_hash], user_from_row))?)
        })
        .await
    }

    async fn find_user(&self, id_or_username: &str) -> Result<Option<User>> {
        let key = id_or_username.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, username, created_at FROM users WHERE id = ?1 OR username = ?1 ORDER BY id = ?1 DESC LIMIT 1",
            )?;
            Ok(optional(stmt.query_row([key], user_from_row))?)
        })
        .await
    }
}
