//! The endpoints building blocks call back. A payment job is handed off ([`crate::Outcome::AwaitCallback`])
//! with `X-Callback-URL: {callback_url}/payments/{job}`, where `{job}` is the job's idempotency key; the
//! Payments BB posts the batch's outcome there, and the waiting job completes (paid) or throws the BPMN
//! error `PAYMENT_FAILED` (see [`crate::bb::payments::callback_outcome`]).
//!
//! | answer | when |
//! |---|---|
//! | 200 `{"status":"accepted"}` | the job took the outcome |
//! | 400 | the body is not a payment callback (the message says what is missing) |
//! | 404 | the job id does not name a job |
//! | 409 | the job already ended (a repeated callback): nothing changed |
//! | 503 | the engine could not commit; the caller should retry |
//!
//! The router is mounted by the HTTP API under `/api/v1/callbacks` (and by tests on their own listener).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use govflow_engine::audit::Actor;
use govflow_engine::engine::{parse_idempotency_key, EngineError};
use govflow_engine::runtime::VariableMap;
use govflow_engine::shell::Shell;
use govflow_engine::store::Store;
use serde_json::{json, Value};

use crate::connector::ConnectorError;

/// Why a callback could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackError {
    /// No such job.
    UnknownJob(String),
    /// The job already ended.
    Ended(String),
    /// The engine could not commit.
    Unavailable(String),
}

pub type CallbackFuture = Pin<Box<dyn Future<Output = Result<(), CallbackError>> + Send + 'static>>;

/// Where callbacks go: completes or fails a job by its id (the idempotency key).
pub trait CallbackSink: Send + Sync + 'static {
    fn complete(&self, job: &str, variables: VariableMap) -> CallbackFuture;
    fn throw_error(&self, job: &str, code: String, message: String) -> CallbackFuture;
}

fn engine_error(job: &str, error: EngineError) -> CallbackError {
    match error {
        EngineError::Rejected(rejection) => CallbackError::Ended(format!("job {job}: {rejection}")),
        EngineError::UnknownInstance(_) => CallbackError::UnknownJob(job.to_owned()),
        other => CallbackError::Unavailable(other.to_string()),
    }
}

/// The actor of callback commands in the audit trail.
fn callback_actor() -> Actor {
    Actor::user("payments-bb-callback", None)
}

/// Callbacks into a running shell.
pub struct ShellSink<S: Store + 'static>(pub Arc<Shell<S>>);

impl<S: Store + 'static> std::fmt::Debug for ShellSink<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShellSink")
    }
}

impl<S: Store + 'static> CallbackSink for ShellSink<S> {
    fn complete(&self, job: &str, variables: VariableMap) -> CallbackFuture {
        let shell = Arc::clone(&self.0);
        let job = job.to_owned();
        Box::pin(async move {
            let (instance, key) =
                parse_idempotency_key(&job).ok_or_else(|| CallbackError::UnknownJob(job.clone()))?;
            shell
                .complete_job(instance, key, variables, callback_actor())
                .await
                .map_err(|error| engine_error(&job, error))
        })
    }

    fn throw_error(&self, job: &str, code: String, message: String) -> CallbackFuture {
        let shell = Arc::clone(&self.0);
        let job = job.to_owned();
        Box::pin(async move {
            let (instance, key) =
                parse_idempotency_key(&job).ok_or_else(|| CallbackError::UnknownJob(job.clone()))?;
            shell
                .throw_job_error(instance, key, code, message, callback_actor())
                .await
                .map_err(|error| engine_error(&job, error))
        })
    }
}

/// The callback routes: `POST /payments/{job}`.
pub fn router(sink: Arc<dyn CallbackSink>) -> Router {
    Router::new().route("/payments/{job}", post(payment_callback)).with_state(sink)
}

async fn payment_callback(
    State(sink): State<Arc<dyn CallbackSink>>,
    Path(job): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return answer(StatusCode::BAD_REQUEST, "INVALID_CALLBACK", &rejection.body_text()),
    };
    let result = match crate::bb::payments::callback_outcome(&body) {
        Ok(variables) => sink.complete(&job, variables).await,
        Err(ConnectorError::Business { code, message }) => sink.throw_error(&job, code, message).await,
        Err(other) => return answer(StatusCode::BAD_REQUEST, "INVALID_CALLBACK", &other.to_string()),
    };
    match result {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "accepted"}))).into_response(),
        Err(CallbackError::UnknownJob(job)) => {
            answer(StatusCode::NOT_FOUND, "UNKNOWN_JOB", &format!("no job '{job}' waits for a callback"))
        }
        Err(CallbackError::Ended(message)) => answer(StatusCode::CONFLICT, "JOB_ENDED", &message),
        Err(CallbackError::Unavailable(message)) => {
            tracing::error!(%job, %message, "cannot commit a payment callback");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "the engine cannot take the callback now; retry",
            )
        }
    }
}

fn answer(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message, "details": {}}))).into_response()
}
