//! `troupe users …` and `troupe tokens …`: user and token administration straight on the data
//! dir (SQLite in WAL mode lets this run next to a live server).

use std::path::Path;

use anyhow::{bail, Context};
use troupe_model::user::User;
use troupe_storage::sqlite::{SqliteOptions, SqliteStorage};
use troupe_storage::{Storage, UserStore};

use crate::cli::{TokensCommand, UsersCommand};

fn open(data_dir: &Path) -> anyhow::Result<SqliteStorage> {
    if !data_dir.join("troupe.db").exists() {
        bail!(
            "no troupe data in {} (start `troupe serve --data-dir {}` once first)",
            data_dir.display(),
            data_dir.display()
        );
    }
    Ok(SqliteStorage::open(data_dir, SqliteOptions::default())?)
}

async fn user_named(storage: &dyn Storage, name: Option<&str>) -> anyhow::Result<User> {
    match name {
        Some(name) => storage
            .find_user(name)
            .await?
            .with_context(|| format!("no user \"{name}\"")),
        None => {
            // The default user is the oldest one.
            let users = storage.list_users().await?;
            users.into_iter().next().context("no users yet")
        }
    }
}

fn valid_username(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

pub async fn users(data_dir: &Path, command: UsersCommand) -> anyhow::Result<()> {
    let storage = open(data_dir)?;
    match command {
        UsersCommand::Add { username } => {
            if !valid_username(&username) {
                bail!("a username has 1-63 characters of a-z, A-Z, 0-9, '-', '_' and '.'");
            }
            let user = storage.create_user(&username).await?;
            let (_, secret) = storage.create_token(&user.id, "first token", None).await?;
            println!("user {} ({}) created", user.username, user.id);
            println!("token: {secret}");
        }
        UsersCommand::List => {
            for user in storage.list_users().await? {
                println!(
                    "{}\t{}\t{}",
                    user.id,
                    user.username,
                    troupe_model::format_ts(user.created_at)
                );
            }
        }
        UsersCommand::Remove { username } => {
            let user = user_named(&storage, Some(&username)).await?;
            if !storage.remove_user(&user.id).await? {
                bail!("no user \"{username}\"");
            }
            println!("user {} removed", user.username);
        }
    }
    Ok(())
}

pub async fn tokens(data_dir: &Path, command: TokensCommand) -> anyhow::Result<()> {
    let storage = open(data_dir)?;
    match command {
        TokensCommand::Create { user, description } => {
            let user = user_named(&storage, user.as_deref()).await?;
            let (info, secret) = storage.create_token(&user.id, &description, None).await?;
            println!("token {} for {} created", info.id, user.username);
            println!("token: {secret}");
        }
        TokensCommand::List { user } => {
            let user = user_named(&storage, user.as_deref()).await?;
            for token in storage.list_tokens(&user.id).await? {
                println!(
                    "{}\t{}\t{}{}",
                    token.id,
                    troupe_model::format_ts(token.created_at),
                    token.description.unwrap_or_default(),
                    token
                        .run_id
                        .map(|r| format!(" (run {r})"))
                        .unwrap_or_default()
                );
            }
        }
        TokensCommand::Revoke { id } => {
            if !storage.revoke_token(&id).await? {
                bail!("no token with id {id}");
            }
            println!("token {id} revoked");
        }
    }
    Ok(())
}
