//! Test fixture: starts the real `troupe` binary on a random port with a fresh data dir.
#![allow(dead_code)]

pub mod actors;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "test-token-0123456789";

/// How long a test waits for something that must happen (a run to start, a log line, a counter
/// flush) before failing. Generous: CI machines can be slow and loaded; waiting ends as soon as
/// the thing happens, so a fast machine never pays for it.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Where API calls go and with which token: the default user's ([`TestServer`]) or another's
/// ([`TestServer::as_user`]).
pub trait Api {
    /// `http://127.0.0.1:PORT/v2`
    fn api(&self) -> String;
    fn token(&self) -> &str;
    /// `{api}{path}` with the token as a query parameter appended.
    fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}token={}", self.api(), self.token())
    }
}

/// Another user's view of a running server.
pub struct User<'a> {
    pub server: &'a TestServer,
    pub token: String,
}

impl Api for User<'_> {
    fn api(&self) -> String {
        self.server.api()
    }
    fn token(&self) -> &str {
        &self.token
    }
}

impl Api for TestServer {
    fn api(&self) -> String {
        TestServer::api(self)
    }
    fn token(&self) -> &str {
        &self.token
    }
}

/// A running server; stopped (SIGTERM) when dropped.
pub struct TestServer {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub origin: String,
    pub token: String,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server with a fresh data dir.
    /// Keeps `temp` (the data dir's parent) alive as long as the server.
    pub fn keep_temp(&mut self, temp: tempfile::TempDir) {
        self._temp = Some(temp);
    }

    pub fn start() -> Self {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().to_path_buf();
        let mut server = Self::start_in(&dir, &[]);
        server._temp = Some(temp);
        server
    }

    /// Starts a server on an existing data dir (restart tests), with extra arguments.
    pub fn start_in(dir: &Path, extra_args: &[&str]) -> Self {
        Self::start_logging(dir, extra_args, "warn", Stdio::inherit())
    }

    /// Starts a server with `RUST_LOG=rust_log`, its log (stderr) going to `stderr`.
    pub fn start_logging(
        dir: &Path,
        extra_args: &[&str],
        rust_log: &str,
        stderr: impl Into<Stdio>,
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_troupe"))
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir)
            .args(extra_args)
            .env("TROUPE_TOKEN", TOKEN)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn troupe");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut origin = None;
        let mut line = String::new();
        while reader.read_line(&mut line).expect("read stdout") > 0 {
            if let Some(rest) = line.split("listening on ").nth(1) {
                origin = Some(rest.split_whitespace().next().expect("address").to_string());
                break;
            }
            line.clear();
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        let origin = origin.expect("server printed its address");
        Self {
            child: Some(child),
            origin,
            token: TOKEN.to_string(),
            data_dir: dir.to_path_buf(),
            _temp: None,
        }
    }

    /// `http://127.0.0.1:PORT/v2`
    pub fn api(&self) -> String {
        format!("{}/v2", self.origin)
    }

    /// `{api}{path}` with the token as a query parameter appended.
    pub fn url(&self, path: &str) -> String {
        Api::url(self, path)
    }

    /// Adds a user with the command line; returns the user's token.
    pub fn add_user(&self, name: &str) -> String {
        let (ok, out) = troupe(&["users", "add", name], &self.data_dir);
        assert!(ok, "users add {name}: {out}");
        token_from(&out)
    }

    /// The API as the user with `token`.
    pub fn as_user(&self, token: &str) -> User<'_> {
        User {
            server: self,
            token: token.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills the server with SIGKILL (crash tests) and waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM and returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP client without automatic decompression or redirects, so tests see the wire.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Asserts an Apify error envelope with `status` and `error_type`.
pub async fn assert_error(
    response: reqwest::Response,
    status: u16,
    error_type: &str,
) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let body: serde_json::Value = response.json().await.expect("json error body");
    assert_eq!(body["error"]["type"], error_type, "error type in {body}");
    assert!(body["error"]["message"].is_string(), "message in {body}");
    body
}

/// Sends `method path` (token appended) with an optional JSON body.
pub async fn send(
    api: &impl Api,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = client().request(method, api.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// Asserts `status` and returns the `data` of the JSON body.
pub async fn data_of(response: reqwest::Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let url = response.url().path().to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(got, status, "{url}: {body}");
    body["data"].clone()
}

/// `GET path`, asserted 200; the `data` of the answer.
pub async fn get_data(api: &impl Api, path: &str) -> Value {
    data_of(send(api, reqwest::Method::GET, path, None).await, 200).await
}

/// `POST path` with a JSON body, asserted `status`; the `data` of the answer.
pub async fn post_data(api: &impl Api, path: &str, body: Value, status: u16) -> Value {
    data_of(
        send(api, reqwest::Method::POST, path, Some(body)).await,
        status,
    )
    .await
}

/// Polls `probe` until it gives `Some` (or panics with `what` after [`PATIENCE`]).
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {PATIENCE:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the `troupe` command line on `data_dir`; returns (success, stdout).
pub fn troupe(args: &[&str], data_dir: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run troupe");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The secret in the output of `troupe users add` / `troupe tokens create`.
pub fn token_from(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("token line")
        .trim()
        .to_string()
}
