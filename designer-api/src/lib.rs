//! govflow-designer-api: the axum HTTP API — the native API under `/api/v1`, the GovStack Workflow BB
//! API (at the root and under the Information Mediator prefix), the Payments BB callbacks, roles,
//! limits, the OpenAPI document, health, readiness and metrics. DTOs live only here; the engine never
//! sees HTTP types. Nothing is answered as done before the engine has made it durable, and no 5xx body
//! carries an internal error's text.
//!
//! Codemap:
//! - [`config`]: `ApiConfig` / `AuthConfig` from the `[server]` and `[auth]` tables of `govflow.toml`.
//! - [`auth`]: tokens (hashed), JWT via JWKS, roles, and the `Auth<Access>` extractor every route takes.
//! - [`error`]: `ApiError`, the `{code, message, details}` shape, engine-error mapping.
//! - [`state`]: `AppState` (engine, shell, waiters of synchronous starts, metrics) and its wiring order.
//! - [`routes`]: the native API, one module per resource; [`workflow_bb`]: the GovStack API.
//! - [`view`]: JSON views of engine data shared by several routes.
//! - [`openapi`]: the generated OpenAPI document; [`metrics`]: the Prometheus exposition.
//!
//! `app(state)` returns the whole router, so tests drive it with `oneshot` and `govflow serve` binds it.

pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod view;
pub mod workflow_bb;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{any, get, post};
use axum::Router;
use govflow_connectors::callbacks::{self, CallbackSink, ShellSink};
use govflow_engine::store::Store;

pub use auth::{hash_token, new_token, Principal};
pub use config::{ApiConfig, AuthConfig, ConfigError, OidcConfig, Role, TokenEntry};
pub use error::{ApiError, ErrorBody};
pub use state::{AppState, Waiters};

use routes::{definitions, history, incidents, instances, jobs, ops, tasks};

/// The Workflow BB routes (mounted at the root and under the Information Mediator prefix).
/// `POST` and `PUT /processes` carry BPMN XML: they take bodies up to the deployment limit.
fn workflow_bb_routes<S: Store + 'static>(prefix: &str, deploy_limit: usize) -> Router<AppState<S>> {
    use workflow_bb as bb;
    let path = |tail: &str| format!("{prefix}{tail}");
    let limit = DefaultBodyLimit::max(deploy_limit);
    Router::new()
        .route(&path("/processes"), get(bb::list_processes::<S>).post(bb::add_process::<S>).layer(limit))
        .route(
            &path("/processes/{processId}"),
            get(bb::get_process::<S>)
                .put(bb::update_process::<S>)
                .delete(bb::delete_process::<S>)
                .layer(limit),
        )
        .route(&path("/processes/{processId}/start"), post(bb::start::<S>))
        .route(&path("/instances"), get(bb::list_instances::<S>))
        .route(&path("/instances/"), get(bb::list_instances::<S>))
        .route(&path("/instances/{instanceId}"), get(bb::get_instance::<S>))
        .route(&path("/instances/{instanceId}/stop"), post(bb::stop::<S>))
}

/// The whole HTTP API over `state`.
pub fn app<S: Store + 'static>(state: AppState<S>) -> Router {
    let config = state.config().clone();
    let deploy_limit = DefaultBodyLimit::max(config.max_deploy_bytes);
    let native = Router::new()
        .route("/api/v1/deployments", post(definitions::deploy::<S>).layer(deploy_limit))
        .route("/api/v1/definitions", get(definitions::list::<S>))
        .route("/api/v1/definitions/{processId}", get(definitions::get::<S>))
        .route(
            "/api/v1/definitions/{processId}/versions/{version}",
            get(definitions::get_version::<S>).delete(definitions::delete::<S>),
        )
        .route("/api/v1/definitions/{processId}/versions/{version}/xml", get(definitions::xml::<S>))
        .route("/api/v1/definitions/{processId}/versions/{version}/enable", post(definitions::enable::<S>))
        .route("/api/v1/definitions/{processId}/versions/{version}/disable", post(definitions::disable::<S>))
        .route("/api/v1/instances", post(instances::start::<S>).get(instances::list::<S>))
        .route("/api/v1/instances/{instance}", get(instances::get::<S>))
        .route("/api/v1/instances/{instance}/cancel", post(instances::cancel::<S>))
        .route("/api/v1/instances/{instance}/variables", post(instances::set_variables::<S>))
        .route("/api/v1/instances/{instance}/events", get(history::events::<S>))
        .route("/api/v1/instances/{instance}/replay", get(history::replay::<S>))
        .route("/api/v1/instances/{instance}/verify", get(history::verify::<S>))
        .route("/api/v1/messages", post(instances::publish::<S>))
        .route("/api/v1/signals", post(instances::broadcast::<S>))
        .route("/api/v1/user-tasks", get(tasks::list::<S>))
        .route("/api/v1/user-tasks/{task}", get(tasks::get::<S>))
        .route("/api/v1/user-tasks/{task}/claim", post(tasks::claim::<S>))
        .route("/api/v1/user-tasks/{task}/unclaim", post(tasks::unclaim::<S>))
        .route("/api/v1/user-tasks/{task}/complete", post(tasks::complete::<S>))
        .route("/api/v1/jobs/activate", post(jobs::activate::<S>))
        .route("/api/v1/jobs/{id}/complete", post(jobs::complete::<S>))
        .route("/api/v1/jobs/{id}/fail", post(jobs::fail::<S>))
        .route("/api/v1/jobs/{id}/error", post(jobs::throw_error::<S>))
        .route("/api/v1/incidents", get(incidents::list::<S>))
        .route("/api/v1/incidents/{id}/resolve", post(incidents::resolve::<S>))
        .route("/api/v1/operations", get(history::operations::<S>))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready::<S>))
        .route("/metrics", get(ops::metrics::<S>))
        .route("/api/openapi.json", get(ops::openapi));
    let bb = workflow_bb_routes::<S>("", config.max_deploy_bytes)
        .merge(workflow_bb_routes::<S>(openapi::MEDIATOR_PREFIX, config.max_deploy_bytes))
        .layer(middleware::from_fn(routes::workflow_bb_status));
    let sink: Arc<dyn CallbackSink> = Arc::new(ShellSink(Arc::clone(state.shell())));
    let callbacks = match &config.callback_secret_sha256 {
        None => Router::new().nest("/api/v1/callbacks", callbacks::router(sink)),
        Some(hash) => {
            let secret = SecretCallbacks { hash: hash.to_ascii_lowercase(), router: callbacks::router(sink) };
            Router::new()
                .route("/api/v1/callbacks/{secret}/{*rest}", any(secret_callbacks))
                .with_state(Arc::new(secret))
        }
    };
    let api = Router::new()
        .merge(native)
        .merge(bb)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state.clone());
    Router::new()
        .merge(api)
        .merge(callbacks.layer(DefaultBodyLimit::max(config.max_body_bytes)))
        .layer(middleware::from_fn_with_state(state, routes::observe::<S>))
}

/// The callbacks router behind a secret path segment.
#[derive(Debug)]
struct SecretCallbacks {
    hash: String,
    router: Router,
}

/// Callbacks under `/api/v1/callbacks/{secret}/…` pass only with the configured secret (compared by
/// hash), with the secret taken out of the path; a wrong one answers 404, as if there were no route.
async fn secret_callbacks(
    axum::extract::State(callbacks): axum::extract::State<Arc<SecretCallbacks>>,
    axum::extract::Path((secret, rest)): axum::extract::Path<(String, String)>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use tower::ServiceExt;
    if hash_token(&secret) != callbacks.hash {
        return routes::not_found().await.into_response();
    }
    let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let Ok(uri) = format!("/{rest}{query}").parse::<axum::http::Uri>() else {
        return routes::not_found().await.into_response();
    };
    // A fresh request: the outer route's path parameters must not reach the callbacks' handlers.
    let (parts, body) = request.into_parts();
    let mut request = axum::extract::Request::new(body);
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = parts.headers;
    match callbacks.router.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
