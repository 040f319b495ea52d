//! Tiny Actors (shell programs) for the integration tests: create, build, start, wait, read logs,
//! and watch the processes a run left behind. Everything that waits polls against [`PATIENCE`]
//! instead of assuming how fast the machine is.

use std::path::PathBuf;
use std::time::Instant;

use reqwest::Method;
use serde_json::{json, Value};

use super::{client, data_of, eventually, get_data, post_data, send, Api, PATIENCE};

const FINISHED: [&str; 4] = ["SUCCEEDED", "FAILED", "TIMED-OUT", "ABORTED"];

/// An Actor whose program is `script` (run with `/bin/sh`).
pub fn shell_actor(name: &str, script: &str) -> Value {
    json!({
        "name": name,
        "versions": [{
            "versionNumber": "0.1",
            "sourceType": "SOURCE_FILES",
            "sourceFiles": [
                {"name": ".actor/actor.json", "format": "TEXT", "content": "{\"actorSpecification\":1,\"startCommand\":\"sh main.sh\"}"},
                {"name": "main.sh", "format": "TEXT", "content": script},
            ],
        }],
        "defaultRunOptions": {"build": "latest", "timeoutSecs": 120, "memoryMbytes": 128},
    })
}

/// Creates an Actor from `body` (asserted 201); returns its id.
pub async fn create_actor(api: &impl Api, body: Value) -> String {
    post_data(api, "/acts", body, 201).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Builds version 0.1 of `actor` and waits until the build ends; returns the finished build.
pub async fn build(api: &impl Api, actor: &str) -> Value {
    let started = data_of(
        send(
            api,
            Method::POST,
            &format!("/acts/{actor}/builds?version=0.1&waitForFinish=60"),
            None,
        )
        .await,
        201,
    )
    .await;
    wait_build(api, started["id"].as_str().unwrap()).await
}

/// Waits until build `id` ends; returns it.
pub async fn wait_build(api: &impl Api, id: &str) -> Value {
    wait_job(api, &format!("/actor-builds/{id}")).await
}

/// Creates and builds an Actor (the build must succeed); returns its id.
pub async fn built_actor_from(api: &impl Api, body: Value) -> String {
    let id = create_actor(api, body).await;
    let build = build(api, &id).await;
    assert_eq!(build["status"], "SUCCEEDED", "{build}");
    id
}

/// Creates and builds a [`shell_actor`]; returns its id.
pub async fn built_actor(api: &impl Api, name: &str, script: &str) -> String {
    built_actor_from(api, shell_actor(name, script)).await
}

/// `POST path` (e.g. `/acts/{id}/runs?timeout=1`) with `input` as a JSON body; asserts 201 and
/// returns the new run.
pub async fn start_run(api: &impl Api, path: &str, input: Value) -> Value {
    post_data(api, path, input, 201).await
}

/// Waits until run `id` ends; returns it.
pub async fn wait_run(api: &impl Api, id: &str) -> Value {
    wait_job(api, &format!("/actor-runs/{id}")).await
}

/// Polls a run or build with `waitForFinish` until it is finished.
async fn wait_job(api: &impl Api, path: &str) -> Value {
    let deadline = Instant::now() + PATIENCE * 5;
    loop {
        let job = get_data(api, &format!("{path}?waitForFinish=60")).await;
        if FINISHED.contains(&job["status"].as_str().unwrap()) {
            return job;
        }
        assert!(Instant::now() < deadline, "{path} did not finish: {job}");
    }
}

/// Waits until run `id` is RUNNING; returns it.
pub async fn wait_running(api: &impl Api, id: &str) -> Value {
    eventually(&format!("run {id} RUNNING"), move || async move {
        let run = get_data(api, &format!("/actor-runs/{id}")).await;
        (run["status"] == "RUNNING").then_some(run)
    })
    .await
}

/// The log of a run or build.
pub async fn log_of(api: &impl Api, id: &str) -> String {
    let response = client().get(api.url(&format!("/logs/{id}"))).send().await;
    response.unwrap().text().await.unwrap()
}

/// Waits until the log of `id` contains `needle`; returns the log.
pub async fn wait_for_log(api: &impl Api, id: &str, needle: &str) -> String {
    eventually(
        &format!("{needle:?} in the log of {id}"),
        move || async move {
            let log = log_of(api, id).await;
            log.contains(needle).then_some(log)
        },
    )
    .await
}

/// Pids printed by the program as `pid=N` lines.
pub fn pids_in(log: &str) -> Vec<i32> {
    log.lines()
        .filter_map(|l| l.split("pid=").nth(1))
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// Waits until the log of `id` shows `count` pids; returns them.
pub async fn wait_for_pids(api: &impl Api, id: &str, count: usize) -> Vec<i32> {
    eventually(
        &format!("{count} pids in the log of {id}"),
        move || async move {
            let pids = pids_in(&log_of(api, id).await);
            (pids.len() >= count).then_some(pids)
        },
    )
    .await
}

/// True while process `pid` exists (a zombie is gone for our purposes).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// Waits until process `pid` is gone. A killed process exits once the kernel schedules it,
/// which a loaded machine can delay: never assert `!alive` right after a kill.
pub async fn wait_gone(pid: i32, what: &str) {
    eventually(
        &format!("process {pid} gone ({what})"),
        move || async move { (!alive(pid)).then_some(()) },
    )
    .await
}

/// A file a test program waits for, so that the test decides when the program goes on (instead
/// of the program sleeping and hoping the test is quick enough).
pub struct Gate {
    dir: tempfile::TempDir,
}

impl Gate {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("gate dir"),
        }
    }

    /// The file whose existence opens the gate.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("open")
    }

    /// A shell command that returns once the gate is open.
    pub fn wait(&self) -> String {
        format!(
            "while [ ! -e '{}' ]; do sleep 0.05; done",
            self.path().display()
        )
    }

    /// Lets every program waiting at the gate go on (now and later).
    pub fn open(&self) {
        std::fs::write(self.path(), b"").expect("open gate");
    }
}
