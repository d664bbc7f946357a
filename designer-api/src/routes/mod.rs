//! The native API's handlers, one module per resource, and the cross-cutting layers every route gets:
//! request metrics and logs, the request timeout, and error-shaped fallbacks.

pub mod definitions;
pub mod history;
pub mod incidents;
pub mod instances;
pub mod jobs;
pub mod ops;
pub mod tasks;

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use govflow_engine::store::Store;

use crate::error::ApiError;
use crate::state::AppState;

/// Counts and logs every request by its route template; answers 503 `TIMEOUT` when the handler runs
/// past the request timeout (engine commands started by it still run to their end, see
/// `AppState::detached`).
pub async fn observe<S: Store + 'static>(
    State(state): State<AppState<S>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let timeout = state.config().request_timeout;
    let response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    };
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.metrics().request(&method, &route, status, elapsed);
    if response.status().is_server_error() {
        tracing::warn!(%method, %route, status, elapsed_ms = elapsed.as_millis() as u64, "request failed");
    } else {
        tracing::debug!(%method, %route, status, elapsed_ms = elapsed.as_millis() as u64, "request");
    }
    response
}

/// Unknown routes answer 404 in the error shape.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see /api/openapi.json".to_owned())
}

/// Known routes with another method answer 405 in the error shape.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Workflow BB routes answer invalid input with 400 (the GovStack Gherkin negatives), including the
/// extractors' rejections, which the native API answers with 422.
pub async fn workflow_bb_status(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if response.status() == axum::http::StatusCode::UNPROCESSABLE_ENTITY {
        *response.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    }
    response
}
