//! Simulated Information Mediator: an X-Road-style security server (`information-mediator/`), served
//! under `/im`. It checks the calling client against an allow-list, logs every request and forwards it
//! in-process to the simulated BB named by the service code. It must never forward to anything outside
//! the sandbox, nor into itself or the admin routes.
//!
//! Route: `ANY /r1/{instance}/{memberClass}/{member}/{subsystem}/{service}/{*path}` (the provider path
//! segments are logged, not checked). The client is read from `X-Road-Client` (first), else
//! `Information-Mediator-Client`, else `X-GovStack-Client`, as `INSTANCE/CLASS/MEMBER/SUBSYSTEM`.
//! - no client header, or not four non-empty parts → 400, `X-Road-Error: Client.BadRequest`;
//! - a client not on the allow-list → 403, `X-Road-Error: Client.AccessDenied`;
//! - a service code other than `identity`, `registries`, `payments`, `messaging` → 404,
//!   `X-Road-Error: Server.ServerProxy.UnknownService`;
//!
//! each with the X-Road body `{type, message, detail}` (`detail` = the `X-Road-Id`). Otherwise the method,
//! query, body and headers go to `/{service}/{path}` of the sandbox, with `Information-Mediator-Client` set
//! to the verified client id (the Digital Registries API requires it). The answer comes back with
//! `X-Road-Id` (echoed, or a new UUID) and, when the BB answered ≥ 500,
//! `X-Road-Error: Server.ServerProxy.ServiceFailed`.
//!
//! Leaves out: TLS and signatures between security servers, the Directory Services API
//! (`listClients`, `listMethods`, `getOpenAPI`), the pub/sub API, request hashes, and access rights per
//! service (the allow-list admits a client to every service).

use super::{json_error, lock, Shared};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use tower::ServiceExt as _;

/// Largest body the mediator forwards.
const MAX_BODY: usize = 16 * 1024 * 1024;
const CLIENT_HEADERS: [&str; 3] = ["X-Road-Client", "Information-Mediator-Client", "X-GovStack-Client"];
const SERVICES: [&str; 4] = ["identity", "registries", "payments", "messaging"];

/// One request the mediator saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediatedRequest {
    pub method: String,
    /// The path as received, e.g. `/im/r1/GOV/GOV/REG/REGISTRY/registries/data/…`.
    pub path: String,
    pub query: Option<String>,
    /// Which client header carried the client id (`X-Road-Client`, …); `None` when none did.
    pub client_header: Option<String>,
    /// The client id as sent, `INSTANCE/CLASS/MEMBER/SUBSYSTEM`.
    pub client_id: Option<String>,
    /// The provider `INSTANCE/CLASS/MEMBER/SUBSYSTEM` from the path.
    pub provider: String,
    /// The service code from the path, e.g. `registries`.
    pub service: String,
    pub x_road_id: String,
    pub x_road_user_id: Option<String>,
    /// Whether the request was forwarded.
    pub allowed: bool,
}

#[derive(Clone)]
struct Mediator {
    shared: Arc<Shared>,
    bbs: Router,
}

pub(crate) fn router(shared: Arc<Shared>, bbs: Router) -> Router {
    Router::new()
        .route("/r1/{instance}/{member_class}/{member}/{subsystem}/{service}", any(mediate_root))
        .route("/r1/{instance}/{member_class}/{member}/{subsystem}/{service}/{*path}", any(mediate_path))
        .fallback(|| async {
            x_road_error(
                StatusCode::BAD_REQUEST,
                "Client.BadRequest",
                "expected /r1/{instance}/{memberClass}/{member}/{subsystem}/{service}/{path}",
                "",
            )
        })
        .with_state(Mediator { shared, bbs })
}

fn x_road_error(status: StatusCode, code: &'static str, message: &str, id: &str) -> Response {
    let mut response = json_error(status, json!({"type": code, "message": message, "detail": id}));
    response.headers_mut().insert("X-Road-Error", HeaderValue::from_static(code));
    response
}

async fn mediate_root(
    State(mediator): State<Mediator>,
    Path(segments): Path<(String, String, String, String, String)>,
    request: Request,
) -> Response {
    let (instance, class, member, subsystem, service) = segments;
    let provider = format!("{instance}/{class}/{member}/{subsystem}");
    mediate(mediator, provider, service, String::new(), request).await
}

async fn mediate_path(
    State(mediator): State<Mediator>,
    Path(segments): Path<(String, String, String, String, String, String)>,
    request: Request,
) -> Response {
    let (instance, class, member, subsystem, service, path) = segments;
    let provider = format!("{instance}/{class}/{member}/{subsystem}");
    mediate(mediator, provider, service, path, request).await
}

fn header_string(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn well_formed_client(id: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    parts.len() == 4 && parts.iter().all(|p| !p.trim().is_empty())
}

async fn mediate(
    mediator: Mediator,
    provider: String,
    service: String,
    path: String,
    request: Request,
) -> Response {
    let shared = &mediator.shared;
    let x_road_id = header_string(&request, "X-Road-Id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let client =
        CLIENT_HEADERS.iter().find_map(|name| header_string(&request, name).map(|value| (*name, value)));
    let mut entry = MediatedRequest {
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
        query: request.uri().query().map(str::to_string),
        client_header: client.as_ref().map(|(name, _)| (*name).to_string()),
        client_id: client.as_ref().map(|(_, value)| value.clone()),
        provider,
        service: service.clone(),
        x_road_id: x_road_id.clone(),
        x_road_user_id: header_string(&request, "X-Road-UserId"),
        allowed: false,
    };
    let verdict = match &client {
        None => Err(x_road_error(
            StatusCode::BAD_REQUEST,
            "Client.BadRequest",
            "missing client header: send X-Road-Client (or Information-Mediator-Client, X-GovStack-Client) \
             as INSTANCE/CLASS/MEMBER/SUBSYSTEM",
            &x_road_id,
        )),
        Some((name, id)) if !well_formed_client(id) => Err(x_road_error(
            StatusCode::BAD_REQUEST,
            "Client.BadRequest",
            &format!("header {name} must be INSTANCE/CLASS/MEMBER/SUBSYSTEM, got {id:?}"),
            &x_road_id,
        )),
        Some((_, id)) if !shared.config.mediator_allow_list.iter().any(|a| a == id) => Err(x_road_error(
            StatusCode::FORBIDDEN,
            "Client.AccessDenied",
            &format!("client {id} is not allowed to call this service"),
            &x_road_id,
        )),
        Some(_) if !SERVICES.contains(&service.as_str()) => Err(x_road_error(
            StatusCode::NOT_FOUND,
            "Server.ServerProxy.UnknownService",
            &format!("unknown service code {service:?}; known: {}", SERVICES.join(", ")),
            &x_road_id,
        )),
        Some((_, id)) => Ok(id.clone()),
    };
    entry.allowed = verdict.is_ok();
    lock(&shared.mediator_log).push(entry);
    let client_id = match verdict {
        Ok(id) => id,
        Err(response) => return response,
    };

    let (mut parts, body) = request.into_parts();
    let target = match parts.uri.query() {
        Some(query) => format!("/{service}/{path}?{query}"),
        None => format!("/{service}/{path}"),
    };
    let Ok(uri) = target.parse::<Uri>() else {
        return x_road_error(
            StatusCode::BAD_REQUEST,
            "Client.BadRequest",
            "the service path is not a valid URI",
            &x_road_id,
        );
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return x_road_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Client.BadRequest",
            "request body too large or unreadable",
            &x_road_id,
        );
    };
    parts.uri = uri;
    // A fresh request as the BB would receive it: the mediator's own routing state (its path
    // parameters live in the extensions) must not leak into the BB's router.
    parts.extensions = axum::http::Extensions::new();
    parts.headers.remove(header::HOST);
    if let Ok(value) = HeaderValue::from_str(&client_id) {
        parts.headers.insert(HeaderName::from_static("information-mediator-client"), value);
    }
    let forwarded = Request::from_parts(parts, Body::from(bytes));
    let mut response = match mediator.bbs.clone().oneshot(forwarded).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if let Ok(value) = HeaderValue::from_str(&x_road_id) {
        response.headers_mut().insert("X-Road-Id", value);
    }
    if response.status().is_server_error() {
        response
            .headers_mut()
            .insert("X-Road-Error", HeaderValue::from_static("Server.ServerProxy.ServiceFailed"));
    }
    response.into_response()
}
