//! Instances: start (asynchronous, or synchronous with `?wait=completed`), list with filters and cursor
//! paging, read in full, cancel, set variables; messages and signals. Commands run to their commit
//! even when the request is dropped (`AppState::detached`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use govflow_engine::audit::Actor;
use govflow_engine::engine::Message;
use govflow_engine::model::ElementId;
use govflow_engine::runtime::{Command, InstanceKey, InstanceStatus, Key, VariableMap};
use govflow_engine::store::{InstanceFilter, Store};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Auth, Operate, ReadInstances};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::view::{
    instance_state, parse_duration, parse_status, parse_time, status_name, InstanceDetail, InstanceSummary,
};

/// What to start.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartRequest {
    /// The BPMN process id; its latest version starts.
    pub process_id: String,
    /// The process variables to start with (a JSON object).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: VariableMap,
    pub business_key: Option<String>,
    /// The start event to start at (default: the process's none start event).
    pub start_event: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// `completed`: answer when the instance has ended (or at the timeout), with its final variables.
    pub wait: Option<String>,
    /// How long to wait: `500ms`, `10s`, `2m` (default 10s; at most the request timeout less 1 s).
    pub timeout: Option<String>,
}

/// A started instance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartResponse {
    pub instance: u64,
    pub process_id: String,
    pub version: u32,
    pub business_key: Option<String>,
    /// `active`, `completed` or `cancelled`.
    pub state: String,
    /// The process variables at the end (synchronous starts that ended only).
    #[schema(value_type = Option<Object>)]
    pub variables: Option<VariableMap>,
}

/// How a start ended: the instance, and whether it was waited for and ended.
#[derive(Debug, Clone)]
pub struct Started {
    pub response: StartResponse,
    /// A synchronous start whose instance had not ended by the timeout.
    pub still_running: bool,
}

/// Whether `?wait=` asks to wait, and how long.
pub fn wait_of<S: Store + 'static>(state: &AppState<S>, query: &WaitQuery) -> ApiResult<Option<Duration>> {
    match query.wait.as_deref() {
        None => {
            if query.timeout.is_some() {
                return Err(ApiError::invalid_field("timeout", "timeout only applies with wait=completed"));
            }
            Ok(None)
        }
        Some("completed") => {
            let requested = query.timeout.as_deref().map(|t| parse_duration("timeout", t)).transpose()?;
            Ok(Some(state.wait_for(requested, Duration::from_secs(10))))
        }
        Some(other) => Err(ApiError::invalid_field(
            "wait",
            format!("wait='{other}' is not supported; use wait=completed"),
        )),
    }
}

/// Starts an instance (at `start_event` if given), optionally waiting up to `wait` for it to end.
pub async fn start_instance<S: Store + 'static>(
    state: &AppState<S>,
    actor: Actor,
    request: StartRequest,
    wait: Option<Duration>,
) -> ApiResult<Started> {
    let StartRequest { process_id, variables, business_key, start_event } = request;
    let key = match start_event {
        None => {
            let engine = Arc::clone(state.engine());
            let (id, key_business) = (process_id.clone(), business_key.clone());
            state
                .detached(async move { engine.start_async(&id, variables, key_business, &actor).await })
                .await?
        }
        Some(start_event) => {
            let (id, key_business) = (process_id.clone(), business_key.clone());
            state
                .blocking(move |engine| {
                    engine.start_at(&id, Some(ElementId(start_event)), variables, key_business, None, &actor)
                })
                .await?
        }
    };
    state.metrics().instance_started(&process_id);
    let mut status = InstanceStatus::Active;
    if let Some(wait) = wait {
        // Registered before looking, so an ending in between is not missed.
        let ended = state.waiters().register(key);
        let meta = state.engine().store().instance_meta(key)?;
        status = meta.map_or(InstanceStatus::Active, |meta| meta.status);
        if status == InstanceStatus::Active {
            match tokio::time::timeout(wait, ended).await {
                Ok(Ok(final_status)) => status = final_status,
                _ => state.waiters().forget(key),
            }
        } else {
            state.waiters().forget(key);
        }
    }
    let ended = status != InstanceStatus::Active;
    // The whole state only when its variables are answered; otherwise the meta entry (one small read).
    let (meta, variables) = if ended {
        let stored = state.engine().instance(key)?;
        let variables = instance_state(key, &stored.state).variables;
        (stored.meta, Some(variables))
    } else {
        let meta = state.engine().store().instance_meta(key)?;
        (meta.ok_or(govflow_engine::engine::EngineError::UnknownInstance(key))?, None)
    };
    Ok(Started {
        response: StartResponse {
            instance: key.0,
            process_id: meta.process_id.clone(),
            version: meta.version,
            business_key: meta.business_key.clone(),
            state: status_name(if ended { status } else { meta.status }).to_owned(),
            variables,
        },
        still_running: wait.is_some() && !ended,
    })
}

/// Starts an instance of a process's latest version.
///
/// Asynchronous by default: answers 201 once the start is durable (its first jobs are running).
/// With `?wait=completed&timeout=10s` it answers 200 with the final variables when the instance ends
/// in time, or 202 with `state: active` when it is still running at the timeout.
#[utoipa::path(post, path = "/api/v1/instances", tag = "instances", params(WaitQuery), request_body = StartRequest,
    responses((status = 201, body = StartResponse, description = "Started"),
        (status = 200, body = StartResponse, description = "Started and ended within the wait"),
        (status = 202, body = StartResponse, description = "Started; still running at the end of the wait")))]
pub async fn start<S: Store + 'static>(
    auth: Auth<Operate>,
    State(state): State<AppState<S>>,
    ApiQuery(query): ApiQuery<WaitQuery>,
    ApiJson(request): ApiJson<StartRequest>,
) -> ApiResult<Response> {
    let wait = wait_of(&state, &query)?;
    let started = start_instance(&state, auth.actor(), request, wait).await?;
    let status = match (wait, started.still_running) {
        (None, _) => StatusCode::CREATED,
        (Some(_), false) => StatusCode::OK,
        (Some(_), true) => StatusCode::ACCEPTED,
    };
    Ok((status, ApiJson(started.response)).into_response())
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct InstancesQuery {
    pub process_id: Option<String>,
    pub version: Option<u32>,
    /// `active`, `completed` or `cancelled`.
    pub state: Option<String>,
    pub business_key: Option<String>,
    /// Started at or after this RFC 3339 time.
    pub started_after: Option<String>,
    /// Started before this RFC 3339 time.
    pub started_before: Option<String>,
    /// The cursor: the instance key after which to continue (`next` of the previous page).
    pub after: Option<u64>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstancePage {
    pub items: Vec<InstanceSummary>,
    /// The cursor of the next page (`after`), `null` on the last page.
    pub next: Option<u64>,
}

impl InstancesQuery {
    pub fn filter(&self) -> ApiResult<InstanceFilter> {
        Ok(InstanceFilter {
            process_id: self.process_id.clone(),
            version: self.version,
            status: self.state.as_deref().map(parse_status).transpose()?,
            business_key: self.business_key.clone(),
            started_after: self
                .started_after
                .as_deref()
                .map(|t| parse_time("startedAfter", t))
                .transpose()?,
            started_before: self
                .started_before
                .as_deref()
                .map(|t| parse_time("startedBefore", t))
                .transpose()?,
        })
    }
}

/// Instances matching `filter`, a page after `after`, and the next cursor.
pub async fn page<S: Store + 'static>(
    state: &AppState<S>,
    filter: InstanceFilter,
    after: Option<u64>,
    limit: usize,
) -> ApiResult<(Vec<govflow_engine::store::InstanceMeta>, Option<u64>)> {
    let mut metas = state
        .blocking(move |engine| engine.instances(&filter, after.map(InstanceKey), limit.saturating_add(1)))
        .await?;
    let next = if metas.len() > limit {
        metas.truncate(limit);
        metas.last().map(|meta| meta.key.0)
    } else {
        None
    };
    Ok((metas, next))
}

/// Lists instances by process, version, state, business key and start time, by key, a page at a time.
#[utoipa::path(get, path = "/api/v1/instances", tag = "instances", params(InstancesQuery),
    responses((status = 200, body = InstancePage)))]
pub async fn list<S: Store + 'static>(
    _auth: Auth<ReadInstances>,
    State(state): State<AppState<S>>,
    ApiQuery(query): ApiQuery<InstancesQuery>,
) -> ApiResult<ApiJson<InstancePage>> {
    let limit = state.page_size(query.limit)?;
    let (metas, next) = page(&state, query.filter()?, query.after, limit).await?;
    Ok(ApiJson(InstancePage { items: metas.iter().map(InstanceSummary::from).collect(), next }))
}

/// An instance in full: element instances, variables, open jobs, user tasks, incidents, timers and
/// message subscriptions.
#[utoipa::path(get, path = "/api/v1/instances/{instance}", tag = "instances",
    params(("instance" = u64, Path, description = "The instance key")),
    responses((status = 200, body = InstanceDetail)))]
pub async fn get<S: Store + 'static>(
    _auth: Auth<ReadInstances>,
    State(state): State<AppState<S>>,
    ApiPath(instance): ApiPath<u64>,
) -> ApiResult<ApiJson<InstanceDetail>> {
    let key = InstanceKey(instance);
    let stored = state.blocking(move |engine| engine.instance(key)).await?;
    Ok(ApiJson(InstanceDetail {
        summary: InstanceSummary::from(&stored.meta),
        current: instance_state(key, &stored.state),
    }))
}

/// Cancels an active instance (409 when it has ended).
#[utoipa::path(post, path = "/api/v1/instances/{instance}/cancel", tag = "instances",
    params(("instance" = u64, Path)),
    responses((status = 200, body = InstanceSummary)))]
pub async fn cancel<S: Store + 'static>(
    auth: Auth<Operate>,
    State(state): State<AppState<S>>,
    ApiPath(instance): ApiPath<u64>,
) -> ApiResult<ApiJson<InstanceSummary>> {
    let summary = cancel_instance(&state, auth.actor(), InstanceKey(instance)).await?;
    Ok(ApiJson(summary))
}

/// Cancels an instance; its summary afterwards.
pub async fn cancel_instance<S: Store + 'static>(
    state: &AppState<S>,
    actor: Actor,
    key: InstanceKey,
) -> ApiResult<InstanceSummary> {
    let shell = Arc::clone(state.shell());
    state.detached(async move { shell.command(key, Command::Cancel, actor).await }).await?;
    let meta = state
        .engine()
        .store()
        .instance_meta(key)?
        .ok_or_else(|| ApiError::NotFound(format!("no instance {key}")))?;
    Ok(InstanceSummary::from(&meta))
}

/// Variables to set.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetVariablesRequest {
    #[schema(value_type = Object)]
    pub variables: VariableMap,
    /// The element instance whose scope takes them (default: the process).
    pub scope: Option<u64>,
    /// Set them on `scope` itself; otherwise each goes to the nearest scope that has it.
    #[serde(default)]
    pub local: bool,
}

/// Sets variables of an active instance.
#[utoipa::path(post, path = "/api/v1/instances/{instance}/variables", tag = "instances",
    params(("instance" = u64, Path)), request_body = SetVariablesRequest,
    responses((status = 204, description = "Set")))]
pub async fn set_variables<S: Store + 'static>(
    auth: Auth<Operate>,
    State(state): State<AppState<S>>,
    ApiPath(instance): ApiPath<u64>,
    ApiJson(request): ApiJson<SetVariablesRequest>,
) -> ApiResult<StatusCode> {
    let command = Command::SetVariables {
        scope: request.scope.map(Key),
        variables: request.variables,
        local: request.local,
    };
    let shell = Arc::clone(state.shell());
    let actor = auth.actor();
    state.detached(async move { shell.command(InstanceKey(instance), command, actor).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A message to publish.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishRequest {
    pub name: String,
    #[serde(default)]
    pub correlation_key: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: VariableMap,
    /// How long to keep the message for subscriptions that open later, in milliseconds (0: now or never).
    #[serde(default)]
    pub time_to_live: u64,
    /// De-duplication: a second message with this id is refused (409) while the first is buffered.
    pub message_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PublishResponse {
    /// Instances the message was correlated to.
    pub correlated: Vec<u64>,
    /// Instances it started (message start events).
    pub started: Vec<u64>,
    /// The buffered message's key, when it was kept for its time to live.
    pub buffered: Option<u64>,
}

/// Publishes a message: correlates it to waiting instances (once per process), starts processes with a
/// matching message start event, and buffers it for its time to live.
#[utoipa::path(post, path = "/api/v1/messages", tag = "messages", request_body = PublishRequest,
    responses((status = 200, body = PublishResponse)))]
pub async fn publish<S: Store + 'static>(
    auth: Auth<Operate>,
    State(state): State<AppState<S>>,
    ApiJson(request): ApiJson<PublishRequest>,
) -> ApiResult<ApiJson<PublishResponse>> {
    if request.name.trim().is_empty() {
        return Err(ApiError::invalid_field("name", "the message name is empty"));
    }
    let ttl = chrono::Duration::milliseconds(i64::try_from(request.time_to_live).unwrap_or(i64::MAX));
    let message = Message {
        name: request.name,
        correlation_key: request.correlation_key,
        variables: request.variables,
        ttl,
        message_id: request.message_id,
    };
    let actor = auth.actor();
    let published = state.blocking(move |engine| engine.publish(message, &actor)).await?;
    for started in &published.started {
        if let Some(meta) = state.engine().store().instance_meta(*started)? {
            state.metrics().instance_started(&meta.process_id);
        }
    }
    Ok(ApiJson(PublishResponse {
        correlated: published.correlated.iter().map(|k| k.0).collect(),
        started: published.started.iter().map(|k| k.0).collect(),
        buffered: published.buffered,
    }))
}

/// A signal to broadcast.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignalRequest {
    pub name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: VariableMap,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignalResponse {
    /// How many instances took the signal.
    pub delivered: usize,
}

/// Broadcasts a signal to every subscribed instance.
#[utoipa::path(post, path = "/api/v1/signals", tag = "messages", request_body = SignalRequest,
    responses((status = 200, body = SignalResponse)))]
pub async fn broadcast<S: Store + 'static>(
    auth: Auth<Operate>,
    State(state): State<AppState<S>>,
    ApiJson(request): ApiJson<SignalRequest>,
) -> ApiResult<ApiJson<SignalResponse>> {
    if request.name.trim().is_empty() {
        return Err(ApiError::invalid_field("name", "the signal name is empty"));
    }
    let actor = auth.actor();
    let delivered =
        state.blocking(move |engine| engine.broadcast(&request.name, request.variables, &actor)).await?;
    Ok(ApiJson(SignalResponse { delivered }))
}
