//! Users and tokens from the command line, and the one access rule across users.

mod common;

use common::actors::{
    build, built_actor_from, create_actor, shell_actor, start_run, wait_for_log, wait_run, Gate,
};
use common::{assert_error, client, eventually, token_from, troupe, TestServer};
use serde_json::Value;

#[tokio::test]
async fn users_and_tokens_cli() {
    let server = TestServer::start();
    let http = client();
    let (ok, out) = troupe(&["users", "add", "bob"], &server.data_dir);
    assert!(ok, "{out}");
    let bob_token = token_from(&out);
    let (ok, _) = troupe(&["users", "add", "bob"], &server.data_dir);
    assert!(!ok, "duplicate username is refused");
    let (ok, _) = troupe(&["users", "add", "../evil"], &server.data_dir);
    assert!(!ok, "invalid username is refused");
    let (_, list) = troupe(&["users", "list"], &server.data_dir);
    assert!(
        list.contains("\tbob\t") && list.contains("\ttroupe\t"),
        "{list}"
    );

    let me: Value = http
        .get(format!("{}/users/me", server.api()))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["data"]["username"], "bob");

    // A second token, listed by id, revoked: stops working (within the 5 s cache window).
    let (ok, out) = troupe(
        &["tokens", "create", "--user", "bob", "--description", "ci"],
        &server.data_dir,
    );
    assert!(ok);
    let second = token_from(&out);
    let (_, tokens) = troupe(&["tokens", "list", "--user", "bob"], &server.data_dir);
    let id = tokens
        .lines()
        .find(|l| l.contains("\tci"))
        .expect("listed")
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    assert!(!tokens.contains(&second), "secrets are never listed");
    let ok_before = http
        .get(format!("{}/users/me", server.api()))
        .bearer_auth(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(ok_before.status(), 200);
    let (ok, _) = troupe(&["tokens", "revoke", &id], &server.data_dir);
    assert!(ok);
    // Servers cache tokens for up to 5 s: the revoked one stops working by then.
    let revoked_at = std::time::Instant::now();
    let refused = eventually("the revoked token refused", || async {
        let response = http
            .get(format!("{}/users/me", server.api()))
            .bearer_auth(&second)
            .send()
            .await
            .unwrap();
        (response.status() != 200).then_some(response)
    })
    .await;
    assert_error(refused, 401, "invalid-token").await;
    assert!(
        revoked_at.elapsed() < std::time::Duration::from_secs(30),
        "refused within the cache window (plus slack for a slow machine)"
    );

    let (ok, _) = troupe(&["users", "remove", "bob"], &server.data_dir);
    assert!(ok);
    let (ok, _) = troupe(&["users", "remove", "troupe"], &server.data_dir);
    assert!(!ok, "the default user stays");
}

#[tokio::test]
async fn other_users_storages_are_off_limits() {
    let server = TestServer::start();
    let http = client();
    let bob = server.add_user("bob");
    let api = server.api();

    for collection in ["datasets", "key-value-stores", "request-queues"] {
        let created: Value = http
            .post(format!("{api}/{collection}?name=private"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["data"]["id"].as_str().unwrap().to_string();
        // The default user cannot read, rename or delete bob's storage.
        assert_error(
            http.get(server.url(&format!("/{collection}/{id}")))
                .send()
                .await
                .unwrap(),
            403,
            "insufficient-permissions",
        )
        .await;
        assert_error(
            http.put(server.url(&format!("/{collection}/{id}")))
                .json(&serde_json::json!({"name": "mine"}))
                .send()
                .await
                .unwrap(),
            403,
            "insufficient-permissions",
        )
        .await;
        assert_error(
            http.delete(server.url(&format!("/{collection}/{id}")))
                .send()
                .await
                .unwrap(),
            403,
            "insufficient-permissions",
        )
        .await;
        assert_error(
            http.get(server.url(&format!("/{collection}/bob~private")))
                .send()
                .await
                .unwrap(),
            403,
            "insufficient-permissions",
        )
        .await;
        // `~private` means the caller's own storage of that name: none.
        assert_error(
            http.get(server.url(&format!("/{collection}/~private")))
                .send()
                .await
                .unwrap(),
            404,
            "record-not-found",
        )
        .await;
        // Nobody else's storages show up in listings.
        let listed: Value = http
            .get(server.url(&format!("/{collection}?unnamed=1")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed["data"]["total"], 0, "{collection}");
        // Anonymous access is refused.
        assert_error(
            http.get(format!("{api}/{collection}/{id}"))
                .send()
                .await
                .unwrap(),
            401,
            "token-not-provided",
        )
        .await;
        // Still there, unchanged.
        let still: Value = http
            .get(format!("{api}/{collection}/{id}"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(still["data"]["name"], "private");

        // generalAccess ANYONE_WITH_ID_CAN_READ opens reads by id, not writes.
        let opened = http
            .put(format!("{api}/{collection}/{id}"))
            .bearer_auth(&bob)
            .json(&serde_json::json!({"generalAccess": "ANYONE_WITH_ID_CAN_READ"}))
            .send()
            .await
            .unwrap();
        assert_eq!(opened.status(), 200);
        assert_eq!(
            http.get(format!("{api}/{collection}/{id}"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let as_other: Value = http
            .get(server.url(&format!("/{collection}/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            as_other["data"].get("urlSigningSecretKey").is_none(),
            "secret shown to owner only"
        );
        assert_error(
            http.delete(server.url(&format!("/{collection}/{id}")))
                .send()
                .await
                .unwrap(),
            403,
            "insufficient-permissions",
        )
        .await;
        assert_error(
            http.get(server.url(&format!("/{collection}/bob~private")))
                .send()
                .await
                .unwrap(),
            403,
            "insufficient-permissions",
        )
        .await;
    }

    // Dataset items follow the same rule.
    let ds: Value = http
        .post(format!("{api}/datasets?name=items"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ds_id = ds["data"]["id"].as_str().unwrap();
    assert_error(
        http.post(server.url(&format!("/datasets/{ds_id}/items")))
            .json(&serde_json::json!({"a": 1}))
            .send()
            .await
            .unwrap(),
        403,
        "insufficient-permissions",
    )
    .await;
    assert_error(
        http.get(server.url(&format!("/datasets/{ds_id}/items")))
            .send()
            .await
            .unwrap(),
        403,
        "insufficient-permissions",
    )
    .await;
    let count: Value = http
        .get(format!("{api}/datasets/{ds_id}"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count["data"]["itemCount"], 0);
}

#[tokio::test]
async fn other_users_actors_are_off_limits() {
    let server = TestServer::start();
    let http = client();
    let bob = server.add_user("bob");
    let api = server.api();
    let created = http
        .post(format!("{api}/acts"))
        .bearer_auth(&bob)
        .json(&serde_json::json!({"name": "bobs-actor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let id = created["data"]["id"].as_str().unwrap().to_string();
    for prefix in ["acts", "actors"] {
        for path in [
            format!("/{prefix}/{id}"),
            format!("/{prefix}/bob~bobs-actor"),
            format!("/{prefix}/{id}/builds"),
            format!("/{prefix}/{id}/runs"),
        ] {
            let response = http.get(server.url(&path)).send().await.unwrap();
            assert_error(response, 403, "insufficient-permissions").await;
        }
        assert_error(
            http.put(server.url(&format!("/{prefix}/{id}")))
                .json(&serde_json::json!({"title": "mine"}))
                .send()
                .await
                .unwrap(),
            403,
            "insufficient-permissions",
        )
        .await;
        assert_error(
            http.post(server.url(&format!("/{prefix}/{id}/runs")))
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap(),
            403,
            "insufficient-permissions",
        )
        .await;
        assert_error(
            http.delete(server.url(&format!("/{prefix}/{id}")))
                .send()
                .await
                .unwrap(),
            403,
            "insufficient-permissions",
        )
        .await;
        let listed: Value = http
            .get(server.url(&format!("/{prefix}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed["data"]["total"], 0);
    }
    let still: Value = http
        .get(format!("{api}/acts/{id}"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(still["data"]["name"], "bobs-actor");
}

#[tokio::test]
async fn a_run_token_works_during_the_run_only() {
    let server = TestServer::start();
    let http = client();
    // Prints its token and goes on until the gate opens.
    let gate = Gate::new();
    let script = format!("echo \"token=$APIFY_TOKEN\"\n{}\n", gate.wait());
    let id = built_actor_from(&server, shell_actor("token-echo", &script)).await;
    let run = start_run(&server, &format!("/acts/{id}/runs"), serde_json::json!({})).await;
    let run_id = run["id"].as_str().unwrap().to_string();
    let log = wait_for_log(&server, &run_id, "token=").await;
    let token = log
        .lines()
        .find_map(|l| l.split("token=").nth(1))
        .map(|t| t.trim().to_string());
    let token = token.expect("run printed its token");
    assert!(!token.is_empty());
    assert_ne!(
        token, server.token,
        "a run never gets the owner's own token"
    );
    let me: Value = http
        .get(format!("{}/users/me", server.api()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me["data"]["username"], "troupe",
        "the run token acts for the owner"
    );
    gate.open();
    assert_eq!(wait_run(&server, &run_id).await["status"], "SUCCEEDED");
    // Revoked the moment the run ended (no cache grace).
    assert_error(
        http.get(format!("{}/users/me", server.api()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
        401,
        "invalid-token",
    )
    .await;
}

#[tokio::test]
async fn other_users_builds_runs_and_logs_are_off_limits() {
    let server = TestServer::start();
    let http = client();
    let bob = server.add_user("bob");
    let api = server.api();
    let as_bob = server.as_user(&bob);
    let actor_id = create_actor(&as_bob, shell_actor("bobs-job", "echo secret-output")).await;
    let build = build(&as_bob, &actor_id).await;
    assert_eq!(build["status"], "SUCCEEDED", "{build}");
    let build_id = build["id"].as_str().unwrap().to_string();
    let run = start_run(
        &as_bob,
        &format!("/acts/{actor_id}/runs"),
        serde_json::json!({}),
    )
    .await;
    let run_id = run["id"].as_str().unwrap().to_string();
    assert_eq!(wait_run(&as_bob, &run_id).await["status"], "SUCCEEDED");

    // With the default user's token: nothing of bob's is readable or writable.
    for path in [
        format!("/actor-runs/{run_id}/log"),
        format!("/logs/{run_id}"),
        format!("/actor-runs/{run_id}/dataset/items"),
        format!("/actor-runs/{run_id}/key-value-store/records/INPUT"),
        format!("/acts/{actor_id}/runs/last"),
        format!("/acts/{actor_id}/runs/last/dataset/items"),
    ] {
        let response = http.get(server.url(&path)).send().await.unwrap();
        assert!(
            response.status() == 403 || response.status() == 404,
            "{path}: {}",
            response.status()
        );
        let body: Value = response.json().await.unwrap();
        let kind = body["error"]["type"].as_str().unwrap();
        assert!(
            kind == "insufficient-permissions" || kind == "record-not-found",
            "{path}: {kind}"
        );
    }
    for (method, path) in [
        ("POST", format!("/actor-runs/{run_id}/abort")),
        ("POST", format!("/actor-runs/{run_id}/resurrect")),
        ("DELETE", format!("/actor-runs/{run_id}")),
        ("PUT", format!("/actor-runs/{run_id}")),
        ("POST", format!("/actor-builds/{build_id}/abort")),
        ("DELETE", format!("/actor-builds/{build_id}")),
        ("POST", format!("/actor-runs/{run_id}/dataset/items")),
    ] {
        let request = http
            .request(method.parse().unwrap(), server.url(&path))
            .json(&serde_json::json!({"statusMessage": "x", "a": 1}));
        let response = request.send().await.unwrap();
        assert_error(response, 403, "insufficient-permissions").await;
    }
    let runs: Value = http
        .get(server.url("/actor-runs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(runs["data"]["total"], 0, "bob's runs are not listed");
    let builds: Value = http
        .get(server.url("/actor-builds"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(builds["data"]["total"], 0, "bob's builds are not listed");
    // Bob still sees everything unchanged.
    let still: Value = http
        .get(format!("{api}/actor-runs/{run_id}"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(still["data"]["status"], "SUCCEEDED");
    let items: Value = http
        .get(format!("{api}/actor-runs/{run_id}/dataset/items"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(items, serde_json::json!([]));
}
