//! Incidents: list the open ones (by process or instance) and resolve one, retrying the step that
//! raised it, optionally after changing variables.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use govflow_engine::engine::idempotency_key;
use govflow_engine::runtime::{Command, InstanceKey, Key, VariableMap};
use govflow_engine::store::Store;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Auth, Operate, ReadInstances};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::view::{enum_name, parse_pair_id};

const SCAN_LIMIT: usize = 10_000;

/// An open incident.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentView {
    /// `{instance}-{incident}`.
    pub id: String,
    pub instance: u64,
    pub incident: u64,
    pub process_id: String,
    pub element: String,
    /// `no_matching_flow`, `expression_failed`, `unhandled_error`, `job_no_retries`, ...
    pub kind: String,
    pub message: String,
    /// The job whose failure raised it (`{instance}-{job}`).
    pub job: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IncidentPage {
    pub items: Vec<IncidentView>,
    pub next: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct IncidentsQuery {
    pub process_id: Option<String>,
    pub instance: Option<u64>,
    /// The cursor: an incident id after which to continue.
    pub after: Option<String>,
    pub limit: Option<usize>,
}

/// Lists open incidents.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents", params(IncidentsQuery),
    responses((status = 200, body = IncidentPage)))]
pub async fn list<S: Store + 'static>(
    _auth: Auth<ReadInstances>,
    State(state): State<AppState<S>>,
    ApiQuery(query): ApiQuery<IncidentsQuery>,
) -> ApiResult<ApiJson<IncidentPage>> {
    let limit = state.page_size(query.limit)?;
    let mut cursor = query.after.as_deref().map(|id| parse_pair_id("after", id)).transpose()?;
    if let (Some(instance), None) = (query.instance, cursor) {
        // Start at the instance: its incidents are contiguous in the index.
        cursor = Some((InstanceKey(instance.saturating_sub(1)), Key(u64::MAX)));
    }
    let page = state
        .blocking(move |engine| {
            let store = engine.store();
            let mut items = Vec::new();
            let mut scanned = 0;
            let mut processes: HashMap<InstanceKey, String> = HashMap::new();
            loop {
                let entries = store.incidents(cursor, 256)?;
                if entries.is_empty() {
                    return Ok((items, None));
                }
                for entry in entries {
                    scanned += 1;
                    cursor = Some((entry.instance, entry.incident));
                    if let Some(instance) = query.instance {
                        if entry.instance.0 > instance {
                            return Ok((items, None));
                        }
                        if entry.instance.0 != instance {
                            continue;
                        }
                    }
                    let process_id = match processes.get(&entry.instance) {
                        Some(process_id) => process_id.clone(),
                        None => {
                            let process_id = store
                                .instance_meta(entry.instance)?
                                .map(|meta| meta.process_id)
                                .unwrap_or_default();
                            processes.insert(entry.instance, process_id.clone());
                            process_id
                        }
                    };
                    if query.process_id.as_ref().is_some_and(|p| p != &process_id) {
                        continue;
                    }
                    items.push(IncidentView {
                        id: idempotency_key(entry.instance, entry.incident),
                        instance: entry.instance.0,
                        incident: entry.incident.0,
                        process_id,
                        element: entry.element,
                        kind: enum_name(&entry.kind),
                        message: entry.message,
                        job: entry.job.map(|job| idempotency_key(entry.instance, job)),
                    });
                    if items.len() == limit {
                        return Ok((items, cursor.map(|(i, k)| idempotency_key(i, k))));
                    }
                }
                if scanned >= SCAN_LIMIT {
                    return Ok((items, cursor.map(|(i, k)| idempotency_key(i, k))));
                }
            }
        })
        .await?;
    Ok(ApiJson(IncidentPage { items: page.0, next: page.1 }))
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// Variables to set (process scope) before retrying.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: VariableMap,
}

/// Resolves an incident: sets the variables, then retries the step that raised it.
#[utoipa::path(post, path = "/api/v1/incidents/{id}/resolve", tag = "incidents",
    params(("id" = String, Path, description = "`{instance}-{incident}`")), request_body = ResolveRequest,
    responses((status = 204, description = "Resolved")))]
pub async fn resolve<S: Store + 'static>(
    auth: Auth<Operate>,
    State(state): State<AppState<S>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<ResolveRequest>,
) -> ApiResult<StatusCode> {
    let (instance, incident) = parse_pair_id("incident", &id)?;
    if state.engine().store().instance_meta(instance)?.is_none() {
        return Err(ApiError::NotFound(format!("no incident {id}: instance {instance} does not exist")));
    }
    let command = Command::ResolveIncident { incident, variables: request.variables };
    let shell = Arc::clone(state.shell());
    let actor = auth.actor();
    state.detached(async move { shell.command(instance, command, actor).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}
