//! Jobs for external workers: activate (long poll, lease), complete, fail, throw a BPMN error. A job's
//! id is its idempotency key `{instance}-{job}`, the same across retries and restarts. Jobs of types
//! run by in-process connectors are never offered here.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use govflow_engine::engine::JobHandle;
use govflow_engine::runtime::{Event, InstanceKey, Key, VariableMap};
use govflow_engine::store::Store;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Auth, Work};
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::state::AppState;
use crate::view::{parse_pair_id, time};

/// The longest lease a worker may ask for.
const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);

/// What a worker asks for.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActivateRequest {
    /// The job type (`zeebe:taskDefinition type`).
    #[serde(rename = "type")]
    pub job_type: String,
    /// At most this many jobs (default 10, at most the page size cap).
    pub max_jobs: Option<usize>,
    /// How long the jobs are the worker's, in milliseconds (default 300000, at most one day); then they
    /// are offered again.
    pub lease: Option<u64>,
    /// Long poll: wait up to this many milliseconds for a job when none is available (default 0).
    pub request_timeout: Option<u64>,
}

/// An activated job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    /// `{instance}-{job}`: the id for complete / fail / error, and the idempotency key.
    pub id: String,
    pub instance: u64,
    pub job: u64,
    #[serde(rename = "type")]
    pub job_type: String,
    pub element: String,
    pub retries: u32,
    /// 1, then one more after each failure.
    pub attempt: u32,
    /// Handed out before without an outcome (a lease ran out, or govflow restarted): the work may
    /// already have been done, even on attempt 1. Deduplicate on `id`.
    pub redelivered: bool,
    pub headers: std::collections::BTreeMap<String, String>,
    #[schema(value_type = Object)]
    pub variables: VariableMap,
    /// Not to run before this time (a retry's back-off), if any.
    pub not_before: Option<String>,
}

impl From<JobHandle> for JobView {
    fn from(job: JobHandle) -> JobView {
        JobView {
            id: job.idempotency_key,
            instance: job.instance.0,
            job: job.job.0,
            job_type: job.job_type,
            element: job.element,
            retries: job.retries,
            attempt: job.attempt,
            redelivered: job.redelivered,
            headers: job.headers,
            variables: job.variables,
            not_before: job.not_before.as_ref().map(time),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActivateResponse {
    pub jobs: Vec<JobView>,
}

/// Activates jobs of a type for an external worker, waiting up to `requestTimeout` for one to arrive.
#[utoipa::path(post, path = "/api/v1/jobs/activate", tag = "jobs", request_body = ActivateRequest,
    responses((status = 200, body = ActivateResponse)))]
pub async fn activate<S: Store + 'static>(
    _auth: Auth<Work>,
    State(state): State<AppState<S>>,
    ApiJson(request): ApiJson<ActivateRequest>,
) -> ApiResult<ApiJson<ActivateResponse>> {
    if request.job_type.trim().is_empty() {
        return Err(ApiError::invalid_field("type", "the job type is empty"));
    }
    let max = request.max_jobs.unwrap_or_else(|| state.config().max_page_size.min(10));
    if max == 0 || max > state.config().max_page_size {
        return Err(ApiError::invalid_field(
            "maxJobs",
            format!("maxJobs must be between 1 and {}", state.config().max_page_size),
        ));
    }
    let lease = Duration::from_millis(request.lease.unwrap_or(300_000));
    if lease.is_zero() || lease > MAX_LEASE {
        return Err(ApiError::invalid_field(
            "lease",
            "the lease must be between 1 ms and one day (86400000)",
        ));
    }
    let wait = state.wait_for(request.request_timeout.map(Duration::from_millis), Duration::ZERO);
    let shell = Arc::clone(state.shell());
    let job_type = request.job_type.clone();
    let jobs = state.detached(async move { shell.activate_jobs(&job_type, max, lease, wait).await }).await?;
    for job in &jobs {
        state.metrics().job_activated(&job.idempotency_key, &job.job_type);
    }
    Ok(ApiJson(ActivateResponse { jobs: jobs.into_iter().map(JobView::from).collect() }))
}

/// The job a path id names; 404 when its instance does not exist.
fn job_of<S: Store + 'static>(state: &AppState<S>, id: &str) -> ApiResult<(InstanceKey, Key)> {
    let (instance, job) = parse_pair_id("job", id)?;
    if state.engine().store().instance_meta(instance)?.is_none() {
        return Err(ApiError::NotFound(format!("no job {id}: instance {instance} does not exist")));
    }
    Ok((instance, job))
}

/// A job command that did not apply: when the job is not open, 409 saying how it ended if the instance's
/// history has it (completed, ended by a BPMN error, cancelled with its element), else 404; any other
/// error as it was.
fn not_open<S: Store + 'static>(
    state: &AppState<S>,
    id: &str,
    instance: InstanceKey,
    job: Key,
    error: ApiError,
) -> ApiError {
    if !matches!(error, ApiError::Conflict(_)) {
        return error;
    }
    let store = state.engine().store();
    match store.instance(instance) {
        Ok(Some(stored)) if stored.state.jobs.contains_key(&job) => return error,
        Ok(_) => {}
        Err(store_error) => return ApiError::from(govflow_engine::engine::EngineError::from(store_error)),
    }
    let records = match store.records(instance, 1, usize::MAX) {
        Ok(records) => records,
        Err(store_error) => return ApiError::from(govflow_engine::engine::EngineError::from(store_error)),
    };
    let mut created = false;
    let mut ended = None;
    for record in &records {
        let how = match &record.event {
            Event::JobCreated { job: key, .. } if *key == job => {
                created = true;
                continue;
            }
            Event::JobCompleted { job: key, .. } if *key == job => {
                format!("was completed at {} by '{}'", time(&record.at), record.actor.user)
            }
            Event::JobErrorThrown { job: key, error_code, .. } if *key == job => {
                format!("ended with BPMN error '{error_code}' at {}", time(&record.at))
            }
            Event::JobCancelled { job: key } if *key == job => {
                format!("was cancelled at {} (its element was ended)", time(&record.at))
            }
            _ => continue,
        };
        ended = Some(how);
    }
    match (created, ended) {
        (true, Some(how)) => ApiError::Conflict(format!("job {id} is no longer open: it {how}")),
        (true, None) => error,
        (false, _) => ApiError::NotFound(format!("no job {id}: instance {instance} never had job {job}")),
    }
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteJobRequest {
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: VariableMap,
}

/// Completes a job with variables (409 when it is no longer open, saying how it ended; 404 when the
/// instance never had it).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/complete", tag = "jobs",
    params(("id" = String, Path, description = "`{instance}-{job}`")), request_body = CompleteJobRequest,
    responses((status = 204, description = "Completed")))]
pub async fn complete<S: Store + 'static>(
    auth: Auth<Work>,
    State(state): State<AppState<S>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<CompleteJobRequest>,
) -> ApiResult<StatusCode> {
    let (instance, job) = job_of(&state, &id)?;
    let shell = Arc::clone(state.shell());
    let actor = auth.actor();
    state
        .detached(async move { shell.complete_job(instance, job, request.variables, actor).await })
        .await
        .map_err(|error| not_open(&state, &id, instance, job, error))?;
    state.metrics().job_finished(&id, "completed");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailJobRequest {
    pub error_message: String,
    /// Retries left (default: one fewer); 0 raises an incident.
    pub retries: Option<u32>,
    /// Retry not before this many milliseconds (default: the task's back-off headers).
    pub retry_backoff: Option<u64>,
}

/// Fails a job's attempt: retried while retries last, then an incident.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/fail", tag = "jobs",
    params(("id" = String, Path)), request_body = FailJobRequest,
    responses((status = 204, description = "Failed")))]
pub async fn fail<S: Store + 'static>(
    auth: Auth<Work>,
    State(state): State<AppState<S>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<FailJobRequest>,
) -> ApiResult<StatusCode> {
    let (instance, job) = job_of(&state, &id)?;
    let shell = Arc::clone(state.shell());
    let actor = auth.actor();
    let backoff = request.retry_backoff.map(Duration::from_millis);
    state
        .detached(async move {
            shell.fail_job(instance, job, request.retries, request.error_message, backoff, actor).await
        })
        .await
        .map_err(|error| not_open(&state, &id, instance, job, error))?;
    state.metrics().job_finished(&id, "failed");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThrowErrorRequest {
    /// The BPMN error code error events catch.
    pub error_code: String,
    #[serde(default)]
    pub error_message: String,
}

/// Throws a BPMN error from a job (a business outcome, caught by error events; an incident otherwise).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/error", tag = "jobs",
    params(("id" = String, Path)), request_body = ThrowErrorRequest,
    responses((status = 204, description = "Thrown")))]
pub async fn throw_error<S: Store + 'static>(
    auth: Auth<Work>,
    State(state): State<AppState<S>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<ThrowErrorRequest>,
) -> ApiResult<StatusCode> {
    if request.error_code.trim().is_empty() {
        return Err(ApiError::invalid_field("errorCode", "the error code is empty"));
    }
    let (instance, job) = job_of(&state, &id)?;
    let shell = Arc::clone(state.shell());
    let actor = auth.actor();
    state
        .detached(async move {
            shell.throw_job_error(instance, job, request.error_code, request.error_message, actor).await
        })
        .await
        .map_err(|error| not_open(&state, &id, instance, job, error))?;
    state.metrics().job_finished(&id, "error");
    Ok(StatusCode::NO_CONTENT)
}
