//! troupe against Apify's own OpenAPI spec (`tests/spec/openapi.json`, Apache-2.0, see
//! `tests/spec/SOURCE.md`), through the real binary.
//!
//! - Every operation of the spec is routed, under `/v2/actors/...` and `/v2/acts/...` alike,
//!   except the few listed in [`UNROUTED`] (and those must really be unrouted, so the list stays
//!   true as operations land).
//! - The JSON answers of the main read operations, on real objects (an Actor that was built and
//!   ran, its storages, a task, a webhook, a schedule), validate against the spec's response
//!   schemas.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::actors::{built_actor, start_run, wait_run};
use common::{client, post_data, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

/// Operations deliberately not served, as `METHOD /v2/path` of the spec. Each answers the
/// router's `404 page-not-found`. Keep in sync with README "API coverage".
const UNROUTED: &[&str] = &[];

const METHODS: &[&str] = &["get", "post", "put", "delete", "head", "patch"];

fn spec() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/spec/openapi.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("openapi.json parses")
}

/// `(METHOD, path template)` of every operation in the spec.
fn operations(spec: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                ops.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// The path with every `{param}` replaced by an id that names nothing.
fn with_missing_ids(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').expect("closing brace") + start;
        out.push_str(&rest[..start]);
        out.push_str("zzNoSuchThing0123");
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Whether `method path` reached a handler: anything but the router's own 404 (`page-not-found`)
/// or 405. A handler asked about ids that name nothing answers `record-not-found` or a 400.
async fn routed(server: &TestServer, method: &str, path: &str) -> (bool, String) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client().request(method.clone(), server.url(path));
    if method == Method::POST || method == Method::PUT || method == Method::PATCH {
        request = request
            .header("content-type", "application/json")
            .body("{}");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let error_type = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["type"].as_str().map(str::to_string))
        .unwrap_or_default();
    let mut unrouted = status == 405 || (status == 404 && error_type == "page-not-found");
    if method == Method::HEAD && status == 404 {
        // HEAD answers carry no body to tell the router's 404 from a handler's: axum answers
        // HEAD on every GET route, so the GET twin decides.
        unrouted = !Box::pin(routed(server, "GET", path)).await.0;
    }
    (!unrouted, format!("{status} {error_type}"))
}

#[tokio::test]
async fn every_spec_operation_is_routed_under_both_actor_prefixes() {
    let spec = spec();
    let server = TestServer::start();
    let ops = operations(&spec);
    assert!(ops.len() > 200, "the spec lists {} operations", ops.len());
    let unrouted_expected: BTreeSet<String> = UNROUTED.iter().map(|s| s.to_string()).collect();
    let mut missing = Vec::new();
    let mut stale = Vec::new();
    for (method, template) in &ops {
        let key = format!("{method} {template}");
        let mut prefixes = vec![template.clone()];
        if let Some(rest) = template.strip_prefix("/v2/actors/") {
            prefixes.push(format!("/v2/acts/{rest}"));
        }
        for variant in prefixes {
            let path = with_missing_ids(&variant)
                .trim_start_matches("/v2")
                .to_string();
            let (is_routed, answer) = routed(&server, method, &path).await;
            match (is_routed, unrouted_expected.contains(&key)) {
                (false, false) => missing.push(format!("{method} {variant} -> {answer}")),
                (true, true) => stale.push(format!("{method} {variant} -> {answer}")),
                _ => {}
            }
        }
    }
    assert!(
        missing.is_empty(),
        "operations of the spec that troupe does not route:\n{}",
        missing.join("\n")
    );
    assert!(
        stale.is_empty(),
        "operations listed in UNROUTED that are routed now (remove them from the list and \
         from README \"API coverage\"):\n{}",
        stale.join("\n")
    );
}

/// The program of the Actor the shape test runs: writes items, a record and a request into its
/// default storages (so every storage has content), then succeeds.
const PROGRAM: &str = r#"python3 - <<'PY'
import json, os, urllib.request
base = os.environ["APIFY_API_BASE_URL"] + "/v2"
auth = {"authorization": "Bearer " + os.environ["APIFY_TOKEN"], "content-type": "application/json"}
def call(method, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method=method, headers=auth)
    urllib.request.urlopen(req).read()
call("POST", "/datasets/%s/items" % os.environ["ACTOR_DEFAULT_DATASET_ID"], [{"n": i, "title": "t%d" % i} for i in range(3)])
call("PUT", "/key-value-stores/%s/records/OUTPUT" % os.environ["ACTOR_DEFAULT_KEY_VALUE_STORE_ID"], {"ok": True})
call("POST", "/request-queues/%s/requests" % os.environ["ACTOR_DEFAULT_REQUEST_QUEUE_ID"], {"url": "https://example.com/a", "uniqueKey": "a"})
print("done", flush=True)
PY"#;

/// The spec's schema of the JSON answer `status` of `method path` (resolved through `$ref`s of
/// the response object), if the spec gives one.
fn response_schema(spec: &Value, method: &str, path: &str, status: u16) -> Option<Value> {
    let mut response = spec["paths"][path][method]["responses"][status.to_string()].clone();
    while let Some(reference) = response.get("$ref").and_then(Value::as_str) {
        response = spec
            .pointer(reference.trim_start_matches('#'))
            .cloned()
            .unwrap_or(Value::Null);
    }
    response["content"]["application/json"]
        .get("schema")
        .cloned()
}

/// A validator for `schema`, with the whole spec as its root so that its
/// `#/components/...` references resolve.
fn validator(spec: &Value, schema: Value) -> jsonschema::Validator {
    let mut root = spec.clone();
    let object = root.as_object_mut().unwrap();
    object.insert("$defs".into(), json!({ "target": schema }));
    object.insert("$ref".into(), json!("#/$defs/target"));
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .expect("the spec's schema compiles")
}

#[tokio::test]
async fn read_answers_match_the_spec_schemas() {
    let spec = spec();
    let server = TestServer::start();

    // Real objects of every kind.
    let text = |v: &Value| v.as_str().unwrap().to_string();
    let actor = built_actor(&server, "shapes", PROGRAM).await;
    let run = start_run(&server, &format!("/acts/{actor}/runs"), json!({"x": 1})).await;
    let run = wait_run(&server, run["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let task = post_data(
        &server,
        "/actor-tasks",
        json!({"actId": actor, "name": "shapes-task", "input": {"x": 2}}),
        201,
    )
    .await;
    // A finished run of the task too (for the task's `runs/last` group).
    let task_run = start_run(
        &server,
        &format!("/actor-tasks/{}/runs", text(&task["id"])),
        json!({}),
    )
    .await;
    let task_run = wait_run(&server, task_run["id"].as_str().unwrap()).await;
    assert_eq!(task_run["status"], "SUCCEEDED", "{task_run}");
    let webhook = post_data(
        &server,
        "/webhooks",
        json!({"eventTypes": ["ACTOR.RUN.SUCCEEDED"], "condition": {"actorId": actor},
               "requestUrl": "http://127.0.0.1:9/hook", "isAdHoc": false}),
        201,
    )
    .await;
    let schedule = post_data(
        &server,
        "/schedules",
        json!({"name": "shapes-schedule", "cronExpression": "0 0 1 1 *", "isEnabled": false,
               "actions": [{"type": "RUN_ACTOR", "actorId": actor}]}),
        201,
    )
    .await;
    post_data(
        &server,
        &format!("/acts/{actor}/versions/0.1/env-vars"),
        json!({"name": "SHAPE_VAR", "value": "v"}),
        201,
    )
    .await;
    let me = common::get_data(&server, "/users/me").await;
    let queue = run["defaultRequestQueueId"].as_str().unwrap();
    let head = common::get_data(&server, &format!("/request-queues/{queue}/head")).await;
    let request_id = head["items"][0]["id"].as_str().unwrap().to_string();

    let params: Vec<(&str, String)> = vec![
        ("actorId", actor.clone()),
        ("buildId", text(&run["buildId"])),
        ("runId", text(&run["id"])),
        ("actorTaskId", text(&task["id"])),
        ("datasetId", text(&run["defaultDatasetId"])),
        ("storeId", text(&run["defaultKeyValueStoreId"])),
        ("queueId", queue.to_string()),
        ("requestId", request_id),
        ("recordKey", "OUTPUT".to_string()),
        ("versionNumber", "0.1".to_string()),
        ("envVarName", "SHAPE_VAR".to_string()),
        ("webhookId", text(&webhook["id"])),
        ("scheduleId", text(&schedule["id"])),
        ("userId", text(&me["id"])),
    ];

    let mut checked = BTreeSet::new();
    let mut failures = Vec::new();
    for (method, template) in operations(&spec) {
        if method != "GET" {
            continue;
        }
        let mut path = template.clone();
        for (name, value) in &params {
            path = path.replace(&format!("{{{name}}}"), value);
        }
        // run-sync operations start runs (covered by actors.rs and the compat suites).
        if path.contains('{')
            || template.contains("/run-sync")
            || UNROUTED.contains(&format!("GET {template}").as_str())
        {
            continue;
        }
        let response = client()
            .get(server.url(path.trim_start_matches("/v2")))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let is_json = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let body = response.bytes().await.unwrap();
        if !(200..300).contains(&status) {
            failures.push(format!(
                "GET {template}: {status} {}",
                String::from_utf8_lossy(&body)
            ));
            continue;
        }
        let Some(schema) = response_schema(&spec, "get", &template, status) else {
            continue;
        };
        if !is_json {
            continue;
        }
        let value: Value = serde_json::from_slice(&body).expect("JSON answer");
        let errors: Vec<String> = validator(&spec, schema)
            .iter_errors(&value)
            .take(5)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            checked.insert(template.clone());
        } else {
            failures.push(format!("GET {template}:\n    {}", errors.join("\n    ")));
        }
    }
    assert!(
        failures.is_empty(),
        "answers that do not match the spec:\n{}",
        failures.join("\n")
    );
    for must in [
        "/v2/actors/{actorId}",
        "/v2/actors/{actorId}/runs/last",
        "/v2/actor-runs/{runId}",
        "/v2/actor-builds/{buildId}",
        "/v2/actor-tasks/{actorTaskId}",
        "/v2/datasets/{datasetId}",
        "/v2/key-value-stores/{storeId}",
        "/v2/key-value-stores/{storeId}/keys",
        "/v2/request-queues/{queueId}",
        "/v2/request-queues/{queueId}/head",
        "/v2/request-queues/{queueId}/requests/{requestId}",
        "/v2/webhooks/{webhookId}",
        "/v2/schedules/{scheduleId}",
        "/v2/users/me",
    ] {
        assert!(
            checked.contains(must),
            "{must} was not validated; validated: {checked:?}"
        );
    }
}

/// Validates the JSON answer of one call against the spec's schema for `method template` and
/// the answer's status; returns the answer's `data` (or the whole body).
struct Checker {
    spec: Value,
    failures: Vec<String>,
    checked: usize,
}

impl Checker {
    async fn call(
        &mut self,
        server: &TestServer,
        method: &str,
        template: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut request = client().request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            server.url(path),
        );
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        if !(200..300).contains(&status) {
            self.failures.push(format!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            ));
            return Value::Null;
        }
        if bytes.is_empty() {
            return Value::Null;
        }
        let value: Value = serde_json::from_slice(&bytes).expect("JSON answer");
        let schema = response_schema(&self.spec, &method.to_lowercase(), template, status)
            .unwrap_or_else(|| {
                panic!("the spec has no JSON schema for {method} {template} -> {status}")
            });
        let errors: Vec<String> = validator(&self.spec, schema)
            .iter_errors(&value)
            .take(5)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            self.checked += 1;
        } else {
            self.failures.push(format!(
                "{method} {template} -> {status}:\n    {}",
                errors.join("\n    ")
            ));
        }
        value.get("data").cloned().unwrap_or(value)
    }
}

#[tokio::test]
async fn write_answers_match_the_spec_schemas() {
    let server = TestServer::start();
    let mut c = Checker {
        spec: spec(),
        failures: Vec::new(),
        checked: 0,
    };
    let id = |v: &Value| v["id"].as_str().unwrap_or_default().to_string();

    // Datasets.
    let ds = c
        .call(
            &server,
            "POST",
            "/v2/datasets",
            "/datasets?name=spec-ds",
            None,
        )
        .await;
    let ds = id(&ds);
    c.call(
        &server,
        "PUT",
        "/v2/datasets/{datasetId}",
        &format!("/datasets/{ds}"),
        Some(json!({"name": "spec-ds-2"})),
    )
    .await;
    c.call(
        &server,
        "POST",
        "/v2/datasets/{datasetId}/items",
        &format!("/datasets/{ds}/items"),
        Some(json!([{"a": 1}, {"a": 2}])),
    )
    .await;

    // Key-value stores.
    let kv = c
        .call(
            &server,
            "POST",
            "/v2/key-value-stores",
            "/key-value-stores?name=spec-kv",
            None,
        )
        .await;
    let kv = id(&kv);
    c.call(
        &server,
        "PUT",
        "/v2/key-value-stores/{storeId}",
        &format!("/key-value-stores/{kv}"),
        Some(json!({"name": "spec-kv-2"})),
    )
    .await;
    c.call(
        &server,
        "PUT",
        "/v2/key-value-stores/{storeId}/records/{recordKey}",
        &format!("/key-value-stores/{kv}/records/k1"),
        Some(json!({"v": 1})),
    )
    .await;

    // Request queues.
    let rq = c
        .call(
            &server,
            "POST",
            "/v2/request-queues",
            "/request-queues?name=spec-rq",
            None,
        )
        .await;
    let rq = id(&rq);
    c.call(
        &server,
        "PUT",
        "/v2/request-queues/{queueId}",
        &format!("/request-queues/{rq}"),
        Some(json!({"name": "spec-rq-2"})),
    )
    .await;
    let added = c
        .call(
            &server,
            "POST",
            "/v2/request-queues/{queueId}/requests",
            &format!("/request-queues/{rq}/requests"),
            Some(json!({"url": "https://example.com/1", "uniqueKey": "1"})),
        )
        .await;
    let first = added["requestId"].as_str().unwrap_or_default().to_string();
    c.call(
        &server,
        "POST",
        "/v2/request-queues/{queueId}/requests/batch",
        &format!("/request-queues/{rq}/requests/batch"),
        Some(json!([{"url": "https://example.com/2", "uniqueKey": "2"},
                    {"url": "https://example.com/3", "uniqueKey": "3"},
                    {"url": "https://example.com/4", "uniqueKey": "4"}])),
    )
    .await;
    let locked = c
        .call(
            &server,
            "POST",
            "/v2/request-queues/{queueId}/head/lock",
            &format!("/request-queues/{rq}/head/lock?lockSecs=60&limit=2&clientKey=spec"),
            None,
        )
        .await;
    assert_eq!(
        locked["items"].as_array().map(Vec::len),
        Some(2),
        "{locked}"
    );
    let locked_id = id(&locked["items"][0]);
    c.call(
        &server,
        "PUT",
        "/v2/request-queues/{queueId}/requests/{requestId}/lock",
        &format!("/request-queues/{rq}/requests/{locked_id}/lock?lockSecs=120&clientKey=spec"),
        None,
    )
    .await;
    let mut request = c
        .call(
            &server,
            "GET",
            "/v2/request-queues/{queueId}/requests/{requestId}",
            &format!("/request-queues/{rq}/requests/{first}"),
            None,
        )
        .await;
    request["handledAt"] = json!("2026-01-01T00:00:00.000Z");
    c.call(
        &server,
        "PUT",
        "/v2/request-queues/{queueId}/requests/{requestId}",
        &format!("/request-queues/{rq}/requests/{first}?clientKey=spec"),
        Some(request),
    )
    .await;
    c.call(
        &server,
        "POST",
        "/v2/request-queues/{queueId}/requests/unlock",
        &format!("/request-queues/{rq}/requests/unlock?clientKey=spec"),
        None,
    )
    .await;
    c.call(
        &server,
        "DELETE",
        "/v2/request-queues/{queueId}/requests/batch",
        &format!("/request-queues/{rq}/requests/batch"),
        Some(json!([{"uniqueKey": "4"}])),
    )
    .await;

    // Actors, versions, env vars, builds, runs.
    let actor = c
        .call(
            &server,
            "POST",
            "/v2/actors",
            "/acts",
            Some(common::actors::shell_actor("spec-actor", "echo hello")),
        )
        .await;
    let actor = id(&actor);
    c.call(
        &server,
        "PUT",
        "/v2/actors/{actorId}",
        &format!("/acts/{actor}"),
        Some(json!({"title": "Spec Actor", "description": "d"})),
    )
    .await;
    c.call(
        &server,
        "POST",
        "/v2/actors/{actorId}/versions",
        &format!("/acts/{actor}/versions"),
        Some(json!({"versionNumber": "0.2", "sourceType": "SOURCE_FILES",
                    "sourceFiles": [{"name": "main.sh", "format": "TEXT", "content": "echo"}]})),
    )
    .await;
    c.call(
        &server,
        "PUT",
        "/v2/actors/{actorId}/versions/{versionNumber}",
        &format!("/acts/{actor}/versions/0.2"),
        Some(json!({"buildTag": "beta"})),
    )
    .await;
    c.call(
        &server,
        "POST",
        "/v2/actors/{actorId}/versions/{versionNumber}/env-vars",
        &format!("/acts/{actor}/versions/0.1/env-vars"),
        Some(json!({"name": "A", "value": "1"})),
    )
    .await;
    c.call(
        &server,
        "PUT",
        "/v2/actors/{actorId}/versions/{versionNumber}/env-vars/{envVarName}",
        &format!("/acts/{actor}/versions/0.1/env-vars/A"),
        Some(json!({"name": "A", "value": "2"})),
    )
    .await;
    let build = c
        .call(
            &server,
            "POST",
            "/v2/actors/{actorId}/builds",
            &format!("/acts/{actor}/builds?version=0.1&waitForFinish=60"),
            None,
        )
        .await;
    let build = common::actors::wait_build(&server, &id(&build)).await;
    assert_eq!(build["status"], "SUCCEEDED", "{build}");
    let run = c
        .call(
            &server,
            "POST",
            "/v2/actors/{actorId}/runs",
            &format!("/acts/{actor}/runs"),
            Some(json!({"x": 1})),
        )
        .await;
    let run = wait_run(&server, &id(&run)).await;
    let run_id = id(&run);
    c.call(
        &server,
        "PUT",
        "/v2/actor-runs/{runId}",
        &format!("/actor-runs/{run_id}"),
        Some(json!({"runId": run_id, "statusMessage": "all good"})),
    )
    .await;
    c.call(
        &server,
        "POST",
        "/v2/actor-runs/{runId}/dataset/items",
        &format!("/actor-runs/{run_id}/dataset/items"),
        Some(json!({"b": 1})),
    )
    .await;

    // Tasks.
    let task = c
        .call(
            &server,
            "POST",
            "/v2/actor-tasks",
            "/actor-tasks",
            Some(json!({"actId": actor, "name": "spec-task", "input": {"x": 1}})),
        )
        .await;
    let task = id(&task);
    c.call(
        &server,
        "PUT",
        "/v2/actor-tasks/{actorTaskId}",
        &format!("/actor-tasks/{task}"),
        Some(json!({"title": "Spec task"})),
    )
    .await;
    c.call(
        &server,
        "PUT",
        "/v2/actor-tasks/{actorTaskId}/input",
        &format!("/actor-tasks/{task}/input"),
        Some(json!({"x": 2})),
    )
    .await;

    // Webhooks and schedules.
    let webhook = c
        .call(
            &server,
            "POST",
            "/v2/webhooks",
            "/webhooks",
            Some(
                json!({"eventTypes": ["ACTOR.RUN.SUCCEEDED"], "condition": {"actorId": actor},
                    "requestUrl": "http://127.0.0.1:9/hook"}),
            ),
        )
        .await;
    let webhook = id(&webhook);
    c.call(
        &server,
        "PUT",
        "/v2/webhooks/{webhookId}",
        &format!("/webhooks/{webhook}"),
        Some(json!({"description": "spec"})),
    )
    .await;
    c.call(
        &server,
        "POST",
        "/v2/webhooks/{webhookId}/test",
        &format!("/webhooks/{webhook}/test"),
        None,
    )
    .await;
    let schedule = c
        .call(
            &server,
            "POST",
            "/v2/schedules",
            "/schedules",
            Some(
                json!({"name": "spec-schedule", "cronExpression": "0 0 1 1 *", "isEnabled": false,
                    "actions": [{"type": "RUN_ACTOR", "actorId": actor}]}),
            ),
        )
        .await;
    let schedule = id(&schedule);
    c.call(
        &server,
        "PUT",
        "/v2/schedules/{scheduleId}",
        &format!("/schedules/{schedule}"),
        Some(json!({"description": "spec"})),
    )
    .await;

    assert!(
        c.failures.is_empty(),
        "write answers that do not match the spec:\n{}",
        c.failures.join("\n")
    );
    assert!(c.checked >= 25, "only {} answers were validated", c.checked);
}
