//! Builds: put a version's sources into the build's own folder ([`crate::source`]) and prepare
//! them.
//!
//! Rules, in order:
//! 1. `.actor/actor.json` with a `startCommand` string: no preparation; runs start
//!    `/bin/sh -c <startCommand>` in the run folder.
//! 2. `package.json`: `npm ci` when a lockfile exists, else `npm install` (skipped when the
//!    project has no dependencies); runs start `npm start`.
//! 3. `src/__main__.py` or `main.py`: with a `requirements.txt`, a virtualenv `.venv` is made
//!    from the `python3` on `PATH` and the requirements installed into it; runs start
//!    `python3 -m src` (or `python3 main.py`) with the virtualenv's Python.
//! 4. Anything else fails the build with a message saying what is missing.
//!
//! A `Dockerfile` is ignored. pip's and npm's caches live in the cache folder, so rebuilding with
//! the same requirements is fast.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use serde_json::Value;
use troupe_model::actor::{StartCommand, Version};

use crate::logs::LogWriter;
use crate::process;

/// Source types troupe can build (fetched by [`crate::source`]).
pub const BUILDABLE_SOURCE_TYPES: &[&str] = &["SOURCE_FILES", "GIT_REPO", "TARBALL", "GITHUB_GIST"];

/// Every source type Apify knows (`SOURCE_CODE`, the legacy single file, is stored but cannot be
/// built).
pub const SOURCE_TYPES: &[&str] = &[
    "SOURCE_FILES",
    "GIT_REPO",
    "TARBALL",
    "GITHUB_GIST",
    "SOURCE_CODE",
];

/// Checks a file name from `sourceFiles`: relative, no `..`, no empty or odd components.
pub fn check_file_name(name: &str) -> Result<PathBuf, String> {
    if name.is_empty() || name.len() > 1024 || name.contains('\0') || name.contains('\\') {
        return Err(format!("Invalid source file name \"{name}\""));
    }
    let path = Path::new(name);
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "Invalid source file name \"{name}\": it must be a relative path inside the project"
                ))
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(format!("Invalid source file name \"{name}\""));
    }
    Ok(clean)
}

/// Validates a version as given by a client (number, source type, files, env var names).
pub fn validate_version(version: &Version) -> Result<(), String> {
    if !valid_version_number(&version.version_number) {
        return Err(format!(
            "Invalid versionNumber \"{}\": use MAJOR.MINOR, e.g. 0.1",
            version.version_number
        ));
    }
    if !SOURCE_TYPES.contains(&version.source_type.as_str()) {
        return Err(format!(
            "Invalid sourceType \"{}\": use one of {}",
            version.source_type,
            SOURCE_TYPES.join(", ")
        ));
    }
    for file in &version.source_files {
        check_file_name(&file.name)?;
        if file.folder {
            continue;
        }
        match file.format.as_deref().unwrap_or("TEXT") {
            "TEXT" => {}
            "BASE64" => {
                base64::engine::general_purpose::STANDARD
                    .decode(file.content.as_deref().unwrap_or("").trim())
                    .map_err(|err| {
                        format!("Source file \"{}\" is not valid base64: {err}", file.name)
                    })?;
            }
            other => {
                return Err(format!(
                    "Source file \"{}\" has an invalid format \"{other}\" (use TEXT or BASE64)",
                    file.name
                ))
            }
        }
    }
    for var in &version.env_vars {
        validate_env_var_name(&var.name)?;
    }
    crate::source::validate(version)
}

/// Env var names: letters, digits and `_`, not starting with a digit.
pub fn validate_env_var_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("Invalid environment variable name \"{name}\""))
    }
}

/// `MAJOR.MINOR` with 0-99 each, no leading zeros.
pub fn valid_version_number(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 2
            && p.bytes().all(|b| b.is_ascii_digit())
            && !(p.len() == 2 && p.starts_with('0'))
    };
    matches!(s.split_once('.'), Some((a, b)) if part(a) && part(b))
}

/// What a finished preparation produced.
pub struct Prepared {
    pub start: StartCommand,
    pub actor_definition: Option<Value>,
    pub input_schema: Option<String>,
    pub readme: Option<String>,
}

/// Writes the version's files into `dir`.
pub fn write_files(dir: &Path, version: &Version) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for file in &version.source_files {
        let rel = check_file_name(&file.name)?;
        let path = dir.join(rel);
        if file.folder {
            std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let content = file.content.as_deref().unwrap_or("");
        let bytes = match file.format.as_deref().unwrap_or("TEXT") {
            "BASE64" => base64::engine::general_purpose::STANDARD
                .decode(content.trim())
                .map_err(|e| format!("{}: {e}", file.name))?,
            _ => content.as_bytes().to_vec(),
        };
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", file.name))?;
    }
    Ok(())
}

/// Reads `.actor/actor.json` (and the input schema / readme it points at).
fn actor_definition(dir: &Path) -> (Option<Value>, Option<String>, Option<String>) {
    let def: Option<Value> = std::fs::read_to_string(dir.join(".actor/actor.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let mut input_schema = None;
    let mut readme = None;
    if let Some(def) = &def {
        input_schema = match def.get("input") {
            Some(Value::Object(_)) => def.get("input").map(|v| v.to_string()),
            Some(Value::String(p)) => read_inside(dir, &dir.join(".actor"), p),
            _ => None,
        };
        if let Some(Value::String(p)) = def.get("readme") {
            readme = read_inside(dir, &dir.join(".actor"), p);
        }
    }
    if input_schema.is_none() {
        input_schema = std::fs::read_to_string(dir.join(".actor/input_schema.json")).ok();
    }
    if readme.is_none() {
        readme = std::fs::read_to_string(dir.join("README.md")).ok();
    }
    (def, input_schema, readme)
}

/// Reads `rel` (relative to `base`) only if it stays inside `root`.
fn read_inside(root: &Path, base: &Path, rel: &str) -> Option<String> {
    let path = base.join(rel).canonicalize().ok()?;
    let root = root.canonicalize().ok()?;
    path.starts_with(&root)
        .then(|| std::fs::read_to_string(path).ok())
        .flatten()
}

/// Settings a preparation needs.
pub struct PrepareContext<'a> {
    pub dir: &'a Path,
    pub cache_dir: &'a Path,
    pub log: Arc<LogWriter>,
    /// Version env vars exposed to the installers (`applyEnvVarsToBuild`).
    pub extra_env: BTreeMap<String, String>,
    /// Receives the pid of each installer step (so an abort can kill it).
    pub on_spawn: &'a (dyn Fn(i32) + Send + Sync),
    /// Reuse installed dependencies of an earlier build with the same dependency files.
    pub use_cache: bool,
}

/// Serialises the creation of shared dependency folders.
static SHARED_DEPS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Hex SHA-256 of the parts (length-prefixed).
fn digest(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(&hasher.finalize()[..16])
}

/// Installed dependencies shared by builds with identical dependency files: `folder` is filled
/// once by `install` (marked ready at the end) and reused afterwards. A half-made folder (failed
/// or interrupted install) is rebuilt.
async fn shared_deps<F, Fut>(
    ctx: &PrepareContext<'_>,
    folder: &Path,
    install: F,
) -> Result<(), String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let _guard = SHARED_DEPS.lock().await;
    let ready = folder.join(".troupe-ready");
    if ready.is_file() {
        ctx.log.system(&format!(
            "Reusing dependencies installed by an earlier build ({})",
            folder.display()
        ));
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(folder);
    std::fs::create_dir_all(folder).map_err(|e| e.to_string())?;
    match install().await {
        Ok(()) => std::fs::write(&ready, b"").map_err(|e| e.to_string()),
        Err(err) => {
            let _ = std::fs::remove_dir_all(folder);
            Err(err)
        }
    }
}

/// Replaces `link` with a symlink to `target`.
fn link(target: &Path, link: &Path) -> Result<(), String> {
    if std::fs::symlink_metadata(link).is_ok() {
        if link.is_dir()
            && !std::fs::symlink_metadata(link)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false)
        {
            std::fs::remove_dir_all(link).map_err(|e| e.to_string())?;
        } else {
            std::fs::remove_file(link).map_err(|e| e.to_string())?;
        }
    }
    std::os::unix::fs::symlink(target, link).map_err(|e| e.to_string())
}

/// Decides how to start the project in `ctx.dir` and installs its dependencies.
pub async fn prepare(ctx: PrepareContext<'_>) -> Result<Prepared, String> {
    let dir = ctx.dir;
    let (def, input_schema, readme) = actor_definition(dir);
    let prepared = |start: StartCommand| Prepared {
        start,
        actor_definition: def.clone(),
        input_schema: input_schema.clone(),
        readme: readme.clone(),
    };
    if let Some(cmd) = def
        .as_ref()
        .and_then(|d| d.get("startCommand"))
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
    {
        ctx.log
            .system(&format!("Start command from .actor/actor.json: {cmd}"));
        return Ok(prepared(StartCommand {
            argv: vec!["/bin/sh".into(), "-c".into(), cmd.to_string()],
            path_prepend: vec![],
            env: BTreeMap::new(),
        }));
    }
    if dir.join("package.json").is_file() {
        let package: Value = std::fs::read_to_string(dir.join("package.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or("package.json is not valid JSON")?;
        let has_deps = ["dependencies", "devDependencies"].iter().any(|k| {
            package
                .get(*k)
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
        });
        let lockfile =
            dir.join("package-lock.json").is_file() || dir.join("npm-shrinkwrap.json").is_file();
        if has_deps || lockfile {
            let verb = if lockfile { "ci" } else { "install" };
            let npm_cache = ctx.cache_dir.join("npm");
            let argv = vec![
                "npm".to_string(),
                verb.to_string(),
                "--no-audit".into(),
                "--no-fund".into(),
                "--cache".into(),
                npm_cache.to_string_lossy().into_owned(),
                "--prefer-offline".into(),
            ];
            if ctx.use_cache {
                let lock_name = if dir.join("package-lock.json").is_file() {
                    "package-lock.json"
                } else {
                    "npm-shrinkwrap.json"
                };
                let package_bytes = std::fs::read(dir.join("package.json")).unwrap_or_default();
                let lock_bytes = std::fs::read(dir.join(lock_name)).unwrap_or_default();
                let shared =
                    ctx.cache_dir
                        .join("node")
                        .join(digest(&[b"npm", &package_bytes, &lock_bytes]));
                shared_deps(&ctx, &shared, || async {
                    std::fs::copy(dir.join("package.json"), shared.join("package.json"))
                        .map_err(|e| e.to_string())?;
                    if lockfile {
                        std::fs::copy(dir.join(lock_name), shared.join(lock_name))
                            .map_err(|e| e.to_string())?;
                    }
                    run_step_in(&ctx, &shared, &argv).await
                })
                .await?;
                link(&shared.join("node_modules"), &dir.join("node_modules"))?;
            } else {
                run_step(&ctx, &argv).await?;
            }
        } else {
            ctx.log
                .system("package.json has no dependencies; nothing to install");
        }
        if package.pointer("/scripts/start").is_none() {
            return Err("package.json has no \"start\" script".into());
        }
        return Ok(prepared(StartCommand {
            argv: vec!["npm".into(), "start".into(), "--silent".into()],
            path_prepend: vec![dir.join("node_modules/.bin").to_string_lossy().into_owned()],
            env: BTreeMap::new(),
        }));
    }
    let module = dir.join("src/__main__.py").is_file();
    if module || dir.join("main.py").is_file() {
        let mut python = which("python3").ok_or("python3 was not found on PATH")?;
        let mut path_prepend = vec![];
        let mut env = BTreeMap::new();
        if dir.join("requirements.txt").is_file() {
            let requirements = std::fs::read(dir.join("requirements.txt")).unwrap_or_default();
            // Requirements naming local files cannot be shared between builds.
            let local = String::from_utf8_lossy(&requirements).lines().any(|l| {
                let l = l.trim();
                l.starts_with("-e")
                    || l.starts_with('.')
                    || l.starts_with('/')
                    || l.contains("file:")
            });
            let base_python = python.clone();
            let install = |venv: PathBuf| {
                let ctx = &ctx;
                let base_python = base_python.clone();
                let requirements = dir.join("requirements.txt");
                async move {
                    run_step(
                        ctx,
                        &[
                            base_python.to_string_lossy().into_owned(),
                            "-m".into(),
                            "venv".into(),
                            venv.to_string_lossy().into_owned(),
                        ],
                    )
                    .await?;
                    run_step(
                        ctx,
                        &[
                            venv.join("bin/python3").to_string_lossy().into_owned(),
                            "-m".into(),
                            "pip".into(),
                            "install".into(),
                            "--disable-pip-version-check".into(),
                            "--cache-dir".into(),
                            ctx.cache_dir.join("pip").to_string_lossy().into_owned(),
                            "-r".into(),
                            requirements.to_string_lossy().into_owned(),
                        ],
                    )
                    .await
                }
            };
            let venv = if ctx.use_cache && !local {
                let shared = ctx.cache_dir.join("venvs").join(digest(&[
                    b"pip",
                    &requirements,
                    python.to_string_lossy().as_bytes(),
                ]));
                shared_deps(&ctx, &shared, || install(shared.clone())).await?;
                link(&shared, &dir.join(".venv"))?;
                shared
            } else {
                let venv = dir.join(".venv");
                install(venv.clone()).await?;
                venv
            };
            python = venv.join("bin/python3");
            path_prepend.push(venv.join("bin").to_string_lossy().into_owned());
            env.insert("VIRTUAL_ENV".into(), venv.to_string_lossy().into_owned());
        }
        env.insert("PYTHONUNBUFFERED".into(), "1".into());
        let py = python.to_string_lossy().into_owned();
        let argv = if module {
            vec![py, "-m".into(), "src".into()]
        } else {
            vec![py, "main.py".into()]
        };
        return Ok(prepared(StartCommand {
            argv,
            path_prepend,
            env,
        }));
    }
    Err(
        "Cannot tell how to start this Actor: add a package.json with a \"start\" script, \
         src/__main__.py or main.py, or set \"startCommand\" in .actor/actor.json"
            .into(),
    )
}

/// Runs one installer step in the build folder, its output going to the build log.
async fn run_step(ctx: &PrepareContext<'_>, argv: &[String]) -> Result<(), String> {
    run_step_in(ctx, ctx.dir, argv).await
}

/// Runs one installer step in `cwd`, its output going to the build log.
async fn run_step_in(ctx: &PrepareContext<'_>, cwd: &Path, argv: &[String]) -> Result<(), String> {
    ctx.log.system(&format!("Running: {}", argv.join(" ")));
    let mut env = ctx.extra_env.clone();
    env.extend(base_env(&ctx.cache_dir.join("home")));
    env.insert(
        "PIP_CACHE_DIR".into(),
        ctx.cache_dir.join("pip").to_string_lossy().into_owned(),
    );
    env.insert(
        "npm_config_cache".into(),
        ctx.cache_dir.join("npm").to_string_lossy().into_owned(),
    );
    env.insert("npm_config_update_notifier".into(), "false".into());
    let _ = std::fs::create_dir_all(ctx.cache_dir.join("home"));
    let (mut child, pump) = process::spawn(argv, cwd, &env, ctx.log.clone())
        .map_err(|err| format!("Could not start {}: {err}", argv[0]))?;
    if let Some(pid) = child.id() {
        (ctx.on_spawn)(pid as i32);
    }
    let status = child.wait().await.map_err(|e| e.to_string())?;
    let _ = pump.await;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed with {}",
            argv.iter().take(3).cloned().collect::<Vec<_>>().join(" "),
            status
                .code()
                .map(|c| format!("exit code {c}"))
                .unwrap_or_else(|| "a signal".into())
        ))
    }
}

/// The environment every child starts from: `PATH` of the server, a `HOME`, a locale.
pub fn base_env(home: &Path) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".into(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
    );
    env.insert("HOME".into(), home.to_string_lossy().into_owned());
    env.insert("LANG".into(), "C.UTF-8".into());
    env
}

/// Finds `program` on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_inside() {
        assert!(check_file_name("src/main.py").is_ok());
        assert!(check_file_name("./a").is_ok());
        for bad in ["../x", "/etc/passwd", "a/../../b", "", ".", "a\\b"] {
            assert!(check_file_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn version_numbers() {
        for ok in ["0.0", "0.1", "1.0", "99.99", "10.5"] {
            assert!(valid_version_number(ok), "{ok}");
        }
        for bad in ["1", "1.2.3", "01.1", "100.0", "a.b", ""] {
            assert!(!valid_version_number(bad), "{bad}");
        }
    }
}
