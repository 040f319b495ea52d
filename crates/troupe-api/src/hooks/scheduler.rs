//! The scheduler: sleeps until the earliest `nextRunAt` of an enabled schedule (or until
//! schedules change), then starts each due schedule's actions.
//!
//! `nextRunAt` is moved on before anything starts, and always to the first cron time after
//! *now*: times missed while the server was down are not replayed one by one; a schedule that
//! was due during the downtime starts once, late, when the server is back (and says so in its
//! log).

use std::time::Duration;

use bytes::Bytes;
use chrono::TimeZone;
use serde_json::Value;
use troupe_model::hooks::{Schedule, ScheduleAction, ScheduleLogEntry};
use troupe_model::user::User;
use troupe_model::{format_ts, now_ms};

use crate::routes::runs::{start_run, RunOptions, StartRun};
use crate::state::AppState;

/// Longest sleep between checks (also bounds the effect of a missed wake-up).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// A start later than this after its time is reported as a late catch-up.
const LATE_MS: i64 = 60_000;

/// Parses a cron expression: 5 fields (minute hour day-of-month month day-of-week), 6 fields
/// with seconds first (a troupe extension), or `@yearly`, `@annually`, `@monthly`, `@weekly`,
/// `@daily`, `@midnight`, `@hourly`.
pub fn parse_cron(expression: &str) -> Result<croner::Cron, String> {
    let trimmed = expression.trim();
    let expanded = match trimmed.to_ascii_lowercase().as_str() {
        "@midnight" => "0 0 * * *".to_string(),
        _ => trimmed.to_string(),
    };
    if !expanded.starts_with('@') {
        let fields = expanded.split_whitespace().count();
        if fields != 5 && fields != 6 {
            return Err(format!(
                "Cron expression \"{expression}\" must have 5 fields (minute hour day month weekday), or 6 with seconds first"
            ));
        }
    }
    croner::Cron::new(&expanded)
        .with_seconds_optional()
        .parse()
        .map_err(|err| format!("Cron expression \"{expression}\" is invalid: {err}"))
}

/// Parses an IANA time zone name.
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>().map_err(|_| {
        format!("Unknown time zone \"{name}\" (use an IANA name such as Europe/Prague or UTC)")
    })
}

/// The first time the schedule fires strictly after `after_ms`, in ms.
pub fn next_run(expression: &str, timezone: &str, after_ms: i64) -> Option<i64> {
    let cron = parse_cron(expression).ok()?;
    let tz = parse_timezone(timezone).ok()?;
    let whole = after_ms.div_euclid(1000) * 1000;
    let after = chrono::Utc
        .timestamp_millis_opt(whole)
        .single()?
        .with_timezone(&tz);
    cron.find_next_occurrence(&after, false)
        .ok()
        .map(|t| t.timestamp_millis())
}

pub fn spawn(state: AppState) {
    tokio::spawn(async move {
        loop {
            let now = now_ms();
            match state.storage.due_schedules(now).await {
                Ok(due) => {
                    for schedule in due {
                        fire(&state, schedule, now).await;
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot read due schedules"),
            }
            let next = state.storage.next_schedule_time().await.ok().flatten();
            let sleep = match next {
                Some(at) => Duration::from_millis((at - now_ms()).max(0) as u64).min(MAX_SLEEP),
                None => MAX_SLEEP,
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = state.hooks.wait_schedules_changed() => {}
            }
        }
    });
}

async fn log(state: &AppState, schedule_id: &str, level: &str, message: String) {
    let entry = ScheduleLogEntry {
        created_at: now_ms(),
        level: level.to_string(),
        message,
    };
    if let Err(err) = state.storage.add_schedule_log(schedule_id, entry).await {
        tracing::warn!(schedule = %schedule_id, error = %err, "cannot write the schedule log");
    }
}

async fn fire(state: &AppState, schedule: Schedule, now: i64) {
    let Some(scheduled_at) = schedule.next_run_at else {
        return;
    };
    // Move on first, so that a crash while starting cannot start the same time twice.
    let moved = state
        .storage
        .update_schedule(
            &schedule.id,
            Box::new(move |s: &mut Schedule| {
                if s.next_run_at != Some(scheduled_at) || !s.is_enabled {
                    return Err(troupe_storage::Error::Invalid(
                        "the schedule changed meanwhile".into(),
                    ));
                }
                s.next_run_at = next_run(&s.cron_expression, &s.timezone, now);
                s.last_run_at = Some(now);
                Ok(())
            }),
        )
        .await;
    let Ok(schedule) = moved else {
        return;
    };
    let id = schedule.id.clone();
    if now - scheduled_at > LATE_MS {
        log(
            state,
            &id,
            "WARNING",
            format!(
                "Schedule was due at {} while the server was not running; started once now (missed times are not replayed)",
                format_ts(scheduled_at)
            ),
        )
        .await;
    }
    if schedule.is_exclusive {
        let mut running = Vec::new();
        for run_id in &schedule.last_run_ids {
            if let Ok(Some(run)) = state.storage.get_run(run_id).await {
                if !run.status.is_terminal() {
                    running.push(run.id);
                }
            }
        }
        if !running.is_empty() {
            log(
                state,
                &id,
                "WARNING",
                format!(
                    "Schedule invoked, but skipped: it is exclusive and its previous run is still going ({})",
                    running.join(", ")
                ),
            )
            .await;
            return;
        }
    }
    let user = match state.storage.find_user(&schedule.user_id).await {
        Ok(Some(user)) => user,
        _ => return,
    };
    log(state, &id, "INFO", "Schedule invoked".into()).await;
    let mut started = Vec::new();
    for action in &schedule.actions {
        match start_action(state, &user, &schedule, action, scheduled_at).await {
            Ok((what, run_id)) => {
                log(state, &id, "INFO", format!("Started {what}: run {run_id}")).await;
                started.push(run_id);
            }
            Err(message) => log(state, &id, "ERROR", message).await,
        }
    }
    let _ = state
        .storage
        .update_schedule(
            &id,
            Box::new(move |s: &mut Schedule| {
                s.last_run_ids = started;
                Ok(())
            }),
        )
        .await;
}

/// Starts one action; `(what was started, run id)` or a message for the log.
async fn start_action(
    state: &AppState,
    user: &User,
    schedule: &Schedule,
    action: &ScheduleAction,
    scheduled_at: i64,
) -> Result<(String, String), String> {
    let schedule_meta = Some((schedule.id.clone(), scheduled_at));
    let request = match action {
        ScheduleAction::RunActor {
            actor_id,
            run_input,
            run_options,
            ..
        } => {
            let actor = state
                .storage
                .get_actor(actor_id)
                .await
                .map_err(|e| e.to_string())?
                .filter(|a| {
                    a.user_id == user.id || a.extra.get("isPublic") == Some(&Value::Bool(true))
                })
                .ok_or_else(|| format!("Cannot start Actor {actor_id}: it was not found"))?;
            let input = run_input.as_ref().and_then(|ri| {
                let body = ri.body.clone().filter(|b| !b.trim().is_empty())?;
                let content_type = ri
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/json; charset=utf-8".into());
                Some((Bytes::from(body), content_type))
            });
            let o = run_options.clone().unwrap_or_default();
            StartRun {
                actor,
                options: RunOptions {
                    build: o.build,
                    timeout_secs: o.timeout_secs,
                    memory_mbytes: o.memory_mbytes,
                    max_items: o.max_items,
                    restart_on_error: o.restart_on_error,
                    webhooks: vec![],
                },
                input,
                origin: "SCHEDULER".into(),
                task_id: None,
                client_ip: None,
                user_agent: None,
                schedule: schedule_meta,
            }
        }
        ScheduleAction::RunActorTask {
            actor_task_id,
            input,
            ..
        } => {
            let task = state
                .storage
                .get_task(actor_task_id)
                .await
                .map_err(|e| e.to_string())?
                .filter(|t| t.user_id == user.id)
                .ok_or_else(|| format!("Cannot start task {actor_task_id}: it was not found"))?;
            let actor = state
                .storage
                .get_actor(&task.act_id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!("Cannot start task {actor_task_id}: its Actor was not found")
                })?;
            let merged = match (task.input.clone(), input.clone()) {
                (None, None) => None,
                (Some(i), None) | (None, Some(i)) => Some(i),
                (Some(mut i), Some(overrides)) => {
                    i.extend(overrides);
                    Some(i)
                }
            };
            let input = merged.map(|map| {
                (
                    Bytes::from(Value::Object(map).to_string()),
                    "application/json; charset=utf-8".to_string(),
                )
            });
            let o = &task.options;
            StartRun {
                actor,
                options: RunOptions {
                    build: o.build.clone(),
                    timeout_secs: o.timeout_secs,
                    memory_mbytes: o.memory_mbytes,
                    max_items: o.max_items,
                    restart_on_error: o.restart_on_error,
                    webhooks: vec![],
                },
                input,
                origin: "SCHEDULER".into(),
                task_id: Some(task.id.clone()),
                client_ip: None,
                user_agent: None,
                schedule: schedule_meta,
            }
        }
    };
    let what = match &request.task_id {
        Some(task) => format!("task {task}"),
        None => format!("Actor {}", request.actor.id),
    };
    let run = start_run(state, user, request)
        .await
        .map_err(|err| format!("Cannot start {what}: {}", err.message))?;
    Ok((what, run.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_expressions() {
        assert!(parse_cron("* * * * *").is_ok());
        assert!(parse_cron("*/5 2 * * 1-5").is_ok());
        assert!(parse_cron("@hourly").is_ok());
        assert!(parse_cron("@midnight").is_ok());
        assert!(parse_cron("*/2 * * * * *").is_ok());
        assert!(parse_cron("* * *").is_err());
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("@sometimes").is_err());
        assert!(parse_timezone("Europe/Prague").is_ok());
        assert!(parse_timezone("Mars/Base").is_err());
    }

    #[test]
    fn next_times_follow_the_time_zone() {
        let t0 = troupe_model::parse_ts("2025-01-15T10:17:30.250Z").unwrap();
        assert_eq!(
            next_run("0 * * * *", "UTC", t0).map(format_ts).unwrap(),
            "2025-01-15T11:00:00.000Z"
        );
        // 03:00 in Prague (UTC+1 in January) is 02:00 UTC.
        assert_eq!(
            next_run("0 3 * * *", "Europe/Prague", t0)
                .map(format_ts)
                .unwrap(),
            "2025-01-16T02:00:00.000Z"
        );
        assert_eq!(
            next_run("@daily", "UTC", t0).map(format_ts).unwrap(),
            "2025-01-16T00:00:00.000Z"
        );
        assert_eq!(
            next_run("*/10 * * * * *", "UTC", t0)
                .map(format_ts)
                .unwrap(),
            "2025-01-15T10:17:40.000Z"
        );
    }
}
