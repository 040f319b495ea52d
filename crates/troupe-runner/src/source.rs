//! Getting a version's sources into its build folder, for every source type:
//!
//! - `SOURCE_FILES`: the files of the version are written (see [`crate::build::write_files`]).
//! - `GIT_REPO`: `gitRepoUrl` is `URL[#REF[:SUBDIR]]` as on Apify (`REF` a branch, tag or commit;
//!   `SUBDIR` the folder to build; `#:SUBDIR` keeps the default branch). The system `git` fetches
//!   only that commit (`--depth 1`), falling back to a full fetch for abbreviated commit ids and
//!   servers without shallow support; submodules are fetched the same way, recursively.
//! - `GITHUB_GIST`: `gitHubGistUrl` is cloned the same way (`.git` is appended for
//!   `gist.github.com` URLs); the files are at its root.
//! - `TARBALL`: `tarballUrl` (http/https) is downloaded (size-limited, stalls time out) and
//!   unpacked ([`crate::archive`]); a single top-level folder is stripped.
//!
//! Everything is fetched into a scratch folder next to the build folder and moved into place only
//! when it is complete and checked (size, file count, symlinks inside). Credentials in URLs are
//! never written to the build log nor to error messages ([`redact`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use troupe_model::actor::Version;

use crate::archive::{self, Limits};
use crate::build;
use crate::logs::LogWriter;

/// Where a git version's sources come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// The repository (no fragment).
    pub url: String,
    /// Branch, tag or commit; `None` = the default branch.
    pub reference: Option<String>,
    /// Folder of the repository to build; `None` = its root.
    pub subdir: Option<PathBuf>,
}

const SCHEMES: &[&str] = &["https", "http", "ssh", "git", "file"];

/// Parses `URL[#REF[:SUBDIR]]` (`URL#:SUBDIR` = default branch).
pub fn parse_git_url(raw: &str, field: &str) -> Result<GitSource, String> {
    let raw = raw.trim();
    let invalid = |why: &str| format!("Invalid {field} \"{}\": {why}", redact(raw));
    if raw.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if raw.len() > 2048 {
        return Err(format!("{field} is too long (at most 2048 characters)"));
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid("it contains spaces or control characters"));
    }
    let (base, fragment) = match raw.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (raw, None),
    };
    if base.starts_with('-') || base.contains("::") {
        return Err(invalid("not a git URL"));
    }
    if let Some((scheme, rest)) = base.split_once("://") {
        if !SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
            return Err(invalid(&format!(
                "the scheme must be one of {}",
                SCHEMES.join(", ")
            )));
        }
        if rest.trim_matches('/').is_empty() {
            return Err(invalid("the URL names no repository"));
        }
    } else if !base.starts_with('/') {
        // scp-like `user@host:path`.
        match base.split_once(':') {
            Some((host, path)) if !host.is_empty() && !host.contains('/') && !path.is_empty() => {}
            _ => {
                return Err(invalid(
                    "use https://…, ssh://…, git://…, file://…, user@host:path or an absolute path",
                ))
            }
        }
    }
    let (reference, subdir) = match fragment {
        None => (None, None),
        Some(fragment) => {
            let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
            (
                Some(reference).filter(|r| !r.is_empty()),
                Some(subdir.trim_end_matches('/')).filter(|s| !s.is_empty()),
            )
        }
    };
    if let Some(reference) = reference {
        let bad = reference.starts_with('-')
            || reference.contains("..")
            || reference.contains("@{")
            || reference.ends_with('.')
            || reference.ends_with(".lock")
            || reference.len() > 255
            || reference
                .chars()
                .any(|c| matches!(c, '~' | '^' | '?' | '*' | '[' | '\\'));
        if bad {
            return Err(invalid(&format!(
                "\"{reference}\" is not a valid branch, tag or commit"
            )));
        }
    }
    let subdir = match subdir {
        Some(subdir) => Some(archive::safe_relative(Path::new(subdir)).map_err(|_| {
            invalid("the folder after ':' must be a relative path inside the repository")
        })?),
        None => None,
    };
    Ok(GitSource {
        url: base.to_string(),
        reference: reference.map(str::to_string),
        subdir,
    })
}

/// Parses a gist URL: like a git URL; `https://gist.github.com/…` gets `.git` appended.
pub fn parse_gist_url(raw: &str) -> Result<GitSource, String> {
    let mut source = parse_git_url(raw, "gitHubGistUrl")?;
    let lower = source.url.to_ascii_lowercase();
    let gist_host = ["https://gist.github.com/", "http://gist.github.com/"]
        .iter()
        .any(|p| lower.starts_with(p));
    if gist_host {
        let trimmed = source.url.trim_end_matches('/');
        source.url = if trimmed.ends_with(".git") {
            trimmed.to_string()
        } else {
            format!("{trimmed}.git")
        };
    }
    Ok(source)
}

/// Checks a tarball URL: http or https with a host.
pub fn parse_tarball_url(raw: &str) -> Result<reqwest::Url, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("tarballUrl must not be empty".into());
    }
    let url = reqwest::Url::parse(raw)
        .map_err(|err| format!("Invalid tarballUrl \"{}\": {err}", redact(raw)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "Invalid tarballUrl \"{}\": use an http:// or https:// URL",
            redact(raw)
        ));
    }
    Ok(url)
}

/// Checks the source fields a version's `sourceType` needs (when a version is saved).
pub fn validate(version: &Version) -> Result<(), String> {
    let required = |value: &Option<String>, field: &str| -> Result<String, String> {
        value
            .as_deref()
            .filter(|v| !v.trim().is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "Field \"{field}\" is required for sourceType {}",
                    version.source_type
                )
            })
    };
    match version.source_type.as_str() {
        "GIT_REPO" => parse_git_url(
            &required(&version.git_repo_url, "gitRepoUrl")?,
            "gitRepoUrl",
        )
        .map(|_| ()),
        "GITHUB_GIST" => {
            parse_gist_url(&required(&version.git_hub_gist_url, "gitHubGistUrl")?).map(|_| ())
        }
        "TARBALL" => parse_tarball_url(&required(&version.tarball_url, "tarballUrl")?).map(|_| ()),
        _ => Ok(()),
    }
}

/// Replaces the credentials of every URL in `text` (`scheme://user:secret@host` →
/// `scheme://***@host`).
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '\'' | '"' | '<' | '>' | '`' | ')')
                    || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(i) => {
                out.push_str("***");
                out.push_str(&authority[i..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The secrets of a URL (user and password, raw and percent-decoded), for scrubbing texts that
/// might repeat them without the URL around them.
fn secrets_of(url: &str) -> Vec<String> {
    let Some((_, rest)) = url.split_once("://") else {
        return vec![];
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return vec![];
    };
    let mut secrets = vec![userinfo.to_string()];
    for part in userinfo.split(':') {
        if part.len() >= 6 {
            secrets.push(part.to_string());
            let decoded = percent_encoding::percent_decode_str(part).decode_utf8_lossy();
            if decoded != part {
                secrets.push(decoded.into_owned());
            }
        }
    }
    secrets.retain(|s| !s.is_empty());
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

/// `text` with URL credentials and the given secrets replaced by `***`.
fn scrub(text: &str, secrets: &[String]) -> String {
    let mut text = redact(text);
    for secret in secrets {
        text = text.replace(secret.as_str(), "***");
    }
    text
}

/// A URL as shown in logs: no credentials, no query string (signed URLs carry secrets there).
fn shown(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let had_query = shown.query().is_some();
    shown.set_query(None);
    shown.set_fragment(None);
    let mut text = shown.to_string();
    if had_query {
        text.push_str("?…");
    }
    text
}

/// What fetching needs.
pub struct FetchContext<'a> {
    pub log: Arc<LogWriter>,
    /// `HOME` of the git processes.
    pub home: &'a Path,
    /// Receives the pid of each git process (so abort and timeout can kill it).
    pub on_spawn: &'a (dyn Fn(i32) + Send + Sync),
    pub limits: Limits,
    /// Set when the build was aborted or timed out (stops an unpack between entries).
    pub cancel: Arc<AtomicBool>,
    /// Whether git sources may be `file://` URLs or paths on the server's own disk.
    pub allow_local: bool,
}

/// Whether a git URL names a repository on the server's own disk.
fn is_local(url: &str) -> bool {
    url.starts_with('/') || url.to_ascii_lowercase().starts_with("file://")
}

/// Refuses local git sources unless the server allows them (any user could otherwise build
/// from any git repository on the server's disk).
fn check_local(ctx: &FetchContext<'_>, source: &GitSource) -> Result<(), String> {
    if is_local(&source.url) && !ctx.allow_local {
        return Err(format!(
            "Local git sources ({}) are disabled on this server; the operator can allow them with --allow-local-sources",
            redact(&source.url)
        ));
    }
    Ok(())
}

/// Puts the sources of `version` into `dir` (which must not exist yet), using the scratch
/// folder `staging` (removed afterwards, also on failure). Returns the git branch the sources
/// come from (a `GIT_REPO` source at a branch or at the default branch), if any.
pub async fn fetch(
    ctx: &FetchContext<'_>,
    version: &Version,
    dir: &Path,
    staging: &Path,
) -> Result<Option<String>, String> {
    let _ = std::fs::remove_dir_all(staging);
    let result = fetch_into(ctx, version, dir, staging).await;
    let _ = std::fs::remove_dir_all(staging);
    result
}

async fn fetch_into(
    ctx: &FetchContext<'_>,
    version: &Version,
    dir: &Path,
    staging: &Path,
) -> Result<Option<String>, String> {
    let mut branch = None;
    let root = match version.source_type.as_str() {
        "SOURCE_FILES" => return build::write_files(dir, version).map(|()| None),
        "GIT_REPO" => {
            let raw = version.git_repo_url.as_deref().unwrap_or("");
            let source = parse_git_url(raw, "gitRepoUrl")?;
            check_local(ctx, &source)?;
            let (root, fetched_branch) = clone(ctx, &source, staging).await?;
            branch = fetched_branch;
            root
        }
        "GITHUB_GIST" => {
            let raw = version.git_hub_gist_url.as_deref().unwrap_or("");
            let source = parse_gist_url(raw)?;
            check_local(ctx, &source)?;
            clone(ctx, &source, staging).await?.0
        }
        "TARBALL" => {
            let url = parse_tarball_url(version.tarball_url.as_deref().unwrap_or(""))?;
            download_and_unpack(ctx, &url, staging).await?
        }
        other => return Err(format!("Source type {other} cannot be built by troupe")),
    };
    archive::check_tree(&root, ctx.limits)?;
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::rename(&root, dir).map_err(|e| format!("Cannot move the sources into place: {e}"))?;
    Ok(branch)
}

// ---- git ----

/// Fetches the commit `source` names into `staging/repo`; returns the folder to build and the
/// branch it is on (`None` for a tag or a commit).
async fn clone(
    ctx: &FetchContext<'_>,
    source: &GitSource,
    staging: &Path,
) -> Result<(PathBuf, Option<String>), String> {
    let secrets = secrets_of(&source.url);
    let repo = staging.join("repo");
    std::fs::create_dir_all(staging).map_err(|e| e.to_string())?;
    let what = match &source.reference {
        Some(reference) => format!("{} at {reference}", redact(&source.url)),
        None => format!("{} (default branch)", redact(&source.url)),
    };
    ctx.log
        .system(&format!("Fetching the git repository {what}"));
    let repo_arg = repo.to_string_lossy().into_owned();
    git(ctx, staging, &["init", "-q", &repo_arg], &secrets).await?;
    let wanted = source.reference.as_deref().unwrap_or("HEAD");
    let shallow = git(
        ctx,
        &repo,
        &[
            "fetch",
            "-q",
            "--depth",
            "1",
            "--no-tags",
            &source.url,
            wanted,
        ],
        &secrets,
    )
    .await;
    let checkout = match shallow {
        Ok(()) => "FETCH_HEAD".to_string(),
        Err(err) => {
            let abbreviated = source.reference.as_deref().is_some_and(|r| {
                r.len() >= 4 && r.len() < 40 && r.bytes().all(|b| b.is_ascii_hexdigit())
            });
            let no_shallow = err.contains("shallow");
            let unknown_ref = err.contains("remote ref") || err.contains("not our ref");
            if no_shallow {
                ctx.log.system(
                    "The server does not support shallow fetches; fetching the whole history",
                );
            } else if abbreviated && unknown_ref {
                ctx.log.system(&format!(
                    "Fetching the whole repository to find the commit {}",
                    source.reference.as_deref().unwrap_or_default()
                ));
            } else {
                return Err(err);
            }
            if no_shallow && !abbreviated {
                git(
                    ctx,
                    &repo,
                    &["fetch", "-q", "--no-tags", &source.url, wanted],
                    &secrets,
                )
                .await?;
                "FETCH_HEAD".to_string()
            } else {
                git(
                    ctx,
                    &repo,
                    &[
                        "fetch",
                        "-q",
                        "--tags",
                        &source.url,
                        "+refs/heads/*:refs/remotes/origin/*",
                    ],
                    &secrets,
                )
                .await?;
                source.reference.clone().expect("abbreviated commit")
            }
        }
    };
    git(
        ctx,
        &repo,
        &[
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "-q",
            "--detach",
            &checkout,
        ],
        &secrets,
    )
    .await?;
    if let Ok(commit) = git_output(ctx, &repo, &["rev-parse", "HEAD"], &secrets).await {
        ctx.log
            .system(&format!("Checked out commit {}", commit.trim()));
    }
    if repo.join(".gitmodules").is_file() {
        update_submodules(ctx, source, &repo, &secrets).await?;
    }
    let branch = match &source.reference {
        // What the fetch says it fetched: `<sha>\t\tbranch 'NAME' of URL` for a branch.
        Some(_) if checkout == "FETCH_HEAD" => {
            std::fs::read_to_string(repo.join(".git").join("FETCH_HEAD"))
                .ok()
                .and_then(|text| fetched_branch(&text))
        }
        // An abbreviated commit, found in the whole history.
        Some(_) => None,
        // The branch the remote's HEAD points at (best effort: it only names the build).
        None => git_output(
            ctx,
            &repo,
            &["ls-remote", "--symref", &source.url, "HEAD"],
            &secrets,
        )
        .await
        .ok()
        .and_then(|text| symref_branch(&text)),
    };
    remove_git_dirs(&repo);
    match &source.subdir {
        None => Ok((repo, branch)),
        Some(subdir) => {
            let folder = repo.join(subdir);
            let inside = match (folder.canonicalize(), repo.canonicalize()) {
                (Ok(folder), Ok(repo)) => folder.starts_with(repo) && folder.is_dir(),
                _ => false,
            };
            if !inside {
                return Err(format!(
                    "The folder \"{}\" does not exist in the repository",
                    subdir.display()
                ));
            }
            ctx.log
                .system(&format!("Building the folder \"{}\"", subdir.display()));
            Ok((folder, branch))
        }
    }
}

/// Fetches the submodules of the checkout, recursively, each at the commit it is pinned to
/// (`--depth 1`, falling back to whole histories for servers that cannot fetch that shallowly).
/// Relative submodule URLs resolve against the repository's URL (credentials included); their
/// transports are limited like the repository's, local ones included.
async fn update_submodules(
    ctx: &FetchContext<'_>,
    source: &GitSource,
    repo: &Path,
    secrets: &[String],
) -> Result<(), String> {
    ctx.log.system("Fetching the git submodules");
    git(
        ctx,
        repo,
        &["config", "remote.origin.url", &source.url],
        secrets,
    )
    .await?;
    let update = ["submodule", "update", "--init", "--recursive", "-q"];
    let shallow = [&update[..], &["--depth", "1"]].concat();
    if git(ctx, repo, &shallow, secrets).await.is_err() {
        ctx.log
            .system("Fetching the git submodules with their whole history");
        git(ctx, repo, &update, secrets).await?;
    }
    Ok(())
}

/// Removes `.git` of the checkout and of every submodule in it (folders and `gitdir:` files).
fn remove_git_dirs(repo: &Path) {
    let mut stack = vec![repo.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if entry.file_name() == ".git" {
                let _ = if kind.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            } else if kind.is_dir() {
                stack.push(path);
            }
        }
    }
}

/// The branch named by the first line of a `FETCH_HEAD` (`<sha>\t\tbranch 'NAME' of URL`).
fn fetched_branch(fetch_head: &str) -> Option<String> {
    let mut fields = fetch_head.lines().next()?.splitn(3, '\t');
    let (_commit, merge, what) = (fields.next()?, fields.next()?, fields.next()?);
    if !merge.is_empty() {
        return None;
    }
    let (name, _) = what.strip_prefix("branch '")?.rsplit_once("' of ")?;
    Some(name.to_string()).filter(|n| !n.is_empty())
}

/// The branch of `git ls-remote --symref URL HEAD` (`ref: refs/heads/NAME\tHEAD`).
fn symref_branch(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let (target, head) = line.strip_prefix("ref: ")?.split_once('\t')?;
        let name = target.strip_prefix("refs/heads/")?;
        (head == "HEAD" && !name.is_empty()).then(|| name.to_string())
    })
}

/// Runs `git ARGS` in `cwd`; its output goes (scrubbed) to the build log.
async fn git(
    ctx: &FetchContext<'_>,
    cwd: &Path,
    args: &[&str],
    secrets: &[String],
) -> Result<(), String> {
    run_git(ctx, cwd, args, secrets, true).await.map(|_| ())
}

/// Runs `git ARGS` and returns its stdout (not logged).
async fn git_output(
    ctx: &FetchContext<'_>,
    cwd: &Path,
    args: &[&str],
    secrets: &[String],
) -> Result<String, String> {
    run_git(ctx, cwd, args, secrets, false).await
}

async fn run_git(
    ctx: &FetchContext<'_>,
    cwd: &Path,
    args: &[&str],
    secrets: &[String],
    log_stdout: bool,
) -> Result<String, String> {
    let program = build::which("git").ok_or(
        "git was not found on PATH: GIT_REPO and GITHUB_GIST sources need git installed on the server",
    )?;
    let _ = std::fs::create_dir_all(ctx.home);
    let mut command = tokio::process::Command::new(program);
    // Local repositories (also as submodules of a remote one) only when the server allows them.
    let file_allow = if ctx.allow_local {
        "protocol.file.allow=always"
    } else {
        "protocol.file.allow=never"
    };
    command
        .args([
            "-c",
            "protocol.allow=never",
            "-c",
            "protocol.https.allow=always",
            "-c",
            "protocol.http.allow=always",
            "-c",
            "protocol.ssh.allow=always",
            "-c",
            "protocol.git.allow=always",
            "-c",
            file_allow,
            "-c",
            "init.defaultBranch=main",
            "-c",
            "core.hooksPath=/dev/null",
            // Like a stalled tarball download, a transfer stalled for 60 s fails.
            "-c",
            "http.lowSpeedLimit=1",
            "-c",
            "http.lowSpeedTime=60",
        ])
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .envs(build::base_env(ctx.home))
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env(
            "GIT_SSH_COMMAND",
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|err| format!("Could not start git: {err}"))?;
    if let Some(pid) = child.id() {
        (ctx.on_spawn)(pid as i32);
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|err| format!("git failed: {err}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = scrub(&String::from_utf8_lossy(&output.stderr), secrets);
    let shown_lines = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>();
    if log_stdout {
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            ctx.log.system(&scrub(line, secrets));
        }
    }
    for line in &shown_lines {
        ctx.log.system(line);
    }
    if output.status.success() {
        return Ok(stdout);
    }
    let verb = args
        .iter()
        .find(|a| !a.starts_with('-') && !a.contains('='))
        .unwrap_or(&"git");
    let reason = shown_lines
        .iter()
        .rev()
        .find(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .or(shown_lines.last())
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| match output.status.code() {
            Some(code) => format!("exit code {code}"),
            None => "killed by a signal".into(),
        });
    Err(format!("git {verb} failed: {reason}"))
}

// ---- tarballs ----

/// How long a download may stall (no byte arriving) before it fails.
const STALL: Duration = Duration::from_secs(60);

async fn download_and_unpack(
    ctx: &FetchContext<'_>,
    url: &reqwest::Url,
    staging: &Path,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(staging).map_err(|e| e.to_string())?;
    let file = staging.join("archive");
    ctx.log.system(&format!("Downloading {}", shown(url)));
    let size = download(url, &file, ctx.limits.max_bytes).await?;
    let unpacked = staging.join("files");
    let limits = ctx.limits;
    let cancel = ctx.cancel.clone();
    let (archive_path, dest) = (file.clone(), unpacked.clone());
    let format =
        tokio::task::spawn_blocking(move || archive::unpack(&archive_path, &dest, limits, &cancel))
            .await
            .map_err(|e| e.to_string())??;
    let _ = std::fs::remove_file(&file);
    ctx.log.system(&format!(
        "Downloaded {size} bytes; unpacked the {} archive",
        format.name()
    ));
    archive::project_root(&unpacked)
}

/// Streams `url` into `dest`; returns the size.
async fn download(url: &reqwest::Url, dest: &Path, max_bytes: u64) -> Result<u64, String> {
    use tokio::io::AsyncWriteExt;
    let failed = |err: reqwest::Error| {
        format!(
            "Cannot download the tarball from {}: {}",
            shown(url),
            error_chain(&err.without_url())
        )
    };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let mut response = tokio::time::timeout(STALL, client.get(url.clone()).send())
        .await
        .map_err(|_| {
            format!(
                "Cannot download the tarball from {}: no answer within {} s",
                shown(url),
                STALL.as_secs()
            )
        })?
        .map_err(failed)?;
    if !response.status().is_success() {
        return Err(format!(
            "Cannot download the tarball from {}: the server answered HTTP {}",
            shown(url),
            response.status().as_u16()
        ));
    }
    let too_big = || {
        format!(
            "The tarball at {} is larger than the limit of {max_bytes} bytes",
            shown(url)
        )
    };
    if response.content_length().is_some_and(|n| n > max_bytes) {
        return Err(too_big());
    }
    let mut out = tokio::fs::File::create(dest)
        .await
        .map_err(|e| e.to_string())?;
    let mut size = 0u64;
    loop {
        let chunk = tokio::time::timeout(STALL, response.chunk())
            .await
            .map_err(|_| {
                format!(
                    "Cannot download the tarball from {}: the download stalled for {} s",
                    shown(url),
                    STALL.as_secs()
                )
            })?
            .map_err(failed)?;
        let Some(chunk) = chunk else { break };
        size += chunk.len() as u64;
        if size > max_bytes {
            return Err(too_big());
        }
        out.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    out.flush().await.map_err(|e| e.to_string())?;
    Ok(size)
}

/// An error with its causes (`error sending request: connection refused`).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    redact(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_url_fragments() {
        let s = parse_git_url("https://github.com/a/b.git", "gitRepoUrl").unwrap();
        assert_eq!(s.url, "https://github.com/a/b.git");
        assert_eq!((s.reference, s.subdir), (None, None));
        let s = parse_git_url("https://github.com/a/b.git#develop", "gitRepoUrl").unwrap();
        assert_eq!(s.reference.as_deref(), Some("develop"));
        let s = parse_git_url("https://github.com/a/b#v1.2:actors/one/", "gitRepoUrl").unwrap();
        assert_eq!(s.reference.as_deref(), Some("v1.2"));
        assert_eq!(s.subdir, Some(PathBuf::from("actors/one")));
        let s = parse_git_url("git@github.com:a/b.git#:sub", "gitRepoUrl").unwrap();
        assert_eq!(s.url, "git@github.com:a/b.git");
        assert_eq!(s.reference, None);
        assert_eq!(s.subdir, Some(PathBuf::from("sub")));
        assert!(parse_git_url("/srv/repos/x#main", "gitRepoUrl").is_ok());
        assert!(parse_git_url("file:///srv/repos/x", "gitRepoUrl").is_ok());
        for bad in [
            "",
            "   ",
            "ftp://x/y",
            "ext::sh -c evil",
            "ext::evil",
            "-uhelp",
            "https://x/y#-bad",
            "https://x/y#a..b",
            "https://x/y#main:../up",
            "https://x/y#main:/abs",
            "relative/path",
            "https://",
            "https://x/y z",
        ] {
            assert!(parse_git_url(bad, "gitRepoUrl").is_err(), "{bad}");
        }
    }

    #[test]
    fn branch_names_from_git_output() {
        let head = "e96c\t\tbranch 'feature/x' of https://***@h/r.git\n";
        assert_eq!(fetched_branch(head).as_deref(), Some("feature/x"));
        assert_eq!(fetched_branch("e96c\t\ttag 'v1' of file:///r\n"), None);
        assert_eq!(fetched_branch("e96c\t\tfile:///r\n"), None);
        let all = "e96c\tnot-for-merge\tbranch 'dev' of file:///r\n";
        assert_eq!(fetched_branch(all), None);
        let symref = "ref: refs/heads/trunk\tHEAD\ne96c\tHEAD\n";
        assert_eq!(symref_branch(symref).as_deref(), Some("trunk"));
        assert_eq!(symref_branch("e96c\tHEAD\n"), None);
    }

    #[test]
    fn gist_urls_get_dot_git() {
        let s = parse_gist_url("https://gist.github.com/someone/abc123").unwrap();
        assert_eq!(s.url, "https://gist.github.com/someone/abc123.git");
        let s = parse_gist_url("https://gist.github.com/abc123.git").unwrap();
        assert_eq!(s.url, "https://gist.github.com/abc123.git");
        let s = parse_gist_url("file:///tmp/gist").unwrap();
        assert_eq!(s.url, "file:///tmp/gist");
    }

    #[test]
    fn tarball_urls() {
        assert!(parse_tarball_url("https://x.test/a.tar.gz").is_ok());
        for bad in [
            "",
            "file:///etc/passwd",
            "ftp://x/a.zip",
            "nonsense",
            "http://",
        ] {
            assert!(parse_tarball_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact("fatal: https://user:s3cret@host/x.git and http://tok@h2:80/y"),
            "fatal: https://***@host/x.git and http://***@h2:80/y"
        );
        assert_eq!(redact("git@github.com:a/b.git"), "git@github.com:a/b.git");
        let secrets = secrets_of("https://oauth2:ghp_Abc%2Fdef@host/x");
        let text = scrub("auth ghp_Abc/def and ghp_Abc%2Fdef failed", &secrets);
        assert!(!text.contains("ghp_"), "{text}");
        // An escape at the very end is decoded too.
        let secrets = secrets_of("https://oauth2:ghp_Abcdef%21@host/x");
        let text = scrub("auth ghp_Abcdef! failed", &secrets);
        assert!(!text.contains("ghp_"), "{text}");
        let url = reqwest::Url::parse("https://u:p@h.test/a.zip?sig=secret").unwrap();
        assert_eq!(shown(&url), "https://h.test/a.zip?…");
    }
}
