//! The environment of a run's process (SDK-CONTRACT.md §1.4): both the `ACTOR_*` and the legacy
//! `APIFY_*` names, never an empty value, nothing of the server's own environment except `PATH`.

use std::collections::BTreeMap;
use std::path::Path;

use troupe_model::actor::{Actor, Build, Run};
use troupe_model::format_ts;

/// What the environment is made from.
pub struct RunEnv<'a> {
    pub run: &'a Run,
    pub build: &'a Build,
    pub actor: &'a Actor,
    pub token: &'a str,
    pub api_base_url: &'a str,
    pub public_base_url: &'a str,
    pub events_url: Option<&'a str>,
    pub web_server_port: u16,
    pub home: &'a Path,
}

/// The full environment for the child.
pub fn run_env(input: &RunEnv<'_>) -> BTreeMap<String, String> {
    let run = input.run;
    let build = input.build;
    let mut env = crate::build::base_env(input.home);
    // The version's own env vars first, so the platform's variables win.
    for var in &build.version.env_vars {
        if !var.value.is_empty() {
            env.insert(var.name.clone(), var.value.clone());
        }
    }
    if let Some(start) = &build.start {
        if !start.path_prepend.is_empty() {
            let path = format!("{}:{}", start.path_prepend.join(":"), env["PATH"]);
            env.insert("PATH".into(), path);
        }
        for (k, v) in &start.env {
            env.insert(k.clone(), v.clone());
        }
    }
    let mut set = |k: &str, v: String| {
        if !v.is_empty() {
            env.insert(k.to_string(), v);
        }
    };
    let both = |set: &mut dyn FnMut(&str, String), new: &str, old: &str, v: String| {
        set(new, v.clone());
        set(old, v);
    };
    set("APIFY_IS_AT_HOME", "1".into());
    set("APIFY_TOKEN", input.token.into());
    set("APIFY_API_BASE_URL", input.api_base_url.into());
    set("APIFY_API_PUBLIC_BASE_URL", input.public_base_url.into());
    set("APIFY_CLIENT_BASE_URL", input.api_base_url.into());
    both(&mut set, "ACTOR_ID", "APIFY_ACTOR_ID", run.act_id.clone());
    set("APIFY_ACT_ID", run.act_id.clone());
    both(
        &mut set,
        "ACTOR_RUN_ID",
        "APIFY_ACTOR_RUN_ID",
        run.id.clone(),
    );
    set("APIFY_ACT_RUN_ID", run.id.clone());
    both(
        &mut set,
        "ACTOR_BUILD_ID",
        "APIFY_ACTOR_BUILD_ID",
        build.id.clone(),
    );
    both(
        &mut set,
        "ACTOR_BUILD_NUMBER",
        "APIFY_ACTOR_BUILD_NUMBER",
        build.build_number.clone(),
    );
    let tags: Vec<&String> = input
        .actor
        .tagged_builds
        .iter()
        .filter(|(_, t)| t.build_id == build.id)
        .map(|(tag, _)| tag)
        .collect();
    set(
        "ACTOR_BUILD_TAGS",
        tags.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    if let Some(task) = &run.actor_task_id {
        both(
            &mut set,
            "ACTOR_TASK_ID",
            "APIFY_ACTOR_TASK_ID",
            task.clone(),
        );
    }
    set(
        "ACTOR_FULL_NAME",
        format!("{}/{}", input.actor.username, input.actor.name),
    );
    set("ACTOR_PERMISSION_LEVEL", "FULL_PERMISSIONS".into());
    both(
        &mut set,
        "ACTOR_DEFAULT_DATASET_ID",
        "APIFY_DEFAULT_DATASET_ID",
        run.default_dataset_id.clone(),
    );
    both(
        &mut set,
        "ACTOR_DEFAULT_KEY_VALUE_STORE_ID",
        "APIFY_DEFAULT_KEY_VALUE_STORE_ID",
        run.default_key_value_store_id.clone(),
    );
    both(
        &mut set,
        "ACTOR_DEFAULT_REQUEST_QUEUE_ID",
        "APIFY_DEFAULT_REQUEST_QUEUE_ID",
        run.default_request_queue_id.clone(),
    );
    both(
        &mut set,
        "ACTOR_INPUT_KEY",
        "APIFY_INPUT_KEY",
        run.input_key.clone(),
    );
    both(
        &mut set,
        "ACTOR_MEMORY_MBYTES",
        "APIFY_MEMORY_MBYTES",
        run.memory_mbytes.to_string(),
    );
    // Apify gives one core per 4 GB.
    let cpus = (run.memory_mbytes as f64 / 4096.0).max(0.125);
    set("APIFY_DEDICATED_CPUS", format!("{cpus}"));
    both(
        &mut set,
        "ACTOR_STARTED_AT",
        "APIFY_STARTED_AT",
        format_ts(run.started_at),
    );
    if run.timeout_secs > 0 {
        both(
            &mut set,
            "ACTOR_TIMEOUT_AT",
            "APIFY_TIMEOUT_AT",
            format_ts(run.attempt_started_at + run.timeout_secs as i64 * 1000),
        );
    }
    if let Some(url) = input.events_url {
        both(
            &mut set,
            "ACTOR_EVENTS_WEBSOCKET_URL",
            "APIFY_ACTOR_EVENTS_WS_URL",
            url.to_string(),
        );
    }
    let port = input.web_server_port.to_string();
    both(
        &mut set,
        "ACTOR_WEB_SERVER_PORT",
        "APIFY_CONTAINER_PORT",
        port.clone(),
    );
    both(
        &mut set,
        "ACTOR_WEB_SERVER_URL",
        "APIFY_CONTAINER_URL",
        format!("http://127.0.0.1:{port}"),
    );
    set("ACTOR_STANDBY_PORT", port);
    set("APIFY_USER_ID", run.user_id.clone());
    set("APIFY_USER_IS_PAYING", "0".into());
    set("APIFY_META_ORIGIN", run.origin.clone());
    set("APIFY_HEADLESS", "1".into());
    set(
        "APIFY_ACTOR_PRICING_INFO",
        r#"{"pricingModel":"FREE"}"#.into(),
    );
    set("APIFY_CHARGED_ACTOR_EVENT_COUNTS", "{}".into());
    if let Some(max) = run.max_items {
        set("ACTOR_MAX_PAID_DATASET_ITEMS", max.to_string());
    }
    env
}
