//! Operations: `/health` (the process answers), `/ready` (the store answers a read), `/metrics`
//! (Prometheus text) and `/api/openapi.json`. These need no token: they reveal no variables, only
//! counts and names of deployed processes; keep `/metrics` off the public network.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use govflow_engine::store::Store;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiJson, ApiResult};
use crate::metrics::Gauges;
use crate::state::AppState;

/// How many index entries a scrape reads at most for each gauge.
const GAUGE_SCAN_LIMIT: usize = 100_000;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthView {
    /// `ok`.
    pub status: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "operations", security(()),
    responses((status = 200, body = HealthView)))]
pub async fn health() -> ApiJson<HealthView> {
    ApiJson(HealthView { status: "ok".to_owned() })
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadyView {
    /// `ready`.
    pub status: String,
    pub definitions: usize,
    /// Jobs running on in-process handlers now.
    pub jobs_in_flight: usize,
}

/// Readiness: the store answers a read (503 otherwise) and the shell is attached.
#[utoipa::path(get, path = "/ready", tag = "operations", security(()),
    responses((status = 200, body = ReadyView)))]
pub async fn ready<S: Store + 'static>(State(state): State<AppState<S>>) -> ApiResult<ApiJson<ReadyView>> {
    let definitions = state
        .blocking(|engine| {
            engine.store().time_scale()?;
            Ok(engine.store().deployments()?.len())
        })
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(ApiJson(ReadyView {
        status: "ready".to_owned(),
        definitions,
        jobs_in_flight: state.shell().jobs_in_flight(),
    }))
}

/// Prometheus metrics (text format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn metrics<S: Store + 'static>(State(state): State<AppState<S>>) -> ApiResult<Response> {
    let mut gauges = state
        .blocking(|engine| {
            let store = engine.store();
            let mut gauges = Gauges::default();
            let incidents = store.incidents(None, GAUGE_SCAN_LIMIT)?;
            gauges.truncated |= incidents.len() == GAUGE_SCAN_LIMIT;
            let mut processes: BTreeMap<u64, String> = BTreeMap::new();
            for incident in incidents {
                let process = match processes.get(&incident.instance.0) {
                    Some(process) => process.clone(),
                    None => {
                        let process = store
                            .instance_meta(incident.instance)?
                            .map_or_else(|| "unknown".to_owned(), |meta| meta.process_id);
                        processes.insert(incident.instance.0, process.clone());
                        process
                    }
                };
                *gauges.incidents_open.entry(process).or_default() += 1;
            }
            let tasks = store.user_tasks(None, GAUGE_SCAN_LIMIT)?;
            gauges.truncated |= tasks.len() == GAUGE_SCAN_LIMIT;
            gauges.user_tasks_open = tasks.len() as u64;
            for deployment in store.deployments()? {
                if deployment.enabled {
                    gauges.definitions.0 += 1;
                } else {
                    gauges.definitions.1 += 1;
                }
            }
            Ok(gauges)
        })
        .await?;
    gauges.jobs_in_flight = state.shell().jobs_in_flight() as u64;
    gauges.handled = state.shell().handler_latency();
    let lateness = state.shell().timer_lateness();
    gauges.timers = (lateness.fired, lateness.total_seconds, lateness.max_seconds);
    gauges.commits = state
        .engine()
        .store()
        .commit_counters()
        .map(|stats| (stats.n_flushes, stats.n_commits, stats.flush_nanos as f64 / 1e9));
    gauges.sync_start_waiters = state.waiters().n_waiting() as u64;
    let text = state.metrics().render(&gauges);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

/// This API's OpenAPI 3.1 document, generated from the code.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", security(()),
    responses((status = 200, body = Object, description = "The OpenAPI document")))]
pub async fn openapi() -> Response {
    ApiJson(crate::openapi::document()).into_response()
}
