//! Webhook delivery and the scheduler: the background side of `/v2/webhooks` and
//! `/v2/schedules`.
//!
//! Job events come from the runner (terminal statuses) and from the API (run created,
//! resurrected) through an unbounded channel, so the run lifecycle never waits for a receiver.
//! One task turns each event into dispatch records (one per matching webhook, request rendered
//! from the templates at that moment) and each dispatch is delivered by its own task: POST with a
//! timeout, every attempt recorded as a `call`, retried with exponential backoff unless
//! `doNotRetry`. Dispatches are stored before the first attempt, so the ones still `ACTIVE` when
//! the server stops are resumed when it starts again.

pub mod scheduler;
pub mod template;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify, Semaphore};
use troupe_model::hooks::{
    DispatchCall, DispatchRequest, DispatchStatus, Webhook, WebhookDispatch,
};
use troupe_model::{format_ts, now_ms};
use troupe_runner::JobEvent;

use crate::state::AppState;

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct HooksConfig {
    /// Delay before the first retry; each further retry waits twice as long.
    pub retry_base: Duration,
    /// Attempts per dispatch, the first one included.
    pub max_attempts: u32,
    /// Time limit of one HTTP call (connect, send, response headers and the kept body).
    pub call_timeout: Duration,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_secs(60),
            max_attempts: 12,
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// Most bytes of a receiver's response body kept in a call record.
pub const RESPONSE_BODY_LIMIT: usize = 1024;
/// Deliveries in flight at once (more wait for a slot).
const CONCURRENT_CALLS: usize = 32;

/// Handle to the webhook and schedule machinery; cheap to clone.
#[derive(Clone)]
pub struct Hooks {
    inner: Arc<Inner>,
}

struct Inner {
    config: HooksConfig,
    /// Events with the time they happened (ms).
    events: mpsc::UnboundedSender<(i64, JobEvent)>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<(i64, JobEvent)>>>,
    client: reqwest::Client,
    /// For webhooks with `ignoreSslErrors`: accepts any certificate.
    insecure_client: reqwest::Client,
    slots: Semaphore,
    /// Woken when schedules change (the scheduler recomputes when to wake up).
    schedules_changed: Notify,
    /// Events submitted and not yet turned into dispatch records.
    unhandled: std::sync::atomic::AtomicU64,
    /// Woken each time an event was handled.
    handled: Notify,
}

impl Hooks {
    pub fn new(config: HooksConfig) -> Self {
        let (events, receiver) = mpsc::unbounded_channel();
        let client = |accept_invalid_certs: bool| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("troupe-webhooks/", env!("CARGO_PKG_VERSION")))
                .danger_accept_invalid_certs(accept_invalid_certs)
                .build()
                .expect("HTTP client")
        };
        Self {
            inner: Arc::new(Inner {
                config,
                events,
                receiver: Mutex::new(Some(receiver)),
                client: client(false),
                insecure_client: client(true),
                slots: Semaphore::new(CONCURRENT_CALLS),
                schedules_changed: Notify::new(),
                unhandled: std::sync::atomic::AtomicU64::new(0),
                handled: Notify::new(),
            }),
        }
    }

    pub fn config(&self) -> &HooksConfig {
        &self.inner.config
    }

    /// Queues a job event that happens now (never blocks).
    pub fn submit(&self, event: JobEvent) {
        use std::sync::atomic::Ordering;
        self.inner.unhandled.fetch_add(1, Ordering::SeqCst);
        if self.inner.events.send((now_ms(), event)).is_err() {
            self.inner.unhandled.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits (at most `limit`) until every submitted event has its dispatch records stored, so
    /// that events of a shutdown (runs it ended) are delivered on the next start if not before.
    pub async fn flush(&self, limit: Duration) {
        use std::sync::atomic::Ordering;
        let _ = tokio::time::timeout(limit, async {
            loop {
                let handled = self.inner.handled.notified();
                if self.inner.unhandled.load(Ordering::SeqCst) == 0 {
                    return;
                }
                handled.await;
            }
        })
        .await;
    }

    /// Tells the scheduler that schedules changed.
    pub fn schedules_changed(&self) {
        self.inner.schedules_changed.notify_one();
    }

    /// Completes after [`Hooks::schedules_changed`] (a call made while nobody waited counts).
    pub async fn wait_schedules_changed(&self) {
        self.inner.schedules_changed.notified().await
    }
}

/// Starts the background side: job events from the runner, dispatches left `ACTIVE` by a
/// previous server process, and the scheduler. Call once, before the runner recovers.
pub async fn start(state: &AppState) -> anyhow::Result<()> {
    let hooks = state.hooks.clone();
    let sender = hooks.clone();
    state
        .runner
        .on_job_event(Arc::new(move |event| sender.submit(event)));
    let receiver = hooks.inner.receiver.lock().take();
    if let Some(mut receiver) = receiver {
        let state = state.clone();
        tokio::spawn(async move {
            while let Some((at, event)) = receiver.recv().await {
                if let Err(err) = handle_event(&state, at, event).await {
                    tracing::warn!(error = %err, "cannot create webhook dispatches");
                }
                let inner = &state.hooks.inner;
                inner
                    .unhandled
                    .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                inner.handled.notify_waiters();
            }
        });
    }
    let pending = state.storage.active_dispatches().await?;
    if !pending.is_empty() {
        tracing::info!(count = pending.len(), "resuming webhook dispatches");
    }
    for dispatch in pending {
        spawn_delivery(state, dispatch);
    }
    scheduler::spawn(state.clone());
    Ok(())
}

/// Variables of a run or build event, and the user, Actor, task and run it concerns.
struct EventFacts {
    event_type: &'static str,
    user_id: String,
    actor_id: String,
    task_id: Option<String>,
    run_id: Option<String>,
    event_data: Value,
}

/// The `resource` of an event: the run or build as its owner sees it.
fn resource(state: &AppState, event: &JobEvent) -> Value {
    match event {
        JobEvent::Run { run, .. } => serde_json::to_value(crate::routes::runs::run_json(
            state,
            run,
            Some(&run.user_id),
        ))
        .expect("serialisable"),
        JobEvent::Build { build, .. } => {
            crate::routes::builds::build_json(build, Some(&build.user_id))
        }
    }
}

fn facts(event: &JobEvent) -> EventFacts {
    match event {
        JobEvent::Run { event_type, run } => EventFacts {
            event_type,
            user_id: run.user_id.clone(),
            actor_id: run.act_id.clone(),
            task_id: run.actor_task_id.clone(),
            run_id: Some(run.id.clone()),
            event_data: json!({
                "actorId": run.act_id,
                "actorTaskId": run.actor_task_id,
                "actorRunId": run.id,
            }),
        },
        JobEvent::Build { event_type, build } => EventFacts {
            event_type,
            user_id: build.user_id.clone(),
            actor_id: build.act_id.clone(),
            task_id: None,
            run_id: None,
            event_data: json!({ "actorId": build.act_id, "actorBuildId": build.id }),
        },
    }
}

async fn handle_event(state: &AppState, at: i64, event: JobEvent) -> crate::error::ApiResult<()> {
    let facts = facts(&event);
    // A terminal event happened when the job finished (the runner reports it a moment later).
    let finished_at = match &event {
        JobEvent::Run { run, .. } => run.finished_at,
        JobEvent::Build { build, .. } => build.finished_at,
    };
    let at = finished_at.map_or(at, |f| f.min(at));
    // Builds have no run; their webhooks are the Actor's.
    let webhooks = state
        .storage
        .matching_webhooks(
            &facts.user_id,
            &facts.actor_id,
            facts.task_id.as_deref(),
            facts.run_id.as_deref(),
        )
        .await?;
    let mut resource_json = None;
    for webhook in webhooks {
        // Webhooks created after the event (it is handled a moment later) do not hear it.
        if webhook.created_at > at || !webhook.event_types.iter().any(|t| t == facts.event_type) {
            continue;
        }
        // Built once, and only when some webhook listens.
        let resource = resource_json
            .get_or_insert_with(|| resource(state, &event))
            .clone();
        let dispatch = new_dispatch(
            &webhook,
            facts.event_type,
            Some(facts.event_data.clone()),
            resource,
        );
        state.storage.create_dispatch(dispatch.clone()).await?;
        spawn_delivery(state, dispatch);
    }
    Ok(())
}

/// A new dispatch of `webhook` with its request rendered now. A template that does not render
/// (cannot happen for templates checked on save) makes a `FAILED` dispatch saying why.
pub fn new_dispatch(
    webhook: &Webhook,
    event_type: &str,
    event_data: Option<Value>,
    resource: Value,
) -> WebhookDispatch {
    let id = troupe_model::new_id();
    let now = now_ms();
    let vars = json!({
        "userId": webhook.user_id,
        "createdAt": format_ts(now),
        "eventType": event_type,
        "eventData": event_data,
        "resource": resource,
        "globals": { "dateISO": format_ts(now), "dateUnix": now },
    });
    let rendered = webhook::render_request(webhook, &vars, &id);
    let (request, failure) = match rendered {
        Ok(request) => (request, None),
        Err(message) => (
            DispatchRequest {
                url: webhook.request_url.clone(),
                headers: vec![],
                body: String::new(),
                ignore_ssl_errors: webhook.ignore_ssl_errors,
                do_not_retry: webhook.do_not_retry,
            },
            Some(message),
        ),
    };
    let mut dispatch = WebhookDispatch {
        id,
        user_id: webhook.user_id.clone(),
        webhook_id: webhook.id.clone(),
        created_at: now,
        status: DispatchStatus::Active,
        event_type: event_type.to_string(),
        event_data,
        webhook: json!({
            "actionType": "HTTP_REQUEST",
            "condition": webhook::condition_json(&webhook.condition),
            "requestUrl": webhook.request_url,
            "isAdHoc": webhook.is_ad_hoc,
        }),
        calls: vec![],
        request,
        next_attempt_at: now,
    };
    if let Some(message) = failure {
        dispatch.status = DispatchStatus::Failed;
        dispatch.calls.push(DispatchCall {
            started_at: now,
            finished_at: Some(now),
            error_message: Some(message),
            response_status: None,
            response_body: None,
        });
    }
    dispatch
}

/// Delivers a dispatch in the background.
pub fn spawn_delivery(state: &AppState, dispatch: WebhookDispatch) {
    if dispatch.status != DispatchStatus::Active {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move { deliver(state, dispatch).await });
}

/// Delay before retry number `attempt` (1 = the first retry).
fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << (attempt.saturating_sub(1)).min(20))
}

async fn deliver(state: AppState, mut dispatch: WebhookDispatch) {
    let config = state.hooks.inner.config.clone();
    while dispatch.status == DispatchStatus::Active {
        let wait = dispatch.next_attempt_at - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let call = {
            let _slot = state.hooks.inner.slots.acquire().await;
            let inner = &state.hooks.inner;
            let client = if dispatch.request.ignore_ssl_errors {
                &inner.insecure_client
            } else {
                &inner.client
            };
            attempt(client, &dispatch.request, &config).await
        };
        let attempts = dispatch.calls.len() as u32 + 1;
        let succeeded = call
            .response_status
            .is_some_and(|s| (200..300).contains(&s));
        let status = if succeeded {
            DispatchStatus::Succeeded
        } else if dispatch.request.do_not_retry || attempts >= config.max_attempts {
            DispatchStatus::Failed
        } else {
            DispatchStatus::Active
        };
        let next = now_ms() + backoff(config.retry_base, attempts).as_millis() as i64;
        let result = state
            .storage
            .update_dispatch(
                &dispatch.id,
                Box::new(move |d: &mut WebhookDispatch| {
                    d.calls.push(call);
                    d.status = status;
                    d.next_attempt_at = next;
                    Ok(())
                }),
            )
            .await;
        match result {
            Ok(updated) => dispatch = updated,
            Err(err) => {
                // Left ACTIVE in storage: resumed at the next start.
                tracing::warn!(dispatch = %dispatch.id, error = %err, "cannot record a webhook call");
                return;
            }
        }
    }
}

/// One HTTP call. Errors are reported without the URL (it may carry credentials); headers are
/// never logged.
async fn attempt(
    client: &reqwest::Client,
    request: &DispatchRequest,
    config: &HooksConfig,
) -> DispatchCall {
    let started_at = now_ms();
    let mut builder = client
        .post(&request.url)
        .timeout(config.call_timeout)
        .body(request.body.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let outcome = async {
        let mut response = builder.send().await?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() < RESPONSE_BODY_LIMIT {
            match response.chunk().await? {
                Some(chunk) => body.extend_from_slice(&chunk),
                None => break,
            }
        }
        body.truncate(RESPONSE_BODY_LIMIT);
        Ok::<_, reqwest::Error>((status, String::from_utf8_lossy(&body).into_owned()))
    }
    .await;
    let finished_at = Some(now_ms());
    match outcome {
        Ok((status, body)) => DispatchCall {
            started_at,
            finished_at,
            error_message: (!(200..300).contains(&status))
                .then(|| format!("The receiver answered with status {status}")),
            response_status: Some(status),
            response_body: Some(body),
        },
        Err(err) => DispatchCall {
            started_at,
            finished_at,
            error_message: Some(describe(err)),
            response_status: None,
            response_body: None,
        },
    }
}

fn describe(err: reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let err = err.without_url();
    let mut message = format!("The request {kind}: {err}");
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles() {
        let base = Duration::from_secs(60);
        assert_eq!(backoff(base, 1), Duration::from_secs(60));
        assert_eq!(backoff(base, 2), Duration::from_secs(120));
        assert_eq!(backoff(base, 11), Duration::from_secs(60 * 1024));
    }
}
