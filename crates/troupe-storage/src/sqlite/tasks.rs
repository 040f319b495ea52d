//! Actor tasks: one row per task, the object as JSON plus indexed columns. The task-run queries
//! read the `runs` table through its `actor_task_id` column.

use async_trait::async_trait;
use rusqlite::{params, params_from_iter, Transaction};
use troupe_model::actor::{JobStatus, Run};
use troupe_model::list::{ListParams, Page};
use troupe_model::task::Task;

use super::actors::{from_json, load, page, run_conditions, to_json};
use super::{optional, SqliteStorage};
use crate::{Error, Mutator, Result, RunFilter, TaskStore};

fn write_task(tx: &Transaction<'_>, task: &Task, insert: bool) -> Result<()> {
    let data = to_json(task)?;
    let result = if insert {
        tx.execute(
            "INSERT INTO tasks (id, user_id, act_id, name, created_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![task.id, task.user_id, task.act_id, task.name, task.created_at, data],
        )
    } else {
        tx.execute(
            "UPDATE tasks SET name = ?2, act_id = ?3, data = ?4 WHERE id = ?1",
            params![task.id, task.name, task.act_id, data],
        )
    };
    match result {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(err, _))
            if err.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(Error::Conflict(format!(
                "Actor task with name \"{}\" already exists",
                task.name
            )))
        }
        Err(err) => Err(err.into()),
    }
}

/// The "last run" query of an Actor (`owner_col` = `act_id`) or a task (`actor_task_id`):
/// parameters owner, user, then status and origin when filtered. Every combination is served by
/// an index ending in `started_at` (migrations 0004 and 0006), so it is one index seek.
pub(super) fn last_run_sql(owner_col: &str, status: bool, origin: bool) -> String {
    let mut where_sql = format!("{owner_col} = ?1 AND user_id = ?2");
    let mut n = 2;
    if status {
        n += 1;
        where_sql.push_str(&format!(" AND status = ?{n}"));
    }
    if origin {
        n += 1;
        where_sql.push_str(&format!(" AND origin = ?{n}"));
    }
    format!("SELECT data FROM runs WHERE {where_sql} ORDER BY started_at DESC, num DESC LIMIT 1")
}

#[async_trait]
impl TaskStore for SqliteStorage {
    async fn create_task(&self, task: Task) -> Result<Task> {
        self.write(move |tx| {
            write_task(tx, &task, true)?;
            Ok(task)
        })
        .await
    }

    async fn get_task(&self, id: &str) -> Result<Option<Task>> {
        let id = id.to_string();
        self.read(move |conn| load(conn, "tasks", &id)).await
    }

    async fn get_task_by_name(&self, user_id: &str, name: &str) -> Result<Option<Task>> {
        let (user_id, name) = (user_id.to_string(), name.to_string());
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT data FROM tasks WHERE user_id = ?1 AND name = ?2")?;
            let text: Option<String> = optional(stmt.query_row([user_id, name], |row| row.get(0)))?;
            text.map(|t| from_json(&t)).transpose()
        })
        .await
    }

    async fn list_tasks(&self, user_id: &str, params: ListParams) -> Result<Page<Task>> {
        let args = vec![user_id.to_string()];
        self.read(move |conn| page(conn, "tasks", "user_id = ?1", &args, "created_at", params))
            .await
    }

    async fn update_task(&self, id: &str, change: Mutator<Task>) -> Result<Task> {
        let id = id.to_string();
        self.write(move |tx| {
            let mut task: Task = load(tx, "tasks", &id)?
                .ok_or_else(|| Error::NotFound("Actor task was not found".into()))?;
            change(&mut task)?;
            write_task(tx, &task, false)?;
            Ok(task)
        })
        .await
    }

    async fn delete_task(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.write(move |tx| Ok(tx.execute("DELETE FROM tasks WHERE id = ?1", [&id])? > 0))
            .await
    }

    async fn list_task_runs(
        &self,
        user_id: &str,
        task_id: &str,
        filter: RunFilter,
        params: ListParams,
    ) -> Result<Page<Run>> {
        let mut args = vec![task_id.to_string(), user_id.to_string()];
        let mut where_sql = "actor_task_id = ?1 AND user_id = ?2".to_string();
        run_conditions(&filter, &mut where_sql, &mut args);
        self.read(move |conn| page(conn, "runs", &where_sql, &args, "started_at", params))
            .await
    }

    async fn last_task_run(
        &self,
        user_id: &str,
        task_id: &str,
        status: Option<JobStatus>,
        origin: Option<&str>,
    ) -> Result<Option<Run>> {
        let mut args = vec![task_id.to_string(), user_id.to_string()];
        if let Some(status) = status {
            args.push(status.as_str().to_string());
        }
        if let Some(origin) = origin {
            args.push(origin.to_string());
        }
        let sql = last_run_sql("actor_task_id", status.is_some(), origin.is_some());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let text: Option<String> =
                optional(stmt.query_row(params_from_iter(args.iter()), |row| row.get(0)))?;
            text.map(|t| from_json(&t)).transpose()
        })
        .await
    }
}
