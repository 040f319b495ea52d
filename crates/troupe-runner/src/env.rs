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
    if !run.extras.storage_aliases.is_empty() {
        set("ACTOR_STORAGES_JSON", storages_json(run));
    }
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

/// `ACTOR_STORAGES_JSON`: alias → ID per storage kind, each with its `default`.
pub fn storages_json(run: &Run) -> String {
    let mut value = serde_json::json!({
        "datasets": { "default": run.default_dataset_id },
        "keyValueStores": { "default": run.default_key_value_store_id },
        "requestQueues": { "default": run.default_request_queue_id },
    });
    for (kind, alias, id) in &run.extras.storage_aliases {
        if let Some(map) = value.get_mut(kind).and_then(|m| m.as_object_mut()) {
            map.insert(alias.clone(), serde_json::Value::String(id.clone()));
        }
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_model::actor::{JobStatus, RunCounters, StartCommand, Version};

    #[test]
    fn both_names_no_empty_values_no_server_secrets() {
        std::env::set_var("TROUPE_TOKEN", "server-secret");
        let version = Version {
            version_number: "0.1".into(),
            source_type: "SOURCE_FILES".into(),
            env_vars: vec![troupe_model::actor::EnvVar {
                name: "MY_VAR".into(),
                value: "v".into(),
                is_secret: true,
            }],
            apply_env_vars_to_build: false,
            build_tag: None,
            source_files: vec![],
            tarball_url: None,
            git_repo_url: None,
            git_hub_gist_url: None,
        };
        let build = Build {
            id: "B".into(),
            act_id: "A".into(),
            user_id: "U".into(),
            started_at: 0,
            finished_at: Some(1),
            status: JobStatus::Succeeded,
            status_message: None,
            build_number: "0.1.1".into(),
            version_number: "0.1".into(),
            tag: "latest".into(),
            origin: "API".into(),
            use_cache: true,
            timeout_secs: 0,
            version,
            start: Some(StartCommand {
                argv: vec!["x".into()],
                path_prepend: vec!["/venv/bin".into()],
                env: Default::default(),
            }),
            actor_definition: None,
            input_schema: None,
            readme: None,
            git_branch_name: None,
        };
        let actor = Actor {
            id: "A".into(),
            user_id: "U".into(),
            username: "me".into(),
            name: "act".into(),
            created_at: 0,
            modified_at: 0,
            versions: vec![],
            default_run_options: Default::default(),
            tagged_builds: Default::default(),
            build_counters: Default::default(),
            extra: Default::default(),
        };
        let mut run = Run {
            id: "R".into(),
            act_id: "A".into(),
            user_id: "U".into(),
            actor_task_id: None,
            started_at: 1_755_771_811_607,
            finished_at: None,
            status: JobStatus::Running,
            status_message: None,
            is_status_message_terminal: None,
            origin: "API".into(),
            client_ip: None,
            user_agent: None,
            build_id: "B".into(),
            build_number: "0.1.1".into(),
            build_option: "latest".into(),
            exit_code: None,
            general_access: "FOLLOW_USER_SETTING".into(),
            default_dataset_id: "D".into(),
            default_key_value_store_id: "K".into(),
            default_request_queue_id: "Q".into(),
            timeout_secs: 0,
            memory_mbytes: 1024,
            max_items: None,
            input_key: "INPUT".into(),
            counters: RunCounters::default(),
            metamorphs: vec![],
            process: None,
            attempt_started_at: 1_755_771_811_607,
            schedule_id: None,
            scheduled_at: None,
            extras: Default::default(),
        };
        let make = |run: &Run| {
            run_env(&RunEnv {
                run,
                build: &build,
                actor: &actor,
                token: "run-token",
                api_base_url: "http://127.0.0.1:1",
                public_base_url: "http://127.0.0.1:1",
                events_url: Some("ws://127.0.0.1:1/x"),
                web_server_port: 4321,
                home: Path::new("/tmp/h"),
            })
        };
        let env = make(&run);
        assert!(env.values().all(|v| !v.is_empty()));
        assert!(!env.values().any(|v| v == "server-secret"));
        assert!(!env.contains_key("TROUPE_TOKEN"));
        for (new, old) in [
            ("ACTOR_RUN_ID", "APIFY_ACTOR_RUN_ID"),
            ("ACTOR_DEFAULT_DATASET_ID", "APIFY_DEFAULT_DATASET_ID"),
            (
                "ACTOR_DEFAULT_KEY_VALUE_STORE_ID",
                "APIFY_DEFAULT_KEY_VALUE_STORE_ID",
            ),
            (
                "ACTOR_DEFAULT_REQUEST_QUEUE_ID",
                "APIFY_DEFAULT_REQUEST_QUEUE_ID",
            ),
            ("ACTOR_INPUT_KEY", "APIFY_INPUT_KEY"),
            ("ACTOR_MEMORY_MBYTES", "APIFY_MEMORY_MBYTES"),
            ("ACTOR_EVENTS_WEBSOCKET_URL", "APIFY_ACTOR_EVENTS_WS_URL"),
            ("ACTOR_WEB_SERVER_PORT", "APIFY_CONTAINER_PORT"),
        ] {
            assert_eq!(env.get(new), env.get(old), "{new}");
            assert!(env.contains_key(new), "{new}");
        }
        assert_eq!(env["APIFY_IS_AT_HOME"], "1");
        assert_eq!(env["APIFY_TOKEN"], "run-token");
        assert_eq!(env["APIFY_API_BASE_URL"], "http://127.0.0.1:1");
        assert_eq!(env["ACTOR_STARTED_AT"], "2025-08-21T10:23:31.607Z");
        assert_eq!(
            env["APIFY_ACTOR_PRICING_INFO"],
            r#"{"pricingModel":"FREE"}"#
        );
        assert_eq!(env["APIFY_CHARGED_ACTOR_EVENT_COUNTS"], "{}");
        assert_eq!(env["MY_VAR"], "v");
        assert!(env["PATH"].starts_with("/venv/bin:"));
        assert!(
            !env.contains_key("ACTOR_TIMEOUT_AT"),
            "no timeout, no variable"
        );
        run.timeout_secs = 60;
        assert_eq!(make(&run)["ACTOR_TIMEOUT_AT"], "2025-08-21T10:24:31.607Z");
    }
}
