//! Webhooks, dispatches, schedules and schedule logs.

use serde_json::json;
use troupe_model::hooks::{
    DispatchCall, DispatchRequest, DispatchStatus, Schedule, ScheduleAction, ScheduleLogEntry,
    Webhook, WebhookCondition, WebhookDispatch,
};
use troupe_model::list::ListParams;

use super::test_user;
use crate::hooks::{WebhookFilter, SCHEDULE_LOG_LIMIT};
use crate::{Error, Storage};

pub fn webhook(user_id: &str, condition: WebhookCondition, created_at: i64) -> Webhook {
    Webhook {
        id: troupe_model::new_id(),
        user_id: user_id.into(),
        created_at,
        modified_at: created_at,
        is_ad_hoc: false,
        event_types: vec!["ACTOR.RUN.SUCCEEDED".into()],
        condition,
        idempotency_key: None,
        ignore_ssl_errors: false,
        do_not_retry: false,
        request_url: "http://127.0.0.1:9/hook".into(),
        payload_template: None,
        headers_template: None,
        description: None,
        should_interpolate_strings: false,
        total_dispatches: 0,
        last_dispatch: None,
    }
}

fn on_actor(id: &str) -> WebhookCondition {
    WebhookCondition {
        actor_id: Some(id.into()),
        ..Default::default()
    }
}

fn dispatch(webhook: &Webhook, created_at: i64) -> WebhookDispatch {
    WebhookDispatch {
        id: troupe_model::new_id(),
        user_id: webhook.user_id.clone(),
        webhook_id: webhook.id.clone(),
        created_at,
        status: DispatchStatus::Active,
        event_type: "ACTOR.RUN.SUCCEEDED".into(),
        event_data: Some(json!({"actorId": "a"})),
        webhook: json!({"requestUrl": webhook.request_url}),
        calls: vec![],
        request: DispatchRequest {
            url: webhook.request_url.clone(),
            headers: vec![("X-Secret".into(), "s".into())],
            body: "{}".into(),
            ignore_ssl_errors: false,
            do_not_retry: false,
        },
        next_attempt_at: created_at,
    }
}

pub async fn run_webhooks(storage: &dyn Storage) {
    let user = test_user(storage).await;
    let other = storage.create_user("other-hooks").await.unwrap();
    let all = ListParams::default();

    let w1 = storage
        .create_webhook(webhook(&user.id, on_actor("act1"), 1_000))
        .await
        .unwrap()
        .0;
    let mut keyed = webhook(
        &user.id,
        WebhookCondition {
            actor_task_id: Some("task1".into()),
            ..Default::default()
        },
        2_000,
    );
    keyed.idempotency_key = Some("k1".into());
    let (w2, created) = storage.create_webhook(keyed.clone()).await.unwrap();
    assert!(created);
    // The same key returns the first webhook and stores nothing.
    let mut again = keyed.clone();
    again.id = troupe_model::new_id();
    let (same, created) = storage.create_webhook(again).await.unwrap();
    assert!(!created);
    assert_eq!(same.id, w2.id);
    // Keys are per owner.
    let mut theirs = keyed.clone();
    theirs.id = troupe_model::new_id();
    theirs.user_id = other.id.clone();
    assert!(storage.create_webhook(theirs).await.unwrap().1);
    let run_hook = storage
        .create_webhook(webhook(
            &user.id,
            WebhookCondition {
                actor_run_id: Some("run1".into()),
                ..Default::default()
            },
            3_000,
        ))
        .await
        .unwrap()
        .0;

    assert_eq!(storage.get_webhook(&w1.id).await.unwrap().unwrap(), w1);
    assert!(storage.get_webhook("nope").await.unwrap().is_none());
    let listed = storage
        .list_webhooks(&user.id, WebhookFilter::All, all)
        .await
        .unwrap();
    assert_eq!(listed.total, 3);
    let ids: Vec<_> = listed.items.iter().map(|w| w.id.clone()).collect();
    assert_eq!(ids, vec![w1.id.clone(), w2.id.clone(), run_hook.id.clone()]);
    let desc = storage
        .list_webhooks(
            &user.id,
            WebhookFilter::All,
            ListParams {
                offset: 1,
                limit: 1,
                desc: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(desc.total, 3);
    assert_eq!(desc.items[0].id, w2.id);
    let by_actor = storage
        .list_webhooks(&user.id, WebhookFilter::Actor("act1".into()), all)
        .await
        .unwrap();
    assert_eq!(by_actor.items.len(), 1);
    assert_eq!(by_actor.items[0].id, w1.id);
    let by_task = storage
        .list_webhooks(&user.id, WebhookFilter::Task("task1".into()), all)
        .await
        .unwrap();
    assert_eq!(by_task.items.len(), 1);
    assert_eq!(by_task.items[0].id, w2.id);

    // Matching: by Actor, task or run; only the user's.
    let matched = storage
        .matching_webhooks(&user.id, "act1", Some("task1"), Some("run1"))
        .await
        .unwrap();
    let ids: Vec<_> = matched.iter().map(|w| w.id.clone()).collect();
    assert_eq!(ids, vec![w1.id.clone(), w2.id.clone(), run_hook.id.clone()]);
    assert_eq!(
        storage
            .matching_webhooks(&user.id, "act2", None, None)
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        storage
            .matching_webhooks(&other.id, "act1", None, None)
            .await
            .unwrap()
            .len(),
        0
    );

    // Update changes the condition columns too.
    let updated = storage
        .update_webhook(
            &w1.id,
            Box::new(|w: &mut Webhook| {
                w.condition = on_actor("act2");
                w.modified_at = 5_000;
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(updated.modified_at, 5_000);
    assert_eq!(
        storage
            .matching_webhooks(&user.id, "act2", None, None)
            .await
            .unwrap()[0]
            .id,
        w1.id
    );
    let missing = storage
        .update_webhook("nope", Box::new(|_: &mut Webhook| Ok(())))
        .await;
    assert!(matches!(missing, Err(Error::NotFound(_))));

    // Dispatches: counted on the webhook, status mirrored, ACTIVE ones listed for resuming.
    let d1 = dispatch(&w1, 10_000);
    storage.create_dispatch(d1.clone()).await.unwrap();
    let d2 = dispatch(&w2, 11_000);
    storage.create_dispatch(d2.clone()).await.unwrap();
    assert_eq!(storage.get_dispatch(&d1.id).await.unwrap().unwrap(), d1);
    let w = storage.get_webhook(&w1.id).await.unwrap().unwrap();
    assert_eq!(w.total_dispatches, 1);
    assert_eq!(
        w.last_dispatch.as_ref().unwrap().status,
        DispatchStatus::Active
    );
    let active = storage.active_dispatches().await.unwrap();
    assert_eq!(active.len(), 2);
    let done = storage
        .update_dispatch(
            &d1.id,
            Box::new(|d: &mut WebhookDispatch| {
                d.calls.push(DispatchCall {
                    started_at: 12_000,
                    finished_at: Some(12_500),
                    error_message: None,
                    response_status: Some(200),
                    response_body: Some("ok".into()),
                });
                d.status = DispatchStatus::Succeeded;
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(done.calls.len(), 1);
    let w = storage.get_webhook(&w1.id).await.unwrap().unwrap();
    let last = w.last_dispatch.unwrap();
    assert_eq!(last.status, DispatchStatus::Succeeded);
    assert_eq!(last.finished_at, Some(12_500));
    let active = storage.active_dispatches().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, d2.id);
    let mine = storage.list_dispatches(&user.id, None, all).await.unwrap();
    assert_eq!(mine.total, 2);
    let of_w1 = storage
        .list_dispatches(&user.id, Some(&w1.id), all)
        .await
        .unwrap();
    assert_eq!(of_w1.items.len(), 1);
    assert_eq!(of_w1.items[0].id, d1.id);
    assert_eq!(
        storage
            .list_dispatches(&other.id, None, all)
            .await
            .unwrap()
            .total,
        0
    );

    // Deleting a webhook keeps its dispatches (and updating them still works).
    assert!(storage.delete_webhook(&w2.id).await.unwrap());
    assert!(!storage.delete_webhook(&w2.id).await.unwrap());
    assert!(storage.get_webhook(&w2.id).await.unwrap().is_none());
    storage
        .update_dispatch(
            &d2.id,
            Box::new(|d: &mut WebhookDispatch| {
                d.status = DispatchStatus::Failed;
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert!(storage.active_dispatches().await.unwrap().is_empty());
    assert!(storage.get_dispatch(&d2.id).await.unwrap().is_some());
    // The key of a deleted webhook can be used again.
    let mut reuse = keyed;
    reuse.id = troupe_model::new_id();
    assert!(storage.create_webhook(reuse).await.unwrap().1);
}

fn schedule(user_id: &str, name: &str, created_at: i64, next: Option<i64>) -> Schedule {
    Schedule {
        id: troupe_model::new_id(),
        user_id: user_id.into(),
        name: name.into(),
        cron_expression: "* * * * *".into(),
        timezone: "UTC".into(),
        is_enabled: true,
        is_exclusive: false,
        created_at,
        modified_at: created_at,
        next_run_at: next,
        last_run_at: None,
        description: None,
        title: None,
        notifications: None,
        actions: vec![ScheduleAction::RunActor {
            id: troupe_model::new_id(),
            actor_id: "act1".into(),
            run_input: None,
            run_options: None,
        }],
        last_run_ids: vec![],
    }
}

pub async fn run_schedules(storage: &dyn Storage) {
    let user = test_user(storage).await;
    let other = storage.create_user("other-schedules").await.unwrap();
    let all = ListParams::default();

    let s1 = storage
        .create_schedule(schedule(&user.id, "first", 1_000, Some(60_000)))
        .await
        .unwrap();
    let s2 = storage
        .create_schedule(schedule(&user.id, "second", 2_000, Some(120_000)))
        .await
        .unwrap();
    let clash = storage
        .create_schedule(schedule(&user.id, "first", 3_000, None))
        .await;
    assert!(matches!(clash, Err(Error::Conflict(_))), "{clash:?}");
    storage
        .create_schedule(schedule(&other.id, "first", 3_000, Some(500_000)))
        .await
        .unwrap();
    assert_eq!(storage.get_schedule(&s1.id).await.unwrap().unwrap(), s1);
    assert_eq!(
        storage
            .get_schedule_by_name(&user.id, "second")
            .await
            .unwrap()
            .unwrap()
            .id,
        s2.id
    );
    let listed = storage.list_schedules(&user.id, all).await.unwrap();
    assert_eq!(listed.total, 2);
    assert_eq!(listed.items[0].id, s1.id);

    // Due: enabled ones with nextRunAt at or before now, earliest first.
    assert_eq!(storage.next_schedule_time().await.unwrap(), Some(60_000));
    assert!(storage.due_schedules(59_999).await.unwrap().is_empty());
    let due = storage.due_schedules(200_000).await.unwrap();
    let ids: Vec<_> = due.iter().map(|s| s.id.clone()).collect();
    assert_eq!(ids, vec![s1.id.clone(), s2.id.clone()]);
    // Disabling takes it off the due list; a rename clash is refused.
    storage
        .update_schedule(
            &s1.id,
            Box::new(|s: &mut Schedule| {
                s.is_enabled = false;
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(storage.due_schedules(200_000).await.unwrap().len(), 1);
    assert_eq!(storage.next_schedule_time().await.unwrap(), Some(120_000));
    let clash = storage
        .update_schedule(
            &s2.id,
            Box::new(|s: &mut Schedule| {
                s.name = "first".into();
                Ok(())
            }),
        )
        .await;
    assert!(matches!(clash, Err(Error::Conflict(_))), "{clash:?}");
    assert_eq!(
        storage.get_schedule(&s2.id).await.unwrap().unwrap().name,
        "second"
    );

    // The log keeps the newest entries, oldest first.
    for i in 0..(SCHEDULE_LOG_LIMIT + 5) {
        storage
            .add_schedule_log(
                &s2.id,
                ScheduleLogEntry {
                    created_at: i as i64,
                    level: "INFO".into(),
                    message: format!("entry {i}"),
                },
            )
            .await
            .unwrap();
    }
    let log = storage.schedule_log(&s2.id).await.unwrap();
    assert_eq!(log.len(), SCHEDULE_LOG_LIMIT);
    assert_eq!(log[0].message, "entry 5");
    assert_eq!(
        log.last().unwrap().message,
        format!("entry {}", SCHEDULE_LOG_LIMIT + 4)
    );
    assert!(storage.schedule_log(&s1.id).await.unwrap().is_empty());

    assert!(storage.delete_schedule(&s2.id).await.unwrap());
    assert!(!storage.delete_schedule(&s2.id).await.unwrap());
    assert!(storage.schedule_log(&s2.id).await.unwrap().is_empty());
    assert_eq!(
        storage.list_schedules(&user.id, all).await.unwrap().total,
        1
    );
}
