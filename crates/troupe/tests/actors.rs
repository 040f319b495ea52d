//! Actors, builds and runs through the real binary, with tiny shell/Python programs as Actors
//! (fast); the SDK Actors are exercised by the compat suites.

mod common;

use std::time::{Duration, Instant};

use common::actors::{
    alive, build, built_actor, create_actor, log_of, shell_actor, start_run, wait_build,
    wait_for_log, wait_for_pids, wait_gone, wait_run, Gate,
};
use common::{assert_error, client, eventually, get_data as get_json, post_data, TestServer};
use serde_json::{json, Value};

async fn post(server: &TestServer, path: &str, body: Value) -> reqwest::Response {
    common::send(server, reqwest::Method::POST, path, Some(body)).await
}

/// `stream=1` GET of a run's log: the answer follows the log until the run ends.
async fn follow_log(server: &TestServer, run_id: &str) -> reqwest::Response {
    client()
        .get(server.url(&format!("/actor-runs/{run_id}/log?stream=1")))
        .send()
        .await
        .unwrap()
}

/// Starts a run of `actor` through the `/actors` prefix with `{"hello": "world"}` as input.
async fn start(server: &TestServer, actor: &str, query: &str) -> Value {
    let path = format!("/actors/{actor}/runs?{query}");
    start_run(server, &path, json!({"hello": "world"})).await
}

#[tokio::test]
async fn actors_versions_and_env_vars() {
    let server = TestServer::start();
    let created = post(&server, "/acts", shell_actor("my-actor", "echo hi")).await;
    assert_eq!(created.status(), 201);
    assert!(created.headers().contains_key("location"));
    let actor = created.json::<Value>().await.unwrap()["data"].clone();
    let id = actor["id"].as_str().unwrap();
    for key in [
        "id",
        "userId",
        "name",
        "username",
        "isPublic",
        "createdAt",
        "modifiedAt",
        "stats",
        "versions",
        "defaultRunOptions",
    ] {
        assert!(actor.get(key).is_some(), "{key} in {actor}");
    }
    // Same object under both prefixes and by every kind of reference.
    for path in [
        format!("/acts/{id}"),
        format!("/actors/{id}"),
        "/acts/~my-actor".into(),
        "/actors/troupe~my-actor".into(),
        "/acts/my-actor".into(),
    ] {
        assert_eq!(get_json(&server, &path).await["id"], id, "{path}");
    }
    assert_error(
        post(&server, "/acts", shell_actor("my-actor", "x")).await,
        409,
        "actor-name-not-unique",
    )
    .await;
    assert_error(
        client()
            .get(server.url("/acts/nope-nope"))
            .send()
            .await
            .unwrap(),
        404,
        "record-not-found",
    )
    .await;
    assert_error(
        client()
            .get(format!("{}/acts/{id}", server.api()))
            .send()
            .await
            .unwrap(),
        401,
        "token-not-provided",
    )
    .await;

    // Versions.
    let v = post(&server, &format!("/acts/{id}/versions"), json!({"versionNumber": "1.0", "sourceType": "SOURCE_FILES", "sourceFiles": [], "envVars": [{"name": "SECRET", "value": "s3", "isSecret": true}]})).await;
    assert_eq!(v.status(), 201);
    assert_error(
        post(
            &server,
            &format!("/acts/{id}/versions"),
            json!({"versionNumber": "1.0", "sourceType": "SOURCE_FILES"}),
        )
        .await,
        400,
        "version-already-exists",
    )
    .await;
    let versions = get_json(&server, &format!("/acts/{id}/versions")).await;
    assert_eq!(versions["total"], 2);
    let put = client()
        .put(server.url(&format!("/acts/{id}/versions/1.0")))
        .json(&json!({"buildTag": "beta"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(
        get_json(&server, &format!("/acts/{id}/versions/1.0")).await["buildTag"],
        "beta"
    );

    // Env vars: secret values are never shown.
    let vars = get_json(&server, &format!("/actors/{id}/versions/1.0/env-vars")).await;
    assert_eq!(vars["total"], 1);
    assert!(vars["items"][0].get("value").is_none());
    let e = post(
        &server,
        &format!("/acts/{id}/versions/1.0/env-vars"),
        json!({"name": "PLAIN", "value": "v"}),
    )
    .await;
    assert_eq!(e.status(), 201);
    assert_error(
        post(
            &server,
            &format!("/acts/{id}/versions/1.0/env-vars"),
            json!({"name": "PLAIN", "value": "w"}),
        )
        .await,
        400,
        "env-var-already-exists",
    )
    .await;
    assert_error(
        post(
            &server,
            &format!("/acts/{id}/versions/1.0/env-vars"),
            json!({"name": "1BAD", "value": "w"}),
        )
        .await,
        400,
        "invalid-input",
    )
    .await;
    let upd = client()
        .put(server.url(&format!("/acts/{id}/versions/1.0/env-vars/PLAIN")))
        .json(&json!({"value": "changed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(upd.status(), 200);
    assert_eq!(
        get_json(&server, &format!("/acts/{id}/versions/1.0/env-vars/PLAIN")).await["value"],
        "changed"
    );
    let del = client()
        .delete(server.url(&format!("/acts/{id}/versions/1.0/env-vars/PLAIN")))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    assert_error(
        client()
            .get(server.url(&format!("/acts/{id}/versions/1.0/env-vars/PLAIN")))
            .send()
            .await
            .unwrap(),
        404,
        "record-not-found",
    )
    .await;
    let del = client()
        .delete(server.url(&format!("/acts/{id}/versions/1.0")))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);

    // Update and list.
    let upd = client()
        .put(server.url(&format!("/acts/{id}")))
        .json(&json!({"title": "My Actor", "defaultRunOptions": {"memoryMbytes": 256}}))
        .send()
        .await
        .unwrap();
    assert_eq!(upd.status(), 200);
    let actor = get_json(&server, &format!("/acts/{id}")).await;
    assert_eq!(actor["title"], "My Actor");
    assert_eq!(actor["defaultRunOptions"]["memoryMbytes"], 256);
    assert_eq!(actor["defaultRunOptions"]["build"], "latest");
    let bad = client()
        .put(server.url(&format!("/acts/{id}")))
        .json(&json!({"defaultRunOptions": {"memoryMbytes": 100}}))
        .send()
        .await
        .unwrap();
    assert_error(bad, 400, "invalid-input").await;
    let list = get_json(&server, "/acts").await;
    assert_eq!(
        (list["total"].as_u64(), list["items"][0]["id"].as_str()),
        (Some(1), Some(id))
    );
    let del = client()
        .delete(server.url(&format!("/actors/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    assert_error(
        client()
            .get(server.url(&format!("/acts/{id}")))
            .send()
            .await
            .unwrap(),
        404,
        "record-not-found",
    )
    .await;
}

#[tokio::test]
async fn bad_input_changes_nothing() {
    let server = TestServer::start();
    let file = |name: &str, format: &str, content: &str| {
        json!({"name": "bad", "versions": [{"versionNumber": "0.1", "sourceType": "SOURCE_FILES",
            "sourceFiles": [{"name": name, "format": format, "content": content}]}]})
    };
    for body in [
        file("../x", "TEXT", "x"),
        file("/etc/passwd", "TEXT", "x"),
        file("a/../../b", "TEXT", "x"),
        file("main.py", "BASE64", "!!!not base64"),
        file("main.py", "HEX", "00"),
        json!({"name": "bad", "versions": [{"versionNumber": "1", "sourceType": "SOURCE_FILES"}]}),
        json!({"name": "bad", "versions": [{"versionNumber": "0.1", "sourceType": "NOPE"}]}),
        json!({"name": "Bad Name!"}),
        json!({"versions": []}),
        json!({"name": "bad", "defaultRunOptions": {"memoryMbytes": 300}}),
    ] {
        assert_error(
            post(&server, "/acts", body.clone()).await,
            400,
            "invalid-input",
        )
        .await;
    }
    let malformed = client()
        .post(server.url("/acts"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(get_json(&server, "/acts").await["total"], 0);

    let id = built_actor(&server, "good", "echo ok").await;
    // Unknown version → nothing built.
    let r = client()
        .post(server.url(&format!("/acts/{id}/builds?version=9.9")))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid-parameter").await;
    let r = client()
        .post(server.url(&format!("/acts/{id}/builds")))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "parameter-required").await;
    assert_eq!(
        get_json(&server, &format!("/acts/{id}/builds")).await["total"],
        1
    );
    // Invalid run options or unknown build → nothing started.
    for (query, status, kind) in [
        ("build=9.9.9", 400, "unknown-build-tag"),
        ("build=nope", 400, "unknown-build-tag"),
        ("memory=100", 400, "invalid-parameter"),
        ("memory=384", 400, "invalid-parameter"),
        ("memory=65536", 400, "invalid-parameter"),
        ("timeout=-1", 400, "invalid-parameter"),
        ("timeout=abc", 400, "invalid-parameter"),
        ("waitForFinish=-5", 400, "invalid-parameter"),
    ] {
        let r = client()
            .post(server.url(&format!("/acts/{id}/runs?{query}")))
            .send()
            .await
            .unwrap();
        assert_error(r, status, kind).await;
    }
    let bad_json = client()
        .post(server.url(&format!("/acts/{id}/runs")))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_error(bad_json, 400, "run-input-body-not-valid-json").await;
    let r = client()
        .post(server.url("/acts/unknown-actor/runs"))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "record-not-found").await;
    assert_eq!(
        get_json(&server, &format!("/acts/{id}/runs")).await["total"],
        0
    );
    assert_eq!(get_json(&server, "/actor-runs").await["total"], 0);
    assert_error(
        client()
            .get(server.url("/actor-runs/nope"))
            .send()
            .await
            .unwrap(),
        404,
        "record-not-found",
    )
    .await;
    assert_error(
        client()
            .get(server.url("/actor-builds/nope"))
            .send()
            .await
            .unwrap(),
        404,
        "record-not-found",
    )
    .await;
    assert_error(
        client().get(server.url("/logs/nope")).send().await.unwrap(),
        404,
        "record-not-found",
    )
    .await;
}

#[tokio::test]
async fn builds_numbers_tags_and_failures() {
    let server = TestServer::start();
    let id = built_actor(&server, "builder", "echo ok").await;
    let second = client()
        .post(server.url(&format!("/actors/{id}/builds?version=0.1&waitForFinish=60")))
        .send()
        .await
        .unwrap();
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["data"]["buildNumber"], "0.1.2");
    let second = json!({"data": wait_build(&server, second["data"]["id"].as_str().unwrap()).await});
    let actor = get_json(&server, &format!("/acts/{id}")).await;
    assert_eq!(
        actor["taggedBuilds"]["latest"]["buildId"],
        second["data"]["id"]
    );
    let default = get_json(&server, &format!("/acts/{id}/builds/default")).await;
    assert_eq!(default["id"], second["data"]["id"]);
    let build_id = second["data"]["id"].as_str().unwrap();
    // Deprecated alias and the build log.
    assert_eq!(
        get_json(&server, &format!("/acts/{id}/builds/{build_id}")).await["id"],
        build_id
    );
    let log = client()
        .get(server.url(&format!("/actor-builds/{build_id}/log")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log.contains("Build finished"), "{log}");
    // The default build cannot be deleted; an older one can.
    assert_error(
        client()
            .delete(server.url(&format!("/actor-builds/{build_id}")))
            .send()
            .await
            .unwrap(),
        400,
        "deleting-default-build",
    )
    .await;
    let builds = get_json(&server, &format!("/acts/{id}/builds")).await;
    assert_eq!(builds["total"], 2);
    let first = builds["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .find(|b| *b != build_id)
        .unwrap();
    assert_eq!(
        client()
            .delete(server.url(&format!("/actor-builds/{first}")))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );

    // A project troupe cannot start fails its build with a reason; so does a failing install.
    let body = json!({"name": "nothing", "versions": [{"versionNumber": "0.1", "sourceType": "SOURCE_FILES",
        "sourceFiles": [{"name": "README.md", "format": "TEXT", "content": "hi"}]}]});
    let nid = create_actor(&server, body).await;
    let failed = build(&server, &nid).await;
    assert_eq!(failed["status"], "FAILED");
    let log = log_of(&server, failed["id"].as_str().unwrap()).await;
    assert!(log.contains("Cannot tell how to start"), "{log}");
    let body = json!({"name": "badreq", "versions": [{"versionNumber": "0.1", "sourceType": "SOURCE_FILES",
        "sourceFiles": [{"name": "main.py", "format": "TEXT", "content": "print(1)"},
                        {"name": "requirements.txt", "format": "TEXT", "content": "--no-index\nthis-package-does-not-exist-troupe==1.0\n"}]}]});
    let bid = create_actor(&server, body).await;
    let failed = build(&server, &bid).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let log = log_of(&server, failed["id"].as_str().unwrap()).await;
    assert!(
        log.contains("this-package-does-not-exist-troupe"),
        "installer output in the log: {log}"
    );
    // No run can use a failed build.
    let r = client()
        .post(server.url(&format!("/acts/{bid}/runs")))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "unknown-build-tag").await;
}

#[tokio::test]
async fn run_statuses_exit_codes_timeout_and_abort() {
    let server = TestServer::start();
    let ok = built_actor(
        &server,
        "okay",
        "echo start; echo \"input key $ACTOR_INPUT_KEY\"; echo err >&2; exit 0",
    )
    .await;
    let run = start(&server, &ok, "").await;
    for key in [
        "id",
        "actId",
        "userId",
        "startedAt",
        "status",
        "meta",
        "stats",
        "options",
        "buildId",
        "generalAccess",
        "defaultKeyValueStoreId",
        "defaultDatasetId",
        "defaultRequestQueueId",
        "buildNumber",
    ] {
        assert!(run.get(key).is_some(), "{key} in {run}");
    }
    assert_eq!(run["meta"]["origin"], "API");
    // The caller's address, as on Apify (loopback here)...
    assert_eq!(run["meta"]["clientIp"], "127.0.0.1", "{run}");
    assert_eq!(run["options"]["diskMbytes"], 256);
    let done = wait_run(&server, run["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(done["exitCode"], 0);
    assert!(done["finishedAt"].is_string());
    let log = log_of(&server, run["id"].as_str().unwrap()).await;
    assert!(
        log.contains("input key INPUT") && log.contains(" err\n"),
        "{log}"
    );
    for line in log.lines() {
        let (ts, _) = line.split_at(24);
        assert!(
            ts.ends_with('Z') && ts.as_bytes()[19] == b'.' && line.as_bytes()[24] == b' ',
            "timestamp prefix: {line}"
        );
    }
    // Global and per-Actor listings, with the status filter.
    let list = get_json(&server, "/actor-runs?status=SUCCEEDED").await;
    assert_eq!(list["total"], 1);
    assert_eq!(
        get_json(&server, "/actor-runs?status=FAILED").await["total"],
        0
    );
    assert_error(
        client()
            .get(server.url("/actor-runs?status=WHATEVER"))
            .send()
            .await
            .unwrap(),
        400,
        "invalid-parameter",
    )
    .await;

    let failing = built_actor(&server, "failing", "echo bye; exit 3").await;
    // ... or what a reverse proxy in front reports.
    let r = client()
        .post(server.url(&format!("/acts/{failing}/runs")))
        .header("x-forwarded-for", "203.0.113.9, 10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let proxied = r.json::<Value>().await.unwrap()["data"].clone();
    assert_eq!(proxied["meta"]["clientIp"], "203.0.113.9", "{proxied}");
    let stored = get_json(
        &server,
        &format!("/actor-runs/{}", proxied["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(stored["meta"]["clientIp"], "203.0.113.9", "{stored}");
    wait_run(&server, proxied["id"].as_str().unwrap()).await;
    let run = start(&server, &failing, "").await;
    let done = wait_run(&server, run["id"].as_str().unwrap()).await;
    assert_eq!(
        (done["status"].as_str(), done["exitCode"].as_i64()),
        (Some("FAILED"), Some(3))
    );

    let slow = built_actor(
        &server,
        "slow",
        "echo pid=$$; sleep 300 & echo pid=$!; wait",
    )
    .await;
    let run = start(&server, &slow, "timeout=1").await;
    let id = run["id"].as_str().unwrap();
    let done = wait_run(&server, id).await;
    assert_eq!(done["status"], "TIMED-OUT", "{done}");
    assert!(done["statusMessage"]
        .as_str()
        .unwrap()
        .contains("timed out"));
    for pid in common::actors::pids_in(&log_of(&server, id).await) {
        wait_gone(pid, "a timed-out run's process").await;
    }

    let run = start(&server, &slow, "").await;
    let id = run["id"].as_str().unwrap();
    // Both processes are up (and their pids logged) before the abort.
    let pids = wait_for_pids(&server, id, 2).await;
    let started = Instant::now();
    let aborted = client()
        .post(server.url(&format!("/actor-runs/{id}/abort")))
        .send()
        .await
        .unwrap();
    assert_eq!(aborted.status(), 200);
    let aborted: Value = aborted.json().await.unwrap();
    assert!(["ABORTING", "ABORTED"].contains(&aborted["data"]["status"].as_str().unwrap()));
    let done = wait_run(&server, id).await;
    assert_eq!(done["status"], "ABORTED");
    // Far below the 300 s the program would take: the abort ended it.
    assert!(started.elapsed() < Duration::from_secs(60));
    let log = wait_for_log(&server, id, "ended with status").await;
    assert_eq!(common::actors::pids_in(&log), pids, "{log}");
    for pid in pids {
        wait_gone(pid, "an aborted run's process").await;
    }
    // Abort of a finished run changes nothing.
    let again: Value = client()
        .post(server.url(&format!("/actor-runs/{id}/abort")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["data"]["status"], "ABORTED");
}

/// A follower (`stream=1`) gets each line as soon as the run prints it, not at its next look at
/// the file: ten lines, each printed only once the follower has received the one before (at one
/// look per 200 ms that takes ~2 s; woken by the log's flushes, a few ms per line).
#[tokio::test]
async fn followed_log_lines_arrive_as_they_are_printed() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do echo \"line $i\"; \
         while [ ! -e '{}/go'$i ]; do sleep 0.005; done; done; echo last line",
        dir.path().display()
    );
    let id = built_actor(&server, "ping-pong", &script).await;
    let run = start(&server, &id, "").await;
    let run_id = run["id"].as_str().unwrap().to_string();
    let mut followed = follow_log(&server, &run_id).await;
    let mut text = String::new();
    let mut waits = Vec::new();
    for i in 1..=10 {
        let t = Instant::now();
        while !text.contains(&format!("line {i}\n")) {
            let chunk = followed.chunk().await.unwrap();
            let chunk = chunk.unwrap_or_else(|| panic!("the log ended before line {i}: {text}"));
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        waits.push(t.elapsed());
        std::fs::write(dir.path().join(format!("go{i}")), b"").unwrap();
    }
    // The first wait includes the run's start.
    let answered: Duration = waits[1..].iter().sum();
    assert!(
        answered < Duration::from_millis(900),
        "nine lines took {answered:?}: {waits:?}"
    );
    while let Some(chunk) = followed.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.contains("last line"), "{text}");
    assert_eq!(wait_run(&server, &run_id).await["status"], "SUCCEEDED");
}

/// A follower ends when the run ends, even while a process that left the run's process group
/// (so troupe's kill of the group missed it) keeps writing into the log's pipe: the log's writer
/// stays open and its flushes keep waking the follower, but the run's status change ends it.
#[tokio::test]
async fn a_follow_ends_with_its_run_while_an_escaped_process_writes() {
    struct Kill(std::path::PathBuf);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Ok(pid) = std::fs::read_to_string(&self.0) {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    // SAFETY: a plain signal to the test's own leftover process.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let _kill = Kill(pid_file.clone());
    let script = format!(
        "setsid sh -c 'echo $$ > {}; while :; do echo escaped; sleep 0.02; done' & \
         sleep 0.3; echo main done",
        pid_file.display()
    );
    let id = built_actor(&server, "escaper", &script).await;
    let run = start(&server, &id, "").await;
    let run_id = run["id"].as_str().unwrap().to_string();
    let mut followed = follow_log(&server, &run_id).await;
    let mut text = String::new();
    let t = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = followed.chunk().await.unwrap() {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the follow went on after the run ended ({:?}): {}",
        t.elapsed(),
        &text[text.len().saturating_sub(300)..]
    );
    assert!(
        text.contains("main done") && text.contains("escaped"),
        "{text}"
    );
    assert_eq!(wait_run(&server, &run_id).await["status"], "SUCCEEDED");
}

#[tokio::test]
async fn wait_for_finish_log_follow_and_resurrect() {
    let server = TestServer::start();
    // Ticks until the test opens the gate (then, and when resurrected, it ends at once).
    let gate = Gate::new();
    let script = format!(
        "i=0; while [ ! -e '{}' ]; do i=$((i+1)); echo tick $i; sleep 0.2; done; echo ticker done",
        gate.path().display()
    );
    let id = built_actor(&server, "ticker", &script).await;
    let run = start(&server, &id, "").await;
    let run_id = run["id"].as_str().unwrap().to_string();
    common::actors::wait_running(&server, &run_id).await;
    // waitForFinish returns after its time while the run is still going (it cannot end before
    // the gate opens).
    let t = Instant::now();
    let still = get_json(&server, &format!("/actor-runs/{run_id}?waitForFinish=1")).await;
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(30),
        "{waited:?}"
    );
    assert_eq!(still["status"], "RUNNING");
    // stream=1 follows the log until the run ends: what the run writes after the first chunk
    // arrived (after the gate opens) still comes through the same response.
    wait_for_log(&server, &run_id, "tick 1").await;
    let mut followed = follow_log(&server, &run_id).await;
    assert_eq!(
        followed.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let first = followed.chunk().await.unwrap().expect("a first chunk");
    let mut text = String::from_utf8(first.to_vec()).unwrap();
    assert!(text.contains("tick 1"), "{text}");
    assert!(!text.contains("ticker done"), "{text}");
    gate.open();
    while let Some(chunk) = followed.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(
        text.contains("tick 1") && text.contains("ticker done"),
        "the stream stayed open while the run went on: {text}"
    );
    let run = wait_run(&server, &run_id).await;
    assert_eq!(run["status"], "SUCCEEDED");
    let download = client()
        .get(server.url(&format!("/logs/{run_id}?download=1")))
        .send()
        .await
        .unwrap();
    assert!(download.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    // Deprecated per-Actor alias.
    assert_eq!(
        get_json(&server, &format!("/acts/{id}/runs/{run_id}")).await["id"],
        run_id.as_str()
    );

    // Resurrect: same id and storages, runs again, with the options it is given.
    let r = client()
        .post(server.url(&format!(
            "/actor-runs/{run_id}/resurrect?maxItems=7&memory=256&timeout=50"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let again = wait_run(&server, &run_id).await;
    assert_eq!(again["options"]["maxItems"], 7, "{again}");
    assert_eq!(again["options"]["memoryMbytes"], 256, "{again}");
    assert_eq!(again["options"]["timeoutSecs"], 50, "{again}");
    assert_eq!(again["status"], "SUCCEEDED");
    assert_eq!(again["defaultDatasetId"], run["defaultDatasetId"]);
    assert_eq!(again["stats"]["resurrectCount"], 1);
    let log = log_of(&server, &run_id).await;
    assert_eq!(log.matches("ticker done").count(), 2, "{log}");

    // Status message through PUT (what the SDKs call).
    let put = client()
        .put(server.url(&format!("/actor-runs/{run_id}")))
        .json(
            &json!({"statusMessage": "half way", "isStatusMessageTerminal": true, "level": "INFO"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let put: Value = put.json().await.unwrap();
    assert_eq!(
        (
            put["data"]["statusMessage"].as_str(),
            put["data"]["isStatusMessageTerminal"].as_bool()
        ),
        (Some("half way"), Some(true))
    );
    // Delete a finished run.
    assert_eq!(
        client()
            .delete(server.url(&format!("/actor-runs/{run_id}")))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_error(
        client()
            .get(server.url(&format!("/actor-runs/{run_id}")))
            .send()
            .await
            .unwrap(),
        404,
        "record-not-found",
    )
    .await;
}

#[tokio::test]
async fn sync_runs_and_run_storages() {
    let server = TestServer::start();
    let push = r#"python3 - <<'EOF'
import json, os, urllib.request
url = os.environ["APIFY_API_BASE_URL"] + "/v2/datasets/" + os.environ["ACTOR_DEFAULT_DATASET_ID"] + "/items"
req = urllib.request.Request(url, data=json.dumps([{"n": 1}, {"n": 2}]).encode(), method="POST",
    headers={"content-type": "application/json", "authorization": "Bearer " + os.environ["APIFY_TOKEN"]})
urllib.request.urlopen(req).read()
print("pushed")
EOF"#;
    let id = built_actor(&server, "pusher", push).await;
    let r = client()
        .post(server.url(&format!("/acts/{id}/run-sync-get-dataset-items")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let run_id = r.headers()["x-apify-run-id"].to_str().unwrap().to_string();
    let items: Value = r.json().await.unwrap();
    assert_eq!(items, json!([{"n": 1}, {"n": 2}]));
    // The run's default storages are reachable through the run.
    let items: Value = client()
        .get(server.url(&format!("/actor-runs/{run_id}/dataset/items")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(items.as_array().unwrap().len(), 2);
    let ds = get_json(&server, &format!("/actor-runs/{run_id}/dataset")).await;
    assert_eq!(ds["actRunId"], run_id.as_str());
    let last = get_json(
        &server,
        &format!("/acts/{id}/runs/last/dataset?status=SUCCEEDED"),
    )
    .await;
    assert_eq!(last["actRunId"], run_id.as_str());
    let r = client()
        .get(server.url(&format!("/acts/{id}/runs/last/dataset?status=FAILED")))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "record-not-found").await;
    // The run's token stopped working once the run ended; CSV export works through run-sync too.
    let r = client()
        .get(server.url(&format!("/acts/{id}/run-sync-get-dataset-items?format=csv")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.text().await.unwrap().trim_start_matches('\u{feff}'),
        "n\n1\n2\n"
    );
    // A failing run gives run-failed.
    let f = built_actor(&server, "fails", "exit 1").await;
    let r = client()
        .post(server.url(&format!("/acts/{f}/run-sync-get-dataset-items")))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "run-failed").await;
}

#[tokio::test]
async fn memory_limit_and_budget() {
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(temp.path(), &["--max-memory-mbytes", "256"]);
    let hog = built_actor(&server, "hog", "python3 -c 'import time; x = bytearray(400*1024*1024); x[::4096] = b\"x\" * len(x[::4096]); time.sleep(300)'").await;
    let run = start(&server, &hog, "memory=128").await;
    let done = wait_run(&server, run["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "FAILED");
    assert!(
        done["statusMessage"]
            .as_str()
            .unwrap()
            .contains("memory limit"),
        "{done}"
    );

    // Budget 256 MB: two 128 MB runs go, the third waits in READY until one ends. (The runs
    // sleep far longer than the test takes: only aborts end them.)
    let sleeper = built_actor(&server, "sleeper", "sleep 300").await;
    let a = start(&server, &sleeper, "memory=128").await;
    let b = start(&server, &sleeper, "memory=128").await;
    let c = start(&server, &sleeper, "memory=128").await;
    let status_of = |run: &Value| {
        let path = format!("/actor-runs/{}", run["id"].as_str().unwrap());
        let server = &server;
        async move {
            get_json(server, &path).await["status"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    for run in [&a, &b] {
        common::actors::wait_running(&server, run["id"].as_str().unwrap()).await;
    }
    // Give the scheduler a moment in which it must not start the third run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_of(&c).await, "READY");
    let r = client()
        .post(server.url(&format!("/acts/{sleeper}/runs?memory=512")))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "actor-memory-limit-exceeded").await;
    // Ending one run lets the waiting one start.
    client()
        .post(server.url(&format!("/actor-runs/{}/abort", a["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    common::actors::wait_running(&server, c["id"].as_str().unwrap()).await;
    for run in [&b, &c] {
        client()
            .post(server.url(&format!(
                "/actor-runs/{}/abort",
                run["id"].as_str().unwrap()
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(
            wait_run(&server, run["id"].as_str().unwrap()).await["status"],
            "ABORTED"
        );
    }
}

#[tokio::test]
async fn server_killed_with_a_run_going() {
    let temp = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(temp.path(), &[]);
    let id = built_actor(
        &server,
        "forever",
        "echo pid=$$; sleep 300 & echo pid=$!; wait",
    )
    .await;
    let run = start(&server, &id, "").await;
    let run_id = run["id"].as_str().unwrap().to_string();
    // RUNNING means the server has stored which process group is the run's (what a restarted
    // server needs to stop it); both processes are up once their pids are logged.
    common::actors::wait_running(&server, &run_id).await;
    let pids = wait_for_pids(&server, &run_id, 2).await;
    assert_eq!(pids.len(), 2);
    server.kill9();
    assert!(
        pids.iter().any(|p| alive(*p)),
        "the run outlived the killed server"
    );
    let server = TestServer::start_in(temp.path(), &[]);
    let run = get_json(&server, &format!("/actor-runs/{run_id}")).await;
    assert_eq!(run["status"], "FAILED");
    assert!(
        run["statusMessage"].as_str().unwrap().contains("restarted"),
        "{run}"
    );
    for pid in pids {
        wait_gone(pid, "stopped after the restart").await;
    }
}

#[tokio::test]
async fn push_and_call_from_the_command_line() {
    let server = TestServer::start();
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(project.path().join(".actor")).unwrap();
    std::fs::write(
        project.path().join(".actor/actor.json"),
        r#"{"actorSpecification": 1, "name": "pushed", "version": "0.2", "startCommand": "sh main.sh"}"#,
    )
    .unwrap();
    std::fs::write(
        project.path().join("main.sh"),
        "echo from pushed actor; exit 0\n",
    )
    .unwrap();
    std::fs::create_dir_all(project.path().join("node_modules/x")).unwrap();
    std::fs::write(project.path().join("node_modules/x/big.js"), "ignored").unwrap();
    let troupe = env!("CARGO_BIN_EXE_troupe");
    let push = |dir: &std::path::Path| {
        std::process::Command::new(troupe)
            .args([
                "push",
                dir.to_str().unwrap(),
                "--url",
                &server.origin,
                "--token",
                &server.token,
            ])
            .output()
            .unwrap()
    };
    let out = push(project.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0.2.1 SUCCEEDED"));
    let actor = get_json(&server, "/acts/~pushed").await;
    let files = &actor["versions"][0]["sourceFiles"];
    assert_eq!(
        files.as_array().unwrap().len(),
        2,
        "node_modules is not uploaded: {files}"
    );
    // A second push updates the version and builds again.
    std::fs::write(
        project.path().join("main.sh"),
        "echo second edition; exit 0\n",
    )
    .unwrap();
    let out = push(project.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("0.2.2 SUCCEEDED"));

    let call = std::process::Command::new(troupe)
        .args([
            "call",
            "pushed",
            "--input",
            "{\"a\": 1}",
            "--url",
            &server.origin,
            "--token",
            &server.token,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&call.stdout);
    assert!(
        call.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&call.stderr)
    );
    assert!(stdout.contains("second edition"), "{stdout}");
    let failing = std::process::Command::new(troupe)
        .args([
            "call",
            "nope-nope",
            "--url",
            &server.origin,
            "--token",
            &server.token,
        ])
        .output()
        .unwrap();
    assert!(!failing.status.success());
}

#[tokio::test]
async fn metamorph_and_reboot() {
    let server = TestServer::start();
    let first = built_actor(&server, "first", "echo first $ACTOR_INPUT_KEY; sleep 300").await;
    let second = built_actor(
        &server,
        "second",
        "echo second $ACTOR_INPUT_KEY $ACTOR_RUN_ID; exit 0",
    )
    .await;
    let run = start(&server, &first, "").await;
    let id = run["id"].as_str().unwrap().to_string();
    wait_for_log(&server, &id, "first INPUT").await;
    let r = client()
        .post(server.url(&format!(
            "/actor-runs/{id}/metamorph?targetActorId={second}"
        )))
        .header("content-type", "application/json")
        .body("{\"next\": true}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let done = wait_run(&server, &id).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["metamorphs"].as_array().unwrap().len(), 1);
    assert_eq!(done["metamorphs"][0]["inputKey"], "INPUT-METAMORPH-1");
    assert_eq!(done["defaultDatasetId"], run["defaultDatasetId"]);
    let log = log_of(&server, &id).await;
    assert!(
        log.contains(&format!("second INPUT-METAMORPH-1 {id}")),
        "{log}"
    );
    // Metamorph of a finished run is refused.
    let r = client()
        .post(server.url(&format!(
            "/actor-runs/{id}/metamorph?targetActorId={second}"
        )))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "job-finished").await;

    // Runs until the gate opens, so it is surely still going when rebooted.
    let gate = Gate::new();
    let booting = built_actor(&server, "booting", &format!("echo boot; {}", gate.wait())).await;
    let run = start(&server, &booting, "").await;
    let id = run["id"].as_str().unwrap().to_string();
    wait_for_log(&server, &id, "boot").await;
    let r = client()
        .post(server.url(&format!("/actor-runs/{id}/reboot")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually("the rebooted program to start again", || async {
        (log_of(&server, &id).await.matches(" boot\n").count() == 2).then_some(())
    })
    .await;
    gate.open();
    let done = wait_run(&server, &id).await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(done["stats"]["rebootCount"], 1);
    assert_eq!(log_of(&server, &id).await.matches(" boot\n").count(), 2);
}

#[tokio::test]
async fn run_token_works_only_while_the_run_goes() {
    let server = TestServer::start();
    // The program keeps its token in its own working folder (DATA/runs/{runId}), written whole
    // (renamed into place), and goes on until the gate opens.
    let gate = Gate::new();
    let script = format!(
        "echo $APIFY_TOKEN > token.tmp && mv token.tmp token.txt; pwd; {}",
        gate.wait()
    );
    let id = built_actor(&server, "token-keeper", &script).await;
    let run = start(&server, &id, "").await;
    let run_id = run["id"].as_str().unwrap().to_string();
    let token_file = server.data_dir.join("runs").join(&run_id).join("token.txt");
    let token = eventually("the run's token file", || async {
        std::fs::read_to_string(&token_file).ok()
    })
    .await
    .trim()
    .to_string();
    assert_ne!(
        token, server.token,
        "a run never gets the owner's own token"
    );
    let url = format!("{}/actor-runs/{run_id}", server.api());
    let during = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(during.status(), 200);
    gate.open();
    assert_eq!(wait_run(&server, &run_id).await["status"], "SUCCEEDED");
    let after = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_error(after, 401, "invalid-token").await;
}

#[tokio::test]
async fn server_shutdown_stops_runs() {
    let temp = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(temp.path(), &[]);
    let id = built_actor(
        &server,
        "stopper",
        "echo pid=$$; sleep 300 & echo pid=$!; wait",
    )
    .await;
    let run = start(&server, &id, "").await;
    let run_id = run["id"].as_str().unwrap().to_string();
    common::actors::wait_running(&server, &run_id).await;
    let pids = wait_for_pids(&server, &run_id, 2).await;
    assert_eq!(pids.len(), 2);
    assert!(server.stop(), "clean exit on SIGTERM");
    for pid in pids {
        wait_gone(pid, "stopped with the server").await;
    }
    let server = TestServer::start_in(temp.path(), &[]);
    let run = get_json(&server, &format!("/actor-runs/{run_id}")).await;
    assert_eq!(run["status"], "FAILED");
    assert!(
        run["statusMessage"]
            .as_str()
            .unwrap()
            .contains("server was stopped"),
        "{run}"
    );
}

#[tokio::test]
async fn run_sync_returns_the_output_record() {
    let server = TestServer::start();
    let script = r#"python3 - <<'EOF'
import json, os, urllib.request
base = os.environ["APIFY_API_BASE_URL"] + "/v2/key-value-stores/" + os.environ["ACTOR_DEFAULT_KEY_VALUE_STORE_ID"] + "/records/"
auth = {"authorization": "Bearer " + os.environ["APIFY_TOKEN"]}
inp = json.loads(urllib.request.urlopen(urllib.request.Request(base + os.environ["ACTOR_INPUT_KEY"], headers=auth)).read())
out = json.dumps({"doubled": inp["n"] * 2}).encode()
urllib.request.urlopen(urllib.request.Request(base + "OUTPUT", data=out, method="PUT", headers={**auth, "content-type": "application/json"})).read()
urllib.request.urlopen(urllib.request.Request(base + "OTHER", data=b"plain text", method="PUT", headers={**auth, "content-type": "text/plain"})).read()
EOF"#;
    let id = built_actor(&server, "doubler", script).await;
    let r = client()
        .post(server.url(&format!("/acts/{id}/run-sync")))
        .header("content-type", "application/json")
        .body("{\"n\": 21}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({"doubled": 42}));
    let r = client()
        .post(server.url(&format!("/actors/{id}/run-sync?outputRecordKey=OTHER")))
        .header("content-type", "application/json")
        .body("{\"n\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.text().await.unwrap(), "plain text");
    // The input record is stored with the run, as sent.
    let runs = get_json(&server, &format!("/acts/{id}/runs?desc=1&limit=1")).await;
    let kvs = runs["items"][0]["defaultKeyValueStoreId"].as_str().unwrap();
    let input = client()
        .get(server.url(&format!("/key-value-stores/{kvs}/records/INPUT")))
        .send()
        .await
        .unwrap();
    assert_eq!(input.text().await.unwrap(), "{\"n\": 1}");
}

#[tokio::test]
async fn sync_run_past_its_wait_answers_408_and_goes_on() {
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(temp.path(), &["--sync-run-wait-secs", "1"]);
    // The runs go on until the gate opens: they cannot end within the server's 1 s wait.
    let gate = Gate::new();
    let script = format!("{}; echo finished", gate.wait());
    let id = built_actor(&server, "slowpoke", &script).await;
    for path in ["run-sync", "run-sync-get-dataset-items"] {
        let t = Instant::now();
        let request = client()
            .post(server.url(&format!("/acts/{id}/{path}")))
            .send();
        let r = tokio::time::timeout(Duration::from_secs(60), request)
            .await
            .expect("answered without waiting for the run")
            .unwrap();
        assert!(t.elapsed() >= Duration::from_millis(900), "waited its 1 s");
        assert_error(r, 408, "run-timeout-exceeded").await;
    }
    let runs = get_json(&server, &format!("/acts/{id}/runs")).await;
    assert_eq!(runs["total"], 2);
    gate.open();
    for run in runs["items"].as_array().unwrap() {
        assert_eq!(
            wait_run(&server, run["id"].as_str().unwrap()).await["status"],
            "SUCCEEDED"
        );
    }
}

#[tokio::test]
async fn build_abort_stops_the_installer() {
    let server = TestServer::start();
    // A package index that accepts connections and never answers: pip hangs until aborted.
    let index = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = index.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = index.accept().await {
            held.push(socket);
        }
    });
    let requirements = format!("--index-url http://127.0.0.1:{port}/simple/\nsome-package==1.0\n");
    let body = json!({"name": "hanging-build", "versions": [{"versionNumber": "0.1", "sourceType": "SOURCE_FILES",
        "sourceFiles": [{"name": "main.py", "format": "TEXT", "content": "print(1)"},
                        {"name": "requirements.txt", "format": "TEXT", "content": requirements}]}]});
    let id = create_actor(&server, body).await;
    let build: Value = client()
        .post(server.url(&format!("/acts/{id}/builds?version=0.1&useCache=0")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let build_id = build["data"]["id"].as_str().unwrap().to_string();
    wait_for_log(&server, &build_id, "pip install").await;
    // Let pip get as far as its (hanging) connection to the index.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let aborted: Value = client()
        .post(server.url(&format!("/actor-builds/{build_id}/abort")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(aborted["data"]["status"], "ABORTED");
    let done = get_json(
        &server,
        &format!("/actor-builds/{build_id}?waitForFinish=10"),
    )
    .await;
    assert_eq!(done["status"], "ABORTED");
    // pip alone would hang on the index for minutes (15 s timeout, 5 retries).
    assert!(t.elapsed() < Duration::from_secs(30));
    // The Actor has no usable build, so nothing can run.
    let r = client()
        .post(server.url(&format!("/acts/{id}/runs")))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "unknown-build-tag").await;
}

/// Output of a fast writer lands in the log line by line, in order, each line timestamped;
/// `--max-log-bytes` caps the log with one note and the run still succeeds.
#[tokio::test]
async fn fast_output_is_logged_in_order_up_to_the_log_limit() {
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(temp.path(), &["--max-log-bytes", "200000"]);
    // 3000 numbered lines of ~100 characters (~300 KB), printed by one awk process.
    let script = "awk 'BEGIN { for (i = 0; i < 3000; i++) printf \"line %05d %s\\n\", i, sprintf(\"%090d\", 0) }'";
    let id = built_actor(&server, "chatty", script).await;
    let run = start(&server, &id, "").await;
    let run = wait_run(&server, run["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let log = log_of(&server, run["id"].as_str().unwrap()).await;
    assert!(log.len() <= 200_000 + 200, "{}", log.len());
    let numbers: Vec<u32> = log
        .lines()
        .filter_map(|line| {
            assert_eq!(line.as_bytes()[23], b'Z', "{line}");
            line[25..].strip_prefix("line ")
        })
        .map(|rest| rest[..5].parse().unwrap())
        .collect();
    // Every kept line, in order, with nothing skipped before the cut.
    assert!(numbers.len() > 1500, "{}", numbers.len());
    assert_eq!(numbers, (0..numbers.len() as u32).collect::<Vec<_>>());
    assert!(
        log.contains("The log reached its limit of 200000 characters"),
        "{}",
        &log[log.len().saturating_sub(500)..]
    );
}

/// A log of several chunks (sent 1 MiB at a time) comes back byte for byte, with its
/// length announced, through every log route; `download=1` is the same bytes as an attachment.
#[tokio::test]
async fn multi_megabyte_log_is_served_whole_with_its_length() {
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(temp.path(), &["--max-log-bytes", "8000000"]);
    // 30000 numbered lines of ~100 characters: ~3.8 MB with the timestamps, under the cap.
    let script = "awk 'BEGIN { for (i = 0; i < 30000; i++) printf \"line %05d %s\\n\", i, sprintf(\"%090d\", 0) }'";
    let id = built_actor(&server, "big-log", script).await;
    let run = start(&server, &id, "").await;
    let run_id = run["id"].as_str().unwrap().to_string();
    let run = wait_run(&server, &run_id).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let on_disk = std::fs::read(temp.path().join("logs").join(format!("{run_id}.log"))).unwrap();
    assert!(on_disk.len() > 3_000_000, "{}", on_disk.len());
    for path in [
        format!("/logs/{run_id}"),
        format!("/actor-runs/{run_id}/log"),
        format!("/logs/{run_id}?download=1"),
    ] {
        let response = client().get(server.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["content-length"].to_str().unwrap(),
            on_disk.len().to_string(),
            "{path}"
        );
        let body = response.bytes().await.unwrap();
        assert!(body[..] == on_disk[..], "{path}: {} bytes", body.len());
    }
    let text = String::from_utf8(on_disk).unwrap();
    assert!(text.contains("line 29999 "), "the last line is kept");
}

/// Fields missing from a run's input take the `default` of the build's input schema (never
/// `prefill`); an absent input becomes the defaults; non-object inputs stay as sent.
#[tokio::test]
async fn input_schema_defaults_fill_missing_fields() {
    let server = TestServer::start();
    let schema = json!({
        "title": "Input", "type": "object", "schemaVersion": 1,
        "properties": {
            "startUrls": {"title": "URLs", "type": "array", "editor": "requestListSources",
                          "default": [{"url": "https://example.com"}]},
            "maxPages": {"title": "Max", "type": "integer", "default": 10},
            "query": {"title": "Query", "type": "string", "editor": "textfield", "prefill": "apify"},
        },
    });
    let actor = json!({
        "name": "with-schema",
        "versions": [{
            "versionNumber": "0.1",
            "sourceType": "SOURCE_FILES",
            "sourceFiles": [
                {"name": ".actor/actor.json", "format": "TEXT",
                 "content": "{\"actorSpecification\":1,\"startCommand\":\"sh main.sh\",\"input\":\"./input_schema.json\"}"},
                {"name": ".actor/input_schema.json", "format": "TEXT", "content": schema.to_string()},
                {"name": "main.sh", "format": "TEXT", "content": "true"},
            ],
        }],
        "defaultRunOptions": {"build": "latest", "timeoutSecs": 120, "memoryMbytes": 128},
    });
    let id = common::actors::built_actor_from(&server, actor).await;
    let input_of = |run: &Value| {
        let store = run["defaultKeyValueStoreId"].as_str().unwrap().to_string();
        let url = server.url(&format!("/key-value-stores/{store}/records/INPUT"));
        async move { client().get(url).send().await.unwrap() }
    };

    // Partial input: the given field wins, missing ones take their defaults, prefill is not used.
    let run = start_run(
        &server,
        &format!("/acts/{id}/runs"),
        json!({"maxPages": 3, "other": true}),
    )
    .await;
    let input: Value = input_of(&run).await.json().await.unwrap();
    assert_eq!(
        input,
        json!({"maxPages": 3, "other": true, "startUrls": [{"url": "https://example.com"}]})
    );
    assert_eq!(
        wait_run(&server, run["id"].as_str().unwrap()).await["status"],
        "SUCCEEDED"
    );

    // No input at all: the defaults are the input.
    let response = client()
        .post(server.url(&format!("/acts/{id}/runs")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let run: Value = response.json().await.unwrap();
    let input: Value = input_of(&run["data"]).await.json().await.unwrap();
    assert_eq!(
        input,
        json!({"maxPages": 10, "startUrls": [{"url": "https://example.com"}]})
    );

    // A text input is not touched.
    let response = client()
        .post(server.url(&format!("/acts/{id}/runs")))
        .header("content-type", "text/plain")
        .body("just text")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let run: Value = response.json().await.unwrap();
    let record = input_of(&run["data"]).await;
    assert!(record.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(record.text().await.unwrap(), "just text");
}

#[tokio::test]
async fn run_lists_filter_by_start_time() {
    // `startedAfter` / `startedBefore` (inclusive, ISO 8601 — RFC 3339 from JS, Python's
    // `...Z` form too) on all three run listings; a bad value is a 400 that lists nothing.
    let server = TestServer::start();
    let actor = built_actor(&server, "timed", "echo hi").await;
    let task = post_data(
        &server,
        "/actor-tasks",
        json!({"actId": actor, "name": "timed-task"}),
        201,
    )
    .await;
    let task_id = task["id"].as_str().unwrap().to_string();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let run = start_run(&server, &format!("/actor-tasks/{task_id}/runs"), json!({})).await;
        let done = wait_run(&server, run["id"].as_str().unwrap()).await;
        runs.push(done);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let id = |n: usize| runs[n]["id"].as_str().unwrap().to_string();
    let at = |n: usize| runs[n]["startedAt"].as_str().unwrap().to_string();
    for base in [
        "/actor-runs?".to_string(),
        format!("/actors/{actor}/runs?"),
        format!("/actor-tasks/{task_id}/runs?"),
    ] {
        let page = get_json(&server, &format!("{base}startedAfter={}", at(1))).await;
        assert_eq!(ids(&page), vec![id(1), id(2)], "{base}");
        assert_eq!(page["total"], 2);
        let page = get_json(&server, &format!("{base}startedBefore={}", at(1))).await;
        assert_eq!(ids(&page), vec![id(0), id(1)], "{base}");
        let page = get_json(
            &server,
            &format!(
                "{base}startedAfter={}&startedBefore={}&desc=1&status=SUCCEEDED",
                at(0),
                at(1)
            ),
        )
        .await;
        assert_eq!(ids(&page), vec![id(1), id(0)], "{base}");
        let page = get_json(&server, &format!("{base}startedAfter={}", at(2))).await;
        assert_eq!(ids(&page), vec![id(2)], "{base}");
        let bad = common::send(
            &server,
            reqwest::Method::GET,
            &format!("{base}startedAfter=yesterday"),
            None,
        )
        .await;
        assert_error(bad, 400, "invalid-parameter").await;
    }
}
