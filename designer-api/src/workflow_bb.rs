//! The GovStack Workflow BB API (spec 1.0, `swagger.yaml`), at the root and under the Information
//! Mediator prefix `/{instance}/{memberClass}/{memberCode}/{applicationCode}`. Field names, types and
//! status codes follow the swagger; where the GovStack sources contradict each other the choice is
//! documented in docs/api.md ("Workflow BB choices"). Every invalid input answers 400 here (the
//! GovStack Gherkin negatives expect it), in the API's one error shape.
//!
//! Ids: a process's `id` is its BPMN process id (`processRef` is `{id}:{version}`); an instance's
//! `id` is its integer key (a string in the start and stop answers, as the swagger types them, with
//! the 23Q4 `instanceId` integer beside it).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use govflow_engine::runtime::{InstanceKey, InstanceStatus, VariableMap};
use govflow_engine::store::{Deployment, InstanceFilter, InstanceMeta, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Auth, Design, Operate, ReadDefinitions, ReadInstances};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::routes::instances::{self, StartRequest, WaitQuery};
use crate::state::AppState;
use crate::view::{instance_state, time};

/// How many of an instance's latest events its detail shows as `logs`.
const N_LOGS: usize = 100;

/// A `{code, value}` pair (`ListOfProperties` item).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Property {
    pub code: String,
    /// A string in answers; any JSON value is taken in requests.
    #[schema(value_type = String)]
    pub value: Value,
}

/// The swagger's `ProcessDefinition.type`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub enum ProcessType {
    None,
    Private,
    Public,
}

/// The swagger's `ProcessDefinition`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessDefinition {
    /// The process name (its id when it has none).
    pub name: String,
    #[serde(rename = "type")]
    pub process_type: ProcessType,
    /// The version, as a string (`"3"`).
    pub version: String,
    #[serde(default)]
    pub is_executable: bool,
    #[serde(default)]
    pub is_closed: bool,
    #[serde(default)]
    pub description: String,
    /// In answers: `processId`, `resourceName`, `enabled`, and in a single process's detail `bpmn` (the
    /// XML). In `POST /processes` and `PUT`: a `bpmn` entry carries the BPMN XML to deploy.
    #[serde(default)]
    pub process_body: Vec<Property>,
}

/// The swagger's `Process`: `{id, processDefinition}`. The definition's fields are repeated at the top
/// level, which is where GovStack's compliance steps look for them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub id: String,
    pub process_definition: ProcessDefinition,
    #[serde(flatten)]
    pub fields: ProcessDefinition,
}

fn property(code: &str, value: impl Into<String>) -> Property {
    Property { code: code.to_owned(), value: Value::String(value.into()) }
}

fn process_view<S: Store + 'static>(state: &AppState<S>, deployment: &Deployment, with_xml: bool) -> Process {
    let info = state.process_info(deployment);
    let process_type = match info.process_type.as_deref() {
        Some("Private" | "private") => ProcessType::Private,
        Some("Public" | "public") => ProcessType::Public,
        _ => ProcessType::None,
    };
    let mut process_body = vec![
        property("processId", deployment.process_id.clone()),
        property("processRef", format!("{}:{}", deployment.process_id, deployment.version)),
        property("resourceName", deployment.resource_name.clone()),
        property("enabled", deployment.enabled.to_string()),
        property("deployedAt", time(&deployment.deployed_at)),
    ];
    if with_xml {
        process_body.push(property("bpmn", String::from_utf8_lossy(&deployment.xml).into_owned()));
    }
    let definition = ProcessDefinition {
        name: info.name.clone().unwrap_or_else(|| deployment.process_id.clone()),
        process_type,
        version: deployment.version.to_string(),
        is_executable: info.is_executable,
        is_closed: info.is_closed,
        description: info.description.clone().unwrap_or_default(),
        process_body,
    };
    Process { id: deployment.process_id.clone(), process_definition: definition.clone(), fields: definition }
}

/// The swagger's `ProcessInstance`, with the execution details GovStack asks the detail to carry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInstance {
    pub id: u64,
    /// `{processId}:{version}`.
    pub process_ref: String,
    pub init_time: String,
    /// `running`, `completed` or `stopped`.
    pub state: String,
    pub last_change_time: String,
    pub process_id: String,
    pub business_key: Option<String>,
    pub suspended: bool,
    pub ended: bool,
    /// Detail only: the process variables.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variables: Option<VariableMap>,
    /// Detail only: open incidents (`{element, kind, message}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub incidents: Option<Vec<Value>>,
    /// Detail only: the latest events (`{seq, at, type, user, affiliation}`), oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub logs: Option<Vec<Value>>,
}

fn bb_state(status: InstanceStatus) -> &'static str {
    match status {
        InstanceStatus::Active | InstanceStatus::NotStarted => "running",
        InstanceStatus::Completed => "completed",
        InstanceStatus::Cancelled => "stopped",
    }
}

fn instance_view(meta: &InstanceMeta) -> ProcessInstance {
    ProcessInstance {
        id: meta.key.0,
        process_ref: format!("{}:{}", meta.process_id, meta.version),
        init_time: time(&meta.started_at),
        state: bb_state(meta.status).to_owned(),
        last_change_time: time(&meta.updated_at),
        process_id: meta.process_id.clone(),
        business_key: meta.business_key.clone(),
        suspended: false,
        ended: meta.status != InstanceStatus::Active,
        variables: None,
        incidents: None,
        logs: None,
    }
}

/// What the start and stop answers carry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatusView {
    /// The instance id, as a string (swagger 1.0).
    pub id: String,
    /// The same id as an integer (swagger 23Q4).
    pub instance_id: u64,
    pub process_ref: String,
    pub suspended: bool,
    pub ended: bool,
    /// `running`, `completed` or `stopped`.
    pub state: String,
    /// The final variables, after a synchronous start (`?wait=completed`) that ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub variables: Option<VariableMap>,
}

/// A process id from a path: a BPMN id, optionally `:{version}`. Anything else is invalid (400).
fn process_ref(text: &str) -> ApiResult<(String, Option<u32>)> {
    let valid_id = |id: &str| {
        !id.is_empty()
            && id.len() <= 256
            && id.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !id.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
    };
    let (id, version) = match text.rsplit_once(':') {
        Some((id, version)) => {
            let version = version.parse::<u32>().map_err(|_| {
                ApiError::invalid_field(
                    "processId",
                    format!("'{text}' is not a process id or {{id}}:{{version}}"),
                )
            })?;
            (id, Some(version))
        }
        None => (text, None),
    };
    if valid_id(id) {
        Ok((id.to_owned(), version))
    } else {
        Err(ApiError::invalid_field("processId", format!("'{text}' is not a valid process id")))
    }
}

async fn deployments<S: Store + 'static>(state: &AppState<S>) -> ApiResult<Vec<Deployment>> {
    state.blocking(|engine| Ok(engine.store().deployments()?)).await
}

/// The latest version of each process (DMN decisions are not processes here).
fn latest(deployments: &[Deployment]) -> Vec<&Deployment> {
    deployments
        .iter()
        .enumerate()
        .filter(|(i, d)| deployments.get(i + 1).is_none_or(|next| next.process_id != d.process_id))
        .map(|(_, d)| d)
        .filter(|d| !d.resource_name.ends_with(".dmn"))
        .collect()
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProcessesQuery {
    /// Only processes with this name (case-insensitive; swagger 23Q4).
    pub name: Option<String>,
    /// At most this many (govflow extension; default and cap: the server's page size).
    pub limit: Option<usize>,
}

/// Lists the processes that can be started: the latest version of each, when enabled.
#[utoipa::path(get, path = "/processes", tag = "workflow-bb", operation_id = "getProcessList", params(ProcessesQuery),
    responses((status = 200, body = Vec<Process>, description = "list of processes")))]
pub async fn list_processes<S: Store + 'static>(
    _auth: Auth<ReadDefinitions>,
    State(state): State<AppState<S>>,
    ApiQuery(query): ApiQuery<ProcessesQuery>,
) -> ApiResult<ApiJson<Vec<Process>>> {
    let limit = state.page_size(query.limit)?;
    let deployments = deployments(&state).await?;
    let processes = latest(&deployments)
        .into_iter()
        .filter(|d| d.enabled)
        .map(|d| process_view(&state, d, false))
        .filter(|p| query.name.as_ref().is_none_or(|name| p.fields.name.eq_ignore_ascii_case(name)))
        .take(limit)
        .collect();
    Ok(ApiJson(processes))
}

#[derive(Debug, Deserialize)]
pub struct ProcessPath {
    #[serde(rename = "processId")]
    pub process_id: String,
}

async fn find_process<S: Store + 'static>(state: &AppState<S>, text: &str) -> ApiResult<Deployment> {
    let (id, version) = process_ref(text)?;
    let deployments = deployments(state).await?;
    let found = match version {
        Some(version) => deployments.into_iter().find(|d| d.process_id == id && d.version == version),
        None => deployments.into_iter().rfind(|d| d.process_id == id),
    };
    found
        .filter(|d| !d.resource_name.ends_with(".dmn"))
        .ok_or_else(|| ApiError::NotFound(format!("no process '{text}' is deployed")))
}

/// A process in full, with its BPMN XML in `processBody`.
#[utoipa::path(get, path = "/processes/{processId}", tag = "workflow-bb", operation_id = "getProcess",
    params(("processId" = String, Path, description = "The BPMN process id, or `{id}:{version}`")),
    responses((status = 200, body = Process, description = "process found and representation returned")))]
pub async fn get_process<S: Store + 'static>(
    _auth: Auth<ReadDefinitions>,
    State(state): State<AppState<S>>,
    ApiPath(path): ApiPath<ProcessPath>,
) -> ApiResult<ApiJson<Process>> {
    let deployment = find_process(&state, &path.process_id).await?;
    Ok(ApiJson(process_view(&state, &deployment, true)))
}

/// The BPMN XML a process body carries, if any.
fn bpmn_of(body: &[Property]) -> ApiResult<Option<String>> {
    let found = body.iter().find(|p| matches!(p.code.as_str(), "bpmn" | "bpmnXml" | "xml"));
    match found {
        None => Ok(None),
        Some(Property { value: Value::String(xml), .. }) => Ok(Some(xml.clone())),
        Some(_) => Err(ApiError::invalid_field(
            "processBody",
            "the 'bpmn' entry's value must be the BPMN XML as a string",
        )),
    }
}

/// A file name for a deployment made through this API.
fn resource_name(name: &str) -> String {
    let stem: String =
        name.chars().map(|c| if c.is_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    format!("{}.bpmn", if stem.is_empty() { "process" } else { &stem })
}

async fn deploy_xml<S: Store + 'static>(
    state: &AppState<S>,
    actor: govflow_engine::audit::Actor,
    name: String,
    xml: String,
) -> ApiResult<Vec<govflow_engine::engine::Deployed>> {
    state.blocking(move |engine| engine.deploy(&name, xml.as_bytes(), &actor)).await
}

/// Adds a process: the `bpmn` entry of `processBody` is deployed (a new version of each executable
/// process in it; identical content returns the existing version).
#[utoipa::path(post, path = "/processes", tag = "workflow-bb", operation_id = "addProcess", request_body = ProcessDefinition,
    responses((status = 201, body = Process, description = "Process successfully added")))]
pub async fn add_process<S: Store + 'static>(
    auth: Auth<Design>,
    State(state): State<AppState<S>>,
    ApiJson(definition): ApiJson<ProcessDefinition>,
) -> ApiResult<Response> {
    let xml = bpmn_of(&definition.process_body)?.ok_or_else(|| {
        ApiError::invalid_field(
            "processBody",
            "processBody must have a 'bpmn' entry whose value is the BPMN XML",
        )
    })?;
    let deployed = deploy_xml(&state, auth.actor(), resource_name(&definition.name), xml).await?;
    let first = deployed.first().ok_or_else(|| {
        ApiError::invalid_field("processBody", "the BPMN has no executable process (isExecutable=\"true\")")
    })?;
    let deployment = find_process(&state, &format!("{}:{}", first.process_id, first.version)).await?;
    Ok((StatusCode::CREATED, ApiJson(process_view(&state, &deployment, false))).into_response())
}

/// What `PUT /processes/{processId}` takes (the swagger says only "object").
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessUpdate {
    /// Enable or disable the latest version (a disabled process is not listed and cannot start).
    pub enabled: Option<bool>,
    /// A `bpmn` entry deploys a new version.
    #[serde(default)]
    pub process_body: Vec<Property>,
    pub name: Option<String>,
}

/// Updates a process: deploys a new version from `processBody`, and/or enables or disables it.
#[utoipa::path(put, path = "/processes/{processId}", tag = "workflow-bb", operation_id = "updateProcess",
    params(("processId" = String, Path)), request_body = ProcessUpdate,
    responses((status = 204, description = "Process successfully updated")))]
pub async fn update_process<S: Store + 'static>(
    auth: Auth<Design>,
    State(state): State<AppState<S>>,
    ApiPath(path): ApiPath<ProcessPath>,
    ApiJson(update): ApiJson<ProcessUpdate>,
) -> ApiResult<StatusCode> {
    let existing = find_process(&state, &path.process_id).await?;
    let xml = bpmn_of(&update.process_body)?;
    if xml.is_none() && update.enabled.is_none() {
        return Err(ApiError::invalid("send `enabled` and/or a processBody with a 'bpmn' entry"));
    }
    let mut version = existing.version;
    if let Some(xml) = xml {
        let name = update.name.clone().unwrap_or_else(|| existing.process_id.clone());
        let deployed = deploy_xml(&state, auth.actor(), resource_name(&name), xml).await?;
        let Some(same) = deployed.iter().find(|d| d.process_id == existing.process_id) else {
            return Err(ApiError::invalid_field(
                "processBody",
                format!("the BPMN does not contain process '{}'", existing.process_id),
            ));
        };
        version = same.version;
    }
    if let Some(enabled) = update.enabled {
        let (id, actor) = (existing.process_id.clone(), auth.actor());
        state.blocking(move |engine| engine.set_enabled(&id, version, enabled, &actor)).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes every version of a process; 409 (nothing deleted) while any instance uses one.
#[utoipa::path(delete, path = "/processes/{processId}", tag = "workflow-bb", operation_id = "deleteProcess",
    params(("processId" = String, Path)),
    responses((status = 200, description = "Process successfully deleted")))]
pub async fn delete_process<S: Store + 'static>(
    auth: Auth<Design>,
    State(state): State<AppState<S>>,
    ApiPath(path): ApiPath<ProcessPath>,
) -> ApiResult<StatusCode> {
    let (id, version) = process_ref(&path.process_id)?;
    let deployments = deployments(&state).await?;
    let versions: Vec<u32> = deployments
        .iter()
        .filter(|d| d.process_id == id && version.is_none_or(|v| v == d.version))
        .map(|d| d.version)
        .collect();
    if versions.is_empty() {
        return Err(ApiError::NotFound(format!("no process '{}' is deployed", path.process_id)));
    }
    let actor = auth.actor();
    let process_id = id.clone();
    let check = versions.clone();
    // Every version or none (409 when an instance uses any of them).
    state.blocking(move |engine| engine.delete_definitions(&process_id, &check, &actor)).await?;
    for version in versions {
        state.forget_process_info(&id, version);
    }
    Ok(StatusCode::OK)
}

/// The swagger's `ProcessInstancePayload` (both spellings of `InstanceValues`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ProcessInstancePayload {
    /// Who started it; kept as the variable `processStartedBy` (the actor in the audit trail is the
    /// token's user).
    #[serde(rename = "processStartedBy")]
    pub process_started_by: String,
    /// The initial variables as `{code, value}` pairs.
    #[serde(rename = "InstanceValues", alias = "instanceValues", default)]
    pub instance_values: Vec<Property>,
}

/// Starts an instance of a process. Answers 201 once the start is durable; with
/// `?wait=completed&timeout=10s` it answers when the instance has ended (or at the timeout), with
/// `ended`, `state` and the final `variables`.
#[utoipa::path(post, path = "/processes/{processId}/start", tag = "workflow-bb", operation_id = "start",
    params(("processId" = String, Path), WaitQuery), request_body = ProcessInstancePayload,
    responses((status = 201, body = InstanceStatusView, description = "Process started; registered for execution with unique process instance ID.")))]
pub async fn start<S: Store + 'static>(
    auth: Auth<Operate>,
    State(state): State<AppState<S>>,
    ApiPath(path): ApiPath<ProcessPath>,
    ApiQuery(query): ApiQuery<WaitQuery>,
    ApiJson(payload): ApiJson<ProcessInstancePayload>,
) -> ApiResult<Response> {
    let (process_id, version) = process_ref(&path.process_id)?;
    if version.is_some() {
        return Err(ApiError::invalid_field(
            "processId",
            "instances start the latest version; give the process id alone",
        ));
    }
    if payload.process_started_by.trim().is_empty() {
        return Err(ApiError::invalid_field("processStartedBy", "processStartedBy is empty"));
    }
    let mut variables = VariableMap::new();
    for value in payload.instance_values {
        if value.code.trim().is_empty() {
            return Err(ApiError::invalid_field("InstanceValues", "a value has an empty code"));
        }
        variables.insert(value.code, value.value);
    }
    variables.insert("processStartedBy".to_owned(), Value::String(payload.process_started_by));
    let wait = instances::wait_of(&state, &query)?;
    let request = StartRequest { process_id, variables, business_key: None, start_event: None };
    let started = instances::start_instance(&state, auth.actor(), request, wait).await?.response;
    let ended = started.state != "active";
    let view = InstanceStatusView {
        id: started.instance.to_string(),
        instance_id: started.instance,
        process_ref: format!("{}:{}", started.process_id, started.version),
        suspended: false,
        ended,
        state: match started.state.as_str() {
            "completed" => "completed",
            "cancelled" => "stopped",
            _ => "running",
        }
        .to_owned(),
        variables: started.variables,
    };
    Ok((StatusCode::CREATED, ApiJson(view)).into_response())
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct InstancesQuery {
    /// Only instances of this process.
    pub process_id: Option<String>,
    /// Continue after this instance id (govflow extension).
    pub after: Option<u64>,
    /// At most this many (govflow extension; default and cap: the server's page size).
    pub limit: Option<usize>,
}

/// Lists process instances, optionally of one process.
#[utoipa::path(get, path = "/instances", tag = "workflow-bb", params(InstancesQuery),
    responses((status = 200, body = Vec<ProcessInstance>, description = "An array of process instances")))]
pub async fn list_instances<S: Store + 'static>(
    _auth: Auth<ReadInstances>,
    State(state): State<AppState<S>>,
    ApiQuery(query): ApiQuery<InstancesQuery>,
) -> ApiResult<ApiJson<Vec<ProcessInstance>>> {
    let limit = state.page_size(query.limit)?;
    let process_id = query.process_id.as_deref().map(process_ref).transpose()?.map(|(id, _)| id);
    let filter = InstanceFilter { process_id, ..InstanceFilter::default() };
    let (metas, _) = instances::page(&state, filter, query.after, limit).await?;
    Ok(ApiJson(metas.iter().map(instance_view).collect()))
}

#[derive(Debug, Deserialize)]
pub struct InstancePath {
    #[serde(rename = "instanceId")]
    pub instance_id: String,
}

fn instance_key(text: &str) -> ApiResult<InstanceKey> {
    text.parse::<u64>().map(InstanceKey).map_err(|_| {
        ApiError::invalid_field("instanceId", format!("'{text}' is not an instance id (an integer)"))
    })
}

/// An instance with the details of its execution: variables, open incidents and its latest events.
#[utoipa::path(get, path = "/instances/{instanceId}", tag = "workflow-bb",
    params(("instanceId" = u64, Path, description = "Numeric ID of a process instance")),
    responses((status = 200, body = ProcessInstance, description = "A detailed process instance status object")))]
pub async fn get_instance<S: Store + 'static>(
    _auth: Auth<ReadInstances>,
    State(state): State<AppState<S>>,
    ApiPath(path): ApiPath<InstancePath>,
) -> ApiResult<ApiJson<ProcessInstance>> {
    let key = instance_key(&path.instance_id)?;
    let (stored, records) = state
        .blocking(move |engine| {
            let stored = engine.instance(key)?;
            let from = stored.last_seq.saturating_sub(N_LOGS as u64 - 1).max(1);
            let records = engine.store().records(key, from, N_LOGS)?;
            Ok((stored, records))
        })
        .await?;
    let current = instance_state(key, &stored.state);
    let mut view = instance_view(&stored.meta);
    view.variables = Some(current.variables);
    view.incidents = Some(
        current
            .incidents
            .iter()
            .map(|i| serde_json::json!({"id": i.id, "element": i.element, "kind": i.kind, "message": i.message}))
            .collect(),
    );
    view.logs = Some(
        records
            .iter()
            .map(|r| {
                serde_json::json!({
                    "seq": r.seq, "at": time(&r.at), "type": r.event.name(),
                    "user": r.actor.user, "affiliation": r.actor.affiliation,
                })
            })
            .collect(),
    );
    Ok(ApiJson(view))
}

/// Stops (cancels) a running instance; 409 when it has already ended.
#[utoipa::path(post, path = "/instances/{instanceId}/stop", tag = "workflow-bb", operation_id = "stop",
    params(("instanceId" = u64, Path, description = "Numeric ID of a process instance")),
    responses((status = 201, body = InstanceStatusView, description = "Process instance stopped.")))]
pub async fn stop<S: Store + 'static>(
    auth: Auth<Operate>,
    State(state): State<AppState<S>>,
    ApiPath(path): ApiPath<InstancePath>,
) -> ApiResult<Response> {
    let key = instance_key(&path.instance_id)?;
    let summary = instances::cancel_instance(&state, auth.actor(), key).await?;
    let view = InstanceStatusView {
        id: key.0.to_string(),
        instance_id: key.0,
        process_ref: format!("{}:{}", summary.process_id, summary.version),
        suspended: false,
        ended: true,
        state: "stopped".to_owned(),
        variables: None,
    };
    Ok((StatusCode::CREATED, ApiJson(view)).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn process_refs_are_ids_or_id_colon_version() {
        assert_eq!(process_ref("birth-registration").unwrap(), ("birth-registration".to_owned(), None));
        assert_eq!(process_ref("birth-registration:3").unwrap(), ("birth-registration".to_owned(), Some(3)));
        assert!(process_ref("not an id!").is_err());
        assert!(process_ref("x:y").is_err());
        assert!(process_ref("").is_err());
        assert_eq!(resource_name("Birth registration"), "Birth-registration.bpmn");
    }
}
