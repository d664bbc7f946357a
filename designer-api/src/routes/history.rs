//! History and audit: an instance's events (paged, with actor and hash chain), its state replayed to a
//! sequence number, chain verification, and the operation log. Read-only: nothing here changes state.

use axum::extract::State;
use govflow_engine::engine::EngineError;
use govflow_engine::runtime::{Instance, InstanceKey};
use govflow_engine::store::{OperationFilter, OperationKind, OperationTarget, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Audit, Auth, History};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::view::{instance_state, parse_time, status_name, time, ActorView, InstanceState};

/// One audit record: an event with its sequence number, time, actor and place in the hash chain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub seq: u64,
    pub at: String,
    pub actor: ActorView,
    /// The event format version.
    pub format: u16,
    /// `InstanceCreated`, `ElementActivated`, `JobCompleted`, ...
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event as stored (its versioned serde form).
    #[schema(value_type = Object)]
    pub event: Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<EventView>,
    /// The `from` of the next page, `null` on the last.
    pub next: Option<u64>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The first sequence number (default 1).
    pub from: Option<u64>,
    pub limit: Option<usize>,
}

async fn existing<S: Store + 'static>(state: &AppState<S>, instance: u64) -> ApiResult<InstanceKey> {
    let key = InstanceKey(instance);
    match state.engine().store().instance_meta(key)? {
        Some(_) => Ok(key),
        None => Err(ApiError::NotFound(format!("no instance {instance}"))),
    }
}

/// An instance's events, oldest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/instances/{instance}/events", tag = "history",
    params(("instance" = u64, Path), EventsQuery),
    responses((status = 200, body = EventPage)))]
pub async fn events<S: Store + 'static>(
    _auth: Auth<History>,
    State(state): State<AppState<S>>,
    ApiPath(instance): ApiPath<u64>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> ApiResult<ApiJson<EventPage>> {
    let limit = state.page_size(query.limit)?;
    let key = existing(&state, instance).await?;
    let from = query.from.unwrap_or(1).max(1);
    let records =
        state.blocking(move |engine| Ok(engine.store().records(key, from, limit.saturating_add(1))?)).await?;
    let more = records.len() > limit;
    let items: Vec<EventView> = records
        .iter()
        .take(limit)
        .map(|record| EventView {
            seq: record.seq,
            at: time(&record.at),
            actor: ActorView::from(&record.actor),
            format: record.format,
            event_type: record.event.name().to_owned(),
            event: serde_json::to_value(&record.event).unwrap_or(Value::Null),
            prev_hash: record.prev_hash.to_hex(),
            hash: record.hash.to_hex(),
        })
        .collect();
    let next = if more { items.last().map(|e| e.seq + 1) } else { None };
    Ok(ApiJson(EventPage { items, next }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    /// Replay records 1..=to (default: all).
    pub to: Option<u64>,
}

/// An instance's state rebuilt from its records alone.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayView {
    pub instance: u64,
    /// The last sequence number replayed.
    pub seq: u64,
    /// The replayed state: `active`, `completed` or `cancelled`.
    pub state: String,
    #[serde(flatten)]
    pub replayed: InstanceState,
}

/// Replays an instance's events up to a sequence number and shows the state they give.
#[utoipa::path(get, path = "/api/v1/instances/{instance}/replay", tag = "history",
    params(("instance" = u64, Path), ReplayQuery),
    responses((status = 200, body = ReplayView)))]
pub async fn replay<S: Store + 'static>(
    _auth: Auth<History>,
    State(state): State<AppState<S>>,
    ApiPath(instance): ApiPath<u64>,
    ApiQuery(query): ApiQuery<ReplayQuery>,
) -> ApiResult<ApiJson<ReplayView>> {
    let key = existing(&state, instance).await?;
    if query.to == Some(0) {
        return Err(ApiError::invalid_field("to", "to must be at least 1"));
    }
    let limit = query.to.map_or(usize::MAX, |to| usize::try_from(to).unwrap_or(usize::MAX));
    let records = state.blocking(move |engine| Ok(engine.store().records(key, 1, limit)?)).await?;
    let replayed = Instance::replay(key, records.iter().map(|record| &record.event));
    Ok(ApiJson(ReplayView {
        instance,
        seq: records.last().map_or(0, |r| r.seq),
        state: status_name(replayed.status).to_owned(),
        replayed: instance_state(key, &replayed),
    }))
}

/// The outcome of verifying an instance's audit chain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyView {
    pub instance: u64,
    /// The chain is intact and replaying it gives the stored state.
    pub ok: bool,
    /// Records checked.
    pub records: usize,
    /// What is wrong, when something is.
    pub error: Option<String>,
}

/// Recomputes an instance's hash chain and replays it; the replay must equal the stored state.
#[utoipa::path(get, path = "/api/v1/instances/{instance}/verify", tag = "history",
    params(("instance" = u64, Path)),
    responses((status = 200, body = VerifyView)))]
pub async fn verify<S: Store + 'static>(
    _auth: Auth<Audit>,
    State(state): State<AppState<S>>,
    ApiPath(instance): ApiPath<u64>,
) -> ApiResult<ApiJson<VerifyView>> {
    let key = existing(&state, instance).await?;
    let outcome = state
        .blocking(move |engine| {
            Ok(match engine.verify(key) {
                Ok(records) => VerifyView { instance, ok: true, records, error: None },
                Err(error @ (EngineError::Chain(_) | EngineError::ReplayMismatch(_))) => {
                    VerifyView { instance, ok: false, records: 0, error: Some(error.to_string()) }
                }
                Err(other) => return Err(other),
            })
        })
        .await?;
    Ok(ApiJson(outcome))
}

/// One operation-log entry: who created, updated or deleted what, and when.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationView {
    pub seq: u64,
    pub at: String,
    pub actor: ActorView,
    /// `create`, `update` or `delete`.
    pub kind: String,
    /// `{type: definition|instance|variable, ...}`.
    #[schema(value_type = Object)]
    pub target: Value,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OperationPage {
    pub items: Vec<OperationView>,
    /// The `after` of the next page, `null` on the last.
    pub next: Option<u64>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct OperationsQuery {
    pub user: Option<String>,
    pub instance: Option<u64>,
    pub process_id: Option<String>,
    /// `create`, `update` or `delete`.
    pub kind: Option<String>,
    /// At or after this RFC 3339 time.
    pub from: Option<String>,
    /// Before this RFC 3339 time.
    pub to: Option<String>,
    /// The cursor: the sequence number after which to continue.
    pub after: Option<u64>,
    pub limit: Option<usize>,
}

fn target_json(target: &OperationTarget) -> Value {
    match target {
        OperationTarget::Definition { process_id, version } => {
            serde_json::json!({"type": "definition", "processId": process_id, "version": version})
        }
        OperationTarget::Instance { instance, process_id } => {
            serde_json::json!({"type": "instance", "instance": instance.0, "processId": process_id})
        }
        OperationTarget::Variable { instance, scope, name } => {
            serde_json::json!({"type": "variable", "instance": instance.0, "scope": scope.0, "name": name})
        }
    }
}

/// The operation log (GovStack Workflow BB §5): every create, update and delete, with time, user and
/// affiliation.
#[utoipa::path(get, path = "/api/v1/operations", tag = "history", params(OperationsQuery),
    responses((status = 200, body = OperationPage)))]
pub async fn operations<S: Store + 'static>(
    _auth: Auth<Audit>,
    State(state): State<AppState<S>>,
    ApiQuery(query): ApiQuery<OperationsQuery>,
) -> ApiResult<ApiJson<OperationPage>> {
    let limit = state.page_size(query.limit)?;
    let kind = match query.kind.as_deref() {
        None => None,
        Some("create") => Some(OperationKind::Create),
        Some("update") => Some(OperationKind::Update),
        Some("delete") => Some(OperationKind::Delete),
        Some(other) => {
            return Err(ApiError::invalid_field(
                "kind",
                format!("kind '{other}' is not create, update or delete"),
            ))
        }
    };
    let filter = OperationFilter {
        user: query.user,
        instance: query.instance.map(InstanceKey),
        process_id: query.process_id,
        kind,
        from: query.from.as_deref().map(|t| parse_time("from", t)).transpose()?,
        to: query.to.as_deref().map(|t| parse_time("to", t)).transpose()?,
    };
    let after = query.after.unwrap_or(0);
    let operations =
        state.blocking(move |engine| engine.operations(&filter, after, limit.saturating_add(1))).await?;
    let more = operations.len() > limit;
    let items: Vec<OperationView> = operations
        .iter()
        .take(limit)
        .map(|operation| OperationView {
            seq: operation.seq,
            at: time(&operation.at),
            actor: ActorView::from(&operation.actor),
            kind: crate::view::enum_name(&operation.kind),
            target: target_json(&operation.target),
            detail: operation.detail.clone(),
        })
        .collect();
    let next = if more { items.last().map(|o| o.seq) } else { None };
    Ok(ApiJson(OperationPage { items, next }))
}
