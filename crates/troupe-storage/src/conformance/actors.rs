//! Actors, builds, runs and run tokens.

use troupe_model::actor::{Actor, Build, JobStatus, Run, RunCounters, Version};
use troupe_model::list::ListParams;

use super::test_user;
use crate::{Error, RunFilter, Storage};

fn actor(user_id: &str, name: &str) -> Actor {
    Actor {
        id: troupe_model::new_id(),
        user_id: user_id.into(),
        username: "tester".into(),
        name: name.into(),
        created_at: troupe_model::now_ms(),
        modified_at: troupe_model::now_ms(),
        versions: vec![],
        default_run_options: Default::default(),
        tagged_builds: Default::default(),
        build_counters: Default::default(),
        extra: Default::default(),
    }
}

fn version() -> Version {
    Version {
        version_number: "0.1".into(),
        source_type: "SOURCE_FILES".into(),
        env_vars: vec![],
        apply_env_vars_to_build: false,
        build_tag: None,
        source_files: vec![],
        tarball_url: None,
        git_repo_url: None,
        git_hub_gist_url: None,
    }
}

pub fn run_object(
    user_id: &str,
    act_id: &str,
    started_at: i64,
    status: JobStatus,
    origin: &str,
) -> Run {
    Run {
        id: troupe_model::new_id(),
        act_id: act_id.into(),
        user_id: user_id.into(),
        actor_task_id: None,
        started_at,
        finished_at: None,
        status,
        status_message: None,
        is_status_message_terminal: None,
        origin: origin.into(),
        client_ip: None,
        user_agent: None,
        build_id: "b".into(),
        build_number: "0.1.1".into(),
        build_option: "latest".into(),
        exit_code: None,
        general_access: "FOLLOW_USER_SETTING".into(),
        default_dataset_id: "d".into(),
        default_key_value_store_id: "k".into(),
        default_request_queue_id: "q".into(),
        timeout_secs: 0,
        memory_mbytes: 128,
        max_items: None,
        input_key: "INPUT".into(),
        counters: RunCounters::default(),
        metamorphs: vec![],
        process: None,
        attempt_started_at: started_at,
        schedule_id: None,
        scheduled_at: None,
        extras: Default::default(),
    }
}

pub async fn run(storage: &dyn Storage) {
    let user = test_user(storage).await;

    // Actors: create, name clash, get by id and name, update, list.
    let a = storage
        .create_actor(actor(&user.id, "first"))
        .await
        .unwrap();
    let clash = storage.create_actor(actor(&user.id, "first")).await;
    assert!(matches!(clash, Err(Error::Conflict(_))), "{clash:?}");
    assert_eq!(storage.get_actor(&a.id).await.unwrap().unwrap(), a);
    assert_eq!(
        storage
            .get_actor_by_name(&user.id, "first")
            .await
            .unwrap()
            .unwrap()
            .id,
        a.id
    );
    assert!(storage
        .get_actor_by_name("other", "first")
        .await
        .unwrap()
        .is_none());
    let updated = storage
        .update_actor(
            &a.id,
            Box::new(|a| {
                a.versions.push(version());
                a.build_counters.insert("0.1".into(), 1);
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(updated.versions.len(), 1);
    // A failing change rolls back.
    let failed = storage
        .update_actor(
            &a.id,
            Box::new(|a| {
                a.versions.clear();
                Err(Error::Invalid("no".into()))
            }),
        )
        .await;
    assert!(failed.is_err());
    assert_eq!(
        storage
            .get_actor(&a.id)
            .await
            .unwrap()
            .unwrap()
            .versions
            .len(),
        1
    );
    let b = storage
        .create_actor(actor(&user.id, "second"))
        .await
        .unwrap();
    let rename_clash = storage
        .update_actor(
            &b.id,
            Box::new(|b| {
                b.name = "first".into();
                Ok(())
            }),
        )
        .await;
    assert!(matches!(rename_clash, Err(Error::Conflict(_))));
    let list = storage
        .list_actors(&user.id, ListParams::default())
        .await
        .unwrap();
    assert_eq!((list.total, list.items[0].id.clone()), (2, a.id.clone()));
    let desc = storage
        .list_actors(
            &user.id,
            ListParams {
                offset: 0,
                limit: 1,
                desc: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (desc.total, desc.count, desc.items[0].id.clone()),
        (2, 1, b.id.clone())
    );
    assert!(matches!(
        storage.update_actor("missing", Box::new(|_| Ok(()))).await,
        Err(Error::NotFound(_))
    ));

    // Builds.
    let build = Build {
        id: troupe_model::new_id(),
        act_id: a.id.clone(),
        user_id: user.id.clone(),
        started_at: 1000,
        finished_at: None,
        status: JobStatus::Running,
        status_message: None,
        build_number: "0.1.1".into(),
        version_number: "0.1".into(),
        tag: "latest".into(),
        origin: "API".into(),
        use_cache: true,
        timeout_secs: 0,
        version: version(),
        start: None,
        actor_definition: None,
        input_schema: None,
        readme: None,
        git_branch_name: None,
    };
    storage.create_build(build.clone()).await.unwrap();
    assert_eq!(storage.unfinished_builds().await.unwrap().len(), 1);
    let done = storage
        .update_build(
            &build.id,
            Box::new(|b| {
                b.status = JobStatus::Succeeded;
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert!(storage.unfinished_builds().await.unwrap().is_empty());
    assert_eq!(
        storage
            .list_builds(&user.id, Some(&a.id), ListParams::default())
            .await
            .unwrap()
            .total,
        1
    );
    assert_eq!(
        storage
            .list_builds(&user.id, Some(&b.id), ListParams::default())
            .await
            .unwrap()
            .total,
        0
    );

    // Runs: list filters and "last run" selection.
    let r1 = run_object(&user.id, &a.id, 1000, JobStatus::Succeeded, "API");
    let r2 = run_object(&user.id, &a.id, 2000, JobStatus::Failed, "WEB");
    let r3 = run_object(&user.id, &a.id, 3000, JobStatus::Running, "API");
    let other = run_object(&user.id, &b.id, 4000, JobStatus::Succeeded, "API");
    for r in [&r1, &r2, &r3, &other] {
        storage.create_run(r.clone()).await.unwrap();
    }
    let last = |status, origin| storage.last_run(&user.id, &a.id, status, origin);
    assert_eq!(last(None, None).await.unwrap().unwrap().id, r3.id);
    assert_eq!(
        last(Some(JobStatus::Succeeded), None)
            .await
            .unwrap()
            .unwrap()
            .id,
        r1.id
    );
    assert_eq!(last(None, Some("WEB")).await.unwrap().unwrap().id, r2.id);
    assert!(last(Some(JobStatus::Aborted), None)
        .await
        .unwrap()
        .is_none());
    assert!(storage
        .last_run("someone", &a.id, None, None)
        .await
        .unwrap()
        .is_none());
    let all = storage
        .list_runs(&user.id, RunFilter::default(), ListParams::default())
        .await
        .unwrap();
    assert_eq!(all.total, 4);
    let of_a = storage
        .list_runs(
            &user.id,
            RunFilter {
                act_id: Some(a.id.clone()),
                statuses: vec![JobStatus::Succeeded, JobStatus::Failed],
                ..Default::default()
            },
            ListParams {
                offset: 0,
                limit: 10,
                desc: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        of_a.items.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![r2.id.clone(), r1.id.clone()]
    );
    let unfinished = storage.unfinished_runs().await.unwrap();
    assert_eq!(
        unfinished.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![r3.id.clone()]
    );
    storage
        .update_run(
            &r3.id,
            Box::new(|r| {
                r.status = JobStatus::Aborted;
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert!(storage.unfinished_runs().await.unwrap().is_empty());
    assert_eq!(
        last(Some(JobStatus::Aborted), None)
            .await
            .unwrap()
            .unwrap()
            .id,
        r3.id
    );
    assert!(storage.delete_run(&r1.id).await.unwrap());
    assert!(!storage.delete_run(&r1.id).await.unwrap());
    assert!(storage.get_run(&r1.id).await.unwrap().is_none());

    // Deleting an Actor removes its builds and runs.
    assert!(storage.delete_actor(&a.id).await.unwrap());
    assert!(storage.get_build(&build.id).await.unwrap().is_none());
    assert!(storage.get_run(&r2.id).await.unwrap().is_none());
    assert!(storage.get_run(&other.id).await.unwrap().is_some());
}
