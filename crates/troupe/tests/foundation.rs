//! The server itself and the HTTP conventions every endpoint shares.

mod common;

use common::{assert_error, client, TestServer};
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
