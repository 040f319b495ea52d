//! Builds from every source type through the real binary: git repositories (branch, tag, commit,
//! abbreviated commit, subdirectory, credentials over HTTP), gists, tarballs and zips served by a
//! tiny HTTP server in the test, hostile archives, bad URLs, build timeouts and aborts. Nothing
//! touches the network beyond 127.0.0.1; everything that happens in the background is awaited
//! by polling with a generous deadline, and the stalled sources never answer, so timeouts and
//! aborts happen while the build is certainly still fetching.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use common::actors::{log_of, start_run, wait_build, wait_run};
use common::{assert_error, data_of, eventually, get_data, post_data, send, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

// ---------------------------------------------------------------------------------------------
// Local sources

const ACTOR_JSON: &str = r#"{"actorSpecification":1,"startCommand":"sh main.sh"}"#;

/// Runs `git` in `dir` (asserting success); returns stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "tag.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Writes a shell Actor printing `source=WHAT` into `dir`.
fn write_actor(dir: &Path, what: &str) {
    std::fs::create_dir_all(dir.join(".actor")).unwrap();
    std::fs::write(dir.join(".actor/actor.json"), ACTOR_JSON).unwrap();
    std::fs::write(dir.join("main.sh"), format!("echo source={what}\n")).unwrap();
}

/// A repository with history: commit 1 (tag `v1`, prints `v1`), a branch `dev` (prints `dev`)
/// and `main` at commit 2 (prints `main`, plus `actors/one` printing `sub`).
struct Repo {
    _temp: tempfile::TempDir,
    path: PathBuf,
    first_commit: String,
}

impl Repo {
    fn new() -> Self {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("repo");
        std::fs::create_dir_all(&path).unwrap();
        git(&path, &["init", "-q"]);
        write_actor(&path, "v1");
        git(&path, &["add", "-A"]);
        git(&path, &["commit", "-q", "-m", "one"]);
        git(&path, &["tag", "v1"]);
        let first_commit = git(&path, &["rev-parse", "HEAD"]);
        git(&path, &["checkout", "-q", "-b", "dev"]);
        write_actor(&path, "dev");
        git(&path, &["commit", "-q", "-am", "dev"]);
        git(&path, &["checkout", "-q", "main"]);
        write_actor(&path, "main");
        write_actor(&path.join("actors/one"), "sub");
        git(&path, &["add", "-A"]);
        git(&path, &["commit", "-q", "-m", "two"]);
        Repo {
            _temp: temp,
            path,
            first_commit,
        }
    }

    fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }
}

fn version(number: &str, source: Value) -> Value {
    let mut version =
        json!({"versionNumber": number, "buildTag": format!("t{}", number.replace('.', "-"))});
    for (k, v) in source.as_object().unwrap() {
        version[k] = v.clone();
    }
    version
}

fn git_version(number: &str, url: &str) -> Value {
    version(number, json!({"sourceType": "GIT_REPO", "gitRepoUrl": url}))
}

fn tarball_version(number: &str, url: &str) -> Value {
    version(number, json!({"sourceType": "TARBALL", "tarballUrl": url}))
}

async fn create_actor_with(server: &TestServer, name: &str, versions: Vec<Value>) -> String {
    let actor = post_data(
        server,
        "/acts",
        json!({
            "name": name,
            "versions": versions,
            "defaultRunOptions": {"build": "latest", "timeoutSecs": 120, "memoryMbytes": 128},
        }),
        201,
    )
    .await;
    actor["id"].as_str().unwrap().to_string()
}

/// Starts a build of `version` (with extra query, e.g. `&timeout=2`); returns its id.
async fn start_build(server: &TestServer, actor: &str, version: &str, query: &str) -> String {
    let build = data_of(
        send(
            server,
            Method::POST,
            &format!("/acts/{actor}/builds?version={version}{query}"),
            None,
        )
        .await,
        201,
    )
    .await;
    build["id"].as_str().unwrap().to_string()
}

/// Builds `version` and waits for the end.
async fn build_version(server: &TestServer, actor: &str, version: &str) -> Value {
    let id = start_build(server, actor, version, "").await;
    wait_build(server, &id).await
}

/// Runs build `build_number` of `actor`; returns its log and the finished run.
async fn run_output(server: &TestServer, actor: &str, build_number: &str) -> (String, Value) {
    let run = start_run(
        server,
        &format!("/acts/{actor}/runs?build={build_number}"),
        json!({}),
    )
    .await;
    let id = run["id"].as_str().unwrap();
    let run = wait_run(server, id).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    (log_of(server, id).await, run)
}

/// Builds `version` (must succeed) and runs it; returns the `source=` it printed.
async fn built_and_run(server: &TestServer, actor: &str, version: &str) -> String {
    built_and_run_with(server, actor, version).await.0
}

/// [`built_and_run`], also returning the finished run.
async fn built_and_run_with(server: &TestServer, actor: &str, version: &str) -> (String, Value) {
    let build = build_version(server, actor, version).await;
    assert_eq!(
        build["status"],
        "SUCCEEDED",
        "{build}\n{}",
        log_of(server, build["id"].as_str().unwrap()).await
    );
    let (log, run) = run_output(server, actor, build["buildNumber"].as_str().unwrap()).await;
    let source = log
        .lines()
        .find_map(|l| l.split("source=").nth(1))
        .unwrap_or_else(|| panic!("no source= in {log}"))
        .trim()
        .to_string();
    (source, run)
}

/// Builds `version`, which must fail; returns (statusMessage, log).
async fn failed_build(server: &TestServer, actor: &str, version: &str) -> (String, String) {
    let build = build_version(server, actor, version).await;
    assert_eq!(build["status"], "FAILED", "{build}");
    let id = build["id"].as_str().unwrap();
    (
        build["statusMessage"].as_str().unwrap_or("").to_string(),
        log_of(server, id).await,
    )
}

// ---------------------------------------------------------------------------------------------
// A tiny HTTP server: static files (optionally behind Basic auth), webhook receiver, and stalls

#[derive(Clone, Default)]
struct Files {
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    /// `Authorization` header value required for paths starting with `/private/`.
    auth: Arc<Mutex<Option<String>>>,
    hooks: Arc<Mutex<Vec<Value>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

struct Http {
    origin: String,
    state: Files,
}

impl Http {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Files::default();
        let app = axum::Router::new()
            .fallback(serve_file)
            .with_state(state.clone());
        let origin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Http { origin, state }
    }

    fn put(&self, path: &str, bytes: Vec<u8>) -> String {
        self.state
            .files
            .lock()
            .unwrap()
            .insert(path.to_string(), bytes);
        format!("{}{path}", self.origin)
    }

    /// Serves every file of `dir` under `prefix`.
    fn put_tree(&self, prefix: &str, dir: &Path) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(at) = stack.pop() {
            for entry in std::fs::read_dir(&at).unwrap() {
                let entry = entry.unwrap();
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    self.put(&format!("{prefix}/{rel}"), std::fs::read(&path).unwrap());
                }
            }
        }
    }

    fn hooks(&self) -> Vec<Value> {
        self.state.hooks.lock().unwrap().clone()
    }
}

async fn serve_file(
    State(state): State<Files>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    state.requests.lock().unwrap().push(path.clone());
    if method == axum::http::Method::POST && path == "/hook" {
        state
            .hooks
            .lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
        return StatusCode::OK.into_response();
    }
    if path.starts_with("/private/") {
        let wanted = state.auth.lock().unwrap().clone();
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if given.is_none() || given != wanted {
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Basic realm=\"test\"")],
                "",
            )
                .into_response();
        }
    }
    match state.files.lock().unwrap().get(&path) {
        Some(bytes) => (StatusCode::OK, bytes.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Accepts connections, reads what the client sends and never answers; counts connections
/// opened and connections the client closed (a killed git or a dropped download closes its
/// socket).
struct Stall {
    origin: String,
    opened: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Stall {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let opened = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (o, c) = (opened.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                o.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Stall {
            origin,
            opened,
            closed,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Archives

/// A `.tar.gz` of `files` (path, content, mode) built with the `tar` crate.
fn tar_gz(files: &[(&str, &str, u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_path(path).unwrap();
        header.set_cksum();
        builder.append(&header, content.as_bytes()).unwrap();
    }
    gzip(&builder.into_inner().unwrap())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A tar entry with a raw name and link name (the builder refuses `..` and absolute paths).
fn raw_tar_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    link: Option<&str>,
    data: &[u8],
) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    {
        let raw = header.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
    }
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    for (path, content) in files {
        if path.ends_with('/') {
            zip.add_directory(*path, options).unwrap();
        } else {
            zip.start_file(*path, options).unwrap();
            zip.write_all(content.as_bytes()).unwrap();
        }
    }
    zip.finish().unwrap().into_inner()
}

/// Every path below `dir` whose file name is `name`.
fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(listing) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in listing.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy() == name {
                found.push(path.clone());
            }
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path);
            }
        }
    }
    found
}

/// A server that lets git sources be local repositories (the tests' repos are local: CI has
/// no network).
fn local_server() -> TestServer {
    let temp = tempfile::tempdir().expect("tempdir");
    let mut server = TestServer::start_in(temp.path(), &["--allow-local-sources"]);
    server.keep_temp(temp);
    server
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn local_git_sources_are_refused_unless_allowed() {
    let repo = Repo::new();
    let server = TestServer::start();
    let actor = create_actor_with(
        &server,
        "local-refused",
        vec![
            git_version("0.1", &repo.url()),
            git_version("0.2", &repo.path.display().to_string()),
            version(
                "0.3",
                json!({"sourceType": "GITHUB_GIST", "gitHubGistUrl": repo.url()}),
            ),
        ],
    )
    .await;
    for number in ["0.1", "0.2", "0.3"] {
        let build = build_version(&server, &actor, number).await;
        assert_eq!(build["status"], "FAILED", "version {number}: {build}");
        let log = log_of(&server, build["id"].as_str().unwrap()).await;
        assert!(
            log.contains("--allow-local-sources"),
            "version {number}: {log}"
        );
    }
}

#[tokio::test]
async fn git_repo_branch_tag_commit_and_subdirectory() {
    let repo = Repo::new();
    let server = local_server();
    let url = repo.url();
    let short = &repo.first_commit[..9];
    let actor = create_actor_with(
        &server,
        "from-git",
        vec![
            git_version("0.1", &url),
            git_version("0.2", &format!("{url}#dev")),
            git_version("0.3", &format!("{url}#v1")),
            git_version("0.4", &format!("{url}#{}", repo.first_commit)),
            git_version("0.5", &format!("{url}#{short}")),
            git_version("0.6", &format!("{url}#main:actors/one")),
            // A plain path, default branch, subdirectory with a trailing slash.
            git_version("0.7", &format!("{}#:actors/one/", repo.path.display())),
        ],
    )
    .await;
    // What each version prints, and the run's `gitBranchName` (the branch built: named, or
    // the default one; none for a tag or a commit).
    let expected = [
        ("0.1", "main", json!("main")),
        ("0.2", "dev", json!("dev")),
        ("0.3", "v1", Value::Null),
        ("0.4", "v1", Value::Null),
        ("0.5", "v1", Value::Null),
        ("0.6", "sub", json!("main")),
        ("0.7", "sub", json!("main")),
    ];
    for (number, what, branch) in expected {
        let (source, run) = built_and_run_with(&server, &actor, number).await;
        assert_eq!(source, what, "version {number}");
        assert_eq!(run["gitBranchName"], branch, "version {number}: {run}");
        let id = run["id"].as_str().unwrap();
        let listed = get_data(&server, &format!("/actor-runs/{id}")).await;
        assert_eq!(listed["gitBranchName"], branch, "version {number}");
    }
    // The build log names the commit; the build folder holds no .git.
    let builds = get_data(&server, &format!("/acts/{actor}/builds?desc=1&limit=100")).await;
    let v4 = builds["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["buildNumber"] == "0.4.1")
        .unwrap();
    let id = v4["id"].as_str().unwrap();
    let log = log_of(&server, id).await;
    assert!(
        log.contains(&format!("Checked out commit {}", repo.first_commit)),
        "{log}"
    );
    assert!(!server
        .data_dir
        .join("builds")
        .join(id)
        .join(".git")
        .exists());
    assert!(server
        .data_dir
        .join("builds")
        .join(id)
        .join("main.sh")
        .is_file());
    assert!(!server
        .data_dir
        .join("builds")
        .join(format!("{id}.fetch"))
        .exists());
    let build = get_data(&server, &format!("/actor-builds/{id}")).await;
    assert_eq!(build["actVersion"]["sourceType"], "GIT_REPO");
    assert_eq!(
        build["actVersion"]["gitRepoUrl"],
        format!("{url}#{}", repo.first_commit)
    );
}

/// A repository whose `main.sh` prints `source=` followed by what its submodules hold: `lib`
/// (a submodule) and `lib/deep` (a submodule of `lib`), recorded at the URLs `url(path)` gives.
struct WithSubmodules {
    _temp: tempfile::TempDir,
    root: PathBuf,
    main: PathBuf,
}

impl WithSubmodules {
    fn new(url: impl Fn(&Path) -> String) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().to_path_buf();
        let allow_file = ["-c", "protocol.file.allow=always"];
        let repo = |name: &str, value: &str| {
            let path = root.join(name);
            std::fs::create_dir_all(&path).unwrap();
            git(&path, &["init", "-q"]);
            std::fs::write(path.join("VALUE"), value).unwrap();
            path
        };
        let deep = repo("deep.git", "deep");
        git(&deep, &["add", "-A"]);
        git(&deep, &["commit", "-q", "-m", "deep"]);
        let lib = repo("lib.git", "lib");
        let deep_url = format!("file://{}", deep.display());
        git(
            &lib,
            &[
                &allow_file[..],
                &["submodule", "add", "-q", &deep_url, "deep"],
            ]
            .concat(),
        );
        git(
            &lib,
            &[
                "config",
                "-f",
                ".gitmodules",
                "submodule.deep.url",
                &url(&deep),
            ],
        );
        git(&lib, &["add", "-A"]);
        git(&lib, &["commit", "-q", "-m", "lib"]);
        let main = root.join("main.git");
        std::fs::create_dir_all(&main).unwrap();
        git(&main, &["init", "-q"]);
        std::fs::create_dir_all(main.join(".actor")).unwrap();
        std::fs::write(main.join(".actor/actor.json"), ACTOR_JSON).unwrap();
        std::fs::write(
            main.join("main.sh"),
            "echo source=$(cat lib/VALUE)-$(cat lib/deep/VALUE)\n",
        )
        .unwrap();
        let lib_abs = format!("file://{}", lib.display());
        git(
            &main,
            &[
                &allow_file[..],
                &["submodule", "add", "-q", &lib_abs, "lib"],
            ]
            .concat(),
        );
        git(
            &main,
            &[
                "config",
                "-f",
                ".gitmodules",
                "submodule.lib.url",
                &url(&lib),
            ],
        );
        git(&main, &["add", "-A"]);
        git(&main, &["commit", "-q", "-m", "main"]);
        WithSubmodules {
            _temp: temp,
            root,
            main,
        }
    }
}

/// Every `.git` (folder or `gitdir:` file) below `dir`.
fn git_entries(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap().flatten() {
            if entry.file_name() == ".git" {
                found.push(entry.path());
            } else if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    found
}

#[tokio::test]
async fn git_submodules_are_fetched_recursively() {
    let repos = WithSubmodules::new(|repo| format!("file://{}", repo.display()));
    let server = local_server();
    let url = format!("file://{}", repos.main.display());
    let actor = create_actor_with(&server, "with-submodules", vec![git_version("0.1", &url)]).await;
    let (source, run) = built_and_run_with(&server, &actor, "0.1").await;
    assert_eq!(source, "lib-deep");
    let build = get_data(
        &server,
        &format!("/actor-builds/{}", run["buildId"].as_str().unwrap()),
    )
    .await;
    let log = log_of(&server, build["id"].as_str().unwrap()).await;
    assert!(log.contains("Fetching the git submodules"), "{log}");
    // No git metadata is kept, of the repository or of its submodules.
    let dir = server
        .data_dir
        .join("builds")
        .join(build["id"].as_str().unwrap());
    assert!(dir.join("lib/deep/VALUE").is_file());
    assert!(git_entries(&dir).is_empty(), "{:?}", git_entries(&dir));
}

/// A remote repository may not reach the server's disk through its submodules unless the
/// operator allows local sources; relative submodule URLs inherit the repository's credentials,
/// which never show.
#[tokio::test]
async fn submodules_of_a_remote_repository() {
    // Submodules at relative URLs: served next to the repository, behind the same credentials.
    let relative =
        WithSubmodules::new(|repo| format!("../{}", repo.file_name().unwrap().to_string_lossy()));
    // Submodules at `file://` URLs on the server's disk.
    let local = WithSubmodules::new(|repo| format!("file://{}", repo.display()));
    let http = Http::start().await;
    // Served over (dumb) HTTP: bare copies with their refs listed.
    let bare = |from: &Path, name: &str| {
        let target = relative.root.join("served").join(name);
        git(
            &relative.root,
            &[
                "clone",
                "-q",
                "--bare",
                from.to_str().unwrap(),
                target.to_str().unwrap(),
            ],
        );
        git(&target, &["update-server-info"]);
        http.put_tree(&format!("/private/{name}"), &target);
    };
    bare(&relative.main, "repo.git");
    bare(&relative.root.join("lib.git"), "lib.git");
    bare(&relative.root.join("deep.git"), "deep.git");
    bare(&local.main, "local.git");
    let secret = "Subm0duleSecret";
    *http.state.auth.lock().unwrap() = Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("deploy:{secret}"))
    ));
    let host = http.origin.trim_start_matches("http://");
    let good = format!("http://deploy:{secret}@{host}/private/repo.git#main");
    let sneaky = format!("http://deploy:{secret}@{host}/private/local.git");
    let server = TestServer::start();
    let actor = create_actor_with(
        &server,
        "remote-submodules",
        vec![git_version("0.1", &good), git_version("0.2", &sneaky)],
    )
    .await;
    let (source, _) = built_and_run_with(&server, &actor, "0.1").await;
    assert_eq!(source, "lib-deep");
    let (message, log) = failed_build(&server, &actor, "0.2").await;
    assert!(
        message.starts_with("git submodule failed"),
        "{message}\n{log}"
    );
    assert!(log.contains("'file' not allowed"), "{log}");
    let builds = get_data(&server, &format!("/acts/{actor}/builds")).await;
    for build in builds["items"].as_array().unwrap() {
        let log = log_of(&server, build["id"].as_str().unwrap()).await;
        assert!(!log.contains(secret), "secret in the build log: {log}");
    }
}

#[tokio::test]
async fn git_failures_are_clear() {
    let repo = Repo::new();
    let server = local_server();
    let url = repo.url();
    let missing = repo.path.with_file_name("no-such-repo");
    let actor = create_actor_with(
        &server,
        "git-failures",
        vec![
            git_version("0.1", &format!("file://{}", missing.display())),
            git_version("0.2", &format!("{url}#no-such-branch")),
            git_version("0.3", &format!("{url}#main:no/such/dir")),
            git_version("0.4", &format!("{url}#dev:actors/one")),
        ],
    )
    .await;
    let (message, log) = failed_build(&server, &actor, "0.1").await;
    assert!(message.starts_with("git fetch failed"), "{message}");
    assert!(log.contains("Build failed: git fetch failed"), "{log}");
    let (message, _) = failed_build(&server, &actor, "0.2").await;
    assert!(message.contains("no-such-branch"), "{message}");
    let (message, _) = failed_build(&server, &actor, "0.3").await;
    assert!(
        message.contains("\"no/such/dir\" does not exist"),
        "{message}"
    );
    // The folder exists on main only.
    let (message, _) = failed_build(&server, &actor, "0.4").await;
    assert!(message.contains("does not exist"), "{message}");
    // Nothing was left behind.
    let leftovers: Vec<_> = std::fs::read_dir(server.data_dir.join("builds"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".fetch"))
        .collect();
    assert!(leftovers.is_empty());
}

#[tokio::test]
async fn bad_source_urls_are_refused_and_nothing_changes() {
    let server = local_server();
    let actor = create_actor_with(&server, "bad-urls", vec![]).await;
    let bad = [
        json!({"versionNumber": "0.1", "sourceType": "GIT_REPO"}),
        json!({"versionNumber": "0.1", "sourceType": "GIT_REPO", "gitRepoUrl": ""}),
        json!({"versionNumber": "0.1", "sourceType": "GIT_REPO", "gitRepoUrl": "ftp://example.com/x.git"}),
        json!({"versionNumber": "0.1", "sourceType": "GIT_REPO", "gitRepoUrl": "ext::sh -c touch% /tmp/pwned"}),
        json!({"versionNumber": "0.1", "sourceType": "GIT_REPO", "gitRepoUrl": "--upload-pack=touch /tmp/x"}),
        json!({"versionNumber": "0.1", "sourceType": "GIT_REPO", "gitRepoUrl": "https://example.com/x.git#main:../up"}),
        json!({"versionNumber": "0.1", "sourceType": "GIT_REPO", "gitRepoUrl": "https://example.com/x.git#-oops"}),
        json!({"versionNumber": "0.1", "sourceType": "TARBALL"}),
        json!({"versionNumber": "0.1", "sourceType": "TARBALL", "tarballUrl": "file:///etc/passwd"}),
        json!({"versionNumber": "0.1", "sourceType": "TARBALL", "tarballUrl": "not a url"}),
        json!({"versionNumber": "0.1", "sourceType": "GITHUB_GIST"}),
        json!({"versionNumber": "0.1", "sourceType": "GITHUB_GIST", "gitHubGistUrl": "gopher://x/y"}),
        json!({"versionNumber": "0.1", "sourceType": "GIT_REPO", "gitRepoUrl": 5}),
    ];
    for body in bad {
        let response = send(
            &server,
            Method::POST,
            &format!("/acts/{actor}/versions"),
            Some(body.clone()),
        )
        .await;
        assert_error(response, 400, "invalid-input").await;
        let response = send(
            &server,
            Method::POST,
            "/acts",
            Some(json!({"name": "bad-urls-2", "versions": [body]})),
        )
        .await;
        assert_error(response, 400, "invalid-input").await;
    }
    let versions = get_data(&server, &format!("/acts/{actor}/versions")).await;
    assert_eq!(versions["total"], 0, "{versions}");
    let response = send(&server, Method::GET, "/acts/bad-urls-2", None).await;
    assert_error(response, 404, "record-not-found").await;
    // Credentials in a refused URL do not come back in the error.
    let response = send(
        &server,
        Method::POST,
        &format!("/acts/{actor}/versions"),
        Some(json!({"versionNumber": "0.1", "sourceType": "GIT_REPO", "gitRepoUrl": "https://u:TopSecret99@x.test/r.git#a..b"})),
    )
    .await;
    let error = assert_error(response, 400, "invalid-input").await;
    assert!(!error.to_string().contains("TopSecret99"), "{error}");
}

#[tokio::test]
async fn private_repo_over_http_with_credentials_never_leaks_them() {
    let repo = Repo::new();
    let bare = repo.path.with_file_name("bare.git");
    git(
        repo.path.parent().unwrap(),
        &[
            "clone",
            "-q",
            "--bare",
            repo.path.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    git(&bare, &["update-server-info"]);
    let http = Http::start().await;
    http.put_tree("/private/repo.git", &bare);
    let secret = "S3cretPassw0rd";
    *http.state.auth.lock().unwrap() = Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("deploy:{secret}"))
    ));
    let host = http.origin.trim_start_matches("http://");
    let good = format!("http://deploy:{secret}@{host}/private/repo.git#main:actors/one");
    let wrong = format!("http://deploy:Wrong{secret}@{host}/private/repo.git#main");
    let server = local_server();
    let actor = create_actor_with(
        &server,
        "private-git",
        vec![git_version("0.1", &good), git_version("0.2", &wrong)],
    )
    .await;
    let (source, run) = built_and_run_with(&server, &actor, "0.1").await;
    assert_eq!(source, "sub");
    assert_eq!(run["gitBranchName"], "main", "{run}");
    let (message, log) = failed_build(&server, &actor, "0.2").await;
    assert!(message.starts_with("git fetch failed"), "{message}");
    let builds = get_data(&server, &format!("/acts/{actor}/builds")).await;
    for build in builds["items"].as_array().unwrap() {
        let id = build["id"].as_str().unwrap();
        let log = log_of(&server, id).await;
        assert!(
            log.contains("Fetching the git repository http://***@"),
            "{log}"
        );
        assert!(!log.contains(secret), "secret in the build log: {log}");
        let full = get_data(&server, &format!("/actor-builds/{id}")).await;
        assert!(
            !full.to_string().contains(secret),
            "secret in the build: {full}"
        );
        assert!(full["actVersion"]["gitRepoUrl"]
            .as_str()
            .unwrap()
            .contains("***@"));
    }
    assert!(!message.contains(secret) && !log.contains(secret));
    // The owner still sees the URL as saved.
    let version = get_data(&server, &format!("/acts/{actor}/versions/0.1")).await;
    assert_eq!(version["gitRepoUrl"], good.as_str());
}

#[tokio::test]
async fn gist_files_at_the_root() {
    let temp = tempfile::tempdir().unwrap();
    let gist = temp.path().join("gist");
    std::fs::create_dir_all(&gist).unwrap();
    git(&gist, &["init", "-q"]);
    std::fs::write(gist.join("main.py"), "print('source=gist')\n").unwrap();
    git(&gist, &["add", "-A"]);
    git(&gist, &["commit", "-q", "-m", "gist"]);
    let server = local_server();
    let actor = create_actor_with(
        &server,
        "from-gist",
        vec![version(
            "0.1",
            json!({"sourceType": "GITHUB_GIST", "gitHubGistUrl": format!("file://{}", gist.display())}),
        )],
    )
    .await;
    assert_eq!(built_and_run(&server, &actor, "0.1").await, "gist");
}

#[tokio::test]
async fn tarballs_and_zips_with_or_without_a_top_folder() {
    let http = Http::start().await;
    let script = "echo source=archive-$(cat what.txt)\n";
    let tgz = http.put(
        "/archive/refs/heads/main.tar.gz",
        tar_gz(&[
            ("proj-main/.actor/actor.json", ACTOR_JSON, 0o644),
            ("proj-main/main.sh", script, 0o755),
            ("proj-main/what.txt", "tgz", 0o644),
        ]),
    );
    let zip_top = http.put(
        "/archive/main.zip",
        zip_of(&[
            ("proj-main/", ""),
            ("proj-main/.actor/actor.json", ACTOR_JSON),
            ("proj-main/main.sh", script),
            ("proj-main/what.txt", "zip"),
            ("__MACOSX/", ""),
            ("__MACOSX/._main.sh", "junk"),
        ]),
    );
    let zip_flat = http.put(
        "/flat.zip",
        zip_of(&[
            (".actor/actor.json", ACTOR_JSON),
            ("main.sh", script),
            ("what.txt", "flat"),
        ]),
    );
    // A plain (uncompressed) tar whose URL says nothing about the format.
    let plain = {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in [
            (".actor/actor.json", ACTOR_JSON),
            ("main.sh", script),
            ("what.txt", "tar"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_path(path).unwrap();
            header.set_cksum();
            builder.append(&header, content.as_bytes()).unwrap();
        }
        http.put("/download", builder.into_inner().unwrap())
    };
    let server = local_server();
    let actor = create_actor_with(
        &server,
        "from-archives",
        vec![
            tarball_version("0.1", &tgz),
            tarball_version("0.2", &zip_top),
            tarball_version("0.3", &format!("{zip_flat}?sig=abc")),
            tarball_version("0.4", &plain),
        ],
    )
    .await;
    assert_eq!(built_and_run(&server, &actor, "0.1").await, "archive-tgz");
    assert_eq!(built_and_run(&server, &actor, "0.2").await, "archive-zip");
    assert_eq!(built_and_run(&server, &actor, "0.3").await, "archive-flat");
    assert_eq!(built_and_run(&server, &actor, "0.4").await, "archive-tar");
    // The executable bit survives.
    let builds = get_data(&server, &format!("/acts/{actor}/builds")).await;
    let first = builds["items"][0]["id"].as_str().unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(server.data_dir.join("builds").join(first).join("main.sh"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o111, 0o111, "{mode:o}");
    let log = log_of(&server, first).await;
    assert!(log.contains("unpacked the tar.gz archive"), "{log}");
}

#[tokio::test]
async fn hostile_archives_fail_and_write_nothing_outside() {
    let http = Http::start().await;
    let marker = format!("escaped-{}", std::process::id());
    let dotdot = {
        let mut b = tar::Builder::new(Vec::new());
        raw_tar_entry(
            &mut b,
            tar::EntryType::Regular,
            "p/main.sh",
            None,
            b"echo hi\n",
        );
        raw_tar_entry(
            &mut b,
            tar::EntryType::Regular,
            &format!("../../../../{marker}"),
            None,
            b"x",
        );
        gzip(&b.into_inner().unwrap())
    };
    let absolute = {
        let mut b = tar::Builder::new(Vec::new());
        raw_tar_entry(
            &mut b,
            tar::EntryType::Regular,
            &format!("/tmp/{marker}"),
            None,
            b"x",
        );
        gzip(&b.into_inner().unwrap())
    };
    let symlink_out = {
        let mut b = tar::Builder::new(Vec::new());
        raw_tar_entry(
            &mut b,
            tar::EntryType::Symlink,
            "p/README.md",
            Some("/etc/passwd"),
            b"",
        );
        gzip(&b.into_inner().unwrap())
    };
    let through_symlink = {
        let mut b = tar::Builder::new(Vec::new());
        raw_tar_entry(&mut b, tar::EntryType::Symlink, "p/up", Some(".."), b"");
        raw_tar_entry(
            &mut b,
            tar::EntryType::Regular,
            &format!("p/up/{marker}"),
            None,
            b"x",
        );
        gzip(&b.into_inner().unwrap())
    };
    let zip_dotdot = zip_of(&[("p/main.sh", "echo hi"), (&format!("../{marker}"), "x")]);
    let cases = [
        ("dotdot", http.put("/1.tgz", dotdot), "Unsafe path"),
        ("absolute", http.put("/2.tgz", absolute), "Unsafe path"),
        (
            "symlink out",
            http.put("/3.tgz", symlink_out),
            "points outside",
        ),
        (
            "through symlink",
            http.put("/4.tgz", through_symlink),
            "Unsafe path",
        ),
        ("zip dotdot", http.put("/5.zip", zip_dotdot), "Unsafe path"),
    ];
    let server = local_server();
    let versions = cases
        .iter()
        .enumerate()
        .map(|(i, (_, url, _))| tarball_version(&format!("0.{}", i + 1), url))
        .collect();
    let actor = create_actor_with(&server, "hostile", versions).await;
    for (i, (what, _, expected)) in cases.iter().enumerate() {
        let (message, log) = failed_build(&server, &actor, &format!("0.{}", i + 1)).await;
        assert!(message.contains(expected), "{what}: {message}");
        assert!(log.contains("Build failed"), "{what}: {log}");
    }
    assert!(
        find_named(&server.data_dir, &marker).is_empty(),
        "something escaped"
    );
    let parent = server.data_dir.parent().unwrap();
    assert!(!parent.join(&marker).exists(), "something escaped");
    assert!(!Path::new("/tmp").join(&marker).exists());
    // No build produced a folder (nothing half-unpacked is kept).
    let builds = std::fs::read_dir(server.data_dir.join("builds"))
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    assert_eq!(builds, 0);
}

#[tokio::test]
async fn tarball_download_failures_and_size_limit() {
    let http = Http::start().await;
    let big = http.put("/big.tgz", vec![0x1f; 5000]);
    let html = http.put("/page.zip", b"<html>login</html>".to_vec());
    let missing = format!("{}/missing.tgz", http.origin);
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://u:Hidden1234@127.0.0.1:{port}/x.tgz?token=Hidden5678")
    };
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(temp.path(), &["--max-source-bytes", "2000"]);
    let actor = create_actor_with(
        &server,
        "bad-downloads",
        vec![
            tarball_version("0.1", &big),
            tarball_version("0.2", &html),
            tarball_version("0.3", &missing),
            tarball_version("0.4", &closed),
        ],
    )
    .await;
    let (message, _) = failed_build(&server, &actor, "0.1").await;
    assert!(
        message.contains("larger than the limit of 2000 bytes"),
        "{message}"
    );
    let (message, _) = failed_build(&server, &actor, "0.2").await;
    assert!(
        message.contains("not a .tar.gz, .tgz, .tar or .zip archive"),
        "{message}"
    );
    let (message, _) = failed_build(&server, &actor, "0.3").await;
    assert!(message.contains("HTTP 404"), "{message}");
    let (message, log) = failed_build(&server, &actor, "0.4").await;
    assert!(
        message.starts_with("Cannot download the tarball"),
        "{message}"
    );
    assert!(
        !message.contains("Hidden") && !log.contains("Hidden"),
        "{message}\n{log}"
    );
}

#[tokio::test]
async fn build_timeout_kills_the_fetch_and_fires_the_webhook() {
    let http = Http::start().await;
    let stall = Stall::start().await;
    let server = local_server();
    let actor = create_actor_with(
        &server,
        "slow-sources",
        vec![
            tarball_version("0.1", &format!("{}/slow.tgz", stall.origin)),
            git_version("0.2", &format!("{}/slow.git", stall.origin)),
        ],
    )
    .await;
    post_data(
        &server,
        "/webhooks",
        json!({
            "eventTypes": ["ACTOR.BUILD.TIMED_OUT", "ACTOR.BUILD.FAILED"],
            "condition": {"actorId": actor},
            "requestUrl": format!("{}/hook", http.origin),
        }),
        201,
    )
    .await;
    // Both builds fetch from a server that never answers; both time out.
    let mut ids = vec![];
    for number in ["0.1", "0.2"] {
        ids.push(start_build(&server, &actor, number, "&timeout=5").await);
    }
    for id in &ids {
        let build = wait_build(&server, id).await;
        assert_eq!(build["status"], "TIMED-OUT", "{build}");
        assert_eq!(build["options"]["timeoutSecs"], 5);
        assert!(build["finishedAt"].is_string());
        let message = build["statusMessage"].as_str().unwrap();
        assert!(message.contains("timed out after 5 s"), "{message}");
        let log = log_of(&server, id).await;
        assert!(log.contains("The build timed out"), "{log}");
    }
    // Each fetch (a download, a git process) held a connection: both were closed.
    assert_eq!(
        stall.opened.load(Ordering::SeqCst),
        2,
        "both builds connected"
    );
    eventually("the stalled fetches to be stopped", || async {
        (stall.closed.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    let hooks = eventually("two TIMED_OUT webhooks", || async {
        let hooks = http.hooks();
        (hooks.len() >= 2).then_some(hooks)
    })
    .await;
    for hook in &hooks {
        assert_eq!(hook["eventType"], "ACTOR.BUILD.TIMED_OUT", "{hook}");
        assert_eq!(hook["resource"]["status"], "TIMED-OUT");
        assert!(ids.contains(
            &hook["eventData"]["actorBuildId"]
                .as_str()
                .unwrap()
                .to_string()
        ));
    }
    // No timeout: the server default applies; timeout=0 means none; bad values are refused.
    let repo = Repo::new();
    let ok = create_actor_with(&server, "quick", vec![git_version("0.1", &repo.url())]).await;
    let id = start_build(&server, &ok, "0.1", "").await;
    let build = wait_build(&server, &id).await;
    assert_eq!(build["status"], "SUCCEEDED");
    assert_eq!(build["options"]["timeoutSecs"], 1800);
    let id = start_build(&server, &ok, "0.1", "&timeout=0").await;
    assert_eq!(wait_build(&server, &id).await["options"]["timeoutSecs"], 0);
    let id = start_build(&server, &ok, "0.1", &format!("&timeout={}", u64::MAX)).await;
    assert_eq!(wait_build(&server, &id).await["status"], "SUCCEEDED");
    let response = send(
        &server,
        Method::POST,
        &format!("/acts/{ok}/builds?version=0.1&timeout=soon"),
        None,
    )
    .await;
    assert_error(response, 400, "invalid-parameter").await;
}

#[tokio::test]
async fn aborting_a_fetching_build_stops_it() {
    let stall = Stall::start().await;
    let server = local_server();
    let actor = create_actor_with(
        &server,
        "abort-sources",
        vec![
            tarball_version("0.1", &format!("{}/slow.tgz", stall.origin)),
            git_version("0.2", &format!("{}/slow.git#main", stall.origin)),
        ],
    )
    .await;
    for (n, number) in ["0.1", "0.2"].iter().enumerate() {
        let id = start_build(&server, &actor, number, "&timeout=0").await;
        eventually("the build to connect", || async {
            (stall.opened.load(Ordering::SeqCst) > n).then_some(())
        })
        .await;
        let aborted = post_data(
            &server,
            &format!("/actor-builds/{id}/abort"),
            json!({}),
            200,
        )
        .await;
        assert_eq!(aborted["status"], "ABORTED");
        eventually("the fetch to be stopped", || async {
            (stall.closed.load(Ordering::SeqCst) > n).then_some(())
        })
        .await;
        let build = wait_build(&server, &id).await;
        assert_eq!(build["status"], "ABORTED");
        let log = eventually("the abort in the log", || async {
            let log = log_of(&server, &id).await;
            log.contains("The build was aborted").then_some(log)
        })
        .await;
        assert!(!log.contains("Build finished"), "{log}");
        eventually("the scratch folder removed", || async {
            (!server
                .data_dir
                .join("builds")
                .join(format!("{id}.fetch"))
                .exists())
            .then_some(())
        })
        .await;
    }
}
