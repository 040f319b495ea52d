//! `troupe push` and `troupe call`: talk to a running troupe server over its API, as `apify push`
//! and `apify call` do with Apify.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use base64::Engine;
use futures::StreamExt;
use serde_json::{json, Value};

/// Where the server is and who we are.
#[derive(Debug, clap::Args)]
pub struct Remote {
    /// Server origin (without `/v2`).
    #[arg(long, env = "TROUPE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API token.
    #[arg(long, env = "TROUPE_TOKEN", hide_env_values = true)]
    pub token: String,
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Project folder (default: the current folder). The Actor's name comes from
    /// `.actor/actor.json` (`name`), else the folder name.
    pub dir: Option<PathBuf>,
    /// Version to create or replace (default: `version` from `.actor/actor.json`, else 0.1).
    #[arg(long)]
    pub version: Option<String>,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// Actor id, `username~name`, `username/name` or the name of one of your Actors.
    pub actor: String,
    /// Input as JSON.
    #[arg(long)]
    pub input: Option<String>,
    /// Build tag or number.
    #[arg(long)]
    pub build: Option<String>,
    /// Memory in MB.
    #[arg(long)]
    pub memory: Option<u64>,
    /// Timeout in seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    #[command(flatten)]
    pub remote: Remote,
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(remote: &Remote) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!(
                "{}/v2",
                remote.url.trim_end_matches('/').trim_end_matches("/v2")
            ),
            token: remote.token.clone(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends and returns `(status, body as JSON or Null)`.
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let response = request.send().await.context("reaching the troupe server")?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn ok(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let (status, body) = self.send(request).await?;
        if !(200..300).contains(&status) {
            bail!("the server answered {status}: {}", body["error"]["message"]);
        }
        Ok(body["data"].clone())
    }
}

const SKIP: &[&str] = &["node_modules", ".venv", "storage", ".git", "__pycache__"];

fn collect(root: &Path, dir: &Path, out: &mut Vec<Value>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if !SKIP.contains(&name.as_str()) {
                collect(root, &path, out)?;
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let rel = path
            .strip_prefix(root)?
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/");
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        out.push(match String::from_utf8(data) {
            Ok(text) => json!({"name": rel, "format": "TEXT", "content": text}),
            Err(err) => json!({"name": rel, "format": "BASE64",
                "content": base64::engine::general_purpose::STANDARD.encode(err.into_bytes())}),
        });
    }
    Ok(())
}

/// `troupe push [DIR]`.
pub async fn push(args: PushArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let dir = dir
        .canonicalize()
        .with_context(|| format!("opening {}", dir.display()))?;
    let definition: Value = std::fs::read_to_string(dir.join(".actor/actor.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let name = definition["name"]
        .as_str()
        .map(str::to_string)
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .context("cannot tell the Actor's name")?;
    let version = args
        .version
        .or_else(|| definition["version"].as_str().map(str::to_string))
        .unwrap_or_else(|| "0.1".into());
    let mut files = Vec::new();
    collect(&dir, &dir, &mut files)?;
    let mut version_body = json!({
        "versionNumber": version,
        "sourceType": "SOURCE_FILES",
        "sourceFiles": files,
    });
    if let Some(tag) = definition["buildTag"].as_str() {
        version_body["buildTag"] = json!(tag);
    }
    let api = Api::new(&args.remote);
    let (status, existing) = api
        .send(api.request(reqwest::Method::GET, &format!("/acts/~{name}")))
        .await?;
    let actor_id = if status == 404 {
        let actor = api
            .ok(api
                .request(reqwest::Method::POST, "/acts")
                .json(&json!({"name": name, "versions": [version_body]})))
            .await?;
        eprintln!(
            "Created Actor {name} ({})",
            actor["id"].as_str().unwrap_or("")
        );
        actor["id"].as_str().unwrap_or_default().to_string()
    } else if status == 200 {
        let id = existing["data"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let has_version = existing["data"]["versions"]
            .as_array()
            .is_some_and(|vs| vs.iter().any(|v| v["versionNumber"] == version.as_str()));
        let request = if has_version {
            api.request(
                reqwest::Method::PUT,
                &format!("/acts/{id}/versions/{version}"),
            )
        } else {
            api.request(reqwest::Method::POST, &format!("/acts/{id}/versions"))
        };
        api.ok(request.json(&version_body)).await?;
        eprintln!("Updated version {version} of Actor {name} ({id})");
        id
    } else {
        bail!(
            "the server answered {status}: {}",
            existing["error"]["message"]
        );
    };
    let build = api
        .ok(api.request(
            reqwest::Method::POST,
            &format!("/acts/{actor_id}/builds?version={version}&waitForFinish=60"),
        ))
        .await?;
    let build_id = build["id"].as_str().unwrap_or_default().to_string();
    eprintln!("Building {} ({build_id})", build["buildNumber"]);
    follow_log(&api, &format!("/actor-builds/{build_id}/log?stream=1")).await?;
    let build = api
        .ok(api.request(
            reqwest::Method::GET,
            &format!("/actor-builds/{build_id}?waitForFinish=60"),
        ))
        .await?;
    let status = build["status"].as_str().unwrap_or("");
    println!(
        "{actor_id} {} {status}",
        build["buildNumber"].as_str().unwrap_or("")
    );
    if status != "SUCCEEDED" {
        bail!("the build ended {status}");
    }
    Ok(())
}

/// Prints a log stream to stdout until it ends.
async fn follow_log(api: &Api, path: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let response = api.request(reqwest::Method::GET, path).send().await?;
    let mut stream = response.bytes_stream();
    let mut out = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk?)?;
        out.flush()?;
    }
    Ok(())
}

/// `troupe call ACTOR`: returns the process exit code (0 when the run succeeded).
pub async fn call(args: CallArgs) -> anyhow::Result<i32> {
    let api = Api::new(&args.remote);
    let actor = args.actor.replacen('/', "~", 1);
    let mut query = Vec::new();
    if let Some(build) = &args.build {
        query.push(format!("build={build}"));
    }
    if let Some(memory) = args.memory {
        query.push(format!("memory={memory}"));
    }
    if let Some(timeout) = args.timeout {
        query.push(format!("timeout={timeout}"));
    }
    let mut request = api.request(
        reqwest::Method::POST,
        &format!("/acts/{actor}/runs?{}", query.join("&")),
    );
    if let Some(input) = &args.input {
        serde_json::from_str::<Value>(input).context("--input must be JSON")?;
        request = request
            .header("content-type", "application/json")
            .body(input.clone());
    }
    let run = api.ok(request).await?;
    let run_id = run["id"].as_str().unwrap_or_default().to_string();
    eprintln!("Run {run_id} started");
    follow_log(&api, &format!("/actor-runs/{run_id}/log?stream=1")).await?;
    let mut run = run;
    for _ in 0..100 {
        run = api
            .ok(api.request(
                reqwest::Method::GET,
                &format!("/actor-runs/{run_id}?waitForFinish=60"),
            ))
            .await?;
        if matches!(
            run["status"].as_str(),
            Some("SUCCEEDED" | "FAILED" | "TIMED-OUT" | "ABORTED")
        ) {
            break;
        }
    }
    let status = run["status"].as_str().unwrap_or("").to_string();
    eprintln!("Run {run_id} ended {status}");
    let store = run["defaultKeyValueStoreId"].as_str().unwrap_or_default();
    let output = api
        .request(
            reqwest::Method::GET,
            &format!("/key-value-stores/{store}/records/OUTPUT"),
        )
        .send()
        .await?;
    if output.status().is_success() {
        println!("{}", output.text().await?);
    } else {
        let dataset = run["defaultDatasetId"].as_str().unwrap_or_default();
        let items = api
            .request(reqwest::Method::GET, &format!("/datasets/{dataset}/items"))
            .send()
            .await?
            .text()
            .await?;
        println!("{items}");
    }
    Ok(if status == "SUCCEEDED" { 0 } else { 1 })
}
