//! The P2 operations troupe answers on a single server: validate-input, a build's OpenAPI
//! document, charges (refused: every Actor is free), account limits and usage, the store,
//! browser-info and signed values. Success and bad input (right status and type, nothing changed).

mod common;

use common::actors::{built_actor, built_actor_from, start_run, wait_run, wait_running};
use common::{assert_error, client, data_of, get_data, post_data, send, Api, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

fn schema_actor(name: &str) -> Value {
    let definition = json!({
        "actorSpecification": 1,
        "startCommand": "sh main.sh",
        "input": {
            "title": "In", "type": "object", "schemaVersion": 1,
            "properties": {
                "url": {"title": "URL", "type": "string", "editor": "textfield", "description": "d"},
                "pages": {"title": "P", "type": "integer", "minimum": 1, "maximum": 10, "description": "d"},
                "mode": {"title": "M", "type": "string", "enum": ["fast", "slow"], "editor": "select", "description": "d"},
                "tags": {"title": "T", "type": "array", "maxItems": 2, "editor": "json", "description": "d"},
            },
            "required": ["url"],
        },
    });
    json!({
        "name": name,
        "versions": [{
            "versionNumber": "0.1",
            "sourceType": "SOURCE_FILES",
            "sourceFiles": [
                {"name": ".actor/actor.json", "format": "TEXT", "content": definition.to_string()},
                {"name": "main.sh", "format": "TEXT", "content": "sleep 300"},
            ],
        }],
        "defaultRunOptions": {"build": "latest", "timeoutSecs": 120, "memoryMbytes": 128},
    })
}

async fn validate(server: &TestServer, actor: &str, body: &str) -> reqwest::Response {
    client()
        .post(server.url(&format!("/acts/{actor}/validate-input")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn validate_input_against_the_build_schema() {
    let server = TestServer::start();
    let actor = built_actor_from(&server, schema_actor("validated")).await;
    let ok = validate(
        &server,
        &actor,
        r#"{"url":"https://x","pages":3,"mode":"slow","tags":[1]}"#,
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap(), json!({"valid": true}));
    for bad in [
        r#"{"pages":3}"#,
        r#"{"url":null}"#,
        r#"{"url":5}"#,
        r#"{"url":"x","pages":2.5}"#,
        r#"{"url":"x","pages":0}"#,
        r#"{"url":"x","mode":"medium"}"#,
        r#"{"url":"x","tags":[1,2,3]}"#,
        r#"[1,2]"#,
        r#"{"url":"#,
    ] {
        let response = validate(&server, &actor, bad).await;
        let body = assert_error(response, 400, "invalid-input").await;
        assert!(
            body["error"]["message"].as_str().unwrap().len() > 5,
            "{bad}: {body}"
        );
    }
    // An unknown build, an unknown Actor, no token.
    let response = client()
        .post(server.url(&format!("/acts/{actor}/validate-input?build=nope")))
        .json(&json!({"url": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = validate(&server, "nosuchactor12345", r#"{"url":"x"}"#).await;
    assert_error(response, 404, "record-not-found").await;
    let response = client()
        .post(format!("{}/acts/{actor}/validate-input", server.api()))
        .json(&json!({"url": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "token-not-provided").await;
    // Validation starts nothing.
    assert_eq!(get_data(&server, "/actor-runs").await["total"], 0);
    // An Actor without an input schema accepts any object.
    let plain = built_actor(&server, "schemaless", "exit 0").await;
    assert_eq!(
        validate(&server, &plain, r#"{"anything":[1]}"#)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn build_openapi_document() {
    let server = TestServer::start();
    let actor = built_actor_from(&server, schema_actor("documented")).await;
    let build = get_data(&server, &format!("/acts/{actor}/builds/default")).await;
    let id = build["id"].as_str().unwrap();
    // Like the build itself, readable by anyone with its id; under the Actor, `default` names
    // its default build (as `.../builds/default` does).
    for url in [
        format!("{}/actor-builds/{id}/openapi.json", server.api()),
        server.url(&format!("/acts/{actor}/builds/{id}/openapi.json")),
        server.url(&format!("/acts/{actor}/builds/default/openapi.json")),
        server.url("/actors/troupe~documented/builds/default/openapi.json"),
    ] {
        let response = client().get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let doc: Value = response.json().await.unwrap();
        assert_eq!(doc["openapi"], "3.0.1");
        assert_eq!(doc["info"]["x-build-id"], id);
        let input = &doc["components"]["schemas"]["inputSchema"];
        assert_eq!(input["required"], json!(["url"]));
        assert_eq!(input["properties"]["mode"]["enum"], json!(["fast", "slow"]));
        assert!(input["properties"]["mode"].get("editor").is_none());
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 3);
        assert!(paths
            .keys()
            .all(|p| p.starts_with("/acts/troupe~documented/")));
    }
    let response = client()
        .get(format!(
            "{}/actor-builds/nosuchbuild12345/openapi.json",
            server.api()
        ))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "record-not-found").await;
    // `default` is no build id outside an Actor, and an Actor never built has no default build.
    for path in [
        "/actor-builds/default/openapi.json".to_string(),
        "/acts/nosuchactor12345/builds/default/openapi.json".to_string(),
    ] {
        let response = client().get(server.url(&path)).send().await.unwrap();
        assert_error(response, 404, "record-not-found").await;
    }
    let unbuilt = common::actors::create_actor(&server, schema_actor("unbuilt")).await;
    let response = client()
        .get(server.url(&format!("/acts/{unbuilt}/builds/default/openapi.json")))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "record-not-found").await;
}

#[tokio::test]
async fn charges_are_refused_and_change_nothing() {
    let server = TestServer::start();
    let actor = built_actor_from(&server, schema_actor("charging")).await;
    let run = start_run(&server, &format!("/acts/{actor}/runs"), json!({"url": "x"})).await;
    let id = run["id"].as_str().unwrap().to_string();
    wait_running(&server, &id).await;
    let charge = |body: Value| {
        let url = server.url(&format!("/actor-runs/{id}/charge"));
        async move { client().post(url).json(&body).send().await.unwrap() }
    };
    let response = charge(json!({"eventName": "PAGE", "count": 2})).await;
    assert_error(response, 400, "cannot-charge-non-pay-per-event-actor").await;
    for bad in [
        json!({}),
        json!({"eventName": ""}),
        json!({"eventName": "P", "count": 0}),
        json!({"eventName": "P", "count": "x"}),
        json!([1]),
    ] {
        assert_error(charge(bad).await, 400, "invalid-input").await;
    }
    // Another user may not charge the run.
    let other = server.add_user("mallory");
    let response = client()
        .post(
            server
                .as_user(&other)
                .url(&format!("/actor-runs/{id}/charge")),
        )
        .json(&json!({"eventName": "PAGE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let after = get_data(&server, &format!("/actor-runs/{id}")).await;
    assert_eq!(after["chargedEventCounts"], json!({}));
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
    wait_run(&server, &id).await;
}

#[tokio::test]
async fn limits_and_usage() {
    let server = TestServer::start();
    built_actor(&server, "counted", "exit 0").await;
    let limits = get_data(&server, "/users/me/limits").await;
    assert_eq!(limits["limits"]["maxMonthlyUsageUsd"], 0);
    assert_eq!(limits["current"]["actorCount"], 1);
    assert_eq!(limits["current"]["actorTaskCount"], 0);
    assert_eq!(limits["current"]["activeActorJobCount"], 0);
    let start = limits["monthlyUsageCycle"]["startAt"].as_str().unwrap();
    assert!(start.ends_with("-01T00:00:00.000Z"), "{start}");
    let usage = get_data(&server, "/users/me/usage/monthly?date=2024-02-10").await;
    assert_eq!(
        usage["usageCycle"],
        json!({"startAt": "2024-02-01T00:00:00.000Z", "endAt": "2024-02-29T23:59:59.999Z"})
    );
    assert_eq!(usage["dailyServiceUsages"], json!([]));
    let response = send(
        &server,
        Method::GET,
        "/users/me/usage/monthly?date=yesterday",
        None,
    )
    .await;
    assert_error(response, 400, "invalid-parameter").await;
    let response = send(
        &server,
        Method::PUT,
        "/users/me/limits",
        Some(json!({"maxMonthlyUsageUsd": 5})),
    )
    .await;
    assert_error(response, 501, "not-implemented").await;
    let response = client()
        .get(format!("{}/users/me/limits", server.api()))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "token-not-provided").await;
}

/// The refused limits change is a deliberate answer, logged like a 4xx (DEBUG "request
/// rejected"), never as a server fault at WARN or ERROR.
#[tokio::test]
async fn refused_limits_change_is_not_logged_as_a_fault() {
    let temp = tempfile::tempdir().unwrap();
    let log_path = temp.path().join("server.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let data_dir = temp.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let mut server = TestServer::start_logging(&data_dir, &[], "warn,troupe_api=debug", log_file);
    let response = send(
        &server,
        Method::PUT,
        "/users/me/limits",
        Some(json!({"maxMonthlyUsageUsd": 5})),
    )
    .await;
    assert_error(response, 501, "not-implemented").await;
    let response = send(&server, Method::GET, "/datasets/nosuchdataset1234", None).await;
    assert_error(response, 404, "record-not-found").await;
    // Stopped, so everything it logged is in the file.
    assert!(server.stop());
    let log = std::fs::read_to_string(&log_path).unwrap();
    for status in ["status=501", "status=404"] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(status)).collect();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("DEBUG") && l.contains("request rejected")),
            "{status}: {log}"
        );
        assert!(
            lines
                .iter()
                .all(|l| !l.contains("ERROR") && !l.contains("WARN")),
            "{status}: {log}"
        );
    }
    assert!(!log.contains("ERROR"), "{log}");
}

#[tokio::test]
async fn store_lists_public_actors_of_every_user() {
    let server = TestServer::start();
    let other = server.add_user("bob");
    let bob = server.as_user(&other);
    let public = post_data(&bob, "/acts", json!({"name": "bobs-tool", "isPublic": true, "title": "Bob's tool", "description": "crawls things"}), 201).await;
    post_data(&bob, "/acts", json!({"name": "bobs-secret"}), 201).await;
    post_data(
        &server,
        "/acts",
        json!({"name": "mine-public", "isPublic": true}),
        201,
    )
    .await;
    // Anyone may search the store.
    let anonymous = |path: &str| {
        let url = format!("{}{path}", server.api());
        async move {
            let response = client().get(url).send().await.unwrap();
            data_of(response, 200).await
        }
    };
    let all = anonymous("/store").await;
    assert_eq!(all["total"], 2, "{all}");
    let found = anonymous("/store?search=CRAWLS").await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(found["items"][0]["id"], public["id"]);
    assert_eq!(found["items"][0]["title"], "Bob's tool");
    assert_eq!(found["items"][0]["username"], "bob");
    assert_eq!(anonymous("/store?username=troupe").await["total"], 1);
    assert_eq!(
        anonymous("/store?pricingModel=PAY_PER_EVENT").await["total"],
        0
    );
    let page = anonymous("/store?limit=1&offset=1").await;
    assert_eq!(
        (
            page["total"].as_u64(),
            page["items"].as_array().unwrap().len()
        ),
        (Some(2), 1)
    );
    let response = client()
        .get(format!("{}/store?pricingModel=CHEAP", server.api()))
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid-parameter").await;
    let response = client()
        .get(format!("{}/store?limit=x", server.api()))
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid-parameter").await;
}

#[tokio::test]
async fn browser_info_echoes_the_request() {
    let server = TestServer::start();
    for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
        let response = client()
            .request(
                method.clone(),
                format!("{}/browser-info?rawHeaders=1", server.api()),
            )
            .header("x-probe", "yes")
            .body("12345")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let info: Value = response.json().await.unwrap();
        assert_eq!(info["method"], method.as_str());
        // No proxy header: the connection's peer (this test, over loopback).
        assert_eq!(info["clientIp"], "127.0.0.1", "{info}");
        assert_eq!(info["bodyLength"], 5);
        assert_eq!(info["headers"]["x-probe"], "yes");
        assert!(info["rawHeaders"]
            .as_array()
            .unwrap()
            .contains(&json!("x-probe")));
    }
    let info: Value = client()
        .get(format!("{}/browser-info?skipHeaders=1", server.api()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(info.get("headers").is_none());
    // Behind a reverse proxy: the address it reports.
    let info: Value = client()
        .get(format!("{}/browser-info", server.api()))
        .header("x-forwarded-for", "203.0.113.7, 10.0.0.1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["clientIp"], "203.0.113.7");
    // `X-Real-IP` when there is no `X-Forwarded-For`; a value that is no address is ignored.
    for (headers, expected) in [
        (vec![("x-real-ip", "2001:db8::5")], "2001:db8::5"),
        (
            vec![
                ("x-forwarded-for", "unknown"),
                ("x-real-ip", "198.51.100.2"),
            ],
            "198.51.100.2",
        ),
        (vec![("x-forwarded-for", "not-an-ip")], "127.0.0.1"),
    ] {
        let mut request = client().get(format!("{}/browser-info", server.api()));
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        let info: Value = request.send().await.unwrap().json().await.unwrap();
        assert_eq!(info["clientIp"], expected, "{headers:?}: {info}");
    }
    let response = client()
        .get(format!("{}/browser-info?skipHeaders=perhaps", server.api()))
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid-parameter").await;
}

#[tokio::test]
async fn signed_values_round_trip_and_tampering_is_caught() {
    let server = TestServer::start();
    let encoded = post_data(
        &server,
        "/tools/encode-and-sign",
        json!({"key": "value", "n": [1, 2]}),
        200,
    )
    .await["encoded"]
        .as_str()
        .unwrap()
        .to_string();
    let me = get_data(&server, "/users/me").await;
    // Decoding needs no token.
    let decode = |body: Value| {
        let url = format!("{}/tools/decode-and-verify", server.api());
        async move { client().post(url).json(&body).send().await.unwrap() }
    };
    let decoded = data_of(decode(json!({"encoded": encoded})).await, 200).await;
    assert_eq!(decoded["decoded"], json!({"key": "value", "n": [1, 2]}));
    assert_eq!(decoded["encodedByUserId"], me["id"]);
    assert_eq!(decoded["isVerifiedUser"], false);
    // Altered: the payload changed under the same signature.
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut signed: Value = serde_json::from_slice(&engine.decode(&encoded).unwrap()).unwrap();
    signed["payload"] = json!("{\"key\":\"other\"}");
    let forged = engine.encode(signed.to_string());
    assert_error(
        decode(json!({"encoded": forged})).await,
        400,
        "invalid-signature",
    )
    .await;
    assert_error(
        decode(json!({"encoded": "not base64 at all!"})).await,
        400,
        "invalid-value",
    )
    .await;
    assert_error(decode(json!({})).await, 400, "invalid-input").await;
    let response = send(
        &server,
        Method::POST,
        "/tools/encode-and-sign",
        Some(json!([1])),
    )
    .await;
    assert_error(response, 400, "invalid-input").await;
    let response = client()
        .post(format!("{}/tools/encode-and-sign", server.api()))
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "token-not-provided").await;
}
