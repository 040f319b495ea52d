//! Webhooks, webhook dispatches and schedules through the real binary. A small HTTP receiver on
//! 127.0.0.1 in the test records what the server POSTs; everything that happens in the
//! background is awaited by polling with a generous deadline.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use common::actors::{built_actor as shell_actor, create_actor, wait_run as wait_finished};
use common::{assert_error, client, data_of, eventually, get_data, post_data, send, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Receiver

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// Records every request; answers 500 to the first `fail_first` ones (then 200), or always 500
/// while `fail_first` is `usize::MAX`.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<parking_lot_free::Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicUsize>,
    origin: String,
}

mod parking_lot_free {
    /// `std::sync::Mutex` without poisoning noise.
    #[derive(Default)]
    pub struct Mutex<T>(std::sync::Mutex<T>);
    impl<T> Mutex<T> {
        pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut receiver = Receiver {
            origin: format!("http://{}", listener.local_addr().unwrap()),
            ..Default::default()
        };
        let state = receiver.clone();
        let app = axum::Router::new()
            .fallback(record)
            .with_state(state.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        receiver.got = state.got;
        receiver
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    fn on(&self, path: &str) -> Vec<Received> {
        self.got
            .lock()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` received at least `n` requests.
    async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        eventually(&format!("{n} requests to {path}"), || async {
            let got = self.on(path);
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

async fn record(
    State(receiver): State<Receiver>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = {
        let mut got = receiver.got.lock();
        got.push(Received {
            path: uri.path().to_string(),
            headers,
            body,
        });
        got.iter().filter(|r| r.path == uri.path()).count()
    };
    if n <= receiver.fail_first.load(Ordering::SeqCst) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

// ---------------------------------------------------------------------------------------------
// API helpers

async fn wait_dispatch(server: &TestServer, id: &str, status: &str) -> Value {
    eventually(&format!("dispatch {id} {status}"), || async {
        let d = get_data(server, &format!("/webhook-dispatches/{id}")).await;
        (d["status"] == status).then_some(d)
    })
    .await
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A server with extra arguments (and its data dir, removed when dropped).
fn start_with(args: &[&str]) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), args);
    (dir, server)
}

async fn count(server: &TestServer, path: &str) -> u64 {
    get_data(server, path).await["total"].as_u64().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn webhook_crud_validation_and_access() {
    let server = TestServer::start();
    let actor = shell_actor(&server, "hooked", "exit 0").await;
    let task = post_data(
        &server,
        "/actor-tasks",
        json!({"actId": actor, "name": "hooked-task"}),
        201,
    )
    .await;
    let task_id = task["id"].as_str().unwrap().to_string();

    let created = post_data(
        &server,
        "/webhooks",
        json!({
            "eventTypes": ["ACTOR.RUN.SUCCEEDED", "ACTOR.RUN.FAILED"],
            "condition": {"actorId": "~hooked"},
            "requestUrl": "http://127.0.0.1:9/hook",
            "description": "first",
            "idempotencyKey": "key-1",
        }),
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 17);
    // Name references are stored as ids.
    assert_eq!(created["condition"], json!({"actorId": actor}));
    assert_eq!(created["isAdHoc"], false);
    assert_eq!(created["ignoreSslErrors"], false);
    assert_eq!(created["doNotRetry"], false);
    assert_eq!(created["shouldInterpolateStrings"], false);
    assert_eq!(created["stats"]["totalDispatches"], 0);
    assert!(created["lastDispatch"].is_null());
    assert!(created["createdAt"].as_str().unwrap().ends_with('Z'));

    // Same idempotency key: the same webhook, nothing new.
    let again = post_data(
        &server,
        "/webhooks",
        json!({
            "eventTypes": ["ACTOR.RUN.CREATED"],
            "condition": {"actorId": actor},
            "requestUrl": "http://127.0.0.1:9/other",
            "idempotencyKey": "key-1",
        }),
        200,
    )
    .await;
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["requestUrl"], "http://127.0.0.1:9/hook");

    let on_task = post_data(
        &server,
        "/webhooks",
        json!({
            "eventTypes": ["ACTOR.RUN.SUCCEEDED"],
            "condition": {"actorTaskId": task_id},
            "requestUrl": "https://example.com/task",
        }),
        201,
    )
    .await;
    let task_hook = on_task["id"].as_str().unwrap().to_string();

    assert_eq!(get_data(&server, &format!("/webhooks/{id}")).await, created);
    let all = get_data(&server, "/webhooks").await;
    assert_eq!(all["total"], 2);
    assert_eq!(all["items"][0]["id"], id.as_str());
    let desc = get_data(&server, "/webhooks?desc=1&limit=1").await;
    assert_eq!(desc["items"][0]["id"], task_hook.as_str());
    assert_eq!(desc["count"], 1);
    for prefix in ["acts", "actors"] {
        let of_actor = get_data(&server, &format!("/{prefix}/{actor}/webhooks")).await;
        assert_eq!(of_actor["total"], 1);
        assert_eq!(of_actor["items"][0]["id"], id.as_str());
    }
    let of_task = get_data(&server, &format!("/actor-tasks/{task_id}/webhooks")).await;
    assert_eq!(of_task["total"], 1);
    assert_eq!(of_task["items"][0]["id"], task_hook.as_str());

    // Partial update; an empty condition (what the Python client sends) changes nothing.
    let updated = data_of(
        send(
            &server,
            Method::PUT,
            &format!("/webhooks/{id}"),
            Some(json!({"doNotRetry": true, "condition": {}, "payloadTemplate": "{\"a\": {{eventType}}}"})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(updated["doNotRetry"], true);
    assert_eq!(updated["description"], "first");
    assert_eq!(updated["condition"], json!({"actorId": actor}));
    assert_eq!(updated["payloadTemplate"], "{\"a\": {{eventType}}}");

    // Bad input: 400 and nothing stored or changed.
    let before = get_data(&server, &format!("/webhooks/{id}")).await;
    let good = json!({
        "eventTypes": ["ACTOR.RUN.SUCCEEDED"],
        "condition": {"actorId": actor},
        "requestUrl": "http://127.0.0.1:9/hook",
    });
    // (body, error type, whether a PUT of the same body is refused too)
    let mut cases: Vec<(Value, &str, bool)> = Vec::new();
    for (field, value) in [
        ("eventTypes", json!(["ACTOR.RUN.EXPLODED"])),
        ("eventTypes", json!([])),
        ("eventTypes", json!("ACTOR.RUN.SUCCEEDED")),
        ("requestUrl", json!("not a url")),
        ("requestUrl", json!("ftp://example.com/x")),
        ("requestUrl", json!(42)),
        ("condition", json!("actor")),
        ("condition", json!({"actorId": 5})),
        ("payloadTemplate", json!("{\"a\": }")),
        ("payloadTemplate", json!(7)),
        ("headersTemplate", json!("[1, 2]")),
        ("headersTemplate", json!("{\"bad header\": \"x\"}")),
        ("doNotRetry", json!("yes")),
    ] {
        let mut body = good.clone();
        body[field] = value;
        cases.push((body, "invalid-input", true));
    }
    let mut empty_condition = good.clone();
    empty_condition["condition"] = json!({});
    cases.push((empty_condition, "invalid-input", false));
    let mut no_url = good.clone();
    no_url.as_object_mut().unwrap().remove("requestUrl");
    cases.push((no_url, "invalid-input", false));
    let mut bad_key = good.clone();
    bad_key["idempotencyKey"] = json!(12);
    cases.push((bad_key, "invalid-idempotency-key", false));
    for (body, error_type, put_too) in cases {
        let response = send(&server, Method::POST, "/webhooks", Some(body.clone())).await;
        assert_error(response, 400, error_type).await;
        if put_too {
            let response = send(&server, Method::PUT, &format!("/webhooks/{id}"), Some(body)).await;
            assert_error(response, 400, error_type).await;
        }
    }
    for body in [
        json!({"eventTypes": ["NOPE"]}),
        json!({"requestUrl": "nope"}),
        json!({"headersTemplate": "{"}),
        json!([1]),
    ] {
        let response = send(&server, Method::PUT, &format!("/webhooks/{id}"), Some(body)).await;
        assert_error(response, 400, "invalid-input").await;
    }
    let after = get_data(&server, &format!("/webhooks/{id}")).await;
    assert_eq!(after["eventTypes"], before["eventTypes"]);
    assert_eq!(after["requestUrl"], before["requestUrl"]);
    assert_eq!(after["payloadTemplate"], before["payloadTemplate"]);
    let response = send(
        &server,
        Method::POST,
        "/webhooks",
        Some(json!({"eventTypes": ["ACTOR.RUN.SUCCEEDED"], "condition": {"actorId": "nope12345678901234"}, "requestUrl": "http://x.example/"})),
    )
    .await;
    assert_error(response, 404, "record-not-found").await;
    let raw = client()
        .post(server.url("/webhooks"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(raw, 400, "invalid-input").await;
    assert_eq!(count(&server, "/webhooks").await, 2);

    // Other users see nothing of it; anonymous callers are asked for a token.
    let eve = server.add_user("eve");
    let as_eve = |method: Method, path: String| {
        client()
            .request(method, format!("{}{path}", server.api()))
            .bearer_auth(&eve)
            .json(&json!({"description": "mine now"}))
            .send()
    };
    for (method, path) in [
        (Method::GET, format!("/webhooks/{id}")),
        (Method::PUT, format!("/webhooks/{id}")),
        (Method::DELETE, format!("/webhooks/{id}")),
        (Method::POST, format!("/webhooks/{id}/test")),
        (Method::GET, format!("/webhooks/{id}/dispatches")),
    ] {
        assert_error(
            as_eve(method, path).await.unwrap(),
            403,
            "insufficient-permissions",
        )
        .await;
    }
    let listed: Value = as_eve(Method::GET, "/webhooks".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"]["total"], 0);
    let response = client()
        .get(format!("{}/webhooks", server.api()))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "token-not-provided").await;
    assert_eq!(
        get_data(&server, &format!("/webhooks/{id}")).await["description"],
        "first"
    );

    // Delete.
    let response = send(&server, Method::DELETE, &format!("/webhooks/{id}"), None).await;
    assert_eq!(response.status(), 204);
    let response = send(&server, Method::GET, &format!("/webhooks/{id}"), None).await;
    assert_error(response, 404, "record-not-found").await;
    let response = send(&server, Method::GET, "/webhook-dispatches/nope", None).await;
    assert_error(response, 404, "record-not-found").await;
    assert_eq!(count(&server, "/webhooks").await, 1);
}

#[tokio::test]
async fn run_events_are_delivered_with_their_payloads() {
    let receiver = Receiver::start().await;
    let server = TestServer::start();
    let ok = shell_actor(&server, "ok-actor", "echo fine").await;
    let failing = shell_actor(&server, "failing-actor", "exit 3").await;

    let plain = post_data(
        &server,
        "/webhooks",
        json!({
            "eventTypes": ["ACTOR.RUN.CREATED", "ACTOR.RUN.SUCCEEDED", "ACTOR.RUN.FAILED"],
            "condition": {"actorId": ok},
            "requestUrl": receiver.url("/plain"),
        }),
        201,
    )
    .await;
    post_data(
        &server,
        "/webhooks",
        json!({
            "eventTypes": ["ACTOR.RUN.SUCCEEDED"],
            "condition": {"actorId": ok},
            "requestUrl": receiver.url("/templated"),
            "payloadTemplate": "{\"run\": {{resource.id}}, \"status\": {{resource.status}}, \"dataset\": {{resource.defaultDatasetId}}, \"type\": {{eventType}}, \"text\": \"run {{resource.id}} done\", \"missing\": {{resource.nothing}}}",
            "headersTemplate": "{\"X-Custom\": \"secret-{{eventType}}\", \"X-Number\": 5, \"Content-Type\": \"text/plain\"}",
            "shouldInterpolateStrings": true,
        }),
        201,
    )
    .await;
    post_data(
        &server,
        "/webhooks",
        json!({
            "eventTypes": ["ACTOR.RUN.FAILED"],
            "condition": {"actorId": failing},
            "requestUrl": receiver.url("/failed"),
        }),
        201,
    )
    .await;

    let run = post_data(&server, &format!("/acts/{ok}/runs"), json!({}), 201).await;
    let run_id = run["id"].as_str().unwrap().to_string();
    let finished = wait_finished(&server, &run_id).await;
    assert_eq!(finished["status"], "SUCCEEDED");

    let got = receiver.wait_for("/plain", 2).await;
    let created = got
        .iter()
        .find(|r| r.body["eventType"] == "ACTOR.RUN.CREATED")
        .expect("CREATED delivered");
    let succeeded = got
        .iter()
        .find(|r| r.body["eventType"] == "ACTOR.RUN.SUCCEEDED")
        .expect("SUCCEEDED delivered");
    for r in [created, succeeded] {
        let b = &r.body;
        assert_eq!(b["userId"], run["userId"]);
        assert_eq!(b["eventData"]["actorId"], ok.as_str());
        assert_eq!(b["eventData"]["actorRunId"], run_id.as_str());
        assert_eq!(b["resource"]["id"], run_id.as_str());
        assert!(b["createdAt"].as_str().unwrap().ends_with('Z'));
        assert!(header(r, "content-type").starts_with("application/json"));
        assert_eq!(header(r, "x-apify-webhook"), plain["id"].as_str().unwrap());
        assert_eq!(header(r, "x-apify-webhook-dispatch-id").len(), 17);
    }
    assert_eq!(created.body["resource"]["status"], "READY");
    assert_eq!(succeeded.body["resource"]["status"], "SUCCEEDED");
    assert_eq!(
        succeeded.body["resource"]["defaultDatasetId"],
        finished["defaultDatasetId"]
    );

    let templated = receiver.wait_for("/templated", 1).await;
    let t = &templated[0];
    assert_eq!(
        t.body,
        json!({
            "run": run_id,
            "status": "SUCCEEDED",
            "dataset": finished["defaultDatasetId"],
            "type": "ACTOR.RUN.SUCCEEDED",
            "text": format!("run {run_id} done"),
            "missing": null,
        })
    );
    assert_eq!(header(t, "x-custom"), "secret-ACTOR.RUN.SUCCEEDED");
    assert_eq!(header(t, "x-number"), "5");
    // Templates cannot override troupe's own headers.
    assert!(header(t, "content-type").starts_with("application/json"));

    // The dispatch records: SUCCEEDED with the call, on the webhook too.
    let dispatch_id = header(succeeded, "x-apify-webhook-dispatch-id").to_string();
    let d = wait_dispatch(&server, &dispatch_id, "SUCCEEDED").await;
    assert_eq!(d["webhookId"], plain["id"]);
    assert_eq!(d["eventType"], "ACTOR.RUN.SUCCEEDED");
    assert_eq!(d["eventData"]["actorRunId"], run_id.as_str());
    assert_eq!(d["webhook"]["requestUrl"], receiver.url("/plain"));
    let calls = d["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["responseStatus"], 200);
    assert!(calls[0]["errorMessage"].is_null());
    assert!(calls[0]["finishedAt"].as_str().unwrap().ends_with('Z'));
    assert!(d.get("request").is_none(), "rendered requests stay private");
    let plain_id = plain["id"].as_str().unwrap().to_string();
    let of_plain = eventually("the plain webhook's dispatches", || async {
        let page = get_data(&server, &format!("/webhooks/{plain_id}/dispatches")).await;
        (page["total"] == 2).then_some(page)
    })
    .await;
    assert!(of_plain["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["webhookId"] == plain_id.as_str()));
    let hook = eventually("the webhook's last dispatch", || async {
        let w = get_data(&server, &format!("/webhooks/{plain_id}")).await;
        (w["stats"]["totalDispatches"] == 2 && w["lastDispatch"]["status"] == "SUCCEEDED")
            .then_some(w)
    })
    .await;
    assert!(hook["lastDispatch"]["finishedAt"].is_string());
    assert!(count(&server, "/webhook-dispatches").await >= 3);

    // A failing run: only the FAILED webhook of that Actor hears it.
    let run = post_data(&server, &format!("/acts/{failing}/runs"), json!({}), 201).await;
    let failed_id = run["id"].as_str().unwrap().to_string();
    assert_eq!(wait_finished(&server, &failed_id).await["status"], "FAILED");
    let got = receiver.wait_for("/failed", 1).await;
    assert_eq!(got[0].body["eventType"], "ACTOR.RUN.FAILED");
    assert_eq!(got[0].body["resource"]["status"], "FAILED");
    assert_eq!(got[0].body["resource"]["exitCode"], 3);
    assert_eq!(receiver.on("/plain").len(), 2);
}

#[tokio::test]
async fn ad_hoc_and_task_webhooks() {
    let receiver = Receiver::start().await;
    let server = TestServer::start();
    let actor = shell_actor(&server, "adhoc-actor", "exit 0").await;

    let hooks = json!([{
        "eventTypes": ["ACTOR.RUN.SUCCEEDED"],
        "requestUrl": receiver.url("/adhoc"),
        "payloadTemplate": "{\"id\": {{resource.id}}, \"origin\": {{resource.meta.origin}}}",
    }]);
    let encoded = base64::engine::general_purpose::STANDARD.encode(hooks.to_string());
    let run = post_data(
        &server,
        &format!("/acts/{actor}/runs?webhooks={}", urlencode(&encoded)),
        json!({}),
        201,
    )
    .await;
    let run_id = run["id"].as_str().unwrap().to_string();
    let got = receiver.wait_for("/adhoc", 1).await;
    assert_eq!(got[0].body, json!({"id": run_id, "origin": "API"}));
    let listed = get_data(&server, "/webhooks").await;
    let ad_hoc = &listed["items"][0];
    assert_eq!(ad_hoc["isAdHoc"], true);
    assert_eq!(ad_hoc["condition"], json!({"actorRunId": run_id}));

    // A bad `webhooks` parameter starts nothing.
    let runs_before = count(&server, &format!("/acts/{actor}/runs")).await;
    for bad in [
        "%%%".to_string(),
        base64::engine::general_purpose::STANDARD.encode("{\"not\": \"an array\"}"),
        base64::engine::general_purpose::STANDARD
            .encode(json!([{"eventTypes": ["ACTOR.RUN.SUCCEEDED"]}]).to_string()),
        base64::engine::general_purpose::STANDARD.encode(
            json!([{"eventTypes": ["NOPE"], "requestUrl": "http://x.example/"}]).to_string(),
        ),
    ] {
        let response = send(
            &server,
            Method::POST,
            &format!("/acts/{actor}/runs?webhooks={}", urlencode(&bad)),
            Some(json!({})),
        )
        .await;
        assert_eq!(response.status(), 400, "{bad}");
    }
    assert_eq!(
        count(&server, &format!("/acts/{actor}/runs")).await,
        runs_before
    );
    assert_eq!(count(&server, "/webhooks").await, 1);

    // Task webhooks hear the task's runs (and the Actor's webhooks hear them too).
    let task = post_data(
        &server,
        "/actor-tasks",
        json!({"actId": actor, "name": "adhoc-task"}),
        201,
    )
    .await;
    let task_id = task["id"].as_str().unwrap().to_string();
    post_data(
        &server,
        "/webhooks",
        json!({
            "eventTypes": ["ACTOR.RUN.SUCCEEDED"],
            "condition": {"actorTaskId": task_id},
            "requestUrl": receiver.url("/task"),
        }),
        201,
    )
    .await;
    let run = post_data(
        &server,
        &format!("/actor-tasks/{task_id}/runs"),
        json!({}),
        201,
    )
    .await;
    assert_eq!(run["meta"]["origin"], "API");
    assert_eq!(run["meta"]["clientIp"], "127.0.0.1", "{run}");
    let got = receiver.wait_for("/task", 1).await;
    assert_eq!(got[0].body["eventData"]["actorTaskId"], task_id.as_str());
    assert_eq!(got[0].body["resource"]["id"], run["id"]);
    // The ad-hoc webhook belonged to the first run only.
    assert_eq!(receiver.on("/adhoc").len(), 1);
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn failed_calls_are_retried_with_backoff() {
    let receiver = Receiver::start().await;
    receiver.fail_first.store(2, Ordering::SeqCst);
    let (_dir, server) = start_with(&[
        "--webhook-retry-delay",
        "200ms",
        "--webhook-max-attempts",
        "4",
    ]);
    let actor = shell_actor(&server, "retry-actor", "exit 0").await;
    let webhook = post_data(
        &server,
        "/webhooks",
        json!({
            "eventTypes": ["ACTOR.RUN.SUCCEEDED"],
            "condition": {"actorId": actor},
            "requestUrl": receiver.url("/flaky"),
        }),
        201,
    )
    .await;
    let id = webhook["id"].as_str().unwrap().to_string();

    // The test endpoint: a TEST dispatch, ACTIVE at first, retried twice, then SUCCEEDED.
    let dispatch = post_data(&server, &format!("/webhooks/{id}/test"), json!({}), 201).await;
    assert_eq!(dispatch["eventType"], "TEST");
    assert_eq!(dispatch["webhookId"], id.as_str());
    let d = wait_dispatch(&server, dispatch["id"].as_str().unwrap(), "SUCCEEDED").await;
    let calls = d["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 3, "{d}");
    assert_eq!(calls[0]["responseStatus"], 500);
    assert!(calls[0]["errorMessage"].as_str().unwrap().contains("500"));
    assert_eq!(calls[1]["responseStatus"], 500);
    assert_eq!(calls[2]["responseStatus"], 200);
    assert_eq!(receiver.on("/flaky").len(), 3);
    assert_eq!(receiver.on("/flaky")[0].body["eventType"], "TEST");
    // Retries wait: at least the base delay, then twice as long.
    let at = |i: usize| {
        let ts = calls[i]["startedAt"].as_str().unwrap();
        chrono_ms(ts)
    };
    assert!(at(1) - at(0) >= 200, "{d}");
    assert!(at(2) - at(1) >= 400, "{d}");

    // doNotRetry: one call, FAILED.
    receiver.fail_first.store(usize::MAX, Ordering::SeqCst);
    let once = post_data(
        &server,
        "/webhooks",
        json!({
            "eventTypes": ["ACTOR.RUN.SUCCEEDED"],
            "condition": {"actorId": actor},
            "requestUrl": receiver.url("/once"),
            "doNotRetry": true,
        }),
        201,
    )
    .await;
    let dispatch = post_data(
        &server,
        &format!("/webhooks/{}/test", once["id"].as_str().unwrap()),
        json!({}),
        201,
    )
    .await;
    let d = wait_dispatch(&server, dispatch["id"].as_str().unwrap(), "FAILED").await;
    assert_eq!(d["calls"].as_array().unwrap().len(), 1);
    // Attempts are capped (--webhook-max-attempts 4).
    let dispatch = post_data(&server, &format!("/webhooks/{id}/test"), json!({}), 201).await;
    let d = wait_dispatch(&server, dispatch["id"].as_str().unwrap(), "FAILED").await;
    assert_eq!(d["calls"].as_array().unwrap().len(), 4);
    // A receiver that is not there: the error is recorded, not the URL's secrets.
    let gone = post_data(
        &server,
        "/webhooks",
        json!({
            "eventTypes": ["ACTOR.RUN.SUCCEEDED"],
            "condition": {"actorId": actor},
            "requestUrl": "http://user:hunter2@127.0.0.1:1/nothing-listens",
            "doNotRetry": true,
        }),
        201,
    )
    .await;
    let dispatch = post_data(
        &server,
        &format!("/webhooks/{}/test", gone["id"].as_str().unwrap()),
        json!({}),
        201,
    )
    .await;
    let d = wait_dispatch(&server, dispatch["id"].as_str().unwrap(), "FAILED").await;
    let message = d["calls"][0]["errorMessage"].as_str().unwrap();
    assert!(!message.contains("hunter2"), "{message}");
    assert!(d["calls"][0]["responseStatus"].is_null());

    // https: a TLS handshake is attempted (here with a plain-HTTP receiver, so it fails).
    let tls = post_data(
        &server,
        "/webhooks",
        json!({
            "eventTypes": ["ACTOR.RUN.SUCCEEDED"],
            "condition": {"actorId": actor},
            "requestUrl": receiver.url("/tls").replace("http://", "https://"),
            "doNotRetry": true,
        }),
        201,
    )
    .await;
    let dispatch = post_data(
        &server,
        &format!("/webhooks/{}/test", tls["id"].as_str().unwrap()),
        json!({}),
        201,
    )
    .await;
    let d = wait_dispatch(&server, dispatch["id"].as_str().unwrap(), "FAILED").await;
    let message = d["calls"][0]["errorMessage"].as_str().unwrap();
    assert!(!message.contains("scheme"), "{message}");
    assert!(receiver.on("/tls").is_empty());
}

fn chrono_ms(ts: &str) -> i64 {
    troupe_model::parse_ts(ts).expect("timestamp")
}

#[tokio::test]
async fn active_dispatches_resume_after_a_restart() {
    let receiver = Receiver::start().await;
    receiver.fail_first.store(usize::MAX, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--webhook-retry-delay",
        "300ms",
        "--webhook-max-attempts",
        "1000",
    ];
    let mut server = TestServer::start_in(dir.path(), &args);
    let actor = shell_actor(&server, "resume-actor", "exit 0").await;
    let webhook = post_data(
        &server,
        "/webhooks",
        json!({
            "eventTypes": ["ACTOR.RUN.SUCCEEDED"],
            "condition": {"actorId": actor},
            "requestUrl": receiver.url("/resume"),
        }),
        201,
    )
    .await;
    let dispatch = post_data(
        &server,
        &format!("/webhooks/{}/test", webhook["id"].as_str().unwrap()),
        json!({}),
        201,
    )
    .await;
    let dispatch_id = dispatch["id"].as_str().unwrap().to_string();
    receiver.wait_for("/resume", 1).await;
    // The failed call is recorded before the server stops.
    eventually("the failed call recorded", || async {
        let d = get_data(&server, &format!("/webhook-dispatches/{dispatch_id}")).await;
        (!d["calls"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;
    assert!(server.stop());
    receiver.fail_first.store(0, Ordering::SeqCst);
    let server = TestServer::start_in(dir.path(), &args);
    let d = wait_dispatch(&server, &dispatch_id, "SUCCEEDED").await;
    let calls = d["calls"].as_array().unwrap();
    assert!(calls.len() >= 2, "{d}");
    assert_eq!(calls.last().unwrap()["responseStatus"], 200);
}

#[tokio::test]
async fn schedule_crud_and_validation() {
    let server = TestServer::start();
    let actor = shell_actor(&server, "scheduled", "exit 0").await;
    let task = post_data(
        &server,
        "/actor-tasks",
        json!({"actId": actor, "name": "scheduled-task"}),
        201,
    )
    .await;
    let task_id = task["id"].as_str().unwrap().to_string();

    let created = post_data(
        &server,
        "/schedules",
        json!({
            "name": "nightly",
            "cronExpression": "0 3 * * *",
            "timezone": "Europe/Prague",
            "isEnabled": true,
            "isExclusive": true,
            "description": "every night",
            "actions": [
                {"type": "RUN_ACTOR", "actorId": "~scheduled", "runInput": {"body": "{\"a\": 1}", "contentType": "application/json"}, "runOptions": {"memoryMbytes": 256}},
                {"type": "RUN_ACTOR_TASK", "actorTaskId": task_id, "input": {"b": 2}},
            ],
        }),
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["name"], "nightly");
    assert_eq!(created["timezone"], "Europe/Prague");
    assert_eq!(created["isExclusive"], true);
    let next = created["nextRunAt"].as_str().unwrap();
    // 03:00 in Prague is 01:00 or 02:00 UTC.
    assert!(
        next.ends_with("T01:00:00.000Z") || next.ends_with("T02:00:00.000Z"),
        "{next}"
    );
    assert!(created["lastRunAt"].is_null());
    let actions = created["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[0]["type"], "RUN_ACTOR");
    assert_eq!(actions[0]["actorId"], actor.as_str());
    assert_eq!(actions[0]["runOptions"]["memoryMbytes"], 256);
    assert_eq!(actions[0]["id"].as_str().unwrap().len(), 17);
    assert_eq!(actions[1]["type"], "RUN_ACTOR_TASK");
    assert_eq!(actions[1]["actorTaskId"], task_id.as_str());
    assert_eq!(actions[1]["input"], json!({"b": 2}));

    assert_eq!(
        get_data(&server, &format!("/schedules/{id}")).await,
        created
    );
    assert_eq!(
        get_data(&server, "/schedules/nightly").await["id"],
        id.as_str()
    );
    let list = get_data(&server, "/schedules").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["id"], id.as_str());

    // Partial update; disabling clears nextRunAt; the shortcuts are accepted.
    let updated = data_of(
        send(
            &server,
            Method::PUT,
            &format!("/schedules/{id}"),
            Some(json!({"cronExpression": "@hourly", "isEnabled": false})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(updated["cronExpression"], "@hourly");
    assert_eq!(updated["isEnabled"], false);
    assert!(updated["nextRunAt"].is_null());
    assert_eq!(updated["description"], "every night");
    assert_eq!(updated["actions"].as_array().unwrap().len(), 2);
    let enabled = data_of(
        send(
            &server,
            Method::PUT,
            &format!("/schedules/{id}"),
            Some(json!({"isEnabled": true})),
        )
        .await,
        200,
    )
    .await;
    assert!(enabled["nextRunAt"]
        .as_str()
        .unwrap()
        .ends_with(":00:00.000Z"));
    assert_eq!(
        get_data(&server, &format!("/schedules/{id}/log")).await,
        json!([])
    );

    // Bad input: 400 (or 404 / 409 for what it names) and nothing stored or changed.
    let before = get_data(&server, &format!("/schedules/{id}")).await;
    for (body, status, error_type) in [
        (
            json!({"cronExpression": "61 * * * *"}),
            400,
            "cron-expression-invalid",
        ),
        (
            json!({"cronExpression": "* * *"}),
            400,
            "cron-expression-invalid",
        ),
        (
            json!({"cronExpression": "@sometimes"}),
            400,
            "cron-expression-invalid",
        ),
        (json!({"cronExpression": 5}), 400, "cron-expression-invalid"),
        (json!({"timezone": "Mars/Olympus"}), 400, "invalid-input"),
        (json!({"isEnabled": "yes"}), 400, "invalid-input"),
        (json!({"name": "Bad Name"}), 400, "invalid-input"),
        (
            json!({"actions": [{"type": "RUN_SOMETHING"}]}),
            400,
            "invalid-input",
        ),
        (
            json!({"actions": [{"type": "RUN_ACTOR"}]}),
            400,
            "invalid-input",
        ),
        (
            json!({"actions": [{"type": "RUN_ACTOR", "actorId": actor, "runInput": {"body": "{broken"}}]}),
            400,
            "invalid-input",
        ),
        (
            json!({"actions": [{"type": "RUN_ACTOR", "actorId": actor, "runOptions": {"memoryMbytes": 100}}]}),
            400,
            "invalid-input",
        ),
        (
            json!({"actions": [{"type": "RUN_ACTOR", "actorId": "nope"}]}),
            404,
            "schedule-actor-not-found",
        ),
        (
            json!({"actions": [{"type": "RUN_ACTOR_TASK", "actorTaskId": "nope"}]}),
            404,
            "schedule-actor-task-not-found",
        ),
        (json!({"actions": "all"}), 400, "invalid-input"),
    ] {
        let response = send(
            &server,
            Method::PUT,
            &format!("/schedules/{id}"),
            Some(body.clone()),
        )
        .await;
        assert_error(response, status, error_type).await;
        let mut create = body.clone();
        if create.get("cronExpression").is_none() {
            create["cronExpression"] = json!("* * * * *");
        }
        let response = send(&server, Method::POST, "/schedules", Some(create)).await;
        assert_error(response, status, error_type).await;
    }
    let response = send(
        &server,
        Method::POST,
        "/schedules",
        Some(json!({"name": "no-cron"})),
    )
    .await;
    assert_error(response, 400, "cron-expression-invalid").await;
    let response = send(
        &server,
        Method::POST,
        "/schedules",
        Some(json!({"name": "nightly", "cronExpression": "* * * * *"})),
    )
    .await;
    assert_error(response, 409, "schedule-name-not-unique").await;
    let after = get_data(&server, &format!("/schedules/{id}")).await;
    assert_eq!(after["cronExpression"], before["cronExpression"]);
    assert_eq!(after["actions"], before["actions"]);
    assert_eq!(count(&server, "/schedules").await, 1);

    // A schedule without a name gets one; other users see nothing.
    let unnamed = post_data(
        &server,
        "/schedules",
        json!({"cronExpression": "*/5 * * * *", "isEnabled": false}),
        201,
    )
    .await;
    assert!(unnamed["name"].as_str().unwrap().starts_with("schedule-"));
    assert_eq!(unnamed["actions"], json!([]));
    let other = server.add_user("mallory");
    for (method, path) in [
        (Method::GET, format!("/schedules/{id}")),
        (Method::PUT, format!("/schedules/{id}")),
        (Method::DELETE, format!("/schedules/{id}")),
        (Method::GET, format!("/schedules/{id}/log")),
    ] {
        let response = client()
            .request(method, format!("{}{path}", server.api()))
            .bearer_auth(&other)
            .json(&json!({"isEnabled": true}))
            .send()
            .await
            .unwrap();
        assert_error(response, 403, "insufficient-permissions").await;
    }
    // Their own schedule cannot start our Actor or task.
    let response = client()
        .post(format!("{}/schedules", server.api()))
        .bearer_auth(&other)
        .json(&json!({"cronExpression": "* * * * *", "actions": [{"type": "RUN_ACTOR_TASK", "actorTaskId": task_id}]}))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "schedule-actor-task-not-found").await;

    let response = send(&server, Method::DELETE, &format!("/schedules/{id}"), None).await;
    assert_eq!(response.status(), 204);
    let response = send(&server, Method::GET, &format!("/schedules/{id}"), None).await;
    assert_error(response, 404, "record-not-found").await;
    assert_eq!(count(&server, "/schedules").await, 1);
}

#[tokio::test]
async fn schedules_start_runs_and_respect_exclusivity() {
    let server = TestServer::start();
    let quick = shell_actor(&server, "quick", "exit 0").await;
    let slow = shell_actor(&server, "slow", "sleep 600").await;
    let task = post_data(
        &server,
        "/actor-tasks",
        json!({"actId": quick, "name": "quick-task", "input": {"from": "task"}}),
        201,
    )
    .await;
    let task_id = task["id"].as_str().unwrap().to_string();

    // Every second (the seconds field is troupe's extension; Apify's cron has 5 fields).
    let schedule = post_data(
        &server,
        "/schedules",
        json!({
            "name": "every-second",
            "cronExpression": "* * * * * *",
            "isEnabled": true,
            "isExclusive": false,
            "actions": [
                {"type": "RUN_ACTOR", "actorId": quick, "runInput": {"body": "{\"from\": \"schedule\"}", "contentType": "application/json"}},
                {"type": "RUN_ACTOR_TASK", "actorTaskId": task_id, "input": {"extra": 1}},
            ],
        }),
        201,
    )
    .await;
    let id = schedule["id"].as_str().unwrap().to_string();
    let runs = eventually("runs started by the schedule", || async {
        let page = get_data(&server, &format!("/acts/{quick}/runs")).await;
        let items = page["items"].as_array().unwrap().clone();
        let from_task = items.iter().any(|r| r["actorTaskId"] == task_id.as_str());
        let direct = items.iter().any(|r| r["actorTaskId"].is_null());
        (from_task && direct).then_some(items)
    })
    .await;
    // Stop it, then look at what it started.
    data_of(
        send(
            &server,
            Method::PUT,
            &format!("/schedules/{id}"),
            Some(json!({"isEnabled": false})),
        )
        .await,
        200,
    )
    .await;
    for run in &runs {
        let full = get_data(
            &server,
            &format!("/actor-runs/{}", run["id"].as_str().unwrap()),
        )
        .await;
        assert_eq!(full["meta"]["origin"], "SCHEDULER");
        assert_eq!(full["meta"]["scheduleId"], id.as_str());
        assert!(full["meta"]["scheduledAt"]
            .as_str()
            .unwrap()
            .ends_with(".000Z"));
    }
    let direct = runs.iter().find(|r| r["actorTaskId"].is_null()).unwrap();
    let kv = get_data(
        &server,
        &format!("/actor-runs/{}", direct["id"].as_str().unwrap()),
    )
    .await["defaultKeyValueStoreId"]
        .as_str()
        .unwrap()
        .to_string();
    let input: Value = client()
        .get(server.url(&format!("/key-value-stores/{kv}/records/INPUT")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(input, json!({"from": "schedule"}));
    let via_task = runs.iter().find(|r| !r["actorTaskId"].is_null()).unwrap();
    let kv = get_data(
        &server,
        &format!("/actor-runs/{}", via_task["id"].as_str().unwrap()),
    )
    .await["defaultKeyValueStoreId"]
        .as_str()
        .unwrap()
        .to_string();
    let input: Value = client()
        .get(server.url(&format!("/key-value-stores/{kv}/records/INPUT")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(input, json!({"from": "task", "extra": 1}));
    let after = get_data(&server, &format!("/schedules/{id}")).await;
    assert!(after["lastRunAt"].is_string());
    // A run is listed as soon as it exists; the log line about it follows a moment later.
    let log = eventually("the schedule's log of what it started", || async {
        let log = get_data(&server, &format!("/schedules/{id}/log")).await;
        let messages: Vec<String> = log
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect();
        let complete = messages.iter().any(|m| m == "Schedule invoked")
            && messages.iter().any(|m| m.starts_with("Started Actor"))
            && messages.iter().any(|m| m.starts_with("Started task"));
        complete.then_some(log)
    })
    .await;
    assert!(log[0]["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(log[0]["level"], "INFO");

    // Exclusive: while the slow run goes on, later invocations are skipped and logged.
    let exclusive = post_data(
        &server,
        "/schedules",
        json!({
            "name": "exclusive",
            "cronExpression": "* * * * * *",
            "isEnabled": true,
            "isExclusive": true,
            "actions": [{"type": "RUN_ACTOR", "actorId": slow}],
        }),
        201,
    )
    .await;
    let ex_id = exclusive["id"].as_str().unwrap().to_string();
    eventually("the exclusive schedule's log", || async {
        let log = get_data(&server, &format!("/schedules/{ex_id}/log")).await;
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("skipped"))
            .then_some(())
    })
    .await;
    data_of(
        send(
            &server,
            Method::PUT,
            &format!("/schedules/{ex_id}"),
            Some(json!({"isEnabled": false})),
        )
        .await,
        200,
    )
    .await;
    let slow_runs = get_data(&server, &format!("/acts/{slow}/runs")).await;
    assert_eq!(slow_runs["total"], 1, "{slow_runs}");
    let slow_run = slow_runs["items"][0]["id"].as_str().unwrap().to_string();
    let response = send(
        &server,
        Method::POST,
        &format!("/actor-runs/{slow_run}/abort"),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn build_timeout_abort_and_resurrect_events() {
    let receiver = Receiver::start().await;
    let server = TestServer::start();
    let actor = create_actor(&server, common::actors::shell_actor("sleepy", "sleep 600")).await;
    post_data(
        &server,
        "/webhooks",
        json!({
            "eventTypes": ["ACTOR.BUILD.CREATED", "ACTOR.BUILD.SUCCEEDED"],
            "condition": {"actorId": actor},
            "requestUrl": receiver.url("/builds"),
        }),
        201,
    )
    .await;
    post_data(
        &server,
        "/webhooks",
        json!({
            "eventTypes": ["ACTOR.RUN.TIMED_OUT", "ACTOR.RUN.RESURRECTED", "ACTOR.RUN.ABORTED"],
            "condition": {"actorId": actor},
            "requestUrl": receiver.url("/runs"),
        }),
        201,
    )
    .await;

    let build = common::actors::build(&server, &actor).await;
    assert_eq!(build["status"], "SUCCEEDED", "{build}");
    let got = receiver.wait_for("/builds", 2).await;
    let types: Vec<&str> = got
        .iter()
        .map(|r| r.body["eventType"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"ACTOR.BUILD.CREATED"), "{types:?}");
    assert!(types.contains(&"ACTOR.BUILD.SUCCEEDED"), "{types:?}");
    for r in &got {
        assert_eq!(r.body["eventData"]["actorBuildId"], build["id"]);
        assert_eq!(r.body["eventData"]["actorId"], actor.as_str());
        assert_eq!(r.body["resource"]["id"], build["id"]);
    }

    // Timed out, resurrected, aborted: one dispatch each.
    let run = post_data(
        &server,
        &format!("/acts/{actor}/runs?timeout=1"),
        json!({}),
        201,
    )
    .await;
    let run_id = run["id"].as_str().unwrap().to_string();
    assert_eq!(wait_finished(&server, &run_id).await["status"], "TIMED-OUT");
    let got = receiver.wait_for("/runs", 1).await;
    assert_eq!(got[0].body["eventType"], "ACTOR.RUN.TIMED_OUT");
    assert_eq!(got[0].body["resource"]["status"], "TIMED-OUT");
    data_of(
        send(
            &server,
            Method::POST,
            &format!("/actor-runs/{run_id}/resurrect?timeout=600"),
            None,
        )
        .await,
        200,
    )
    .await;
    let got = receiver.wait_for("/runs", 2).await;
    assert_eq!(got[1].body["eventType"], "ACTOR.RUN.RESURRECTED");
    assert_eq!(got[1].body["resource"]["id"], run_id.as_str());
    data_of(
        send(
            &server,
            Method::POST,
            &format!("/actor-runs/{run_id}/abort"),
            None,
        )
        .await,
        200,
    )
    .await;
    let got = receiver.wait_for("/runs", 3).await;
    assert_eq!(got[2].body["eventType"], "ACTOR.RUN.ABORTED");
    assert_eq!(wait_finished(&server, &run_id).await["status"], "ABORTED");
}

/// Times missed while the server was down start the schedule once, not once per missed time.
#[tokio::test]
async fn missed_schedule_times_start_once_after_a_restart() {
    use troupe_storage::sqlite::{SqliteOptions, SqliteStorage};
    use troupe_storage::ScheduleStore;

    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path(), &[]);
    let actor = shell_actor(&server, "catch-up", "exit 0").await;
    let schedule = post_data(
        &server,
        "/schedules",
        json!({
            "name": "every-minute",
            "cronExpression": "* * * * *",
            "actions": [{"type": "RUN_ACTOR", "actorId": actor}],
        }),
        201,
    )
    .await;
    let id = schedule["id"].as_str().unwrap().to_string();
    assert!(server.stop());

    // As if the server had been down for an hour: sixty times were missed.
    let hour_ago = troupe_model::now_ms() - 3_600_000;
    let due = hour_ago - hour_ago % 60_000;
    {
        let storage = SqliteStorage::open(dir.path(), SqliteOptions::default()).unwrap();
        storage
            .update_schedule(
                &id,
                Box::new(move |s: &mut troupe_model::hooks::Schedule| {
                    s.next_run_at = Some(due);
                    Ok(())
                }),
            )
            .await
            .unwrap();
    }

    let server = TestServer::start_in(dir.path(), &[]);
    let log = eventually("the catch-up run started", || async {
        let log = get_data(&server, &format!("/schedules/{id}/log")).await;
        let started = log
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"].as_str().unwrap().starts_with("Started Actor"));
        started.then_some(log)
    })
    .await;
    let warnings: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["level"] == "WARNING")
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("not replayed"),
        "{log}"
    );
    let now_schedule = get_data(&server, &format!("/schedules/{id}")).await;
    let next = chrono_ms(now_schedule["nextRunAt"].as_str().unwrap());
    // Moved on to a time after the restart, not to the next of the missed ones.
    assert!(next > troupe_model::now_ms() - 120_000, "{now_schedule}");
    // One catch-up start (a second one only if a new minute began meanwhile), not sixty.
    let runs = get_data(&server, &format!("/acts/{actor}/runs")).await;
    assert!(runs["total"].as_u64().unwrap() <= 2, "{runs}");
    let first_id = runs["items"][0]["id"].as_str().unwrap().to_string();
    let first = get_data(&server, &format!("/actor-runs/{first_id}")).await;
    assert_eq!(
        first["meta"]["scheduledAt"].as_str().map(chrono_ms),
        Some(due),
        "{first}"
    );
}

#[tokio::test]
async fn runs_ended_by_a_clean_shutdown_send_their_failed_webhook() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path(), &[]);
    let actor = shell_actor(&server, "long-runner", "echo started; sleep 300").await;
    post_data(
        &server,
        "/webhooks",
        json!({
            "eventTypes": ["ACTOR.RUN.FAILED", "ACTOR.RUN.ABORTED"],
            "condition": {"actorId": actor},
            "requestUrl": receiver.url("/stopped"),
        }),
        201,
    )
    .await;
    let run = post_data(&server, &format!("/acts/{actor}/runs"), json!({}), 201).await;
    let run_id = run["id"].as_str().unwrap().to_string();
    common::actors::wait_running(&server, &run_id).await;
    assert!(server.stop(), "clean exit");
    // The dispatch was stored before the server exited: delivered then, or by the next server.
    let server = TestServer::start_in(dir.path(), &[]);
    let got = receiver.wait_for("/stopped", 1).await;
    assert_eq!(
        got[0].body["eventType"], "ACTOR.RUN.FAILED",
        "{:?}",
        got[0].body
    );
    assert_eq!(got[0].body["resource"]["id"], run_id.as_str());
    assert_eq!(got[0].body["resource"]["status"], "FAILED");
    let dispatches = get_data(&server, "/webhook-dispatches").await;
    assert!(dispatches["total"].as_u64().unwrap() >= 1, "{dispatches}");
    let finished = get_data(&server, &format!("/actor-runs/{run_id}")).await;
    assert_eq!(finished["status"], "FAILED");
}
