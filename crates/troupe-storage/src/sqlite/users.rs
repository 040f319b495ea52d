use async_trait::async_trait;
use rusqlite::{params, Row};
use sha2::{Digest, Sha256};
use troupe_model::user::{TokenInfo, User};

use super::{optional, SqliteStorage};
use crate::{Error, Result, UserStore};

/// Hex SHA-256 of a token, the form tokens are stored in.
pub(crate) fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<TokenInfo> {
    Ok(TokenInfo {
        id: row.get(0)?,
        user_id: row.get(1)?,
        created_at: row.get(2)?,
        description: row.get(3)?,
        run_id: row.get(4)?,
    })
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
                "INSERT INTO tokens (token_hash, user_id, created_at, description, id) VALUES (?1, ?2, ?3, 'default', ?4)
                 ON CONFLICT(token_hash) DO UPDATE SET user_id = excluded.user_id",
                params![token_hash, user.id, troupe_model::now_ms(), troupe_model::new_id()],
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

    async fn token_owner(&self, token: &str) -> Result<Option<(User, Option<String>)>> {
        let token_hash = hash_token(token);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT u.id, u.username, u.created_at, t.run_id FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?1",
            )?;
            Ok(optional(stmt.query_row([token_hash], |row| {
                Ok((user_from_row(row)?, row.get(3)?))
            }))?)
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

    async fn create_user(&self, username: &str) -> Result<User> {
        let username = username.to_string();
        self.write(move |tx| {
            let taken: Option<i64> = optional(tx.query_row(
                "SELECT 1 FROM users WHERE username = ?1",
                [&username],
                |r| r.get(0),
            ))?;
            if taken.is_some() {
                return Err(Error::Conflict(format!(
                    "User \"{username}\" already exists"
                )));
            }
            let user = User {
                id: troupe_model::new_id(),
                username,
                created_at: troupe_model::now_ms(),
            };
            tx.execute(
                "INSERT INTO users (id, username, created_at, is_default) VALUES (?1, ?2, ?3, 0)",
                params![user.id, user.username, user.created_at],
            )?;
            Ok(user)
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, username, created_at FROM users ORDER BY created_at, rowid",
            )?;
            let users = stmt
                .query_map([], user_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(users)
        })
        .await
    }

    async fn remove_user(&self, user_id: &str) -> Result<bool> {
        let user_id = user_id.to_string();
        let removed = self
            .write(move |tx| {
                let is_default: Option<i64> = optional(tx.query_row(
                    "SELECT is_default FROM users WHERE id = ?1",
                    [&user_id],
                    |r| r.get(0),
                ))?;
                match is_default {
                    None => Ok(false),
                    Some(1) => Err(Error::Invalid("The default user cannot be removed".into())),
                    Some(_) => {
                        tx.execute("DELETE FROM tokens WHERE user_id = ?1", [&user_id])?;
                        tx.execute("DELETE FROM users WHERE id = ?1", [&user_id])?;
                        Ok(true)
                    }
                }
            })
            .await;
        self.bump_token_generation();
        removed
    }

    async fn create_token(
        &self,
        user_id: &str,
        description: &str,
        run_id: Option<&str>,
    ) -> Result<(TokenInfo, String)> {
        let secret = format!("troupe_{}", troupe_model::id::random_string(40));
        let info = TokenInfo {
            id: troupe_model::new_id(),
            user_id: user_id.to_string(),
            created_at: troupe_model::now_ms(),
            description: Some(description.to_string()),
            run_id: run_id.map(str::to_string),
        };
        let hash = hash_token(&secret);
        let row = info.clone();
        self.write(move |tx| {
            let exists: Option<i64> = optional(tx.query_row("SELECT 1 FROM users WHERE id = ?1", [&row.user_id], |r| r.get(0)))?;
            if exists.is_none() {
                return Err(Error::NotFound("User was not found".into()));
            }
            tx.execute(
                "INSERT INTO tokens (token_hash, user_id, created_at, description, id, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![hash, row.user_id, row.created_at, row.description, row.id, row.run_id],
            )?;
            Ok(())
        })
        .await?;
        Ok((info, secret))
    }

    async fn list_tokens(&self, user_id: &str) -> Result<Vec<TokenInfo>> {
        let user_id = user_id.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, user_id, created_at, description, run_id FROM tokens WHERE user_id = ?1 ORDER BY created_at, rowid",
            )?;
            let tokens = stmt.query_map([user_id], token_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(tokens)
        })
        .await
    }

    async fn revoke_token(&self, token_id: &str) -> Result<bool> {
        let token_id = token_id.to_string();
        self.write(move |tx| Ok(tx.execute("DELETE FROM tokens WHERE id = ?1", [token_id])? > 0))
            .await
    }

    async fn revoke_run_tokens(&self, run_id: &str) -> Result<u64> {
        let run_id = run_id.to_string();
        self.write(move |tx| {
            Ok(tx.execute("DELETE FROM tokens WHERE run_id = ?1", [run_id])? as u64)
        })
        .await
    }

    fn token_generation(&self) -> u64 {
        self.current_token_generation()
    }
}
