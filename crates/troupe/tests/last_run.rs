//! The "last run" groups, a run's storage shortcuts and Actor tasks, through the real binary.
//!
//! The centre is a table-driven test: every storage endpoint (and the log and the run object)
//! is called through every prefix that reaches it — `/datasets/{id}`, `/actor-runs/{runId}/dataset`,
//! `/acts|actors/{actorId}/runs/last/dataset`, `/actor-tasks/{taskId}/runs/last/dataset`, and the
//! same for key-value stores, request queues, logs and the run — and the answers must be the same
//! (status, the headers clients read, body), for reads and for writes.

mod common;

use common::actors::{start_run, wait_for_log, wait_run as wait_finished, wait_running};
use common::{assert_error, client, data_of, get_data, send, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

/// A Python Actor that reads its INPUT (`mode`), writes items, an OUTPUT record and a request
/// into its default storages, then succeeds, fails or keeps running, as told.
const PROGRAM: &str = r#"python3 - <<'EOF'
import json, os, sys, time, urllib.request, urllib.error
base = os.environ["APIFY_API_BASE_URL"] + "/v2"
auth = {"authorization": "Bearer " + os.environ["APIFY_TOKEN"], "content-type": "application/json"}
def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers=auth)
    return urllib.request.urlopen(req).read()
kv = os.environ["ACTOR_DEFAULT_KEY_VALUE_STORE_ID"]
try:
    inp = json.loads(call("GET", "/key-value-stores/%s/records/INPUT" % kv))
except urllib.error.HTTPError:
    inp = {}
task = os.environ.get("ACTOR_TASK_ID")
mode = inp.get("mode", "ok")
call("POST", "/datasets/%s/items" % os.environ["ACTOR_DEFAULT_DATASET_ID"],
     [{"n": i, "mode": mode, "task": task} for i in range(3)])
call("PUT", "/key-value-stores/%s/records/OUTPUT" % kv, {"input": inp, "task": task})
call("POST", "/request-queues/%s/requests" % os.environ["ACTOR_DEFAULT_REQUEST_QUEUE_ID"],
     {"url": "https://example.com/first", "uniqueKey": "first"})
print("mode", mode, "task", task, flush=True)
if mode == "fail":
    sys.exit(2)
if mode == "sleep":
    time.sleep(300)
EOF"#;

/// Creates and builds the test Actor; returns its id.
async fn built_actor(server: &TestServer, name: &str) -> String {
    common::actors::built_actor(server, name, PROGRAM).await
}

/// Starts a run of `actor` with `{"mode": mode}` as input; returns its id.
async fn start_actor(server: &TestServer, actor: &str, mode: &str) -> String {
    let run = start_run(
        server,
        &format!("/acts/{actor}/runs"),
        json!({ "mode": mode }),
    )
    .await;
    run["id"].as_str().unwrap().to_string()
}

/// What is compared of one answer.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

/// Headers clients read.
const HEADERS: &[&str] = &[
    "content-type",
    "content-disposition",
    "content-encoding",
    "location",
    "x-apify-pagination-offset",
    "x-apify-pagination-limit",
    "x-apify-pagination-count",
    "x-apify-pagination-total",
    "x-apify-pagination-desc",
];

/// Fields that legitimately change from one call to the next (access time and counters bumped
/// by the previous call, ids of things the call itself created).
const VOLATILE: &[&str] = &[
    "accessedAt",
    "modifiedAt",
    "stats",
    "requestId",
    "lockExpiresAt",
    "lockedUntil",
];

fn strip_volatile(value: &mut Value) {
    strip_keys(value, VOLATILE);
}

fn strip_keys(value: &mut Value, keys: &[&str]) {
    match value {
        Value::Object(map) => {
            for key in keys {
                map.remove(*key);
            }
            map.values_mut().for_each(|v| strip_keys(v, keys));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| strip_keys(v, keys)),
        _ => {}
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = HEADERS
        .iter()
        .filter_map(|h| {
            response
                .headers()
                .get(*h)
                .map(|v| (h.to_string(), v.to_str().unwrap_or("?").to_string()))
        })
        .collect();
    let bytes = response.bytes().await.unwrap();
    let mut body = serde_json::from_slice::<Value>(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    strip_volatile(&mut body);
    Answer {
        status,
        headers,
        body,
    }
}

/// One prefix reaching a resource, with the query it needs (the last-run filters).
struct Alias {
    prefix: String,
    query: &'static str,
}

/// `{prefix}{rel}` with the alias query and the request query merged; `{i}` in `rel` becomes
/// the alias number (so writes of each alias create distinct things).
fn aliased_path(alias: &Alias, rel: &str, i: usize) -> String {
    let rel = rel.replace("{i}", &i.to_string());
    let (path, query) = rel.split_once('?').unwrap_or((&rel, ""));
    let queries: Vec<&str> = [alias.query, query]
        .into_iter()
        .filter(|q| !q.is_empty())
        .collect();
    if queries.is_empty() {
        format!("{}{path}", alias.prefix)
    } else {
        format!("{}{path}?{}", alias.prefix, queries.join("&"))
    }
}

/// One request of the table: `{i}` in the path or body is the alias number.
struct Case {
    method: Method,
    rel: &'static str,
    body: Option<&'static str>,
}

fn case(method: Method, rel: &'static str, body: Option<&'static str>) -> Case {
    Case { method, rel, body }
}

/// Sends `case` through every alias and asserts identical answers; returns them.
async fn same_everywhere(server: &TestServer, aliases: &[Alias], case: &Case) -> Vec<Answer> {
    let mut answers = Vec::new();
    for (i, alias) in aliases.iter().enumerate() {
        let path = aliased_path(alias, case.rel, i);
        let mut request = client().request(case.method.clone(), server.url(&path));
        if let Some(body) = case.body {
            request = request
                .header("content-type", "application/json")
                .body(body.replace("{i}", &i.to_string()));
        }
        let mut got = answer(request.send().await.unwrap()).await;
        // Answers to templated requests that echo the alias number are compared with it put
        // back as a placeholder.
        let templated = case.rel.contains("{i}") || case.body.is_some_and(|b| b.contains("{i}"));
        if templated {
            // Request ids derive from the (templated) unique keys.
            strip_keys(&mut got.body, &["id"]);
            let template = case.rel.split('?').next().unwrap_or("");
            let rendered = template.replace("{i}", &i.to_string());
            for (_, value) in got.headers.iter_mut() {
                *value = value.replace(&rendered, template);
            }
        }
        if !templated {
        } else if let Value::String(text) = &mut got.body {
            *text = text.replace(&format!("alias-{i}"), "alias-{i}");
        } else {
            let text = got
                .body
                .to_string()
                .replace(&format!("alias-{i}"), "alias-{i}");
            got.body = serde_json::from_str(&text).unwrap();
        }
        answers.push(got);
    }
    for (i, got) in answers.iter().enumerate().skip(1) {
        assert_eq!(
            got, &answers[0],
            "{} {} via {} differs from {}",
            case.method, case.rel, aliases[i].prefix, aliases[0].prefix
        );
    }
    answers
}

fn aliases(direct: String, kind: &str, run: &str, actor: &str, task: &str) -> Vec<Alias> {
    let mut out = vec![Alias {
        prefix: direct,
        query: "",
    }];
    let suffix = if kind.is_empty() {
        String::new()
    } else {
        format!("/{kind}")
    };
    out.push(Alias {
        prefix: format!("/actor-runs/{run}{suffix}"),
        query: "",
    });
    for p in [
        format!("/acts/{actor}/runs/last{suffix}"),
        format!("/actors/{actor}/runs/last{suffix}"),
        format!("/actor-tasks/{task}/runs/last{suffix}"),
    ] {
        out.push(Alias {
            prefix: p,
            query: "status=SUCCEEDED",
        });
    }
    // The unfiltered last run is the same run too.
    out.push(Alias {
        prefix: format!("/acts/{actor}/runs/last{suffix}"),
        query: "",
    });
    out
}

#[tokio::test]
async fn every_alias_answers_identically_for_reads_and_writes() {
    let server = TestServer::start();
    let actor = built_actor(&server, "aliased").await;
    let task = data_of(
        send(
            &server,
            Method::POST,
            "/actor-tasks",
            Some(json!({"actId": actor, "name": "aliased-task", "input": {"mode": "ok"}})),
        )
        .await,
        201,
    )
    .await;
    let task_id = task["id"].as_str().unwrap().to_string();
    let run = data_of(
        send(
            &server,
            Method::POST,
            &format!("/actor-tasks/{task_id}/runs"),
            None,
        )
        .await,
        201,
    )
    .await;
    let run_id = run["id"].as_str().unwrap().to_string();
    let run = wait_finished(&server, &run_id).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(run["actorTaskId"], task_id.as_str());
    let ds = run["defaultDatasetId"].as_str().unwrap().to_string();
    let kv = run["defaultKeyValueStoreId"].as_str().unwrap().to_string();
    let rq = run["defaultRequestQueueId"].as_str().unwrap().to_string();

    // The run object and its log.
    let run_aliases = aliases(
        format!("/actor-runs/{run_id}"),
        "",
        &run_id,
        &actor,
        &task_id,
    );
    for c in [
        case(Method::GET, "", None),
        case(Method::GET, "?waitForFinish=1", None),
        case(Method::POST, "/abort", None),
        case(Method::POST, "/reboot", None),
    ] {
        same_everywhere(&server, &run_aliases[1..], &c).await;
    }
    let log_aliases = aliases(format!("/logs/{run_id}"), "log", &run_id, &actor, &task_id);
    for c in [
        case(Method::GET, "", None),
        case(Method::GET, "?stream=1", None),
        case(Method::GET, "?download=1&raw=1", None),
    ] {
        let answers = same_everywhere(&server, &log_aliases, &c).await;
        assert!(
            answers[0].body.as_str().unwrap().contains("mode ok task"),
            "{:?}",
            answers[0]
        );
    }

    // Datasets.
    let ds_aliases = aliases(
        format!("/datasets/{ds}"),
        "dataset",
        &run_id,
        &actor,
        &task_id,
    );
    let reads = [
        case(Method::GET, "", None),
        case(Method::GET, "/items", None),
        case(Method::GET, "/items?format=csv", None),
        case(
            Method::GET,
            "/items?format=jsonl&desc=1&offset=1&limit=1",
            None,
        ),
        case(Method::GET, "/items?format=xml&fields=n,mode", None),
        case(Method::GET, "/items?format=html&omit=task", None),
        case(
            Method::GET,
            "/items?clean=1&skipHidden=1&unwind=nothing",
            None,
        ),
        case(Method::GET, "/items?format=bogus", None),
        case(Method::GET, "/statistics", None),
    ];
    for c in &reads {
        same_everywhere(&server, &ds_aliases, c).await;
    }
    let pushed = same_everywhere(
        &server,
        &ds_aliases,
        &case(
            Method::POST,
            "/items",
            Some(r#"[{"n": 100, "mode": "alias-{i}"}]"#),
        ),
    )
    .await;
    assert_eq!(pushed[0].status, 201);
    // Refused writes answer alike and change nothing.
    for body in [r#"[{"n": 1"#, r#"42"#, r#"[1, 2]"#] {
        let refused = same_everywhere(
            &server,
            &ds_aliases,
            &case(Method::POST, "/items", Some(body)),
        )
        .await;
        assert_eq!(refused[0].status, 400, "{body}");
    }
    let items = get_data(&server, &format!("/datasets/{ds}")).await;
    assert_eq!(items["itemCount"], 3 + ds_aliases.len());
    let all: Value = client()
        .get(server.url(&format!("/datasets/{ds}/items")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for i in 0..ds_aliases.len() {
        assert!(
            all.as_array()
                .unwrap()
                .iter()
                .any(|item| item["mode"] == format!("alias-{i}")),
            "item written through alias {i} in {all}"
        );
    }
    for c in &reads {
        same_everywhere(&server, &ds_aliases, c).await;
    }
    same_everywhere(
        &server,
        &ds_aliases,
        &case(
            Method::PUT,
            "",
            Some(r#"{"generalAccess": "ANYONE_WITH_ID_CAN_READ"}"#),
        ),
    )
    .await;

    // Key-value stores.
    let kv_aliases = aliases(
        format!("/key-value-stores/{kv}"),
        "key-value-store",
        &run_id,
        &actor,
        &task_id,
    );
    let reads = [
        case(Method::GET, "", None),
        case(Method::GET, "/keys", None),
        case(Method::GET, "/keys?limit=1&exclusiveStartKey=INPUT", None),
        case(Method::GET, "/keys?prefix=OUT", None),
        case(Method::GET, "/records/OUTPUT", None),
        case(Method::GET, "/records/OUTPUT?attachment=true", None),
        case(Method::GET, "/records/INPUT", None),
        case(Method::GET, "/records/MISSING", None),
        case(Method::GET, "/records/bad%2Fkey", None),
        case(Method::GET, "/records?prefix=IN", None),
    ];
    for c in &reads {
        same_everywhere(&server, &kv_aliases, c).await;
    }
    let output = get_data(&server, &format!("/key-value-stores/{kv}")).await;
    assert_eq!(output["id"], kv.as_str());
    for c in [
        case(Method::PUT, "/records/W{i}", Some(r#"{"by": "alias-{i}"}"#)),
        case(
            Method::POST,
            "/records/P{i}",
            Some(r#"{"by": "alias-{i}"}"#),
        ),
        case(Method::GET, "/records/W{i}", None),
        case(Method::GET, "/records/P{i}", None),
        case(Method::DELETE, "/records/P{i}", None),
        case(Method::GET, "/records/P{i}", None),
        case(Method::PUT, "/records/bad%2Fkey", Some("{}")),
    ] {
        same_everywhere(&server, &kv_aliases, &c).await;
    }
    for i in 0..kv_aliases.len() {
        let record: Value = client()
            .get(server.url(&format!("/key-value-stores/{kv}/records/W{i}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(record, json!({"by": format!("alias-{i}")}));
        let gone = client()
            .get(server.url(&format!("/key-value-stores/{kv}/records/P{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), 404);
    }
    for c in &reads {
        same_everywhere(&server, &kv_aliases, c).await;
    }

    // Request queues.
    let rq_aliases = aliases(
        format!("/request-queues/{rq}"),
        "request-queue",
        &run_id,
        &actor,
        &task_id,
    );
    let listed = get_data(&server, &format!("/request-queues/{rq}/requests")).await;
    let first = listed["items"][0]["id"].as_str().unwrap().to_string();
    let first_path: &'static str = Box::leak(format!("/requests/{first}").into_boxed_str());
    let reads = [
        case(Method::GET, "", None),
        case(Method::GET, "/requests", None),
        case(Method::GET, "/requests?limit=1", None),
        case(Method::GET, "/head", None),
        case(Method::GET, "/head?limit=1&clientKey=reader", None),
        case(Method::GET, first_path, None),
        case(Method::GET, "/requests/nonexistent0000", None),
    ];
    for c in &reads {
        same_everywhere(&server, &rq_aliases, c).await;
    }
    for c in [
        case(
            Method::POST,
            "/requests",
            Some(r#"{"url": "https://example.com/alias-{i}", "uniqueKey": "alias-{i}"}"#),
        ),
        // Already present: answers alike through every prefix.
        case(
            Method::POST,
            "/requests",
            Some(r#"{"url": "https://example.com/first", "uniqueKey": "first"}"#),
        ),
        case(
            Method::POST,
            "/requests/batch",
            Some(r#"[{"url": "https://example.com/b-alias-{i}", "uniqueKey": "b-alias-{i}"}]"#),
        ),
        case(Method::POST, "/requests", Some(r#"{"url": 5}"#)),
    ] {
        same_everywhere(&server, &rq_aliases, &c).await;
    }
    let queue = get_data(&server, &format!("/request-queues/{rq}")).await;
    assert_eq!(queue["totalRequestCount"], 1 + 2 * rq_aliases.len());
    // An idempotent update of one request, and a batch delete of what each prefix added.
    let update_body: &'static str = Box::leak(
        json!({"id": first, "url": "https://example.com/first", "uniqueKey": "first", "method": "GET", "userData": {"seen": true}})
            .to_string()
            .into_boxed_str(),
    );
    for c in [
        case(Method::PUT, first_path, Some(update_body)),
        case(
            Method::DELETE,
            "/requests/batch",
            Some(r#"[{"uniqueKey": "b-alias-{i}"}]"#),
        ),
    ] {
        let answers = same_everywhere(&server, &rq_aliases, &c).await;
        assert!(answers[0].status < 300, "{} {:?}", c.rel, answers[0]);
    }
    let queue = get_data(&server, &format!("/request-queues/{rq}")).await;
    assert_eq!(queue["totalRequestCount"], 1 + rq_aliases.len());
    for c in &reads {
        same_everywhere(&server, &rq_aliases, c).await;
    }
    // Locks: with every request locked by one client, locking the head, prolonging a lock and
    // unlocking answer alike through every prefix.
    let all = client()
        .post(server.url(&format!(
            "/request-queues/{rq}/head/lock?lockSecs=60&limit=25&clientKey=locker"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(all.status(), 201);
    let prolong: &'static str =
        Box::leak(format!("/requests/{first}/lock?lockSecs=120&clientKey=locker").into_boxed_str());
    for c in [
        case(
            Method::POST,
            "/head/lock?lockSecs=60&limit=1&clientKey=locker",
            None,
        ),
        case(Method::PUT, prolong, None),
        case(Method::POST, "/requests/unlock?clientKey=nobody", None),
        case(Method::GET, "/head?clientKey=locker", None),
    ] {
        let answers = same_everywhere(&server, &rq_aliases, &c).await;
        assert!(answers[0].status < 300, "{} {:?}", c.rel, answers[0]);
    }

    // Deleting the storage through the run makes every prefix answer 404 alike.
    let deleted = client()
        .delete(server.url(&format!(
            "/actor-tasks/{task_id}/runs/last/request-queue?status=SUCCEEDED"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = same_everywhere(&server, &rq_aliases, &case(Method::GET, "", None)).await;
    assert_eq!(gone[0].status, 404);
}

#[tokio::test]
async fn last_run_selection_by_status_and_origin() {
    let server = TestServer::start();
    let actor = built_actor(&server, "selector").await;
    let empty = built_actor(&server, "never-run").await;
    let task = data_of(
        send(
            &server,
            Method::POST,
            "/actor-tasks",
            Some(json!({"actId": actor, "name": "selector-task"})),
        )
        .await,
        201,
    )
    .await;
    let task_id = task["id"].as_str().unwrap().to_string();
    let idle_task = data_of(
        send(
            &server,
            Method::POST,
            "/actor-tasks",
            Some(json!({"actId": actor, "name": "idle-task"})),
        )
        .await,
        201,
    )
    .await;
    let idle_task = idle_task["id"].as_str().unwrap().to_string();

    let last_id = |path: String| {
        let server = &server;
        async move {
            get_data(server, &path).await["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    // No runs yet.
    for path in [
        format!("/acts/{actor}/runs/last"),
        format!("/actor-tasks/{task_id}/runs/last/dataset/items"),
        format!("/actors/{empty}/runs/last/log"),
    ] {
        assert_error(
            send(&server, Method::GET, &path, None).await,
            404,
            "record-not-found",
        )
        .await;
    }

    let succeeded = start_actor(&server, &actor, "ok").await;
    assert_eq!(
        wait_finished(&server, &succeeded).await["status"],
        "SUCCEEDED"
    );
    let failed = start_actor(&server, &actor, "fail").await;
    assert_eq!(wait_finished(&server, &failed).await["status"], "FAILED");
    let by_task = data_of(
        send(
            &server,
            Method::POST,
            &format!("/actor-tasks/{task_id}/runs"),
            Some(json!({"mode": "ok"})),
        )
        .await,
        201,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        wait_finished(&server, &by_task).await["status"],
        "SUCCEEDED"
    );
    let running = start_actor(&server, &actor, "sleep").await;
    wait_running(&server, &running).await;
    // The program has written its storages and reached its sleep.
    wait_for_log(&server, &running, "mode sleep").await;

    for prefix in ["acts", "actors"] {
        let p = format!("/{prefix}/{actor}/runs/last");
        assert_eq!(last_id(p.clone()).await, running);
        assert_eq!(last_id(format!("{p}?status=RUNNING")).await, running);
        assert_eq!(last_id(format!("{p}?status=SUCCEEDED")).await, by_task);
        assert_eq!(last_id(format!("{p}?status=FAILED")).await, failed);
        assert_eq!(last_id(format!("{p}?origin=API")).await, running);
        assert_eq!(
            last_id(format!("{p}?status=SUCCEEDED&origin=API")).await,
            by_task
        );
        for query in [
            "status=ABORTED",
            "origin=WEB",
            "status=FAILED&origin=SCHEDULER",
        ] {
            assert_error(
                send(&server, Method::GET, &format!("{p}?{query}"), None).await,
                404,
                "record-not-found",
            )
            .await;
        }
        for query in ["status=bogus", "origin=NOWHERE", "status=SUCCEEDED,FAILED"] {
            assert_error(
                send(&server, Method::GET, &format!("{p}?{query}"), None).await,
                400,
                "invalid-parameter",
            )
            .await;
        }
        // Nested endpoints follow the same selection.
        let ds = get_data(&server, &format!("{p}/dataset?status=FAILED")).await;
        assert_eq!(ds["actRunId"], failed.as_str());
    }
    let t = format!("/actor-tasks/{task_id}/runs/last");
    assert_eq!(last_id(t.clone()).await, by_task);
    assert_eq!(last_id(format!("{t}?status=SUCCEEDED")).await, by_task);
    for path in [
        format!("{t}?status=FAILED"),
        format!("/actor-tasks/{idle_task}/runs/last"),
        format!("/actor-tasks/{idle_task}/runs/last/key-value-store/records/OUTPUT"),
        "/actor-tasks/nonexistent-task/runs/last".to_string(),
        "/acts/nonexistent/runs/last/dataset".to_string(),
    ] {
        assert_error(
            send(&server, Method::GET, &path, None).await,
            404,
            "record-not-found",
        )
        .await;
    }
    // A token is always required, whatever follows `runs/last`.
    for path in [
        format!("/acts/{actor}/runs/last"),
        format!("/actors/{actor}/runs/last/dataset/items?status=SUCCEEDED"),
        format!("/acts/{actor}/runs/last/log"),
        format!("/actor-tasks/{task_id}/runs/last/key-value-store/records/OUTPUT"),
        format!("/actor-tasks/{task_id}/runs/last/request-queue/head"),
    ] {
        let r = client()
            .get(format!("{}{path}", server.api()))
            .send()
            .await
            .unwrap();
        assert_error(r, 401, "token-not-provided").await;
    }

    // waitForFinish, abort and the log through `runs/last` act on the selected run.
    let p = format!("/acts/{actor}/runs/last");
    let still = get_data(&server, &format!("{p}?status=RUNNING&waitForFinish=1")).await;
    assert_eq!(still["status"], "RUNNING");
    let log = client()
        .get(server.url(&format!("{p}/log?status=RUNNING")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log.contains("mode sleep"), "{log}");
    let aborted = data_of(
        send(
            &server,
            Method::POST,
            &format!("{p}/abort?status=RUNNING"),
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(aborted["id"], running.as_str());
    assert_eq!(wait_finished(&server, &running).await["status"], "ABORTED");
    assert_eq!(last_id(format!("{p}?status=ABORTED")).await, running);
    assert_error(
        send(&server, Method::GET, &format!("{p}?status=RUNNING"), None).await,
        404,
        "record-not-found",
    )
    .await;
    // Reboot needs a RUNNING run.
    assert_error(
        send(&server, Method::POST, &format!("{p}/reboot"), None).await,
        400,
        "job-finished",
    )
    .await;
}

#[tokio::test]
async fn tasks_crud_input_and_runs() {
    let server = TestServer::start();
    let actor = built_actor(&server, "tasked").await;
    let me = get_data(&server, "/users/me").await;
    let username = me["username"].as_str().unwrap().to_string();

    // Refused creates change nothing.
    for (body, status, kind) in [
        (json!({"name": "no-actor"}), 400, "invalid-input"),
        (json!({"actId": 5}), 400, "invalid-input"),
        (
            json!({"actId": actor, "name": "Bad Name"}),
            400,
            "invalid-input",
        ),
        (
            json!({"actId": actor, "options": {"memoryMbytes": 100}}),
            400,
            "invalid-input",
        ),
        (
            json!({"actId": actor, "options": {"timeoutSecs": "x"}}),
            400,
            "invalid-input",
        ),
        (json!({"actId": actor, "options": 7}), 400, "invalid-input"),
        (
            json!({"actId": actor, "input": [1, 2]}),
            400,
            "invalid-input",
        ),
        (json!({"actId": "nonexistent"}), 404, "record-not-found"),
        (json!([1]), 400, "invalid-input"),
    ] {
        assert_error(
            send(&server, Method::POST, "/actor-tasks", Some(body.clone())).await,
            status,
            kind,
        )
        .await;
    }
    let bad_json = client()
        .post(server.url("/actor-tasks"))
        .header("content-type", "application/json")
        .body("{\"actId\": ")
        .send()
        .await
        .unwrap();
    assert_error(bad_json, 400, "invalid-input").await;
    assert_eq!(get_data(&server, "/actor-tasks").await["total"], 0);
    let anonymous = client()
        .get(format!("{}/actor-tasks", server.api()))
        .send()
        .await
        .unwrap();
    assert_error(anonymous, 401, "token-not-provided").await;

    let created = send(
        &server,
        Method::POST,
        "/actor-tasks",
        Some(json!({
            "actId": format!("{username}~tasked"),
            "name": "my-task",
            "title": "My task",
            "options": {"timeoutSecs": 77, "memoryMbytes": 256},
            "input": {"mode": "ok", "keep": 1},
        })),
    )
    .await;
    assert!(created.headers()["location"]
        .to_str()
        .unwrap()
        .contains("/v2/actor-tasks/"));
    let task = data_of(created, 201).await;
    let id = task["id"].as_str().unwrap().to_string();
    assert_eq!(task["actId"], actor.as_str());
    assert_eq!(task["title"], "My task");
    assert_eq!(
        task["options"],
        json!({"timeoutSecs": 77, "memoryMbytes": 256})
    );
    assert_eq!(task["stats"]["totalRuns"], 0);
    assert_error(
        send(
            &server,
            Method::POST,
            "/actor-tasks",
            Some(json!({"actId": actor, "name": "my-task"})),
        )
        .await,
        409,
        "name-not-unique",
    )
    .await;
    // Without a name: `{actor}-task`, then numbered.
    for expected in ["tasked-task", "tasked-task-2"] {
        let t = data_of(
            send(
                &server,
                Method::POST,
                "/actor-tasks",
                Some(json!({"actId": actor})),
            )
            .await,
            201,
        )
        .await;
        assert_eq!(t["name"], expected);
    }
    // By id, `username~name`, `~name`, bare name.
    for reference in [
        id.clone(),
        format!("{username}~my-task"),
        format!("{username}%7Emy-task"),
        "~my-task".to_string(),
        "my-task".to_string(),
    ] {
        assert_eq!(
            get_data(&server, &format!("/actor-tasks/{reference}")).await["id"],
            id.as_str(),
            "{reference}"
        );
    }
    assert_error(
        send(&server, Method::GET, "/actor-tasks/nonexistent", None).await,
        404,
        "record-not-found",
    )
    .await;
    let list = get_data(&server, "/actor-tasks?desc=1&limit=2").await;
    assert_eq!(
        (list["total"].as_u64(), list["count"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(list["items"][1]["name"], "tasked-task");
    assert_eq!(list["items"][0]["actName"], "tasked");

    // Update: partial, validated first.
    for body in [
        json!({"name": "x"}),
        json!({"options": {"memoryMbytes": 3}}),
        json!({"input": "text"}),
        json!({"name": "tasked-task"}),
    ] {
        let r = send(
            &server,
            Method::PUT,
            &format!("/actor-tasks/{id}"),
            Some(body),
        )
        .await;
        assert!(r.status() == 400 || r.status() == 409, "{}", r.status());
    }
    let same = get_data(&server, &format!("/actor-tasks/{id}")).await;
    assert_eq!(same["name"], "my-task");
    assert_eq!(same["options"], task["options"]);
    let updated = data_of(
        send(
            &server,
            Method::PUT,
            &format!("/actor-tasks/{id}"),
            Some(
                json!({"name": "renamed-task", "options": {"timeoutSecs": 60}, "description": "d"}),
            ),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(updated["name"], "renamed-task");
    assert_eq!(
        updated["options"],
        json!({"timeoutSecs": 60, "memoryMbytes": 256})
    );
    assert_eq!(updated["description"], "d");
    assert_eq!(updated["title"], "My task");

    // Input: bare object, merged on PUT.
    let input: Value = client()
        .get(server.url(&format!("/actor-tasks/{id}/input")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(input, json!({"mode": "ok", "keep": 1}));
    let r = send(
        &server,
        Method::PUT,
        &format!("/actor-tasks/{id}/input"),
        Some(json!({"extra": true})),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"mode": "ok", "keep": 1, "extra": true})
    );
    assert_error(
        send(
            &server,
            Method::PUT,
            &format!("/actor-tasks/{id}/input"),
            Some(json!([1])),
        )
        .await,
        400,
        "invalid-input",
    )
    .await;

    // Run: body fields over the task input; query options over task options over Actor defaults.
    for bad in ["[1]", "\"text\"", "{\"mode\": "] {
        let r = client()
            .post(server.url(&format!("/actor-tasks/{id}/runs")))
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = send(
        &server,
        Method::POST,
        &format!("/actor-tasks/{id}/runs?memory=512"),
        Some(json!({"note": "override"})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let run = r.json::<Value>().await.unwrap()["data"].clone();
    let run_id = run["id"].as_str().unwrap().to_string();
    assert_eq!(run["actorTaskId"], id.as_str());
    assert_eq!(run["options"]["memoryMbytes"], 512);
    assert_eq!(run["options"]["timeoutSecs"], 60);
    assert_eq!(run["options"]["build"], "latest");
    let done = wait_finished(&server, &run_id).await;
    assert_eq!(done["status"], "SUCCEEDED");
    let output: Value = client()
        .get(server.url(&format!(
            "/actor-runs/{run_id}/key-value-store/records/OUTPUT"
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        output,
        json!({"input": {"mode": "ok", "keep": 1, "extra": true, "note": "override"}, "task": id})
    );

    // Sync variants.
    let r = send(
        &server,
        Method::POST,
        &format!("/actor-tasks/{id}/run-sync"),
        Some(json!({"keep": 2})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let sync_run = r.headers()["x-apify-run-id"].to_str().unwrap().to_string();
    let output: Value = r.json().await.unwrap();
    assert_eq!(output["input"]["keep"], 2);
    assert_eq!(output["task"], id.as_str());
    let r = client()
        .get(server.url(&format!(
            "/actor-tasks/{id}/run-sync-get-dataset-items?format=csv&fields=n"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.text().await.unwrap().trim_start_matches('\u{feff}'),
        "n\n0\n1\n2\n"
    );
    let r = send(
        &server,
        Method::POST,
        &format!("/actor-tasks/{id}/run-sync"),
        Some(json!({"mode": "fail"})),
    )
    .await;
    assert_error(r, 400, "run-failed").await;

    // The task's runs.
    let runs = get_data(&server, &format!("/actor-tasks/{id}/runs?desc=1")).await;
    assert_eq!(runs["total"], 4);
    assert_eq!(runs["items"][2]["id"], sync_run.as_str());
    assert!(runs["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["actorTaskId"] == id.as_str()));
    let failed = get_data(&server, &format!("/actor-tasks/{id}/runs?status=FAILED")).await;
    assert_eq!(failed["total"], 1);
    assert_eq!(
        get_data(&server, &format!("/actor-tasks/{id}")).await["stats"]["totalRuns"],
        4
    );
    assert_eq!(
        get_data(
            &server,
            &format!("/actor-tasks/{id}/runs/last?status=SUCCEEDED")
        )
        .await["id"],
        runs["items"][1]["id"]
    );
    // Actor runs list them too (they are runs of the Actor).
    assert_eq!(
        get_data(&server, &format!("/acts/{actor}/runs")).await["total"],
        4
    );
    let hooks = get_data(&server, &format!("/actor-tasks/{id}/webhooks")).await;
    assert_eq!(
        (
            hooks["total"].as_u64(),
            hooks["items"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );

    // Delete: the task goes, its runs stay.
    let r = send(&server, Method::DELETE, &format!("/actor-tasks/{id}"), None).await;
    assert_eq!(r.status(), 204);
    assert_error(
        send(&server, Method::GET, &format!("/actor-tasks/{id}"), None).await,
        404,
        "record-not-found",
    )
    .await;
    assert_eq!(
        get_data(&server, &format!("/actor-runs/{run_id}")).await["actorTaskId"],
        id.as_str()
    );
}

#[tokio::test]
async fn other_users_reach_neither_tasks_nor_last_runs() {
    let server = TestServer::start();
    let bob = server.add_user("bob");
    let as_bob = |method: Method, path: String, body: Option<Value>| {
        let mut request = client()
            .request(method, format!("{}{path}", server.api()))
            .bearer_auth(&bob);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let actor = built_actor(&server, "private-one").await;
    let task = data_of(
        send(
            &server,
            Method::POST,
            "/actor-tasks",
            Some(json!({"actId": actor, "name": "private-task", "input": {"mode": "ok"}})),
        )
        .await,
        201,
    )
    .await;
    let task_id = task["id"].as_str().unwrap().to_string();
    let run = data_of(
        send(
            &server,
            Method::POST,
            &format!("/actor-tasks/{task_id}/runs?waitForFinish=60"),
            None,
        )
        .await,
        201,
    )
    .await;
    wait_finished(&server, run["id"].as_str().unwrap()).await;

    for (method, path, body) in [
        (Method::GET, format!("/actor-tasks/{task_id}"), None),
        (
            Method::PUT,
            format!("/actor-tasks/{task_id}"),
            Some(json!({"name": "taken-over"})),
        ),
        (Method::DELETE, format!("/actor-tasks/{task_id}"), None),
        (Method::GET, format!("/actor-tasks/{task_id}/input"), None),
        (
            Method::PUT,
            format!("/actor-tasks/{task_id}/input"),
            Some(json!({"mode": "x"})),
        ),
        (Method::POST, format!("/actor-tasks/{task_id}/runs"), None),
        (Method::GET, format!("/actor-tasks/{task_id}/runs"), None),
        (
            Method::POST,
            "/actor-tasks".to_string(),
            Some(json!({"actId": actor, "name": "mine"})),
        ),
    ] {
        let r = as_bob(method.clone(), path.clone(), body).await.unwrap();
        assert_error(r, 403, "insufficient-permissions").await;
    }
    // "Last" is always among the caller's own runs: Bob has none.
    for path in [
        format!("/acts/{actor}/runs/last"),
        format!("/acts/{actor}/runs/last/dataset/items"),
        format!("/actor-tasks/{task_id}/runs/last/log"),
    ] {
        let r = as_bob(Method::GET, path, None).await.unwrap();
        assert_error(r, 404, "record-not-found").await;
    }
    let list: Value = as_bob(Method::GET, "/actor-tasks".into(), None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"]["total"], 0);
    // Nothing changed.
    let same = get_data(&server, &format!("/actor-tasks/{task_id}")).await;
    assert_eq!(same["name"], "private-task");
    assert_eq!(same["input"], json!({"mode": "ok"}));
    assert_eq!(same["stats"]["totalRuns"], 1);
}

/// `runs/last` answers of finished runs are cached by the server: every change to the Actor's
/// runs must show in the very next request — a new run that just finished, a changed status
/// message, a deleted run, a deleted Actor — and a cached answer is byte for byte the answer
/// computed from storage.
#[tokio::test]
async fn last_run_answers_follow_every_change() {
    let server = TestServer::start();
    let actor = common::actors::built_actor(&server, "cache-follow", "exit 0\n").await;
    let last = format!("/acts/{actor}/runs/last?status=SUCCEEDED");
    let raw = |path: String| {
        let server = &server;
        async move {
            let r = send(server, Method::GET, &path, None).await;
            let status = r.status().as_u16();
            let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
            (status, content_type, r.bytes().await.unwrap())
        }
    };
    let run = |mode: &'static str| {
        let server = &server;
        let actor = &actor;
        async move {
            let id = start_run(
                server,
                &format!("/acts/{actor}/runs"),
                json!({ "mode": mode }),
            )
            .await["id"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(wait_finished(server, &id).await["status"], "SUCCEEDED");
            id
        }
    };
    assert_error(
        send(&server, Method::GET, &last, None).await,
        404,
        "record-not-found",
    )
    .await;
    let first = run("a").await;
    assert_eq!(get_data(&server, &last).await["id"], first.as_str());
    // Served again (from the cache): the same bytes as the answer by name, which is not cached.
    let cached = raw(last.clone()).await;
    let by_name = raw("/acts/~cache-follow/runs/last?status=SUCCEEDED".to_string()).await;
    assert_eq!(cached.0, 200);
    assert_eq!(cached, by_name);
    assert_eq!(cached.1, "application/json");

    // A changed run.
    data_of(
        send(
            &server,
            Method::PUT,
            &format!("/actor-runs/{first}"),
            Some(json!({"statusMessage": "changed"})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(get_data(&server, &last).await["statusMessage"], "changed");
    // A new run, visible as soon as it is seen finished.
    let second = run("b").await;
    assert_eq!(get_data(&server, &last).await["id"], second.as_str());
    assert_eq!(get_data(&server, &last).await["id"], second.as_str());
    // Filters are part of what is cached.
    assert_error(
        send(&server, Method::GET, &format!("{last}&origin=WEB"), None).await,
        404,
        "record-not-found",
    )
    .await;
    assert_eq!(
        get_data(&server, &format!("{last}&origin=API")).await["id"],
        second.as_str()
    );
    // Bad parameters are refused even when the answer is cached.
    assert_error(
        send(
            &server,
            Method::GET,
            &format!("{last}&waitForFinish=x"),
            None,
        )
        .await,
        400,
        "invalid-parameter",
    )
    .await;
    // A deleted run.
    let r = send(
        &server,
        Method::DELETE,
        &format!("/actor-runs/{second}"),
        None,
    )
    .await;
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(get_data(&server, &last).await["id"], first.as_str());
    // Another user's `runs/last` of the same Actor is their own (none).
    let other = server.add_user("cache-other");
    assert_error(
        send(&server.as_user(&other), Method::GET, &last, None).await,
        404,
        "record-not-found",
    )
    .await;
    // A deleted Actor.
    let r = send(&server, Method::DELETE, &format!("/acts/{actor}"), None).await;
    assert_eq!(r.status().as_u16(), 204);
    assert_error(
        send(&server, Method::GET, &last, None).await,
        404,
        "record-not-found",
    )
    .await;
}
