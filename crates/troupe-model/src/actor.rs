//! Actors, their versions and env vars, builds and runs, as storage keeps them. The HTTP layer
//! turns them into Apify's JSON shapes; the runner moves builds and runs through their statuses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Status of a build or run (Apify's `ActorJobStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum JobStatus {
    Ready,
    Running,
    Succeeded,
    Failed,
    TimingOut,
    TimedOut,
    Aborting,
    Aborted,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Ready,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::TimingOut,
        JobStatus::TimedOut,
        JobStatus::Aborting,
        JobStatus::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Ready => "READY",
            JobStatus::Running => "RUNNING",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::TimingOut => "TIMING-OUT",
            JobStatus::TimedOut => "TIMED-OUT",
            JobStatus::Aborting => "ABORTING",
            JobStatus::Aborted => "ABORTED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// SUCCEEDED, FAILED, TIMED-OUT or ABORTED.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::TimedOut | JobStatus::Aborted
        )
    }
}

/// Run origins (`meta.origin`).
pub const RUN_ORIGINS: &[&str] = &[
    "DEVELOPMENT",
    "WEB",
    "API",
    "SCHEDULER",
    "TEST",
    "WEBHOOK",
    "ACTOR",
    "CLI",
    "CI",
    "STANDBY",
    "MCP",
];

/// An environment variable of a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub is_secret: bool,
}

/// One entry of a `SOURCE_FILES` version: a file (`TEXT` or `BASE64`) or a folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceFile {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub folder: bool,
}

/// A source-code version of an Actor (`MAJOR.MINOR`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub version_number: String,
    pub source_type: String,
    #[serde(default)]
    pub env_vars: Vec<EnvVar>,
    #[serde(default)]
    pub apply_env_vars_to_build: bool,
    #[serde(default)]
    pub build_tag: Option<String>,
    #[serde(default)]
    pub source_files: Vec<SourceFile>,
    #[serde(default)]
    pub tarball_url: Option<String>,
    #[serde(default)]
    pub git_repo_url: Option<String>,
    #[serde(default)]
    pub git_hub_gist_url: Option<String>,
}

/// A tag pointing at a build (`taggedBuilds`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaggedBuild {
    pub build_id: String,
    pub build_number: String,
    pub finished_at: Option<i64>,
}

/// An Actor. Fields troupe does not interpret (description, title, seo fields, categories...)
/// are kept as given in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    pub id: String,
    pub user_id: String,
    pub username: String,
    pub name: String,
    pub created_at: i64,
    pub modified_at: i64,
    #[serde(default)]
    pub versions: Vec<Version>,
    #[serde(default)]
    pub default_run_options: DefaultRunOptions,
    #[serde(default)]
    pub tagged_builds: BTreeMap<String, TaggedBuild>,
    /// Last build number used per version (`1.2` → 7 means the last build was `1.2.7`).
    #[serde(default)]
    pub build_counters: BTreeMap<String, u32>,
    #[serde(default)]
    pub extra: Map<String, Value>,
}

/// `defaultRunOptions` of an Actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultRunOptions {
    pub build: String,
    pub timeout_secs: u64,
    pub memory_mbytes: u64,
    #[serde(default)]
    pub restart_on_error: bool,
    #[serde(default)]
    pub max_items: Option<u64>,
}

impl Default for DefaultRunOptions {
    fn default() -> Self {
        Self {
            build: "latest".into(),
            timeout_secs: 3600,
            memory_mbytes: 1024,
            restart_on_error: false,
            max_items: None,
        }
    }
}

/// How a build's program is started (decided by the build).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartCommand {
    /// Program and arguments (no shell unless the command is `/bin/sh -c ...`).
    pub argv: Vec<String>,
    /// Folders prepended to `PATH` (e.g. the virtualenv's `bin`).
    #[serde(default)]
    pub path_prepend: Vec<String>,
    /// Extra environment for every run (e.g. `VIRTUAL_ENV`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A build of one version of an Actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Build {
    pub id: String,
    pub act_id: String,
    pub user_id: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub status: JobStatus,
    pub status_message: Option<String>,
    /// `MAJOR.MINOR.N`.
    pub build_number: String,
    pub version_number: String,
    /// Tag moved to this build on success.
    pub tag: String,
    pub origin: String,
    pub use_cache: bool,
    /// Time limit in seconds (0 = none); over it the build ends `TIMED-OUT`.
    #[serde(default)]
    pub timeout_secs: u64,
    /// Snapshot of the version that was built.
    pub version: Version,
    /// Decided once the sources are prepared.
    pub start: Option<StartCommand>,
    /// Parsed `.actor/actor.json`, if any.
    pub actor_definition: Option<Value>,
    pub input_schema: Option<String>,
    pub readme: Option<String>,
    /// The git branch the sources came from (`GIT_REPO` at a branch or the default branch);
    /// runs of the build show it as `gitBranchName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_branch_name: Option<String>,
}

impl Build {
    /// The integer form of the build number (`1.2.3` → 1_002_000_03 style ordering key).
    pub fn build_number_int(&self) -> u64 {
        build_number_int(&self.build_number)
    }
}

/// `MAJOR.MINOR.N` → an ordering integer (Apify's `buildNumberInt`).
pub fn build_number_int(number: &str) -> u64 {
    let mut parts = number.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    let build = parts.next().unwrap_or(0);
    major * 10_000_000_000 + minor * 100_000 + build
}

/// Counters kept on a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunCounters {
    pub input_body_len: u64,
    pub restart_count: u64,
    pub resurrect_count: u64,
    pub reboot_count: u64,
    pub metamorph_count: u64,
    pub mem_max_bytes: u64,
    pub mem_current_bytes: u64,
    pub cpu_max_usage: f64,
    pub cpu_current_usage: f64,
}

/// The OS process of a running run, recorded so a restarted server can find and kill it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessMark {
    pub pid: i32,
    /// Field 22 of `/proc/PID/stat` (clock ticks after boot).
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
}

/// An Actor run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub id: String,
    pub act_id: String,
    pub user_id: String,
    pub actor_task_id: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub status: JobStatus,
    pub status_message: Option<String>,
    pub is_status_message_terminal: Option<bool>,
    pub origin: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub build_id: String,
    pub build_number: String,
    /// The `build` option as requested (tag or number).
    pub build_option: String,
    pub exit_code: Option<i32>,
    pub general_access: String,
    pub default_dataset_id: String,
    pub default_key_value_store_id: String,
    pub default_request_queue_id: String,
    pub timeout_secs: u64,
    pub memory_mbytes: u64,
    pub max_items: Option<u64>,
    /// Key of the input record (`INPUT`, or `INPUT-METAMORPH-N` after a metamorph).
    pub input_key: String,
    pub counters: RunCounters,
    pub metamorphs: Vec<Value>,
    /// Set while a process runs.
    pub process: Option<ProcessMark>,
    /// When the current attempt started (differs from `started_at` after resurrect).
    pub attempt_started_at: i64,
    /// `meta.scheduleId` / `meta.scheduledAt` of a run a schedule started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<i64>,
    /// Options and environment facts added after the first stored format (all optional).
    #[serde(default, skip_serializing_if = "RunExtras::is_empty")]
    pub extras: RunExtras,
}

/// Parts of a run added later; every one defaults, so older stored runs still read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunExtras {
    /// `restartOnError`: a failed process is started again (up to [`MAX_RESTARTS_ON_ERROR`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restart_on_error: bool,
    /// Port of the run's web server (`ACTOR_WEB_SERVER_PORT`) of the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
    /// Storages the Actor declares by alias in `actor.json` (`storages.datasets` etc.), besides
    /// `default`: `(kind, alias, id)`, kind being `datasets`, `keyValueStores` or `requestQueues`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage_aliases: Vec<(String, String, String)>,
    /// `gitBranchName`: the branch of the build's git source, copied when the run is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_branch_name: Option<String>,
}

impl RunExtras {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// How often a run started with `restartOnError` is restarted after failing before it is left
/// `FAILED`.
pub const MAX_RESTARTS_ON_ERROR: u64 = 3;
