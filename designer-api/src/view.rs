//! JSON views of engine data shared by several routes: actors, definitions, instance summaries and the
//! full picture of an instance (also used for replays). Only this crate knows these shapes; they are
//! built from the engine's types and never flow back into the engine.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use govflow_engine::audit::Actor;
use govflow_engine::engine::idempotency_key;
use govflow_engine::runtime::{Instance, InstanceKey, InstanceStatus, Key, VariableMap};
use govflow_engine::store::{Deployment, InstanceMeta};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;

pub fn time(at: &DateTime<FixedOffset>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Who did something.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActorView {
    pub user: String,
    pub affiliation: Option<String>,
}

impl From<&Actor> for ActorView {
    fn from(actor: &Actor) -> ActorView {
        ActorView { user: actor.user.clone(), affiliation: actor.affiliation.clone() }
    }
}

/// An instance's state: `active`, `completed` or `cancelled`.
pub fn status_name(status: InstanceStatus) -> &'static str {
    match status {
        InstanceStatus::NotStarted => "not_started",
        InstanceStatus::Active => "active",
        InstanceStatus::Completed => "completed",
        InstanceStatus::Cancelled => "cancelled",
    }
}

pub fn parse_status(text: &str) -> Result<InstanceStatus, ApiError> {
    match text {
        "active" => Ok(InstanceStatus::Active),
        "completed" => Ok(InstanceStatus::Completed),
        "cancelled" => Ok(InstanceStatus::Cancelled),
        other => Err(ApiError::invalid_field(
            "state",
            format!("state '{other}' is not one of active, completed, cancelled"),
        )),
    }
}

/// A deployed process or decision version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefinitionView {
    /// The BPMN process id (or DMN decision id).
    pub process_id: String,
    pub version: u32,
    /// `{processId}:{version}`.
    pub key: String,
    /// `process` or `decision`.
    pub kind: String,
    pub resource_name: String,
    /// SHA-256 of the deployed file.
    pub content_hash: String,
    pub deployed_at: String,
    pub deployed_by: ActorView,
    pub enabled: bool,
}

impl From<&Deployment> for DefinitionView {
    fn from(deployment: &Deployment) -> DefinitionView {
        DefinitionView {
            process_id: deployment.process_id.clone(),
            version: deployment.version,
            key: format!("{}:{}", deployment.process_id, deployment.version),
            kind: if deployment.resource_name.ends_with(".dmn") { "decision" } else { "process" }.to_owned(),
            resource_name: deployment.resource_name.clone(),
            content_hash: deployment.content_hash.clone(),
            deployed_at: time(&deployment.deployed_at),
            deployed_by: ActorView::from(&deployment.deployed_by),
            enabled: deployment.enabled,
        }
    }
}

/// The call activity that started an instance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentView {
    pub instance: u64,
    pub element_instance: u64,
}

/// One instance, as lists show it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSummary {
    pub instance: u64,
    pub process_id: String,
    pub version: u32,
    pub business_key: Option<String>,
    /// `active`, `completed` or `cancelled`.
    pub state: String,
    pub started_at: String,
    pub updated_at: String,
    pub parent: Option<ParentView>,
}

impl From<&InstanceMeta> for InstanceSummary {
    fn from(meta: &InstanceMeta) -> InstanceSummary {
        InstanceSummary {
            instance: meta.key.0,
            process_id: meta.process_id.clone(),
            version: meta.version,
            business_key: meta.business_key.clone(),
            state: status_name(meta.status).to_owned(),
            started_at: time(&meta.started_at),
            updated_at: time(&meta.updated_at),
            parent: meta.parent.map(|(instance, element_instance)| ParentView {
                instance: instance.0,
                element_instance: element_instance.0,
            }),
        }
    }
}

/// An element instance (a flow node's activation).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ElementView {
    pub key: u64,
    pub element: String,
    pub element_type: String,
    /// The enclosing scope's element instance (`null` for the process itself).
    pub scope: Option<u64>,
}

/// An open job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenJobView {
    /// The job's id in the job API: `{instance}-{job}` (its idempotency key).
    pub id: String,
    pub job: u64,
    #[serde(rename = "type")]
    pub job_type: String,
    pub element: String,
    pub retries: u32,
    /// No retries left: an incident waits for an operator.
    pub failed: bool,
    pub retry_at: Option<String>,
}

/// An open user task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenTaskView {
    /// `{instance}-{task}`.
    pub id: String,
    pub task: u64,
    pub element: String,
    pub assignee: Option<String>,
    pub candidate_groups: Vec<String>,
}

/// An open incident.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenIncidentView {
    /// `{instance}-{incident}`.
    pub id: String,
    pub incident: u64,
    pub element: String,
    pub kind: String,
    pub message: String,
    /// The job whose failure raised it (`{instance}-{job}`).
    pub job: Option<String>,
}

/// A pending timer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimerView {
    pub timer: u64,
    pub element: String,
    pub due: String,
}

/// An open message subscription.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    pub element: String,
    pub message_name: String,
    pub correlation_key: String,
}

/// Everything about an instance's current state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceState {
    /// The process scope's variables (engine bookkeeping left out).
    #[schema(value_type = Object)]
    pub variables: VariableMap,
    /// Variables of inner scopes, by element instance key.
    #[schema(value_type = Object)]
    pub local_variables: BTreeMap<String, VariableMap>,
    pub elements: Vec<ElementView>,
    pub jobs: Vec<OpenJobView>,
    pub user_tasks: Vec<OpenTaskView>,
    pub incidents: Vec<OpenIncidentView>,
    pub timers: Vec<TimerView>,
    pub message_subscriptions: Vec<SubscriptionView>,
    /// Events applied.
    pub n_events: u64,
}

/// An instance in full: its summary and its state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceDetail {
    #[serde(flatten)]
    pub summary: InstanceSummary,
    #[serde(flatten)]
    pub current: InstanceState,
}

fn visible(variables: &VariableMap) -> VariableMap {
    variables
        .iter()
        .filter(|(name, _)| !name.starts_with("_govflow"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The state view of `state` (of instance `key`).
pub fn instance_state(key: InstanceKey, state: &Instance) -> InstanceState {
    let root = state.root;
    let variables = root.and_then(|root| state.variables.get(&root)).map(visible).unwrap_or_default();
    let local_variables = state
        .variables
        .iter()
        .filter(|(scope, vars)| Some(**scope) != root && !vars.is_empty())
        .map(|(scope, vars)| (scope.0.to_string(), visible(vars)))
        .collect();
    InstanceState {
        variables,
        local_variables,
        elements: state
            .elements
            .values()
            .map(|element| ElementView {
                key: element.key.0,
                element: element.element.0.clone(),
                element_type: element.element_type.clone(),
                scope: element.scope.map(|scope| scope.0),
            })
            .collect(),
        jobs: state
            .jobs
            .values()
            .map(|job| OpenJobView {
                id: idempotency_key(key, job.key),
                job: job.key.0,
                job_type: job.job_type.clone(),
                element: job.element.0.clone(),
                retries: job.retries,
                failed: job.failed,
                retry_at: job.retry_at.as_ref().map(time),
            })
            .collect(),
        user_tasks: state
            .user_tasks
            .values()
            .map(|task| OpenTaskView {
                id: idempotency_key(key, task.key),
                task: task.key.0,
                element: task.element.0.clone(),
                assignee: task.assignee.clone(),
                candidate_groups: task.candidate_groups.clone(),
            })
            .collect(),
        incidents: state
            .incidents
            .values()
            .map(|incident| OpenIncidentView {
                id: idempotency_key(key, incident.key),
                incident: incident.key.0,
                element: incident.element.0.clone(),
                kind: enum_name(&incident.kind),
                message: incident.message.clone(),
                job: incident.job.map(|job| idempotency_key(key, job)),
            })
            .collect(),
        timers: state
            .timers
            .values()
            .map(|timer| TimerView {
                timer: timer.key.0,
                element: timer.element.0.clone(),
                due: time(&timer.due),
            })
            .collect(),
        message_subscriptions: state
            .message_subscriptions
            .values()
            .map(|subscription| SubscriptionView {
                element: subscription.element.0.clone(),
                message_name: subscription.message_name.clone(),
                correlation_key: subscription.correlation_key.clone(),
            })
            .collect(),
        n_events: state.n_events,
    }
}

/// The serde name of a unit enum variant (`no_matching_flow`).
pub fn enum_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        _ => String::new(),
    }
}

/// Parses `{instance}-{key}` ids (jobs, user tasks, incidents); 422 naming the parameter otherwise.
pub fn parse_pair_id(what: &str, id: &str) -> Result<(InstanceKey, Key), ApiError> {
    govflow_engine::engine::parse_idempotency_key(id).ok_or_else(|| {
        ApiError::invalid_field(
            what,
            format!("'{id}' is not a {what} id; ids look like '12-7' ({{instance}}-{{key}})"),
        )
    })
}

/// Parses a duration parameter: `500ms`, `10s`, `2m`, or a plain number of seconds.
pub fn parse_duration(field: &str, text: &str) -> Result<std::time::Duration, ApiError> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let invalid =
        || ApiError::invalid_field(field, format!("'{text}' is not a duration like 500ms, 10s or 2m"));
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "" | "s" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(n.saturating_mul(60))),
        _ => Err(invalid()),
    }
}

pub fn parse_time(field: &str, text: &str) -> Result<DateTime<FixedOffset>, ApiError> {
    DateTime::parse_from_rfc3339(text).map_err(|_| {
        ApiError::invalid_field(field, format!("'{text}' is not an RFC 3339 time (2027-01-04T09:00:00Z)"))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_and_ids_parse_or_say_why() {
        assert_eq!(parse_duration("timeout", "10s").unwrap(), std::time::Duration::from_secs(10));
        assert_eq!(parse_duration("timeout", "250ms").unwrap(), std::time::Duration::from_millis(250));
        assert_eq!(parse_duration("timeout", "3").unwrap(), std::time::Duration::from_secs(3));
        assert!(parse_duration("timeout", "soon").is_err());
        assert!(parse_duration("timeout", "10h").is_err());
        assert_eq!(parse_pair_id("job", "12-7").unwrap(), (InstanceKey(12), Key(7)));
        assert!(parse_pair_id("job", "12").is_err());
    }
}
