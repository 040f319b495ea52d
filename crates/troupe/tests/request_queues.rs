//! Request queues over HTTP against the real binary: every operation, the clients' semantics,
//! bad input (right status and type, nothing changed) and concurrent consumers.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_error, client, TestServer};
use serde_json::{json, Value};

/// SDK-CONTRACT.md §3.3 test vector.
const EXAMPLE_ID: &str = "EAaArVRs5qV39C9";

struct Q {
    server: TestServer,
    http: reqwest::Client,
    id: String,
}

impl Q {
    async fn new() -> Self {
        let server = TestServer::start();
        let http = client();
        let created: Value = http
            .post(server.url("/request-queues"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["data"]["id"].as_str().unwrap().to_string();
        Q { server, http, id }
    }

    fn url(&self, path: &str) -> String {
        self.server
            .url(&format!("/request-queues/{}{path}", self.id))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self.http.request(method, self.url(path));
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let resp = self.send(method.clone(), path, body).await;
        let got = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(got, status, "{method} {path}: {text}");
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str::<Value>(&text).unwrap()["data"].clone()
        }
    }

    async fn info(&self) -> Value {
        self.ok(reqwest::Method::GET, "", None, 200).await
    }

    async fn head_keys(&self, query: &str) -> Vec<String> {
        let head = self
            .ok(
                reqwest::Method::GET,
                &format!("/head?limit=100{query}"),
                None,
                200,
            )
            .await;
        head["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["uniqueKey"].as_str().unwrap().to_string())
            .collect()
    }

    /// Everything observable about the queue's content (for "nothing changed" checks).
    async fn snapshot(&self) -> (Value, Value, Vec<String>) {
        let info = self.info().await;
        let list = self
            .ok(
                reqwest::Method::GET,
                "/requests?limit=10000&clientKey=snap",
                None,
                200,
            )
            .await;
        let counts = json!([
            info["totalRequestCount"],
            info["handledRequestCount"],
            info["pendingRequestCount"],
            info["modifiedAt"]
        ]);
        let head = self.head_keys("&clientKey=snap").await;
        (counts, list["items"].clone(), head)
    }
}

fn rq(key: &str) -> Value {
    json!({ "url": format!("https://example.com/{key}"), "uniqueKey": key })
}

use reqwest::Method;

#[tokio::test]
async fn add_get_update_delete_and_order() {
    let q = Q::new().await;
    let info = q.info().await;
    for field in [
        "totalRequestCount",
        "handledRequestCount",
        "pendingRequestCount",
    ] {
        assert_eq!(info[field], 0, "{field}");
    }
    assert_eq!(info["hadMultipleClients"], false);
    assert!(info["consoleUrl"].as_str().unwrap().starts_with("http"));
    let created_modified = info["modifiedAt"].clone();
    // Timestamps have millisecond resolution: let the clock move before the first write.
    tokio::time::sleep(Duration::from_millis(5)).await;

    // Ids follow SDK-CONTRACT §3.3; unknown fields round-trip.
    let added = q
        .ok(
            Method::POST,
            "/requests?clientKey=c1",
            Some(json!({"url": "https://example.com", "uniqueKey": "https://example.com", "userData": {"label": "A"}, "myField": [1, {"x": 2}]})),
            201,
        )
        .await;
    assert_eq!(
        added,
        json!({"requestId": EXAMPLE_ID, "wasAlreadyPresent": false, "wasAlreadyHandled": false})
    );
    let got = q
        .ok(Method::GET, &format!("/requests/{EXAMPLE_ID}"), None, 200)
        .await;
    assert_eq!(got["id"], EXAMPLE_ID);
    assert_eq!(got["myField"], json!([1, {"x": 2}]));
    assert_eq!(got["userData"]["label"], "A");
    assert_ne!(q.info().await["modifiedAt"], created_modified);

    // Order: forefront newest first, then FIFO.
    for key in ["b", "c"] {
        q.ok(Method::POST, "/requests?clientKey=c1", Some(rq(key)), 201)
            .await;
    }
    q.ok(
        Method::POST,
        "/requests?clientKey=c1&forefront=1",
        Some(rq("f1")),
        201,
    )
    .await;
    let batch = q
        .ok(
            Method::POST,
            "/requests/batch?clientKey=c1&forefront=true",
            Some(json!([rq("f2"), rq("f3"), rq("b"), rq("f2")])),
            201,
        )
        .await;
    let processed = batch["processedRequests"].as_array().unwrap();
    assert_eq!(processed.len(), 4);
    assert_eq!(processed[2]["wasAlreadyPresent"], true);
    assert_eq!(processed[3]["wasAlreadyPresent"], true);
    assert_eq!(processed[3]["uniqueKey"], "f2");
    assert_eq!(batch["unprocessedRequests"], json!([]));
    assert_eq!(
        q.head_keys("&clientKey=c1").await,
        ["f3", "f2", "f1", "https://example.com", "b", "c"]
    );
    let info = q.info().await;
    assert_eq!(
        (
            info["totalRequestCount"].as_u64(),
            info["pendingRequestCount"].as_u64()
        ),
        (Some(6), Some(6))
    );

    // Reads and re-adds do not move modifiedAt; a duplicate add changes nothing.
    let modified = q.info().await["modifiedAt"].clone();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let dup = q
        .ok(
            Method::POST,
            "/requests?clientKey=c1&forefront=1",
            Some(rq("c")),
            201,
        )
        .await;
    assert_eq!(dup["wasAlreadyPresent"], true);
    q.head_keys("&clientKey=c1").await;
    q.ok(Method::GET, "/requests?clientKey=c1", None, 200).await;
    assert_eq!(q.info().await["modifiedAt"], modified);
    assert_eq!(q.head_keys("").await.last().unwrap(), "c");

    // Mark handled with Python's timestamp form; returned normalized.
    let b_id = processed[2]["requestId"].as_str().unwrap().to_string();
    let mut b = q
        .ok(Method::GET, &format!("/requests/{b_id}"), None, 200)
        .await;
    b["handledAt"] = json!("2026-08-21 10:23:31.607000+00:00");
    let upd = q
        .ok(
            Method::PUT,
            &format!("/requests/{b_id}?clientKey=c1"),
            Some(b.clone()),
            200,
        )
        .await;
    assert_eq!(
        upd,
        json!({"requestId": b_id, "wasAlreadyPresent": true, "wasAlreadyHandled": false})
    );
    let stored = q
        .ok(Method::GET, &format!("/requests/{b_id}"), None, 200)
        .await;
    assert_eq!(stored["handledAt"], "2026-08-21T10:23:31.607Z");
    let info = q.info().await;
    assert_eq!(info["handledRequestCount"], 1);
    assert_eq!(info["pendingRequestCount"], 5);
    assert!(!q.head_keys("").await.contains(&"b".to_string()));
    // Adding it again reports it handled.
    let again = q
        .ok(Method::POST, "/requests?clientKey=c1", Some(rq("b")), 201)
        .await;
    assert_eq!(again["wasAlreadyHandled"], true);

    // Reclaim a handled request to the front (JS form handledAt: null).
    b["handledAt"] = Value::Null;
    let upd = q
        .ok(
            Method::PUT,
            &format!("/requests/{b_id}?clientKey=c1&forefront=true"),
            Some(b),
            200,
        )
        .await;
    assert_eq!(upd["wasAlreadyHandled"], true);
    assert_eq!(q.head_keys("").await[0], "b");
    assert_eq!(q.info().await["handledRequestCount"], 0);

    // PUT of an unknown id upserts; added handled, it counts as handled at once.
    let new_key = "https://crawlee.dev/";
    let mut body = rq(new_key);
    body["url"] = json!(new_key);
    body["id"] = json!("FRyCGCDqkwxqk6u");
    body["handledAt"] = json!("2026-08-21T10:23:31.607Z");
    let upd = q
        .ok(
            Method::PUT,
            "/requests/FRyCGCDqkwxqk6u?clientKey=c1",
            Some(body),
            200,
        )
        .await;
    assert_eq!(upd["wasAlreadyPresent"], false);
    let info = q.info().await;
    assert_eq!(
        (
            info["totalRequestCount"].as_u64(),
            info["handledRequestCount"].as_u64()
        ),
        (Some(7), Some(1))
    );

    // Delete one, batch delete by id and uniqueKey; counts follow.
    q.ok(
        Method::DELETE,
        "/requests/FRyCGCDqkwxqk6u?clientKey=c1",
        None,
        204,
    )
    .await;
    let del = q
        .ok(
            Method::DELETE,
            "/requests/batch?clientKey=c1",
            Some(json!([{"uniqueKey": "c"}, {"id": EXAMPLE_ID}])),
            200,
        )
        .await;
    assert_eq!(del["processedRequests"].as_array().unwrap().len(), 2);
    assert_eq!(del["processedRequests"][1]["id"], EXAMPLE_ID);
    let info = q.info().await;
    assert_eq!(
        (
            info["totalRequestCount"].as_u64(),
            info["handledRequestCount"].as_u64(),
            info["pendingRequestCount"].as_u64()
        ),
        (Some(4), Some(0), Some(4))
    );
    assert_eq!(q.head_keys("").await, ["b", "f3", "f2", "f1"]);
    assert_eq!(
        info["hadMultipleClients"], true,
        "keyless head calls count as new clients"
    );

    // Deleting the queue deletes its requests.
    q.ok(Method::DELETE, "", None, 204).await;
    assert_error(
        q.send(Method::GET, &format!("/requests/{b_id}"), None)
            .await,
        404,
        "record-not-found",
    )
    .await;
}

#[tokio::test]
async fn locks_over_http() {
    let q = Q::new().await;
    let batch: Vec<Value> = (0..10).map(|i| rq(&format!("r{i}"))).collect();
    q.ok(
        Method::POST,
        "/requests/batch?clientKey=a",
        Some(json!(batch)),
        201,
    )
    .await;
    let modified = q.info().await["modifiedAt"].clone();

    let a = q
        .ok(
            Method::POST,
            "/head/lock?lockSecs=60&limit=3&clientKey=a",
            None,
            201,
        )
        .await;
    assert_eq!(a["limit"], 3);
    assert_eq!(a["lockSecs"], 60);
    assert_eq!(a["clientKey"], "a");
    assert_eq!(a["queueHasLockedRequests"], true);
    assert_eq!(a["hadMultipleClients"], false);
    let items = a["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["uniqueKey"], "r0");
    assert_eq!(items[0]["method"], "GET");
    assert_eq!(items[0]["retryCount"], 0);
    let expires = items[0]["lockExpiresAt"].as_str().unwrap();
    assert!(expires.ends_with('Z') && expires.len() == 24, "{expires}");
    let r0 = items[0]["id"].as_str().unwrap().to_string();
    let r1 = items[1]["id"].as_str().unwrap().to_string();

    let b = q
        .ok(
            Method::POST,
            "/head/lock?lockSecs=60&limit=3&clientKey=b",
            None,
            201,
        )
        .await;
    let b_keys: Vec<_> = b["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["uniqueKey"].clone())
        .collect();
    assert_eq!(b_keys, [json!("r3"), json!("r4"), json!("r5")]);
    assert_eq!(b["hadMultipleClients"], true);

    // Non-locking head: available first, then locked ones.
    assert_eq!(
        q.head_keys("&clientKey=a").await[..5],
        ["r6", "r7", "r8", "r9", "r0"]
    );

    // Prolong / delete lock: only the holder.
    assert_error(
        q.send(
            Method::PUT,
            &format!("/requests/{r0}/lock?lockSecs=30&clientKey=b"),
            None,
        )
        .await,
        403,
        "request-handled-or-locked",
    )
    .await;
    assert_error(
        q.send(
            Method::DELETE,
            &format!("/requests/{r0}/lock?clientKey=b"),
            None,
        )
        .await,
        403,
        "request-handled-or-locked",
    )
    .await;
    let prolonged = q
        .ok(
            Method::PUT,
            &format!("/requests/{r0}/lock?lockSecs=120&clientKey=a"),
            None,
            200,
        )
        .await;
    assert!(prolonged["lockExpiresAt"].as_str().unwrap() > expires);
    q.ok(
        Method::DELETE,
        &format!("/requests/{r1}/lock?clientKey=a&forefront=1"),
        None,
        204,
    )
    .await;
    assert_eq!(q.head_keys("&clientKey=a").await[0], "r1");
    assert_error(
        q.send(
            Method::DELETE,
            &format!("/requests/{r1}/lock?clientKey=a"),
            None,
        )
        .await,
        403,
        "request-handled-or-locked",
    )
    .await;

    // Listing with filter=locked.
    let locked = q
        .ok(
            Method::GET,
            "/requests?filter=locked&clientKey=a",
            None,
            200,
        )
        .await;
    assert_eq!(locked["items"].as_array().unwrap().len(), 5);

    // Unlock all of b.
    let unlocked = q
        .ok(Method::POST, "/requests/unlock?clientKey=b", None, 200)
        .await;
    assert_eq!(unlocked, json!({"unlockedCount": 3}));
    // Lock ops never move modifiedAt.
    assert_eq!(q.info().await["modifiedAt"], modified);

    // Handled → cannot prolong; handling drops the lock.
    let mut r0_body = q
        .ok(Method::GET, &format!("/requests/{r0}"), None, 200)
        .await;
    r0_body["handledAt"] = json!("2026-08-21T10:23:31.607Z");
    q.ok(
        Method::PUT,
        &format!("/requests/{r0}?clientKey=a"),
        Some(r0_body),
        200,
    )
    .await;
    assert_error(
        q.send(
            Method::PUT,
            &format!("/requests/{r0}/lock?lockSecs=30&clientKey=a"),
            None,
        )
        .await,
        403,
        "request-handled-or-locked",
    )
    .await;

    // Expiry: a 2-second lock lapses and the request is lockable again, at the head.
    let locked_at = Instant::now();
    let c = q
        .ok(
            Method::POST,
            "/head/lock?lockSecs=2&limit=25&clientKey=c",
            None,
            201,
        )
        .await;
    let c_count = c["items"].as_array().unwrap().len();
    assert_eq!(c_count, 8, "r1..r9 minus r2 (held by a)");
    let lock_d = || {
        q.ok(
            Method::POST,
            "/head/lock?lockSecs=60&limit=25&clientKey=d",
            None,
            201,
        )
    };
    let none = lock_d().await;
    // (Only meaningful while c's locks surely hold: a very slow machine may take 2 s to ask.)
    if locked_at.elapsed() < Duration::from_millis(1900) {
        assert_eq!(none["items"], json!([]));
        assert_eq!(none["queueHasLockedRequests"], true);
    }
    let d = if none["items"] != json!([]) {
        none
    } else {
        common::eventually("c's locks to lapse", || async {
            let d = lock_d().await;
            (d["items"] != json!([])).then_some(d)
        })
        .await
    };
    assert!(
        locked_at.elapsed() >= Duration::from_millis(1900),
        "not before the lock's 2 s"
    );
    assert_eq!(d["items"].as_array().unwrap().len(), 8);
    assert_eq!(d["items"][0]["uniqueKey"], "r1");
}

#[tokio::test]
async fn bad_input_is_rejected_and_changes_nothing() {
    let q = Q::new().await;
    let batch: Vec<Value> = (0..5).map(|i| rq(&format!("k{i}"))).collect();
    q.ok(
        Method::POST,
        "/requests/batch?clientKey=a",
        Some(json!(batch)),
        201,
    )
    .await;
    let held = q
        .ok(
            Method::POST,
            "/head/lock?lockSecs=300&limit=1&clientKey=a",
            None,
            201,
        )
        .await;
    let held_id = held["items"][0]["id"].as_str().unwrap().to_string();
    let before = q.snapshot().await;

    let too_many: Vec<Value> = (0..26).map(|i| rq(&format!("n{i}"))).collect();
    let cases: Vec<(Method, String, Option<Value>, u16, &str)> = vec![
        (
            Method::POST,
            "/requests/batch?clientKey=a".into(),
            Some(json!(too_many)),
            400,
            "invalid-input",
        ),
        (
            Method::POST,
            "/requests/batch?clientKey=a".into(),
            Some(json!([rq("n1"), {"url": "https://x.example"}])),
            400,
            "invalid-input",
        ),
        (
            Method::POST,
            "/requests/batch?clientKey=a".into(),
            Some(json!({"url": "https://x.example", "uniqueKey": "x"})),
            400,
            "invalid-input",
        ),
        (
            Method::POST,
            "/requests/batch?clientKey=a".into(),
            Some(
                json!([rq("n2"), {"url": "https://x.example", "uniqueKey": "x", "id": "AAAAAAAAAAAAAAA"}]),
            ),
            400,
            "request-id-invalid",
        ),
        (
            Method::POST,
            "/requests?clientKey=a".into(),
            Some(json!({"url": "https://x.example"})),
            400,
            "invalid-input",
        ),
        (
            Method::POST,
            "/requests?clientKey=a".into(),
            Some(json!({"uniqueKey": "x"})),
            400,
            "invalid-input",
        ),
        (
            Method::POST,
            "/requests?clientKey=a".into(),
            Some(json!({"url": "mailto:x@example.com", "uniqueKey": "x"})),
            400,
            "invalid-input",
        ),
        (
            Method::POST,
            "/requests?clientKey=a".into(),
            Some(json!({"url": "https://x.example", "uniqueKey": 5})),
            400,
            "invalid-input",
        ),
        (
            Method::POST,
            "/requests?clientKey=a".into(),
            Some(json!({"url": "https://x.example", "uniqueKey": "x", "method": "FETCH"})),
            400,
            "invalid-input",
        ),
        (
            Method::POST,
            "/requests?clientKey=a".into(),
            Some(json!({"url": "https://x.example", "uniqueKey": "x", "retryCount": "one"})),
            400,
            "invalid-input",
        ),
        (
            Method::POST,
            "/requests?clientKey=a".into(),
            Some(json!({"url": "https://x.example", "uniqueKey": "x", "handledAt": "not a date"})),
            400,
            "invalid-input",
        ),
        (
            Method::POST,
            "/requests?clientKey=a".into(),
            Some(json!([rq("x")])),
            400,
            "invalid-input",
        ),
        (
            Method::POST,
            "/requests?clientKey=a".into(),
            Some(json!({"url": "https://x.example", "uniqueKey": "x", "id": EXAMPLE_ID})),
            400,
            "request-id-invalid",
        ),
        (
            Method::POST,
            "/requests?forefront=maybe".into(),
            Some(rq("x")),
            400,
            "invalid-parameter",
        ),
        (
            Method::POST,
            format!("/requests?clientKey={}", "k".repeat(33)),
            Some(rq("x")),
            400,
            "invalid-client-key",
        ),
        (
            Method::PUT,
            format!("/requests/{EXAMPLE_ID}?clientKey=a"),
            Some(rq("x")),
            400,
            "request-id-invalid",
        ),
        (
            Method::PUT,
            format!("/requests/{held_id}?clientKey=a"),
            Some(json!({"uniqueKey": "k0"})),
            400,
            "invalid-input",
        ),
        (
            Method::DELETE,
            "/requests/batch?clientKey=a".into(),
            Some(json!([{"id": held_id}, {"foo": 1}])),
            400,
            "invalid-input",
        ),
        (
            Method::DELETE,
            "/requests/batch?clientKey=a".into(),
            Some(json!([{"id": EXAMPLE_ID, "uniqueKey": "k1"}])),
            400,
            "request-id-invalid",
        ),
        (
            Method::DELETE,
            "/requests/batch?clientKey=a".into(),
            Some(json!((0..26)
                .map(|i| json!({"uniqueKey": format!("k{i}")}))
                .collect::<Vec<_>>())),
            400,
            "invalid-input",
        ),
        (
            Method::POST,
            "/head/lock?clientKey=a".into(),
            None,
            400,
            "parameter-required",
        ),
        (
            Method::POST,
            "/head/lock?lockSecs=0&clientKey=a".into(),
            None,
            400,
            "invalid-parameter",
        ),
        (
            Method::POST,
            "/head/lock?lockSecs=-5&clientKey=a".into(),
            None,
            400,
            "invalid-parameter",
        ),
        (
            Method::POST,
            "/head/lock?lockSecs=abc&clientKey=a".into(),
            None,
            400,
            "invalid-parameter",
        ),
        (
            Method::POST,
            "/head/lock?lockSecs=99999999999&clientKey=a".into(),
            None,
            400,
            "invalid-parameter",
        ),
        (
            Method::POST,
            "/head/lock?lockSecs=60&limit=26&clientKey=a".into(),
            None,
            400,
            "invalid-parameter",
        ),
        (
            Method::POST,
            "/head/lock?lockSecs=60&limit=0&clientKey=a".into(),
            None,
            400,
            "invalid-parameter",
        ),
        (
            Method::POST,
            format!("/head/lock?lockSecs=60&clientKey={}", "k".repeat(33)),
            None,
            400,
            "invalid-client-key",
        ),
        (
            Method::PUT,
            format!("/requests/{held_id}/lock?lockSecs=60&clientKey=intruder"),
            None,
            403,
            "request-handled-or-locked",
        ),
        (
            Method::DELETE,
            format!("/requests/{held_id}/lock?clientKey=intruder"),
            None,
            403,
            "request-handled-or-locked",
        ),
        (
            Method::PUT,
            format!("/requests/{held_id}/lock?clientKey=a"),
            None,
            400,
            "parameter-required",
        ),
        (
            Method::PUT,
            format!("/requests/{held_id}/lock?lockSecs=x&clientKey=a"),
            None,
            400,
            "invalid-parameter",
        ),
        (
            Method::GET,
            "/requests/nosuchrequest00".into(),
            None,
            404,
            "record-not-found",
        ),
        (
            Method::DELETE,
            "/requests/nosuchrequest00?clientKey=a".into(),
            None,
            404,
            "record-not-found",
        ),
        (
            Method::PUT,
            "/requests/nosuchrequest00/lock?lockSecs=60&clientKey=a".into(),
            None,
            404,
            "record-not-found",
        ),
        (
            Method::DELETE,
            "/requests/nosuchrequest00/lock?clientKey=a".into(),
            None,
            404,
            "record-not-found",
        ),
        (
            Method::GET,
            "/requests?filter=bogus&clientKey=a".into(),
            None,
            400,
            "invalid-parameter",
        ),
        (
            Method::GET,
            "/requests?cursor=!!notacursor&clientKey=a".into(),
            None,
            400,
            "invalid-parameter",
        ),
        (
            Method::GET,
            "/requests?limit=10001&clientKey=a".into(),
            None,
            400,
            "invalid-parameter",
        ),
        (
            Method::GET,
            "/head?limit=x&clientKey=a".into(),
            None,
            400,
            "invalid-parameter",
        ),
    ];
    for (method, path, body, status, error_type) in cases {
        let resp = q.send(method.clone(), &path, body).await;
        let got = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(got, status, "{method} {path}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["type"], error_type, "{method} {path}: {text}");
    }
    // Malformed JSON and empty bodies.
    for path in ["/requests?clientKey=a", "/requests/batch?clientKey=a"] {
        let resp = q
            .http
            .post(q.url(path))
            .header("content-type", "application/json")
            .body("{\"url\": ")
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "invalid-input").await;
        let resp = q.http.post(q.url(path)).send().await.unwrap();
        assert_error(resp, 400, "invalid-input").await;
    }
    // Unknown queue.
    let resp = q
        .http
        .post(
            q.server
                .url("/request-queues/nosuchqueue123456/head/lock?lockSecs=5"),
        )
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "record-not-found").await;

    assert_eq!(q.snapshot().await, before, "nothing changed");
}

#[tokio::test]
async fn list_requests_pages_with_cursor() {
    let q = Q::new().await;
    for chunk in 0..4 {
        let batch: Vec<Value> = (0..25)
            .map(|i| rq(&format!("p{}", chunk * 25 + i)))
            .collect();
        q.ok(
            Method::POST,
            "/requests/batch?clientKey=a",
            Some(json!(batch)),
            201,
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/requests?limit=30&clientKey=a&cursor={c}"),
            None => "/requests?limit=30&clientKey=a".to_string(),
        };
        let page = q.ok(Method::GET, &path, None, 200).await;
        pages += 1;
        assert_eq!(page["limit"], 30);
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_string());
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(seen.len(), 100);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "ordered by id, no duplicates");
    // Legacy exclusiveStartId.
    let page = q
        .ok(
            Method::GET,
            &format!(
                "/requests?limit=10&exclusiveStartId={}&clientKey=a",
                seen[89]
            ),
            None,
            200,
        )
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    assert_eq!(page["items"][0]["id"], seen[90].as_str());
    assert!(page["nextCursor"].is_null());
    // Through the run-less alias prefixes is not possible; by name it is.
    let named: Value = q
        .http
        .post(q.server.url("/request-queues?name=rq-named"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(named["data"]["name"], "rq-named");
    let resp = q
        .http
        .post(q.server.url("/request-queues/rq-named/requests"))
        .json(&rq("z"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = q
        .http
        .get(q.server.url("/request-queues/~rq-named/head"))
        .send()
        .await
        .unwrap();
    let head: Value = resp.json().await.unwrap();
    assert_eq!(head["data"]["items"][0]["uniqueKey"], "z");
}

/// 8 consumers drain 10,000 requests through HTTP: each is handed out and handled exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_consumers_drain_10000_requests() {
    const N: usize = 10_000;
    let q = Arc::new(Q::new().await);
    let started = Instant::now();
    // Producers: 5 in parallel, batches of 25.
    let mut producers = Vec::new();
    for p in 0..5 {
        let q = q.clone();
        producers.push(tokio::spawn(async move {
            for b in (p..N / 25).step_by(5) {
                let batch: Vec<Value> = (0..25)
                    .map(|i| rq(&format!("item-{}", b * 25 + i)))
                    .collect();
                let out = q
                    .ok(
                        Method::POST,
                        "/requests/batch?clientKey=producer",
                        Some(json!(batch)),
                        201,
                    )
                    .await;
                assert_eq!(out["processedRequests"].as_array().unwrap().len(), 25);
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    assert_eq!(q.info().await["pendingRequestCount"], N as u64);
    let added = started.elapsed();

    let mut consumers = Vec::new();
    for c in 0..8 {
        let q = q.clone();
        consumers.push(tokio::spawn(async move {
            let key = format!("consumer-{c}");
            let mut locked = Vec::new();
            let mut handled = Vec::new();
            let mut given_back = Vec::new();
            loop {
                let head = q
                    .ok(
                        Method::POST,
                        &format!("/head/lock?lockSecs=60&limit=25&clientKey={key}"),
                        None,
                        201,
                    )
                    .await;
                let items = head["items"].as_array().unwrap().clone();
                if items.is_empty() {
                    if head["queueHasLockedRequests"] == false {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                for (n, item) in items.iter().enumerate() {
                    let id = item["id"].as_str().unwrap().to_string();
                    locked.push(id.clone());
                    // Give every 20th request back once (delete lock), as Crawlee does with surplus.
                    if n == 24 && locked.len() % 2 == 0 {
                        q.ok(
                            Method::DELETE,
                            &format!("/requests/{id}/lock?clientKey={key}"),
                            None,
                            204,
                        )
                        .await;
                        given_back.push(id);
                        continue;
                    }
                    let body = json!({
                        "id": id, "uniqueKey": item["uniqueKey"], "url": item["url"],
                        "handledAt": "2026-08-21T10:23:31.607Z",
                    });
                    let out = q
                        .ok(
                            Method::PUT,
                            &format!("/requests/{id}?clientKey={key}"),
                            Some(body),
                            200,
                        )
                        .await;
                    assert_eq!(out["wasAlreadyHandled"], false, "{id} handled twice");
                    handled.push(id);
                }
            }
            (locked, handled, given_back)
        }));
    }
    let mut handled_count: HashMap<String, usize> = HashMap::new();
    let mut lock_count: HashMap<String, usize> = HashMap::new();
    let mut back_count: HashMap<String, usize> = HashMap::new();
    let mut per_consumer = Vec::new();
    for c in consumers {
        let (locked, handled, given_back) = c.await.unwrap();
        for id in given_back {
            *back_count.entry(id).or_default() += 1;
        }
        per_consumer.push(handled.len());
        for id in locked {
            *lock_count.entry(id).or_default() += 1;
        }
        for id in handled {
            *handled_count.entry(id).or_default() += 1;
        }
    }
    assert_eq!(handled_count.len(), N);
    assert!(
        handled_count.values().all(|&n| n == 1),
        "every request handled exactly once"
    );
    // A request is locked again only after its lock was given back.
    for (id, n) in &lock_count {
        assert_eq!(
            *n,
            back_count.get(id).copied().unwrap_or(0) + 1,
            "{id} locked while its lock held"
        );
    }
    let relocked: usize = back_count.values().sum();
    let info = q.info().await;
    assert_eq!(info["totalRequestCount"], N as u64);
    assert_eq!(info["handledRequestCount"], N as u64);
    assert_eq!(info["pendingRequestCount"], 0);
    assert_eq!(info["hadMultipleClients"], true);
    let last = q
        .ok(
            Method::POST,
            "/head/lock?lockSecs=60&clientKey=late",
            None,
            201,
        )
        .await;
    assert_eq!(last["items"], json!([]));
    assert_eq!(last["queueHasLockedRequests"], false);
    eprintln!(
        "added {N} in {added:?}, drained in {:?} ({relocked} given back and re-locked), per consumer {per_consumer:?}",
        started.elapsed() - added
    );
}

/// The queue writes resolve their queue from the catalog's access cache: a rename, an access
/// change and the deletion of a queue are seen by the very next request add (single and batch),
/// batch delete, update, lock, lock release and lock prolongation, and another user is refused
/// however often it tries.
#[tokio::test]
async fn queue_writes_follow_renames_access_changes_and_deletion() {
    use common::Api;
    let q = Q::new().await;
    q.ok(
        Method::POST,
        "/requests/batch",
        Some(json!([rq("a"), rq("b"), rq("c"), rq("d")])),
        201,
    )
    .await;
    let handled = |key: &str| {
        let mut r = rq(key);
        r["handledAt"] = json!("2026-01-01T00:00:00.000Z");
        r
    };
    let id = troupe_model::queue::request_id;
    let locked = q
        .ok(
            Method::POST,
            "/head/lock?limit=2&lockSecs=60&clientKey=k",
            None,
            201,
        )
        .await;
    assert_eq!(locked["items"].as_array().unwrap().len(), 2);
    let put = q
        .ok(
            Method::PUT,
            &format!("/requests/{}?clientKey=k", id("a")),
            Some(handled("a")),
            200,
        )
        .await;
    assert_eq!(put["wasAlreadyHandled"], false);

    // Named, then renamed: the old name is gone for the very next write, the new one works.
    let server = &q.server;
    let rename = |name: &str| {
        q.http
            .put(server.url(&format!("/request-queues/{}", q.id)))
            .json(&json!({ "name": name }))
            .send()
    };
    assert_eq!(rename("rq-cache-one").await.unwrap().status(), 200);
    let by_name = |name: &str, path: &str| server.url(&format!("/request-queues/~{name}{path}"));
    let response = q
        .http
        .put(by_name(
            "rq-cache-one",
            &format!("/requests/{}?clientKey=k", id("b")),
        ))
        .json(&handled("b"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(rename("rq-cache-two").await.unwrap().status(), 200);
    for (method, path, body) in [
        (
            Method::PUT,
            format!("/requests/{}?clientKey=k", id("c")),
            handled("c"),
        ),
        (
            Method::POST,
            "/head/lock?lockSecs=60&clientKey=k".to_string(),
            json!({}),
        ),
        (Method::POST, "/requests".to_string(), rq("e")),
        (
            Method::POST,
            "/requests/batch".to_string(),
            json!([rq("e")]),
        ),
        (
            Method::DELETE,
            "/requests/batch".to_string(),
            json!([{ "uniqueKey": "d" }]),
        ),
    ] {
        let response = q
            .http
            .request(method, by_name("rq-cache-one", &path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(response, 404, "record-not-found").await;
    }
    // By the new name, an add and a batch add and delete work (and are undone by the delete).
    for (method, path, body, status) in [
        (Method::POST, "/requests", rq("e"), 201),
        (Method::POST, "/requests/batch", json!([rq("f")]), 201),
        (
            Method::DELETE,
            "/requests/batch",
            json!([{ "uniqueKey": "e" }, { "uniqueKey": "f" }]),
            200,
        ),
    ] {
        let response = q
            .http
            .request(method, by_name("rq-cache-two", path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
    }
    let response = q
        .http
        .request(
            Method::POST,
            by_name("rq-cache-two", "/head/lock?limit=1&lockSecs=60&clientKey=k"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // Opened for reading by id: another user may read, and still not write.
    let response = q
        .http
        .put(server.url(&format!("/request-queues/{}", q.id)))
        .json(&json!({ "generalAccess": "ANYONE_WITH_ID_CAN_READ" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bob = server.add_user("bob");
    let bob = server.as_user(&bob);
    let before = q.snapshot().await;
    let bob_url = |path: &str| bob.url(&format!("/request-queues/{}{path}", q.id));
    let response = q
        .http
        .get(bob_url(&format!("/requests/{}", id("c"))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for _ in 0..3 {
        for (method, path, body) in [
            (
                Method::PUT,
                format!("/requests/{}?clientKey=k", id("c")),
                handled("c"),
            ),
            (
                Method::POST,
                "/head/lock?lockSecs=60&clientKey=k".to_string(),
                json!({}),
            ),
            (
                Method::DELETE,
                format!("/requests/{}/lock?clientKey=k", id("c")),
                json!({}),
            ),
            (
                Method::PUT,
                format!("/requests/{}/lock?lockSecs=60&clientKey=k", id("c")),
                json!({}),
            ),
            (Method::DELETE, format!("/requests/{}", id("c")), json!({})),
            (Method::POST, "/requests".to_string(), rq("e")),
            (
                Method::POST,
                "/requests/batch".to_string(),
                json!([rq("e")]),
            ),
            (
                Method::DELETE,
                "/requests/batch".to_string(),
                json!([{ "uniqueKey": "c" }]),
            ),
        ] {
            let response = q
                .http
                .request(method, bob_url(&path))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_error(response, 403, "insufficient-permissions").await;
        }
    }
    assert_eq!(q.snapshot().await, before);

    // Deleted: every write that follows is a 404, and a queue created since (which may reuse
    // the deleted one's internal number) is untouched.
    let response = q
        .http
        .delete(server.url(&format!("/request-queues/{}", q.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let created: Value = q
        .http
        .post(server.url("/request-queues"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fresh_id = created["data"]["id"].as_str().unwrap().to_string();
    let response = q
        .http
        .post(server.url(&format!("/request-queues/{fresh_id}/requests")))
        .json(&rq("c"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    for (method, path, body) in [
        (
            Method::PUT,
            format!("/requests/{}?clientKey=k", id("c")),
            handled("c"),
        ),
        (
            Method::POST,
            "/head/lock?lockSecs=60&clientKey=k".to_string(),
            json!({}),
        ),
        (
            Method::DELETE,
            format!("/requests/{}/lock?clientKey=k", id("d")),
            json!({}),
        ),
        (
            Method::PUT,
            format!("/requests/{}/lock?lockSecs=60&clientKey=k", id("d")),
            json!({}),
        ),
        (Method::POST, "/requests".to_string(), rq("e")),
        (
            Method::POST,
            "/requests/batch".to_string(),
            json!([rq("e")]),
        ),
        (
            Method::DELETE,
            "/requests/batch".to_string(),
            json!([{ "uniqueKey": "c" }]),
        ),
    ] {
        let response = q.send(method, &path, Some(body)).await;
        assert_error(response, 404, "record-not-found").await;
    }
    let fresh: Value = q
        .http
        .get(server.url(&format!("/request-queues/{fresh_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fresh["data"]["totalRequestCount"], 1);
    assert_eq!(fresh["data"]["handledRequestCount"], 0);
    assert_eq!(fresh["data"]["hadMultipleClients"], false);
}

#[tokio::test]
async fn unnamed_queues_are_listed_with_an_empty_string_name() {
    // The Python client's list model requires a string `name` on every queue it lists.
    let q = Q::new().await;
    let named: Value = q
        .http
        .post(q.server.url("/request-queues?name=named-queue"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let all: Value = q
        .http
        .get(q.server.url("/request-queues?unnamed=true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = all["data"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let name_of = |id: &Value| items.iter().find(|i| &i["id"] == id).unwrap()["name"].clone();
    assert_eq!(name_of(&json!(q.id)), json!(""));
    assert_eq!(name_of(&named["data"]["id"]), json!("named-queue"));
    // The queue object itself keeps `name: null`.
    let got: Value = q
        .http
        .get(q.url(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["data"]["name"], Value::Null);
}
