//! Webhooks, dispatches, schedules and schedule logs (migration 0009).

use async_trait::async_trait;
use rusqlite::{params, Connection, Transaction};
use troupe_model::hooks::{
    DispatchStatus, LastDispatch, Schedule, ScheduleLogEntry, Webhook, WebhookDispatch,
};
use troupe_model::list::{ListParams, Page};

use super::actors::{from_json, json_rows, load, page, to_json};
use super::{optional, SqliteStorage};
use crate::hooks::{WebhookFilter, SCHEDULE_LOG_LIMIT};
use crate::{Error, Mutator, Result, ScheduleStore, WebhookStore};

fn write_webhook(tx: &Transaction<'_>, webhook: &Webhook, insert: bool) -> Result<()> {
    let data = to_json(webhook)?;
    let c = &webhook.condition;
    if insert {
        tx.execute(
            "INSERT INTO webhooks (id, user_id, created_at, idempotency_key, cond_actor_id, cond_task_id, cond_run_id, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![webhook.id, webhook.user_id, webhook.created_at, webhook.idempotency_key, c.actor_id, c.actor_task_id, c.actor_run_id, data],
        )?;
    } else {
        tx.execute(
            "UPDATE webhooks SET cond_actor_id = ?2, cond_task_id = ?3, cond_run_id = ?4, data = ?5 WHERE id = ?1",
            params![webhook.id, c.actor_id, c.actor_task_id, c.actor_run_id, data],
        )?;
    }
    Ok(())
}

fn load_by(conn: &Connection, sql: &str, args: &[&str]) -> Result<Option<String>> {
    let mut stmt = conn.prepare_cached(sql)?;
    Ok(optional(stmt.query_row(
        rusqlite::params_from_iter(args.iter()),
        |row| row.get(0),
    ))?)
}

/// Mirrors a dispatch on its webhook (if the webhook still exists).
fn touch_webhook(tx: &Transaction<'_>, dispatch: &WebhookDispatch, count: bool) -> Result<()> {
    let Some(mut webhook) = load::<Webhook>(tx, "webhooks", &dispatch.webhook_id)? else {
        return Ok(());
    };
    if count {
        webhook.total_dispatches += 1;
    }
    let finished_at = match dispatch.status {
        DispatchStatus::Active => None,
        _ => dispatch.calls.last().and_then(|c| c.finished_at),
    };
    webhook.last_dispatch = Some(LastDispatch {
        status: dispatch.status,
        finished_at,
    });
    write_webhook(tx, &webhook, false)
}

fn write_dispatch(tx: &Transaction<'_>, dispatch: &WebhookDispatch, insert: bool) -> Result<()> {
    let data = to_json(dispatch)?;
    if insert {
        tx.execute(
            "INSERT INTO webhook_dispatches (id, user_id, webhook_id, created_at, status, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![dispatch.id, dispatch.user_id, dispatch.webhook_id, dispatch.created_at, dispatch.status.as_str(), data],
        )?;
    } else {
        tx.execute(
            "UPDATE webhook_dispatches SET status = ?2, data = ?3 WHERE id = ?1",
            params![dispatch.id, dispatch.status.as_str(), data],
        )?;
    }
    Ok(())
}

fn write_schedule(tx: &Transaction<'_>, schedule: &Schedule, insert: bool) -> Result<()> {
    let data = to_json(schedule)?;
    // Only enabled schedules are due at all.
    let next = schedule.next_run_at.filter(|_| schedule.is_enabled);
    let result = if insert {
        tx.execute(
            "INSERT INTO schedules (id, user_id, name, created_at, next_run_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![schedule.id, schedule.user_id, schedule.name, schedule.created_at, next, data],
        )
    } else {
        tx.execute(
            "UPDATE schedules SET name = ?2, next_run_at = ?3, data = ?4 WHERE id = ?1",
            params![schedule.id, schedule.name, next, data],
        )
    };
    match result {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(err, _))
            if err.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(Error::Conflict(format!(
                "Schedule with name \"{}\" already exists",
                schedule.name
            )))
        }
        Err(err) => Err(err.into()),
    }
}

#[async_trait]
impl WebhookStore for SqliteStorage {
    async fn create_webhook(&self, webhook: Webhook) -> Result<(Webhook, bool)> {
        self.write(move |tx| {
            if let Some(key) = &webhook.idempotency_key {
                if let Some(text) = load_by(
                    tx,
                    "SELECT data FROM webhooks WHERE user_id = ?1 AND idempotency_key = ?2",
                    &[&webhook.user_id, key],
                )? {
                    return Ok((from_json(&text)?, false));
                }
            }
            write_webhook(tx, &webhook, true)?;
            Ok((webhook, true))
        })
        .await
    }

    async fn get_webhook(&self, id: &str) -> Result<Option<Webhook>> {
        let id = id.to_string();
        self.read(move |conn| load(conn, "webhooks", &id)).await
    }

    async fn list_webhooks(
        &self,
        user_id: &str,
        filter: WebhookFilter,
        params: ListParams,
    ) -> Result<Page<Webhook>> {
        let (where_sql, args) = match filter {
            WebhookFilter::All => ("user_id = ?1", vec![user_id.to_string()]),
            WebhookFilter::Actor(id) => (
                "cond_actor_id = ?2 AND user_id = ?1",
                vec![user_id.to_string(), id],
            ),
            WebhookFilter::Task(id) => (
                "cond_task_id = ?2 AND user_id = ?1",
                vec![user_id.to_string(), id],
            ),
        };
        self.read(move |conn| page(conn, "webhooks", where_sql, &args, "created_at", params))
            .await
    }

    async fn update_webhook(&self, id: &str, change: Mutator<Webhook>) -> Result<Webhook> {
        let id = id.to_string();
        self.write(move |tx| {
            let mut webhook: Webhook = load(tx, "webhooks", &id)?
                .ok_or_else(|| Error::NotFound("Webhook was not found".into()))?;
            change(&mut webhook)?;
            write_webhook(tx, &webhook, false)?;
            Ok(webhook)
        })
        .await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.write(move |tx| Ok(tx.execute("DELETE FROM webhooks WHERE id = ?1", [&id])? > 0))
            .await
    }

    async fn matching_webhooks(
        &self,
        user_id: &str,
        actor_id: &str,
        task_id: Option<&str>,
        run_id: Option<&str>,
    ) -> Result<Vec<Webhook>> {
        let (user_id, actor_id) = (user_id.to_string(), actor_id.to_string());
        let (task_id, run_id) = (task_id.map(str::to_string), run_id.map(str::to_string));
        self.read(move |conn| {
            let mut out: Vec<Webhook> = Vec::new();
            let mut lookups = vec![("cond_actor_id", actor_id)];
            if let Some(task_id) = task_id {
                lookups.push(("cond_task_id", task_id));
            }
            if let Some(run_id) = run_id {
                lookups.push(("cond_run_id", run_id));
            }
            for (col, value) in lookups {
                let sql = format!("SELECT data FROM webhooks WHERE {col} = ?1 AND user_id = ?2");
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map([&value, &user_id], |row| row.get::<_, String>(0))?;
                for row in rows {
                    let webhook: Webhook = from_json(&row?)?;
                    if !out.iter().any(|w| w.id == webhook.id) {
                        out.push(webhook);
                    }
                }
            }
            out.sort_by_key(|w| w.created_at);
            Ok(out)
        })
        .await
    }

    async fn create_dispatch(&self, dispatch: WebhookDispatch) -> Result<()> {
        self.write(move |tx| {
            write_dispatch(tx, &dispatch, true)?;
            touch_webhook(tx, &dispatch, true)
        })
        .await
    }

    async fn get_dispatch(&self, id: &str) -> Result<Option<WebhookDispatch>> {
        let id = id.to_string();
        self.read(move |conn| load(conn, "webhook_dispatches", &id))
            .await
    }

    async fn list_dispatches(
        &self,
        user_id: &str,
        webhook_id: Option<&str>,
        params: ListParams,
    ) -> Result<Page<WebhookDispatch>> {
        let (where_sql, args) = match webhook_id {
            None => ("user_id = ?1", vec![user_id.to_string()]),
            Some(id) => (
                "webhook_id = ?2 AND user_id = ?1",
                vec![user_id.to_string(), id.to_string()],
            ),
        };
        self.read(move |conn| {
            page(
                conn,
                "webhook_dispatches",
                where_sql,
                &args,
                "created_at",
                params,
            )
        })
        .await
    }

    async fn update_dispatch(
        &self,
        id: &str,
        change: Mutator<WebhookDispatch>,
    ) -> Result<WebhookDispatch> {
        let id = id.to_string();
        self.write(move |tx| {
            let mut dispatch: WebhookDispatch = load(tx, "webhook_dispatches", &id)?
                .ok_or_else(|| Error::NotFound("Webhook dispatch was not found".into()))?;
            let before = dispatch.status;
            change(&mut dispatch)?;
            write_dispatch(tx, &dispatch, false)?;
            if before != dispatch.status {
                touch_webhook(tx, &dispatch, false)?;
            }
            Ok(dispatch)
        })
        .await
    }

    async fn active_dispatches(&self) -> Result<Vec<WebhookDispatch>> {
        self.read(|conn| {
            json_rows(
                conn,
                "SELECT data FROM webhook_dispatches WHERE status = 'ACTIVE' ORDER BY created_at",
                [],
            )
        })
        .await
    }
}

#[async_trait]
impl ScheduleStore for SqliteStorage {
    async fn create_schedule(&self, schedule: Schedule) -> Result<Schedule> {
        self.write(move |tx| {
            write_schedule(tx, &schedule, true)?;
            Ok(schedule)
        })
        .await
    }

    async fn get_schedule(&self, id: &str) -> Result<Option<Schedule>> {
        let id = id.to_string();
        self.read(move |conn| load(conn, "schedules", &id)).await
    }

    async fn get_schedule_by_name(&self, user_id: &str, name: &str) -> Result<Option<Schedule>> {
        let (user_id, name) = (user_id.to_string(), name.to_string());
        self.read(move |conn| {
            load_by(
                conn,
                "SELECT data FROM schedules WHERE user_id = ?1 AND name = ?2",
                &[&user_id, &name],
            )?
            .map(|t| from_json(&t))
            .transpose()
        })
        .await
    }

    async fn list_schedules(&self, user_id: &str, params: ListParams) -> Result<Page<Schedule>> {
        let args = vec![user_id.to_string()];
        self.read(move |conn| {
            page(
                conn,
                "schedules",
                "user_id = ?1",
                &args,
                "created_at",
                params,
            )
        })
        .await
    }

    async fn update_schedule(&self, id: &str, change: Mutator<Schedule>) -> Result<Schedule> {
        let id = id.to_string();
        self.write(move |tx| {
            let mut schedule: Schedule = load(tx, "schedules", &id)?
                .ok_or_else(|| Error::NotFound("Schedule was not found".into()))?;
            change(&mut schedule)?;
            write_schedule(tx, &schedule, false)?;
            Ok(schedule)
        })
        .await
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.write(move |tx| {
            tx.execute("DELETE FROM schedule_log WHERE schedule_id = ?1", [&id])?;
            Ok(tx.execute("DELETE FROM schedules WHERE id = ?1", [&id])? > 0)
        })
        .await
    }

    async fn due_schedules(&self, now_ms: i64) -> Result<Vec<Schedule>> {
        self.read(move |conn| {
            json_rows(conn, "SELECT data FROM schedules WHERE next_run_at IS NOT NULL AND next_run_at <= ?1 ORDER BY next_run_at", [now_ms])
        })
        .await
    }

    async fn next_schedule_time(&self) -> Result<Option<i64>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT min(next_run_at) FROM schedules WHERE next_run_at IS NOT NULL",
                )?
                .query_row([], |row| row.get::<_, Option<i64>>(0))?)
        })
        .await
    }

    async fn add_schedule_log(&self, schedule_id: &str, entry: ScheduleLogEntry) -> Result<()> {
        let schedule_id = schedule_id.to_string();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO schedule_log (schedule_id, created_at, level, message) VALUES (?1, ?2, ?3, ?4)",
                params![schedule_id, entry.created_at, entry.level, entry.message],
            )?;
            tx.execute(
                "DELETE FROM schedule_log WHERE schedule_id = ?1 AND num <= (SELECT num FROM schedule_log WHERE schedule_id = ?1 ORDER BY num DESC LIMIT 1 OFFSET ?2)",
                params![schedule_id, SCHEDULE_LOG_LIMIT as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn schedule_log(&self, schedule_id: &str) -> Result<Vec<ScheduleLogEntry>> {
        let schedule_id = schedule_id.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT created_at, level, message FROM schedule_log WHERE schedule_id = ?1 ORDER BY num DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![schedule_id, SCHEDULE_LOG_LIMIT as i64], |row| {
                Ok(ScheduleLogEntry {
                    created_at: row.get(0)?,
                    level: row.get(1)?,
                    message: row.get(2)?,
                })
            })?;
            let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            out.reverse();
            Ok(out)
        })
        .await
    }
}
