//! Test fixture: starts the real `troupe` binary on a random port with a fresh data dir.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const TOKEN: &str = "test-token-0123456789";

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
    pub fn start() -> Self {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().to_path_buf();
        let mut server = Self::start_in(&dir, &[]);
        server._temp = Some(temp);
        server
    }

    /// Starts a server on an existing data dir (restart tests), with extra arguments.
    pub fn start_in(dir: &Path, extra_args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_troupe"))
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir)
            .args(extra_args)
            .env("TROUPE_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
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
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}token={}", self.api(), self.token)
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
        for _ in 0..100 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
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
