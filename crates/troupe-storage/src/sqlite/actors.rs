//! Actors, builds and runs: one row per object, the object as JSON plus indexed columns.

use async_trait::async_trait;
use rusqlite::{params, params_from_iter, Connection, Transaction};
use serde::de::DeserializeOwned;
use serde::Serialize;
use troupe_model::actor::{Actor, Build, JobStatus, Run};
use troupe_model::list::{ListParams, Page};

use super::{optional, SqliteStorage};
use crate::actors::{Mutator, RunFilter};
use crate::{ActorStore, BuildStore, Error, Result, RunStore};

pub(super) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|err| Error::Internal(err.into()))
}

pub(super) fn from_json<T: DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|err| Error::Internal(err.into()))
}

/// Every row of `sql` (whose first column is an object's JSON), parsed.
pub(super) fn json_rows<T: DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |row| row.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(from_json(&row?)?);
    }
    Ok(out)
}

pub(super) fn load<T: DeserializeOwned>(
    conn: &Connection,
    table: &str,
    id: &str,
) -> Result<Option<T>> {
    let sql = format!("SELECT data FROM {table} WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let text: Option<String> = optional(stmt.query_row([id], |row| row.get(0)))?;
    text.map(|t| from_json(&t)).transpose()
}

/// Runs a paged query: `where_sql` with `args`, ordered by `order_col`.
pub(super) fn page<T: DeserializeOwned>(
    conn: &Connection,
    table: &str,
    where_sql: &str,
    args: &[String],
    order_col: &str,
    params: ListParams,
) -> Result<Page<T>> {
    let count_sql = format!("SELECT count(*) FROM {table} WHERE {where_sql}");
    let total: i64 = conn
        .prepare_cached(&count_sql)?
        .query_row(params_from_iter(args.iter()), |row| row.get(0))?;
    let dir = if params.desc { "DESC" } else { "ASC" };
    let sql = format!(
        "SELECT data FROM {table} WHERE {where_sql} ORDER BY {order_col} {dir}, num {dir} LIMIT {} OFFSET {}",
        params.limit.min(i64::MAX as u64),
        params.offset.min(i64::MAX as u64)
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args.iter()), |row| row.get::<_, String>(0))?;
    let mut items = Vec::new();
    for row in rows {
        items.push(from_json(&row?)?);
    }
    Ok(Page::new(params, total as u64, items))
}

fn write_actor(tx: &Transaction<'_>, actor: &Actor, insert: bool) -> Result<()> {
    let data = to_json(actor)?;
    let result = if insert {
        tx.execute(
            "INSERT INTO actors (id, user_id, name, created_at, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![actor.id, actor.user_id, actor.name, actor.created_at, data],
        )
    } else {
        tx.execute(
            "UPDATE actors SET name = ?2, data = ?3 WHERE id = ?1",
            params![actor.id, actor.name, data],
        )
    };
    match result {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(err, _))
            if err.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(Error::Conflict(format!(
                "Actor with name \"{}\" already exists",
                actor.name
            )))
        }
        Err(err) => Err(err.into()),
    }
}

fn write_build(tx: &Transaction<'_>, build: &Build, insert: bool) -> Result<()> {
    let data = to_json(build)?;
    if insert {
        tx.execute(
            "INSERT INTO builds (id, act_id, user_id, status, started_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![build.id, build.act_id, build.user_id, build.status.as_str(), build.started_at, data],
        )?;
    } else {
        tx.execute(
            "UPDATE builds SET status = ?2, started_at = ?3, data = ?4 WHERE id = ?1",
            params![build.id, build.status.as_str(), build.started_at, data],
        )?;
    }
    Ok(())
}

fn write_run(tx: &Transaction<'_>, run: &Run, insert: bool) -> Result<()> {
    let data = to_json(run)?;
    if insert {
        tx.execute(
            "INSERT INTO runs (id, act_id, user_id, status, origin, started_at, data, actor_task_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![run.id, run.act_id, run.user_id, run.status.as_str(), run.origin, run.started_at, data, run.actor_task_id],
        )?;
    } else {
        tx.execute(
            "UPDATE runs SET status = ?2, started_at = ?3, data = ?4 WHERE id = ?1",
            params![run.id, run.status.as_str(), run.started_at, data],
        )?;
    }
    Ok(())
}

impl SqliteStorage {
    /// Inserts many runs in one write transaction (bulk seeding: troupe-bench's `runs/last`
    /// workloads with a million runs).
    pub fn insert_runs_blocking(&self, runs: &[Run]) -> Result<()> {
        let bumps: Vec<_> = runs
            .iter()
            .map(|run| {
                self.inner
                    .caches
                    .runs_write(&run.act_id, run.actor_task_id.as_deref())
            })
            .collect();
        self.write_blocking(|tx| {
            for run in runs {
                write_run(tx, run, true)?;
            }
            Ok(())
        })?;
        drop(bumps);
        Ok(())
    }
}

#[async_trait]
impl ActorStore for SqliteStorage {
    async fn create_actor(&self, actor: Actor) -> Result<Actor> {
        self.write(move |tx| {
            write_actor(tx, &actor, true)?;
            Ok(actor)
        })
        .await
    }

    async fn get_actor(&self, id: &str) -> Result<Option<Actor>> {
        let id = id.to_string();
        self.read(move |conn| load(conn, "actors", &id)).await
    }

    // Index seeks on a pooled reader right here: less than a hop to the blocking pool and back.
    async fn actor_exists(&self, id: &str) -> Result<bool> {
        self.read_blocking(|conn| {
            let mut stmt = conn.prepare_cached("SELECT 1 FROM actors WHERE id = ?1")?;
            Ok(stmt.exists([id])?)
        })
    }

    async fn actor_id_by_name(&self, user_id: &str, name: &str) -> Result<Option<String>> {
        self.read_blocking(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT id FROM actors WHERE user_id = ?1 AND name = ?2")?;
            Ok(optional(stmt.query_row([user_id, name], |row| row.get(0)))?)
        })
    }

    async fn get_actor_by_name(&self, user_id: &str, name: &str) -> Result<Option<Actor>> {
        let (user_id, name) = (user_id.to_string(), name.to_string());
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT data FROM actors WHERE user_id = ?1 AND name = ?2")?;
            let text: Option<String> = optional(stmt.query_row([user_id, name], |row| row.get(0)))?;
            text.map(|t| from_json(&t)).transpose()
        })
        .await
    }

    async fn list_actors(&self, user_id: &str, params: ListParams) -> Result<Page<Actor>> {
        let args = vec![user_id.to_string()];
        self.read(move |conn| page(conn, "actors", "user_id = ?1", &args, "created_at", params))
            .await
    }

    async fn update_actor(&self, id: &str, change: Mutator<Actor>) -> Result<Actor> {
        let id = id.to_string();
        self.write(move |tx| {
            let mut actor: Actor = load(tx, "actors", &id)?
                .ok_or_else(|| Error::NotFound("Actor was not found".into()))?;
            change(&mut actor)?;
            write_actor(tx, &actor, false)?;
            Ok(actor)
        })
        .await
    }

    async fn delete_actor(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        let caches = self.inner.caches.clone();
        self.write(move |tx| {
            let n = tx.execute("DELETE FROM actors WHERE id = ?1", [&id])?;
            tx.execute("DELETE FROM builds WHERE act_id = ?1", [&id])?;
            // The Actor's runs go, and with them some tasks' runs (see `runs_version`).
            let mut bumps = vec![caches.runs_write(&id, None)];
            let tasks = tx
                .prepare_cached(
                    "SELECT DISTINCT actor_task_id FROM runs WHERE act_id = ?1 AND actor_task_id IS NOT NULL",
                )?
                .query_map([&id], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            bumps.extend(tasks.iter().map(|task| caches.runs_write(task, None)));
            tx.execute("DELETE FROM runs WHERE act_id = ?1", [&id])?;
            Ok((n > 0, bumps))
        })
        .await
        .map(|(deleted, _bumps)| deleted)
    }
}

#[async_trait]
impl BuildStore for SqliteStorage {
    async fn create_build(&self, build: Build) -> Result<()> {
        self.write(move |tx| write_build(tx, &build, true)).await
    }

    async fn get_build(&self, id: &str) -> Result<Option<Build>> {
        let id = id.to_string();
        self.read(move |conn| load(conn, "builds", &id)).await
    }

    async fn list_builds(
        &self,
        user_id: &str,
        act_id: Option<&str>,
        params: ListParams,
    ) -> Result<Page<Build>> {
        let mut args = vec![user_id.to_string()];
        let mut where_sql = "user_id = ?1".to_string();
        if let Some(act_id) = act_id {
            args.push(act_id.to_string());
            where_sql.push_str(" AND act_id = ?2");
        }
        self.read(move |conn| page(conn, "builds", &where_sql, &args, "started_at", params))
            .await
    }

    async fn update_build(&self, id: &str, change: Mutator<Build>) -> Result<Build> {
        let id = id.to_string();
        self.write(move |tx| {
            let mut build: Build = load(tx, "builds", &id)?
                .ok_or_else(|| Error::NotFound("Actor build was not found".into()))?;
            change(&mut build)?;
            write_build(tx, &build, false)?;
            Ok(build)
        })
        .await
    }

    async fn delete_build(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.write(move |tx| Ok(tx.execute("DELETE FROM builds WHERE id = ?1", [&id])? > 0))
            .await
    }

    async fn unfinished_builds(&self) -> Result<Vec<Build>> {
        self.read(|conn| {
            json_rows(
                conn,
                "SELECT data FROM builds WHERE status IN ('READY', 'RUNNING') ORDER BY num",
                [],
            )
        })
        .await
    }
}

/// Appends `filter`'s status and start-time conditions to a run listing's `WHERE` (its
/// arguments to `args`, numbered after those already there).
pub(super) fn run_conditions(filter: &RunFilter, where_sql: &mut String, args: &mut Vec<String>) {
    if !filter.statuses.is_empty() {
        let mut marks = Vec::new();
        for status in &filter.statuses {
            args.push(status.as_str().to_string());
            marks.push(format!("?{}", args.len()));
        }
        where_sql.push_str(&format!(" AND status IN ({})", marks.join(", ")));
    }
    // Integers, so written into the SQL (the bound arguments are all text).
    if let Some(after) = filter.started_after {
        where_sql.push_str(&format!(" AND started_at >= {after}"));
    }
    if let Some(before) = filter.started_before {
        where_sql.push_str(&format!(" AND started_at <= {before}"));
    }
}

#[async_trait]
impl RunStore for SqliteStorage {
    async fn create_run(&self, run: Run) -> Result<()> {
        // Dropped once committed: cached "last run" answers of the Actor and task are stale.
        let bump = self
            .inner
            .caches
            .runs_write(&run.act_id, run.actor_task_id.as_deref());
        self.write(move |tx| {
            write_run(tx, &run, true)?;
            Ok(bump)
        })
        .await
        .map(drop)
    }

    async fn get_run(&self, id: &str) -> Result<Option<Run>> {
        // A unique-index seek: on a pooled reader right here, no blocking-pool hop.
        self.read_blocking(|conn| load(conn, "runs", id))
    }

    async fn list_runs(
        &self,
        user_id: &str,
        filter: RunFilter,
        params: ListParams,
    ) -> Result<Page<Run>> {
        let mut args = vec![user_id.to_string()];
        let mut where_sql = "user_id = ?1".to_string();
        if let Some(act_id) = filter.act_id.clone() {
            args.push(act_id);
            where_sql.push_str(&format!(" AND act_id = ?{}", args.len()));
        }
        run_conditions(&filter, &mut where_sql, &mut args);
        self.read(move |conn| page(conn, "runs", &where_sql, &args, "started_at", params))
            .await
    }

    async fn last_run(
        &self,
        user_id: &str,
        act_id: &str,
        status: Option<JobStatus>,
        origin: Option<&str>,
    ) -> Result<Option<Run>> {
        let mut args = vec![act_id.to_string(), user_id.to_string()];
        let mut where_sql = "act_id = ?1 AND user_id = ?2".to_string();
        if let Some(status) = status {
            args.push(status.as_str().to_string());
            where_sql.push_str(&format!(" AND status = ?{}", args.len()));
        }
        if let Some(origin) = origin {
            args.push(origin.to_string());
            where_sql.push_str(&format!(" AND origin = ?{}", args.len()));
        }
        // One index seek (`runs_by_actor*`, LIMIT 1): on a pooled reader right here.
        self.read_blocking(|conn| {
            let sql = format!(
                "SELECT data FROM runs WHERE {where_sql} ORDER BY started_at DESC, num DESC LIMIT 1"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let text: Option<String> =
                optional(stmt.query_row(params_from_iter(args.iter()), |row| row.get(0)))?;
            text.map(|t| from_json(&t)).transpose()
        })
    }

    async fn update_run(&self, id: &str, change: Mutator<Run>) -> Result<Run> {
        let id = id.to_string();
        let caches = self.inner.caches.clone();
        self.write(move |tx| {
            let mut run: Run = load(tx, "runs", &id)?
                .ok_or_else(|| Error::NotFound("Actor run was not found".into()))?;
            // (The Actor and task of a run never change.)
            let bump = caches.runs_write(&run.act_id, run.actor_task_id.as_deref());
            change(&mut run)?;
            write_run(tx, &run, false)?;
            Ok((run, bump))
        })
        .await
        .map(|(run, _bump)| run)
    }

    async fn delete_run(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        let caches = self.inner.caches.clone();
        self.write(move |tx| {
            let owners: Option<(String, Option<String>)> = optional(
                tx.prepare_cached(
                    "DELETE FROM runs WHERE id = ?1 RETURNING act_id, actor_task_id",
                )?
                .query_row([&id], |row| Ok((row.get(0)?, row.get(1)?))),
            )?;
            Ok(owners.map(|(act, task)| caches.runs_write(&act, task.as_deref())))
        })
        .await
        .map(|bump| bump.is_some())
    }

    async fn expired_runs(&self, cutoff_ms: i64, limit: u64) -> Result<Vec<String>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id FROM runs WHERE started_at < ?1 AND status IN ('SUCCEEDED', 'FAILED', 'TIMED-OUT', 'ABORTED')
                 ORDER BY started_at LIMIT ?2",
            )?;
            let ids = stmt
                .query_map(rusqlite::params![cutoff_ms, limit as i64], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ids)
        })
        .await
    }

    fn runs_version(&self, owner_id: &str) -> Option<u64> {
        Some(self.inner.caches.runs_version(owner_id))
    }

    async fn unfinished_runs(&self) -> Result<Vec<Run>> {
        self.read(|conn| {
            json_rows(conn, "SELECT data FROM runs WHERE status NOT IN ('SUCCEEDED', 'FAILED', 'TIMED-OUT', 'ABORTED') ORDER BY num", [])
        })
        .await
    }
}
