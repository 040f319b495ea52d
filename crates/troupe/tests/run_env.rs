//! What a run gets from the platform besides its process: `containerUrl`, storages declared by
//! alias (`ACTOR_STORAGES_JSON`, `storageIds`), what its own token sees on `users/me`, and
//! `restartOnError`. Every wait polls with a generous deadline.

mod common;

use common::actors::{
    built_actor, built_actor_from, start_run, wait_for_log, wait_run, wait_running,
};
use common::{assert_error, client, data_of, get_data, send, Api, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

/// The value printed by the program as `{name}=VALUE` (one line).
fn printed(log: &str, name: &str) -> String {
    let prefix = format!("{name}=");
    log.lines()
        .find_map(|line| line.split_once(&prefix).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| panic!("{name} not printed in {log}"))
}

async fn runs_total(server: &TestServer) -> u64 {
    get_data(server, "/actor-runs").await["total"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn container_url_is_the_web_server_the_run_was_given() {
    let server = TestServer::start();
    let actor = built_actor(
        &server,
        "web",
        "echo \"url=$ACTOR_WEB_SERVER_URL\"; echo \"port=$ACTOR_WEB_SERVER_PORT\"; sleep 300",
    )
    .await;
    let run = start_run(&server, &format!("/acts/{actor}/runs"), json!({})).await;
    let id = run["id"].as_str().unwrap().to_string();
    let log = wait_for_log(&server, &id, "port=").await;
    let url = printed(&log, "url");
    let port = printed(&log, "port");
    assert_eq!(url, format!("http://127.0.0.1:{port}"));
    let running = wait_running(&server, &id).await;
    assert_eq!(running["containerUrl"], url, "{running}");
    // The same in every view of the run (the list shows the short form, without it).
    let last = get_data(&server, &format!("/acts/{actor}/runs/last")).await;
    assert_eq!(last["containerUrl"], url);
    let aborted = data_of(
        send(
            &server,
            Method::POST,
            &format!("/actor-runs/{id}/abort"),
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(aborted["id"], id.as_str());
    let finished = wait_run(&server, &id).await;
    assert_eq!(finished["containerUrl"], url);
}

/// An Actor whose `actor.json` declares extra storages by alias.
fn actor_with_aliases(name: &str, script: &str) -> Value {
    let definition = json!({
        "actorSpecification": 1,
        "startCommand": "sh main.sh",
        "storages": {
            "datasets": {"default": {}, "categories": {}},
            "keyValueStores": {"default": {}, "cache": {}},
            "requestQueues": {"default": {}, "later": {}},
        },
    });
    json!({
        "name": name,
        "versions": [{
            "versionNumber": "0.1",
            "sourceType": "SOURCE_FILES",
            "sourceFiles": [
                {"name": ".actor/actor.json", "format": "TEXT", "content": definition.to_string()},
                {"name": "main.sh", "format": "TEXT", "content": script},
            ],
        }],
        "defaultRunOptions": {"build": "latest", "timeoutSecs": 120, "memoryMbytes": 128},
    })
}

#[tokio::test]
async fn declared_storage_aliases_are_created_and_passed_in_actor_storages_json() {
    let server = TestServer::start();
    let actor = built_actor_from(
        &server,
        actor_with_aliases("aliases", "echo \"storages=$ACTOR_STORAGES_JSON\""),
    )
    .await;
    let run = start_run(&server, &format!("/acts/{actor}/runs"), json!({})).await;
    let id = run["id"].as_str().unwrap();
    let ids = &run["storageIds"];
    assert_eq!(ids["datasets"]["default"], run["defaultDatasetId"]);
    assert_eq!(
        ids["keyValueStores"]["default"],
        run["defaultKeyValueStoreId"]
    );
    assert_eq!(
        ids["requestQueues"]["default"],
        run["defaultRequestQueueId"]
    );
    for (kind, alias, collection) in [
        ("datasets", "categories", "datasets"),
        ("keyValueStores", "cache", "key-value-stores"),
        ("requestQueues", "later", "request-queues"),
    ] {
        let storage_id = ids[kind][alias]
            .as_str()
            .unwrap_or_else(|| panic!("{kind}.{alias} in {ids}"));
        assert_ne!(storage_id, ids[kind]["default"].as_str().unwrap());
        // A real storage of the run, unnamed (aliases are not names).
        let storage = get_data(&server, &format!("/{collection}/{storage_id}")).await;
        assert_eq!(storage["actRunId"], id);
        assert!(storage["name"].is_null(), "{storage}");
    }
    let finished = wait_run(&server, id).await;
    assert_eq!(finished["status"], "SUCCEEDED");
    let log = wait_for_log(&server, id, "storages=").await;
    let env: Value = serde_json::from_str(&printed(&log, "storages")).unwrap();
    assert_eq!(&env, ids, "ACTOR_STORAGES_JSON is the run's storageIds");
}

#[tokio::test]
async fn actors_without_aliases_get_no_actor_storages_json() {
    let server = TestServer::start();
    let actor = built_actor(
        &server,
        "plain",
        "echo \"storages=${ACTOR_STORAGES_JSON:-unset}\"",
    )
    .await;
    let run = start_run(&server, &format!("/acts/{actor}/runs"), json!({})).await;
    let id = run["id"].as_str().unwrap();
    assert_eq!(
        run["storageIds"]["datasets"],
        json!({"default": run["defaultDatasetId"]})
    );
    wait_run(&server, id).await;
    let log = wait_for_log(&server, id, "storages=").await;
    assert_eq!(printed(&log, "storages"), "unset");
}

#[tokio::test]
async fn a_runs_own_token_sees_no_profile_email_or_plan() {
    let server = TestServer::start();
    let actor = built_actor(
        &server,
        "who-am-i",
        "echo \"token=$APIFY_TOKEN\"; sleep 300",
    )
    .await;
    let run = start_run(&server, &format!("/acts/{actor}/runs"), json!({})).await;
    let id = run["id"].as_str().unwrap();
    let log = wait_for_log(&server, id, "token=").await;
    let run_token = printed(&log, "token");
    let full = get_data(&server, "/users/me").await;
    assert!(full["plan"].is_object() && full["email"].is_string() && full["profile"].is_object());
    let limited = get_data(&server.as_user(&run_token), "/users/me").await;
    assert_eq!(limited["id"], full["id"]);
    assert_eq!(limited["username"], full["username"]);
    assert!(
        limited["proxy"].is_object(),
        "the SDKs read proxy settings: {limited}"
    );
    for hidden in ["plan", "email", "profile"] {
        assert!(limited.get(hidden).is_none(), "{hidden} in {limited}");
    }
    // The public profile is the same for anyone.
    let public = get_data(
        &server.as_user(&run_token),
        &format!("/users/{}", full["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(public["username"], full["username"]);
    data_of(
        send(
            &server,
            Method::POST,
            &format!("/actor-runs/{id}/abort"),
            None,
        )
        .await,
        200,
    )
    .await;
    wait_run(&server, id).await;
    // The run's token stops working when the run ends.
    let response = client()
        .get(server.as_user(&run_token).url("/users/me"))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "invalid-token").await;
}

/// Fails on its first `n` attempts (a file in the run's folder counts them), then succeeds.
fn flaky(n: u32) -> String {
    format!(
        "c=$(cat attempts 2>/dev/null || echo 0); c=$((c+1)); echo $c > attempts; echo \"attempt=$c\"; \
         if [ $c -le {n} ]; then exit 3; fi; exit 0"
    )
}

#[tokio::test]
async fn restart_on_error_restarts_a_failed_run() {
    let server = TestServer::start();
    let actor = built_actor(&server, "flaky", &flaky(1)).await;
    // Without the option: the first failure ends the run.
    let run = start_run(&server, &format!("/acts/{actor}/runs"), json!({})).await;
    let failed = wait_run(&server, run["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["stats"]["restartCount"], 0);
    // With it: restarted once, then the second attempt succeeds.
    let run = start_run(
        &server,
        &format!("/acts/{actor}/runs?restartOnError=true"),
        json!({}),
    )
    .await;
    let id = run["id"].as_str().unwrap();
    let done = wait_run(&server, id).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["stats"]["restartCount"], 1);
    assert_eq!(done["exitCode"], 0);
    let log = wait_for_log(&server, id, "attempt=2").await;
    assert!(log.contains("restartOnError"), "{log}");
}

#[tokio::test]
async fn restart_on_error_gives_up_after_three_restarts() {
    let server = TestServer::start();
    let actor = built_actor(&server, "broken", &flaky(100)).await;
    let run = start_run(
        &server,
        &format!("/acts/{actor}/runs?restartOnError=1"),
        json!({}),
    )
    .await;
    let id = run["id"].as_str().unwrap();
    let done = wait_run(&server, id).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(done["stats"]["restartCount"], 3);
    assert_eq!(done["exitCode"], 3);
    let log = wait_for_log(&server, id, "attempt=4").await;
    assert!(!log.contains("attempt=5"), "{log}");
}

#[tokio::test]
async fn restart_on_error_from_a_task_and_from_actor_defaults() {
    let server = TestServer::start();
    let actor = built_actor(&server, "flaky-task", &flaky(1)).await;
    let task = data_of(
        send(
            &server,
            Method::POST,
            "/actor-tasks",
            Some(json!({"actId": actor, "name": "flaky-task-t", "options": {"restartOnError": true}})),
        )
        .await,
        201,
    )
    .await;
    let run = start_run(
        &server,
        &format!("/actor-tasks/{}/runs", task["id"].as_str().unwrap()),
        json!({}),
    )
    .await;
    let done = wait_run(&server, run["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["stats"]["restartCount"], 1);
    // The Actor's defaultRunOptions.restartOnError applies when the start does not say.
    data_of(
        send(
            &server,
            Method::PUT,
            &format!("/acts/{actor}"),
            Some(json!({"defaultRunOptions": {"restartOnError": true}})),
        )
        .await,
        200,
    )
    .await;
    let run = start_run(&server, &format!("/acts/{actor}/runs"), json!({})).await;
    let done = wait_run(&server, run["id"].as_str().unwrap()).await;
    assert_eq!(done["stats"]["restartCount"], 1, "{done}");
    // …and the start can turn it off.
    let run = start_run(
        &server,
        &format!("/acts/{actor}/runs?restartOnError=false"),
        json!({}),
    )
    .await;
    let done = wait_run(&server, run["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "FAILED", "{done}");
}

#[tokio::test]
async fn restart_on_error_must_be_a_boolean() {
    let server = TestServer::start();
    let actor = built_actor(&server, "strict", "exit 0").await;
    let before = runs_total(&server).await;
    let response = send(
        &server,
        Method::POST,
        &format!("/acts/{actor}/runs?restartOnError=maybe"),
        Some(json!({})),
    )
    .await;
    assert_error(response, 400, "invalid-parameter").await;
    assert_eq!(runs_total(&server).await, before, "no run was created");
}
