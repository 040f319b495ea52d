//! Bad and hostile input: each gets a 4xx with the right error type, changes nothing, and the
//! server keeps serving everybody else.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{assert_error, client, TestServer};
use serde_json::Value;

async fn item_count(server: &TestServer, name: &str) -> u64 {
    let info: Value = client()
        .get(server.url(&format!("/datasets/~{name}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    info["data"]["itemCount"].as_u64().unwrap()
}

async fn dataset(server: &TestServer, name: &str) {
    let response = client()
        .post(server.url(&format!("/datasets?name={name}")))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

fn host_port(server: &TestServer) -> String {
    server.origin.trim_start_matches("http://").to_string()
}

#[tokio::test]
async fn hostile_bodies_change_nothing() {
    let server = TestServer::start();
    let http = client();
    dataset(&server, "target").await;
    let push = |body: Vec<u8>| {
        http.post(server.url("/datasets/~target/items"))
            .header("content-type", "application/json")
            .body(body)
    };

    // Nesting far beyond any sane item.
    let deep = format!(
        "[{}{}]",
        "{\"a\":".repeat(5000),
        "1".to_string() + &"}".repeat(5000)
    );
    assert_error(
        push(deep.into_bytes()).send().await.unwrap(),
        400,
        "invalid-input",
    )
    .await;
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    // (its first item is not an object)
    assert_error(
        push(deep_array.into_bytes()).send().await.unwrap(),
        400,
        "schema-validation-error",
    )
    .await;
    let deep_in_object = format!("[{{\"a\":{}{}}}]", "[".repeat(100_000), "]".repeat(100_000));
    assert_error(
        push(deep_in_object.into_bytes()).send().await.unwrap(),
        400,
        "invalid-input",
    )
    .await;
    // Invalid UTF-8.
    assert_error(
        push(b"[{\"a\":\"\xff\xfe\"}]".to_vec())
            .send()
            .await
            .unwrap(),
        400,
        "invalid-input",
    )
    .await;
    // A number no double can hold.
    assert_error(
        push(b"[{\"a\":1e400}]".to_vec()).send().await.unwrap(),
        400,
        "invalid-input",
    )
    .await;
    // Trailing garbage after a valid array.
    assert_error(
        push(b"[{\"a\":1}] {".to_vec()).send().await.unwrap(),
        400,
        "invalid-input",
    )
    .await;
    assert_eq!(item_count(&server, "target").await, 0);

    // NUL bytes and odd unicode are data, not attacks: stored and exported safely.
    let ok = push(
        "[{\"nul\":\"a\\u0000b\",\"emoji\":\"\u{1F600}\",\"rtl\":\"\u{202E}x\"}]"
            .as_bytes()
            .to_vec(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(ok.status(), 201);
    for format in ["json", "jsonl", "csv", "html", "xml", "rss", "xlsx"] {
        let response = http
            .get(server.url(&format!("/datasets/~target/items?format={format}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{format}");
        let body = response.bytes().await.unwrap();
        assert!(!body.is_empty(), "{format}");
        if format == "xml" || format == "rss" {
            assert!(!body.contains(&0u8), "XML cannot carry NUL");
        }
    }
}

#[tokio::test]
async fn hostile_ids_and_query_values() {
    let server = TestServer::start();
    let http = client();
    dataset(&server, "d").await;
    for id in [
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E",
        "..",
        "a%00b",
        "%F0%9F%98%80",
        &"x".repeat(5000),
    ] {
        let response = http
            .get(server.url(&format!("/datasets/{id}")))
            .send()
            .await
            .unwrap();
        assert!(
            response.status() == 404 || response.status() == 400,
            "{id}: {}",
            response.status()
        );
    }
    for query in [
        "limit=-1",
        "limit=abc",
        "offset=-5",
        "offset=1e999",
        "limit=99999999999999999999999999",
        "desc=maybe",
        "format=exe",
        "delimiter=ab",
        "xmlRoot=%3Cscript%3E",
    ] {
        assert_error(
            http.get(server.url(&format!("/datasets/~d/items?{query}")))
                .send()
                .await
                .unwrap(),
            400,
            "invalid-parameter",
        )
        .await;
    }
    // Huge headers are refused by the HTTP layer, and the server stays up.
    let response = http
        .get(server.url("/users/me"))
        .header("x-big", "a".repeat(1_000_000))
        .send()
        .await;
    if let Ok(response) = response {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    assert_eq!(
        http.get(server.url("/users/me"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn slow_clients_cannot_hold_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(
        dir.path(),
        &[
            "--body-idle-timeout-secs",
            "1",
            "--header-read-timeout-secs",
            "1",
        ],
    );
    dataset(&server, "slow").await;
    let addr = host_port(&server);

    // A body that trickles in and stalls: cut off with 408, nothing stored.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    write!(
        stalled,
        "POST /v2/datasets/~slow/items?token={} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{{\"a\":",
        server.token
    )
    .unwrap();
    // Headers that never finish.
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(b"GET /v2/users/me HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();

    // Meanwhile everybody else is served (the stalled connections are still open: nothing has
    // answered them yet, and each of these requests does not wait for them).
    for _ in 0..20 {
        let request = client().get(server.url("/users/me")).send();
        let response = tokio::time::timeout(Duration::from_secs(30), request)
            .await
            .expect("served while two clients stall")
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    let _ = stalled.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("operation-timed-out"), "{answer}");

    half.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = Vec::new();
    let started = Instant::now();
    let _ = half.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "connection with unfinished headers was closed (not left to our 30 s read timeout)"
    );
    assert_eq!(item_count(&server, "slow").await, 0);
}

/// Sends `n` GETs of `url` at once; their answers.
async fn burst(http: &reqwest::Client, url: &str, n: usize) -> Vec<reqwest::Response> {
    let requests = (0..n).map(|_| http.get(url).send());
    futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

#[tokio::test]
async fn rate_limits_answer_429_per_user_and_resource() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &["--rate-limit-per-resource", "5"]);
    let http = client();
    dataset(&server, "hot").await;
    dataset(&server, "cold").await;
    // A burst: 40 requests sent at once (sequential requests on a slow machine might not
    // exceed 5 per second).
    let mut limited = 0;
    for response in burst(&http, &server.url("/datasets/~hot/items"), 40).await {
        assert_eq!(response.headers()["x-ratelimit-limit"], "5");
        if response.status() == 429 {
            limited += 1;
            assert_error(response, 429, "rate-limit-exceeded").await;
        }
    }
    assert!(limited > 0, "a burst of 40 over 5/s gets limited");
    // Another resource has its own budget.
    assert_eq!(
        http.get(server.url("/datasets/~cold/items"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &["--rate-limit-per-user", "5"]);
    let responses = burst(&http, &server.url("/users/me"), 40).await;
    assert!(responses.iter().any(|r| r.status() == 429));
    // Off by default: no header, no limit.
    let plain = TestServer::start();
    for _ in 0..50 {
        let response = http.get(plain.url("/users/me")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("x-ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn retention_deletes_idle_unnamed_storages_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(
        dir.path(),
        &["--retention", "2s", "--retention-interval", "500ms"],
    );
    let http = client();
    // The dataset is created after this instant, so it cannot be 2 s idle before 2 s from now.
    let before_creation = Instant::now();
    let unnamed: Value = http
        .post(server.url("/datasets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let unnamed_id = unnamed["data"]["id"].as_str().unwrap().to_string();
    dataset(&server, "kept").await;
    // Still there while fresh (when the machine was quick enough to ask while it was).
    let fresh = http
        .get(server.url(&format!("/datasets/{unnamed_id}")))
        .send()
        .await
        .unwrap()
        .status();
    if before_creation.elapsed() < Duration::from_millis(1500) {
        assert_eq!(fresh, 200);
    }
    let started = Instant::now();
    loop {
        let response = http
            .get(server.url(&format!("/datasets/{unnamed_id}")))
            .send()
            .await
            .unwrap();
        if response.status() == 404 {
            break;
        }
        assert!(
            started.elapsed() < common::PATIENCE,
            "idle unnamed dataset was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Not deleted before its 2 s (minus a little: server and test clocks are not the same).
    assert!(
        before_creation.elapsed() >= Duration::from_millis(1900),
        "deleted after {:?}, before its time",
        before_creation.elapsed()
    );
    assert_eq!(
        http.get(server.url("/datasets/~kept"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "named storages stay"
    );
}
