//! Actor tasks: a saved Actor + input + run options, started as one unit.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A task's `options`: each one, when set, is used when the start request does not give it,
/// before the Actor's `defaultRunOptions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mbytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_charge_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_on_error: Option<bool>,
}

/// An Actor task. Fields troupe does not interpret (`title`, `description`, `actorStandby`...)
/// are kept as given in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub user_id: String,
    pub username: String,
    pub act_id: String,
    pub name: String,
    pub created_at: i64,
    pub modified_at: i64,
    #[serde(default)]
    pub options: TaskOptions,
    /// The stored input: a JSON object (absent = none).
    #[serde(default)]
    pub input: Option<Map<String, Value>>,
    #[serde(default)]
    pub extra: Map<String, Value>,
}
