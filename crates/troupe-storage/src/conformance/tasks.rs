//! Actor tasks, and the runs a task owns (listing and last run).

use troupe_model::actor::JobStatus;
use troupe_model::list::ListParams;
use troupe_model::task::{Task, TaskOptions};

use super::actors::run_object;
use super::test_user;
use crate::{Error, RunFilter, Storage};

fn task(user_id: &str, act_id: &str, name: &str, created_at: i64) -> Task {
    Task {
        id: troupe_model::new_id(),
        user_id: user_id.into(),
        username: "tester".into(),
        act_id: act_id.into(),
        name: name.into(),
        created_at,
        modified_at: created_at,
        options: TaskOptions::default(),
        input: None,
        extra: Default::default(),
    }
}

pub async fn run(storage: &dyn Storage) {
    let user = test_user(storage).await;
    let other = storage.create_user("other-tasks").await.unwrap();

    // CRUD, names unique per owner.
    let mut t1 = task(&user.id, "act1", "first", 1_000);
    t1.options.memory_mbytes = Some(256);
    t1.input = Some(serde_json::json!({"a": 1}).as_object().unwrap().clone());
    let t1 = storage.create_task(t1).await.unwrap();
    let t2 = storage
        .create_task(task(&user.id, "act1", "second", 2_000))
        .await
        .unwrap();
    let clash = storage
        .create_task(task(&user.id, "act2", "first", 3_000))
        .await;
    assert!(matches!(clash, Err(Error::Conflict(_))), "{clash:?}");
    storage
        .create_task(task(&other.id, "act1", "first", 3_000))
        .await
        .unwrap();
    assert_eq!(storage.get_task(&t1.id).await.unwrap().unwrap(), t1);
    assert!(storage.get_task("nope").await.unwrap().is_none());
    assert_eq!(
        storage
            .get_task_by_name(&user.id, "second")
            .await
            .unwrap()
            .unwrap()
            .id,
        t2.id
    );
    assert!(storage
        .get_task_by_name(&other.id, "second")
        .await
        .unwrap()
        .is_none());
    let page = storage
        .list_tasks(&user.id, ListParams::default())
        .await
        .unwrap();
    assert_eq!(page.total, 2);
    assert_eq!(
        page.items.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        vec![t1.id.clone(), t2.id.clone()]
    );
    let desc = storage
        .list_tasks(
            &user.id,
            ListParams {
                offset: 0,
                limit: 1,
                desc: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(desc.items.len(), 1);
    assert_eq!(desc.items[0].id, t2.id);

    // Updates apply whole; a rename onto an existing name is refused and changes nothing.
    let updated = storage
        .update_task(
            &t2.id,
            Box::new(|t: &mut Task| {
                t.name = "renamed".into();
                t.options.build = Some("beta".into());
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(updated.name, "renamed");
    assert_eq!(storage.get_task(&t2.id).await.unwrap().unwrap(), updated);
    let clash = storage
        .update_task(
            &t2.id,
            Box::new(|t: &mut Task| {
                t.name = "first".into();
                Ok(())
            }),
        )
        .await;
    assert!(matches!(clash, Err(Error::Conflict(_))), "{clash:?}");
    assert_eq!(storage.get_task(&t2.id).await.unwrap().unwrap(), updated);
    let missing = storage
        .update_task("nope", Box::new(|_: &mut Task| Ok(())))
        .await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");

    // Runs of a task: listing and "last" with every filter combination.
    let mk = |started, status, origin: &str, task: Option<&str>, owner: &str| {
        let mut r = run_object(owner, "act1", started, status, origin);
        r.actor_task_id = task.map(str::to_string);
        r
    };
    let r1 = mk(10, JobStatus::Succeeded, "API", Some(&t1.id), &user.id);
    let r2 = mk(20, JobStatus::Failed, "WEB", Some(&t1.id), &user.id);
    let r3 = mk(30, JobStatus::Running, "API", Some(&t1.id), &user.id);
    let r4 = mk(40, JobStatus::Succeeded, "WEB", Some(&t1.id), &user.id);
    // Newer, but not from the task / another task / another owner.
    let plain = mk(50, JobStatus::Succeeded, "API", None, &user.id);
    let of_t2 = mk(60, JobStatus::Succeeded, "API", Some(&t2.id), &user.id);
    let foreign = mk(70, JobStatus::Succeeded, "API", Some(&t1.id), &other.id);
    for r in [&r1, &r2, &r3, &r4, &plain, &of_t2, &foreign] {
        storage.create_run(r.clone()).await.unwrap();
    }
    let last = |status, origin| storage.last_task_run(&user.id, &t1.id, status, origin);
    assert_eq!(last(None, None).await.unwrap().unwrap().id, r4.id);
    assert_eq!(
        last(Some(JobStatus::Running), None)
            .await
            .unwrap()
            .unwrap()
            .id,
        r3.id
    );
    assert_eq!(last(None, Some("API")).await.unwrap().unwrap().id, r3.id);
    assert_eq!(
        last(Some(JobStatus::Succeeded), Some("API"))
            .await
            .unwrap()
            .unwrap()
            .id,
        r1.id
    );
    assert!(last(Some(JobStatus::Failed), Some("API"))
        .await
        .unwrap()
        .is_none());
    assert!(last(Some(JobStatus::Aborted), None)
        .await
        .unwrap()
        .is_none());
    assert!(storage
        .last_task_run(&user.id, "nope", None, None)
        .await
        .unwrap()
        .is_none());
    // The Actor's last run with both filters (the runs above belong to `act1`).
    assert_eq!(
        storage
            .last_run(&user.id, "act1", Some(JobStatus::Succeeded), Some("API"))
            .await
            .unwrap()
            .unwrap()
            .id,
        of_t2.id
    );
    // A status change is seen by the next lookup.
    storage
        .update_run(
            &r3.id,
            Box::new(|r| {
                r.status = JobStatus::Succeeded;
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        last(Some(JobStatus::Succeeded), Some("API"))
            .await
            .unwrap()
            .unwrap()
            .id,
        r3.id
    );

    let runs = storage
        .list_task_runs(
            &user.id,
            &t1.id,
            RunFilter::default(),
            ListParams::default(),
        )
        .await
        .unwrap();
    assert_eq!(runs.total, 4);
    assert_eq!(
        runs.items.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![r1.id.clone(), r2.id.clone(), r3.id.clone(), r4.id.clone()]
    );
    let failed = storage
        .list_task_runs(
            &user.id,
            &t1.id,
            RunFilter {
                statuses: vec![JobStatus::Failed, JobStatus::Aborted],
                ..Default::default()
            },
            ListParams::default(),
        )
        .await
        .unwrap();
    assert_eq!(failed.total, 1);
    assert_eq!(failed.items[0].id, r2.id);

    // Deleting a task keeps its runs.
    assert!(storage.delete_task(&t1.id).await.unwrap());
    assert!(!storage.delete_task(&t1.id).await.unwrap());
    assert!(storage.get_task(&t1.id).await.unwrap().is_none());
    assert!(storage.get_run(&r1.id).await.unwrap().is_some());
}
