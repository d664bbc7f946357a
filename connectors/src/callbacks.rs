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
//! `POST /beneficiaries/{job}` takes the Payments BB's beneficiary onboarding report: acknowledged and
//! logged (the registration job completed at the BB's acknowledgement).
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

/// The callback routes: `POST /payments/{job}` and `POST /beneficiaries/{job}`.
pub fn router(sink: Arc<dyn CallbackSink>) -> Router {
    Router::new()
        .route("/payments/{job}", post(payment_callback))
        .route("/beneficiaries/{job}", post(beneficiary_report))
        .with_state(sink)
}

/// The Payments BB's onboarding report of a beneficiary registration. The registration job completed at
/// the BB's acknowledgement, so the report changes nothing: it is acknowledged (so the BB does not retry)
/// and logged, a failed onboarding as a warning an operator can act on.
async fn beneficiary_report(Path(job): Path<String>, body: Option<Json<Value>>) -> Response {
    let body = body.map(|Json(body)| body).unwrap_or(Value::Null);
    let failed = body.get("failed").and_then(Value::as_u64).unwrap_or(0) > 0
        || body
            .get("status")
            .and_then(Value::as_str)
            .is_some_and(|status| status.eq_ignore_ascii_case("FAILED"));
    if failed {
        tracing::warn!(%job, report = %body, "the Payments BB reports a failed beneficiary onboarding");
    } else {
        tracing::info!(%job, "the Payments BB reports a beneficiary onboarded");
    }
    (StatusCode::OK, Json(json!({"status": "noted"}))).into_response()
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use std::sync::Mutex;
    use tower::ServiceExt;

    /// Records what it was told; answers as a real engine would for the job ids it knows.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
    }

    impl CallbackSink for Arc<Recorder> {
        fn complete(&self, job: &str, variables: VariableMap) -> CallbackFuture {
            self.calls
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!("complete {job} {}", variables.contains_key("payment")));
            let known = job == "7-42";
            let job = job.to_owned();
            Box::pin(async move {
                if known {
                    Ok(())
                } else {
                    Err(CallbackError::UnknownJob(job))
                }
            })
        }

        fn throw_error(&self, job: &str, code: String, _message: String) -> CallbackFuture {
            self.calls
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!("error {job} {code}"));
            Box::pin(async { Err(CallbackError::Ended("job 42: already ended".into())) })
        }
    }

    async fn post(router: Router, path: &str, body: &str) -> StatusCode {
        let request =
            Request::post(path).header("content-type", "application/json").body(Body::from(body.to_owned()));
        router
            .oneshot(request.unwrap_or_default())
            .await
            .map(|response| response.status())
            .unwrap_or(StatusCode::IM_A_TEAPOT)
    }

    #[tokio::test]
    async fn callbacks_complete_fail_and_refuse_as_documented() {
        let recorder = Arc::new(Recorder::default());
        let router = router(Arc::new(Arc::clone(&recorder)));
        let paid = r#"{"batchId":"b1","status":"COMPLETED","transactions":[{"requestId":"7-42","status":"COMPLETED","amount":10,"currency":"USD"}]}"#;
        let failed = r#"{"batchId":"b1","status":"FAILED","transactions":[{"requestId":"7-42","status":"FAILED","reason":"no account"}]}"#;
        assert_eq!(post(router.clone(), "/payments/7-42", paid).await, StatusCode::OK);
        assert_eq!(post(router.clone(), "/payments/9-1", paid).await, StatusCode::NOT_FOUND);
        assert_eq!(
            post(router.clone(), "/payments/7-42", failed).await,
            StatusCode::CONFLICT,
            "an ended job: 409"
        );
        assert_eq!(post(router.clone(), "/payments/7-42", "not json").await, StatusCode::BAD_REQUEST);
        assert_eq!(post(router.clone(), "/beneficiaries/7-43", r#"{"failed":1}"#).await, StatusCode::OK);
        let calls = recorder.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        assert_eq!(calls, ["complete 7-42 true", "complete 9-1 true", "error 7-42 PAYMENT_FAILED"]);
    }
}
