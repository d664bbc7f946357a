//! Deployments and definitions: upload `.bpmn` / `.dmn` files (raw body or multipart), list and read
//! deployed versions and their original XML, enable, disable, delete. A request with several files is
//! checked whole before anything is deployed: one invalid file deploys nothing.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use govflow_engine::dmn::DecisionModel;
use govflow_engine::store::{Deployment, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Auth, Design, ReadDefinitions};
use crate::error::{diagnostic_json, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::view::DefinitionView;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeployQuery {
    /// The file name of a raw-body upload; its extension (`.bpmn` or `.dmn`) says what it is.
    /// Default `process.bpmn`.
    pub name: Option<String>,
}

/// One deployed (or found identical) definition.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployedView {
    pub resource_name: String,
    pub process_id: String,
    pub version: u32,
    /// `{processId}:{version}`.
    pub key: String,
    /// False when identical content was deployed before and that version is returned.
    pub new: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeployResponse {
    pub deployed: Vec<DeployedView>,
}

/// Files to deploy, from a multipart form (each part with a file name) or a raw body.
async fn files<S: Store + 'static>(
    state: &AppState<S>,
    request: Request,
    name: Option<String>,
) -> ApiResult<Vec<(String, Bytes)>> {
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("multipart/form-data"));
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "deployments are limited to {} bytes",
            state.config().max_deploy_bytes
        ))
    };
    if !is_multipart {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::invalid(rejection.body_text())
            }
        })?;
        return Ok(vec![(name.unwrap_or_else(|| "process.bpmn".to_owned()), bytes)]);
    }
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let mut files = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) if error.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
            Err(error) => return Err(ApiError::invalid(error.body_text())),
        };
        let Some(file_name) = field.file_name().map(str::to_owned) else { continue };
        let bytes = field.bytes().await.map_err(|error| {
            if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::invalid(error.body_text())
            }
        })?;
        files.push((file_name, bytes));
    }
    if files.is_empty() {
        return Err(ApiError::invalid("the form has no file part (send each file with a file name)"));
    }
    Ok(files)
}

/// The diagnostics that make a file undeployable (empty when it can be deployed).
fn problems(resource: &str, bytes: &[u8]) -> Vec<Value> {
    if resource.ends_with(".dmn") {
        return match DecisionModel::parse(bytes) {
            Ok(_) => Vec::new(),
            Err(diagnostics) => diagnostics.iter().map(|d| diagnostic_json(d, Some(resource))).collect(),
        };
    }
    let parsed = govflow_engine::check(bytes);
    let errors: Vec<Value> = parsed
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| diagnostic_json(d, Some(resource)))
        .collect();
    if !errors.is_empty() {
        return errors;
    }
    let executable = parsed.definitions.is_some_and(|d| d.processes.iter().any(|p| p.is_executable));
    if executable {
        Vec::new()
    } else {
        vec![serde_json::json!({
            "resource": resource, "code": null, "severity": "error", "element": null, "line": 0, "column": 0,
            "message": "the file has no executable process (isExecutable=\"true\"): nothing to deploy",
        })]
    }
}

/// Deploys one or several `.bpmn` / `.dmn` files.
///
/// Send one file as the raw body (`Content-Type: application/xml`, `?name=file.bpmn`) or several as
/// `multipart/form-data` parts with file names. Every file is validated before any is deployed;
/// invalid files answer 422 with each diagnostic (code, message, element, line, column). Identical
/// content returns the existing versions (200); anything new answers 201.
#[utoipa::path(post, path = "/api/v1/deployments", tag = "definitions", params(DeployQuery),
    request_body(content = String, content_type = "application/xml", description = "A BPMN or DMN file (or multipart/form-data with several)"),
    responses((status = 201, body = DeployResponse, description = "Deployed"), (status = 200, body = DeployResponse, description = "Identical content was deployed before")))]
pub async fn deploy<S: Store + 'static>(
    auth: Auth<Design>,
    State(state): State<AppState<S>>,
    ApiQuery(query): ApiQuery<DeployQuery>,
    request: Request,
) -> ApiResult<Response> {
    let mut files = files(&state, request, query.name).await?;
    for (name, _) in &files {
        if !(name.ends_with(".bpmn") || name.ends_with(".dmn") || name.ends_with(".xml")) {
            return Err(ApiError::invalid_field(
                "name",
                format!("'{name}' is neither a .bpmn nor a .dmn file"),
            ));
        }
    }
    let diagnostics: Vec<Value> = files.iter().flat_map(|(name, bytes)| problems(name, bytes)).collect();
    if !diagnostics.is_empty() {
        return Err(ApiError::InvalidBpmn {
            message: format!("{} problem(s); nothing was deployed", diagnostics.len()),
            diagnostics,
        });
    }
    // Decisions first, so that processes deployed with them can call them.
    files.sort_by_key(|(name, _)| !name.ends_with(".dmn"));
    let actor = auth.actor();
    let deployed = state
        .blocking(move |engine| {
            let mut deployed = Vec::new();
            // One atomic write for every file: all deployed, or none.
            let all: Vec<(&str, &[u8])> =
                files.iter().map(|(name, bytes)| (name.as_str(), bytes.as_ref())).collect();
            let versions = engine.deploy_all(&all, &actor)?;
            for one in versions {
                deployed.push(DeployedView {
                    resource_name: one.resource_name,
                    key: format!("{}:{}", one.process_id, one.version),
                    process_id: one.process_id,
                    version: one.version,
                    new: one.new,
                });
            }
            Ok(deployed)
        })
        .await?;
    let status = if deployed.iter().any(|d| d.new) { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, ApiJson(DeployResponse { deployed })).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DefinitionsQuery {
    /// Every version, not only the latest of each process.
    pub all: Option<bool>,
    /// The cursor: the `key` after which to continue (`next` of the previous page).
    pub after: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DefinitionPage {
    pub items: Vec<DefinitionView>,
    /// The cursor of the next page (`after`), `null` on the last page.
    pub next: Option<String>,
}

fn split_key(key: &str) -> Option<(String, u32)> {
    let (process_id, version) = key.rsplit_once(':')?;
    Some((process_id.to_owned(), version.parse().ok()?))
}

/// Lists deployed definitions: the latest version of each (or every version with `all=true`).
#[utoipa::path(get, path = "/api/v1/definitions", tag = "definitions", params(DefinitionsQuery),
    responses((status = 200, body = DefinitionPage)))]
pub async fn list<S: Store + 'static>(
    _auth: Auth<ReadDefinitions>,
    State(state): State<AppState<S>>,
    ApiQuery(query): ApiQuery<DefinitionsQuery>,
) -> ApiResult<ApiJson<DefinitionPage>> {
    let limit = state.page_size(query.limit)?;
    let after = match &query.after {
        Some(key) => Some(split_key(key).ok_or_else(|| {
            ApiError::invalid_field("after", "after is a definition key: {processId}:{version}")
        })?),
        None => None,
    };
    let deployments = state.blocking(|engine| Ok(engine.store().deployments()?)).await?;
    let all = query.all.unwrap_or(false);
    let chosen: Vec<&Deployment> = deployments
        .iter()
        .enumerate()
        .filter(|(i, d)| all || deployments.get(i + 1).is_none_or(|next| next.process_id != d.process_id))
        .map(|(_, d)| d)
        .filter(|d| after.as_ref().is_none_or(|(p, v)| (&d.process_id, d.version) > (p, *v)))
        .collect();
    let items: Vec<DefinitionView> = chosen.iter().take(limit).map(|d| DefinitionView::from(*d)).collect();
    let next = (chosen.len() > limit).then(|| items.last().map(|d| d.key.clone())).flatten();
    Ok(ApiJson(DefinitionPage { items, next }))
}

/// The latest version of a process and the numbers of all its versions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DefinitionDetail {
    #[serde(flatten)]
    pub latest: DefinitionView,
    pub versions: Vec<u32>,
}

async fn versions<S: Store + 'static>(state: &AppState<S>, process_id: String) -> ApiResult<Vec<Deployment>> {
    let deployments = state.blocking(|engine| Ok(engine.store().deployments()?)).await?;
    let versions: Vec<Deployment> = deployments.into_iter().filter(|d| d.process_id == process_id).collect();
    if versions.is_empty() {
        return Err(ApiError::NotFound(format!("no process '{process_id}' is deployed")));
    }
    Ok(versions)
}

async fn version<S: Store + 'static>(
    state: &AppState<S>,
    process_id: String,
    version: u32,
) -> ApiResult<Deployment> {
    let found = {
        let process_id = process_id.clone();
        state.blocking(move |engine| Ok(engine.store().deployment(&process_id, version)?)).await?
    };
    found.ok_or_else(|| ApiError::NotFound(format!("no version {version} of '{process_id}' is deployed")))
}

/// A process's latest version, with the list of its versions.
#[utoipa::path(get, path = "/api/v1/definitions/{processId}", tag = "definitions",
    params(("processId" = String, Path, description = "The BPMN process id")),
    responses((status = 200, body = DefinitionDetail)))]
pub async fn get<S: Store + 'static>(
    _auth: Auth<ReadDefinitions>,
    State(state): State<AppState<S>>,
    ApiPath(process_id): ApiPath<String>,
) -> ApiResult<ApiJson<DefinitionDetail>> {
    let versions = versions(&state, process_id).await?;
    let numbers = versions.iter().map(|d| d.version).collect();
    let latest = versions.last().map(DefinitionView::from).ok_or(ApiError::Internal)?;
    Ok(ApiJson(DefinitionDetail { latest, versions: numbers }))
}

/// One version of a process.
#[utoipa::path(get, path = "/api/v1/definitions/{processId}/versions/{version}", tag = "definitions",
    params(("processId" = String, Path), ("version" = u32, Path)),
    responses((status = 200, body = DefinitionView)))]
pub async fn get_version<S: Store + 'static>(
    _auth: Auth<ReadDefinitions>,
    State(state): State<AppState<S>>,
    ApiPath((process_id, number)): ApiPath<(String, u32)>,
) -> ApiResult<ApiJson<DefinitionView>> {
    let deployment = version(&state, process_id, number).await?;
    Ok(ApiJson(DefinitionView::from(&deployment)))
}

/// The file a version was deployed from, byte for byte.
#[utoipa::path(get, path = "/api/v1/definitions/{processId}/versions/{version}/xml", tag = "definitions",
    params(("processId" = String, Path), ("version" = u32, Path)),
    responses((status = 200, body = String, content_type = "application/xml")))]
pub async fn xml<S: Store + 'static>(
    _auth: Auth<ReadDefinitions>,
    State(state): State<AppState<S>>,
    ApiPath((process_id, number)): ApiPath<(String, u32)>,
) -> ApiResult<Response> {
    let deployment = version(&state, process_id, number).await?;
    Ok(([(header::CONTENT_TYPE, "application/xml")], deployment.xml).into_response())
}

async fn set_enabled<S: Store + 'static>(
    auth: Auth<Design>,
    state: AppState<S>,
    process_id: String,
    number: u32,
    enabled: bool,
) -> ApiResult<ApiJson<DefinitionView>> {
    let actor = auth.actor();
    let id = process_id.clone();
    state.blocking(move |engine| engine.set_enabled(&id, number, enabled, &actor)).await?;
    let deployment = version(&state, process_id, number).await?;
    Ok(ApiJson(DefinitionView::from(&deployment)))
}

/// Enables a version: it can be started again (and is listed by the Workflow BB API).
#[utoipa::path(post, path = "/api/v1/definitions/{processId}/versions/{version}/enable", tag = "definitions",
    params(("processId" = String, Path), ("version" = u32, Path)),
    responses((status = 200, body = DefinitionView)))]
pub async fn enable<S: Store + 'static>(
    auth: Auth<Design>,
    State(state): State<AppState<S>>,
    ApiPath((process_id, number)): ApiPath<(String, u32)>,
) -> ApiResult<ApiJson<DefinitionView>> {
    set_enabled(auth, state, process_id, number, true).await
}

/// Disables a version: it cannot be started and the Workflow BB API no longer lists it. Running
/// instances go on.
#[utoipa::path(post, path = "/api/v1/definitions/{processId}/versions/{version}/disable", tag = "definitions",
    params(("processId" = String, Path), ("version" = u32, Path)),
    responses((status = 200, body = DefinitionView)))]
pub async fn disable<S: Store + 'static>(
    auth: Auth<Design>,
    State(state): State<AppState<S>>,
    ApiPath((process_id, number)): ApiPath<(String, u32)>,
) -> ApiResult<ApiJson<DefinitionView>> {
    set_enabled(auth, state, process_id, number, false).await
}

/// Deletes a version no instance uses (409 otherwise).
#[utoipa::path(delete, path = "/api/v1/definitions/{processId}/versions/{version}", tag = "definitions",
    params(("processId" = String, Path), ("version" = u32, Path)),
    responses((status = 204, description = "Deleted")))]
pub async fn delete<S: Store + 'static>(
    auth: Auth<Design>,
    State(state): State<AppState<S>>,
    ApiPath((process_id, number)): ApiPath<(String, u32)>,
) -> ApiResult<StatusCode> {
    let actor = auth.actor();
    let id = process_id.clone();
    state.blocking(move |engine| engine.delete_definition(&id, number, &actor)).await?;
    state.forget_process_info(&process_id, number);
    Ok(StatusCode::NO_CONTENT)
}
