//! The server itself and the HTTP conventions every endpoint shares.

mod common;

use common::{assert_error, client, troupe, TestServer, TOKEN};
use serde_json::Value;

#[tokio::test]
async fn users_me_with_header_or_query_token() {
    let server = TestServer::start();
    let http = client();
    let me: Value = http
        .get(server.url("/users/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["data"]["username"], "troupe");
    let id = me["data"]["id"].as_str().unwrap();
    assert_eq!(id.len(), 17);
    let by_header = http
        .get(format!("{}/users/me", server.api()))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), 200);
    let public: Value = http
        .get(format!("{}/users/{id}", server.api()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(public["data"]["username"], "troupe");
    let by_name = http
        .get(format!("{}/users/troupe", server.api()))
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.status(), 200);
}

#[tokio::test]
async fn auth_errors() {
    let server = TestServer::start();
    let http = client();
    assert_error(
        http.get(format!("{}/users/me", server.api()))
            .send()
            .await
            .unwrap(),
        401,
        "token-not-provided",
    )
    .await;
    assert_error(
        http.get(format!("{}/users/me?token=wrong", server.api()))
            .send()
            .await
            .unwrap(),
        401,
        "invalid-token",
    )
    .await;
    assert_error(
        http.get(format!("{}/datasets", server.api()))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap(),
        401,
        "invalid-token",
    )
    .await;
}

#[tokio::test]
async fn unknown_route_and_wrong_method() {
    let server = TestServer::start();
    let http = client();
    assert_error(
        http.get(server.url("/no-such-thing")).send().await.unwrap(),
        404,
        "page-not-found",
    )
    .await;
    let response = http.patch(server.url("/datasets")).send().await.unwrap();
    let allow = response
        .headers()
        .get("allow")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    // Errors carry the CORS headers like every other response.
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let body = assert_error(response, 405, "method-not-allowed").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("POST"));
}

#[tokio::test]
async fn method_override_and_cors() {
    let server = TestServer::start();
    let http = client();
    // GET with ?method=POST creates a dataset.
    let created = http
        .get(server.url("/datasets?name=via-get&method=POST"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let preflight = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/datasets", server.api()),
        )
        .header("origin", "http://example.test")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert_eq!(preflight.headers()["access-control-allow-methods"], "*");
    assert_eq!(preflight.headers()["access-control-allow-headers"], "*");
    // Any OPTIONS request is a preflight, on an unknown path too; it changes nothing.
    let unknown = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/no-such-thing", server.api()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 200);
    assert_eq!(unknown.headers()["access-control-allow-origin"], "*");
    let items = http
        .get(server.url("/datasets/~via-get/items"))
        .header("origin", "http://example.test")
        .send()
        .await
        .unwrap();
    let exposed = items.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(exposed.contains("x-apify-pagination-total"), "{exposed}");
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_data_survives_restart() {
    let mut server = TestServer::start();
    let http = client();
    let created = http
        .post(server.url("/datasets?name=persist"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let push = http
        .post(server.url("/datasets/~persist/items"))
        .header("content-type", "application/json")
        .body(r#"[{"a":1},{"a":2}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(push.status(), 201);
    assert!(server.stop(), "clean exit on SIGTERM");
    let server = TestServer::start_in(&server.data_dir.clone(), &[]);
    let items: Value = http
        .get(server.url("/datasets/~persist/items"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(items, serde_json::json!([{"a":1},{"a":2}]));
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let mut first = TestServer::start();
    let dir = first.data_dir.clone();
    // The second server waits a while for the lock (a server stopping), then gives up.
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("TROUPE_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run a second troupe serve");
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while second.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second server on the same data dir kept running");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let second = second.wait_with_output().unwrap();
    assert!(!second.status.success());
    let stdout = String::from_utf8_lossy(&second.stdout);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!stdout.contains("listening on"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "another troupe server (pid {}) is using the data dir",
            first.pid()
        )),
        "{stderr}"
    );
    // The first server is unharmed, and the user commands still work beside it.
    let me = client().get(first.url("/users/me")).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let (ok, users) = troupe(&["users", "list"], &dir);
    assert!(ok, "{users}");
    // Once it has stopped, a new server takes the data dir.
    assert!(first.stop(), "clean exit on SIGTERM");
    let next = TestServer::start_in(&dir, &[]);
    let me = client().get(next.url("/users/me")).send().await.unwrap();
    assert_eq!(me.status(), 200);
}
