//! The one error shape of the API, `{code, message, details}`, and how engine errors map to HTTP.
//! It must never put an internal error's text in a 5xx body: those are logged and answered with a
//! generic message.
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `BAD_REQUEST` | Workflow BB routes: any invalid input (the GovStack Gherkin expects 400 there) |
//! | 401 | `UNAUTHORIZED` | no token, or a token that is unknown, expired or badly signed |
//! | 403 | `FORBIDDEN` | a valid token whose role may not use this route |
//! | 404 | `NOT_FOUND` | no such definition, instance, job, task, incident or route |
//! | 405 | `METHOD_NOT_ALLOWED` | the route exists, the method does not |
//! | 409 | `CONFLICT` | the target is not in a state that allows it (job already completed, instance ended, definition in use, duplicate message id, process disabled) |
//! | 413 | `PAYLOAD_TOO_LARGE` | the body is over the configured limit |
//! | 415 | `UNSUPPORTED_MEDIA_TYPE` | a JSON body without `Content-Type: application/json` |
//! | 422 | `INVALID_INPUT` / `INVALID_BPMN` | malformed JSON, parameters or ids; BPMN/DMN diagnostics |
//! | 500 | `INTERNAL` | a bug or corrupt data (details only in the log) |
//! | 503 | `UNAVAILABLE` / `TIMEOUT` | the store cannot commit, or the request ran out of time |

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use govflow_engine::engine::EngineError;
use govflow_engine::runtime::Rejection;
use govflow_engine::store::StoreError;
use govflow_engine::Diagnostic;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`NOT_FOUND`, `INVALID_BPMN`, ...).
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// Structured detail: BPMN diagnostics, the offending field, ... (`{}` when there is none).
    #[schema(value_type = Object)]
    pub details: Value,
}

/// Every way a request can fail.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    /// Malformed input; `details` names the field when known.
    Invalid {
        message: String,
        details: Value,
    },
    /// A BPMN or DMN file that is not valid, with its diagnostics.
    InvalidBpmn {
        message: String,
        diagnostics: Vec<Value>,
    },
    /// Workflow BB routes answer 400 where the native API answers 422.
    BadRequest {
        code: String,
        message: String,
        details: Value,
    },
    PayloadTooLarge(String),
    UnsupportedMediaType(String),
    MethodNotAllowed,
    /// The store cannot commit or read; retry later. The cause is logged, never answered.
    Unavailable,
    Timeout,
    /// A bug or corrupt data. The cause is logged, never answered.
    Internal,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::Invalid { message: message.into(), details: json!({}) }
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid { message: message.into(), details: json!({ "field": field }) }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Invalid { .. } | ApiError::InvalidBpmn { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable | ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (code, message, details) = match self {
            ApiError::Unauthorized(message) => ("UNAUTHORIZED", message.clone(), json!({})),
            ApiError::Forbidden(message) => ("FORBIDDEN", message.clone(), json!({})),
            ApiError::NotFound(message) => ("NOT_FOUND", message.clone(), json!({})),
            ApiError::Conflict(message) => ("CONFLICT", message.clone(), json!({})),
            ApiError::Invalid { message, details } => ("INVALID_INPUT", message.clone(), details.clone()),
            ApiError::InvalidBpmn { message, diagnostics } => {
                ("INVALID_BPMN", message.clone(), json!({ "diagnostics": diagnostics }))
            }
            ApiError::BadRequest { code, message, details } => {
                return ErrorBody { code: code.clone(), message: message.clone(), details: details.clone() }
            }
            ApiError::PayloadTooLarge(message) => ("PAYLOAD_TOO_LARGE", message.clone(), json!({})),
            ApiError::UnsupportedMediaType(message) => ("UNSUPPORTED_MEDIA_TYPE", message.clone(), json!({})),
            ApiError::MethodNotAllowed => {
                ("METHOD_NOT_ALLOWED", "this route does not take that method".to_owned(), json!({}))
            }
            ApiError::Unavailable => {
                ("UNAVAILABLE", "the engine cannot serve this request now; retry later".to_owned(), json!({}))
            }
            ApiError::Timeout => ("TIMEOUT", "the request took too long; retry later".to_owned(), json!({})),
            ApiError::Internal => {
                ("INTERNAL", "internal error; the server log has the details".to_owned(), json!({}))
            }
        };
        ErrorBody { code: code.to_owned(), message, details }
    }

    /// The Workflow BB's answer for the same failure: invalid input is 400 there (GovStack's Gherkin
    /// negatives), with the same code and details.
    pub fn for_workflow_bb(self) -> ApiError {
        match self {
            ApiError::Invalid { .. } | ApiError::InvalidBpmn { .. } => {
                let ErrorBody { code, message, details } = self.body();
                ApiError::BadRequest { code, message, details }
            }
            other => other,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"govflow\""),
            );
        }
        response
    }
}

/// A diagnostic as the API shows it: code, severity, message, element, line and column.
pub fn diagnostic_json(diagnostic: &Diagnostic, resource: Option<&str>) -> Value {
    json!({
        "resource": resource,
        "code": diagnostic.code.as_str(),
        "severity": diagnostic.severity.to_string(),
        "message": diagnostic.message,
        "element": diagnostic.element.as_ref().map(|e| e.0.clone()),
        "line": diagnostic.pos.line,
        "column": diagnostic.pos.column,
    })
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        match error {
            EngineError::Invalid(diagnostics) => ApiError::InvalidBpmn {
                message: format!("the file is not valid: {} problem(s)", diagnostics.len()),
                diagnostics: diagnostics.iter().map(|d| diagnostic_json(d, None)).collect(),
            },
            EngineError::UnknownProcess(process) => {
                ApiError::NotFound(format!("no process '{process}' is deployed"))
            }
            EngineError::Disabled(process) => {
                ApiError::Conflict(format!("process '{process}' is disabled; enable it to start instances"))
            }
            error @ EngineError::InUse { .. } => ApiError::Conflict(error.to_string()),
            EngineError::UnknownInstance(instance) => ApiError::NotFound(format!("no instance {instance}")),
            EngineError::InvalidMessage(message) => ApiError::invalid(message),
            EngineError::Rejected(rejection) => rejection_error(rejection),
            EngineError::Store(StoreError::Conflict(message)) => ApiError::Conflict(message),
            EngineError::Store(
                error @ (StoreError::Backend(_)
                | StoreError::FormatVersion { .. }
                | StoreError::TimeScale { .. }),
            ) => {
                tracing::error!(%error, "store unavailable");
                ApiError::Unavailable
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::Internal
            }
        }
    }
}

/// A rejection is a 409 (the command does not fit the current state), except start-event mistakes,
/// which are invalid input.
fn rejection_error(rejection: Rejection) -> ApiError {
    match rejection {
        Rejection::NoSuchStartEvent(_) | Rejection::NoNoneStartEvent => {
            ApiError::invalid_field("startEvent", rejection.to_string())
        }
        Rejection::NoSuchScope(_) => ApiError::invalid_field("scope", rejection.to_string()),
        other => ApiError::Conflict(other.to_string()),
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ),
            JsonRejection::BytesRejection(bytes) if bytes.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge("the body is larger than the configured limit".into())
            }
            other => ApiError::invalid(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::invalid(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::invalid(rejection.body_text())
    }
}

/// `Json` whose rejections answer in the API's error shape.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `Path` whose rejections answer in the API's error shape.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `Query` whose rejections answer in the API's error shape.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);
