//! The OpenAPI 3.1 document at `/api/openapi.json`, generated from the handlers' `#[utoipa::path]`
//! annotations and the DTOs' `ToSchema` derives, then completed in one place: the bearer security
//! scheme, the error answers every operation can give (all in the `ErrorBody` shape), the Workflow BB
//! routes repeated under the Information Mediator prefix and at the swagger's `/instances/`, and the
//! Payments BB callback (a router of the connectors crate). Tests validate every response they see
//! against this document, so it must describe what the code answers.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use crate::routes::{definitions, history, incidents, instances, jobs, ops, tasks};
use crate::workflow_bb;

/// The Information Mediator prefix of the Workflow BB routes.
pub const MEDIATOR_PREFIX: &str = "/{instance}/{memberClass}/{memberCode}/{applicationCode}";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "govflow API",
        description = "govflow: a BPMN 2.0 workflow engine for GovStack. The native API lives under /api/v1; the GovStack Workflow BB API (spec 1.0) at the root and under the Information Mediator prefix. Send `Authorization: Bearer <token>`; every error answers `{code, message, details}`.",
        license(name = "Apache-2.0")
    ),
    paths(
        definitions::deploy, definitions::list, definitions::get, definitions::get_version, definitions::xml,
        definitions::enable, definitions::disable, definitions::delete,
        instances::start, instances::list, instances::get, instances::cancel, instances::set_variables,
        instances::publish, instances::broadcast,
        tasks::list, tasks::get, tasks::claim, tasks::unclaim, tasks::complete,
        jobs::activate, jobs::complete, jobs::fail, jobs::throw_error,
        incidents::list, incidents::resolve,
        history::events, history::replay, history::verify, history::operations,
        workflow_bb::list_processes, workflow_bb::add_process, workflow_bb::get_process,
        workflow_bb::update_process, workflow_bb::delete_process, workflow_bb::start,
        workflow_bb::list_instances, workflow_bb::get_instance, workflow_bb::stop,
        ops::health, ops::ready, ops::metrics, ops::openapi,
    ),
    components(schemas(crate::error::ErrorBody)),
    tags(
        (name = "definitions", description = "Deployments and definitions (designer)"),
        (name = "instances", description = "Process instances (operator)"),
        (name = "messages", description = "Messages and signals (operator)"),
        (name = "user-tasks", description = "User tasks (operator)"),
        (name = "jobs", description = "Jobs for external workers (worker)"),
        (name = "incidents", description = "Incidents (operator)"),
        (name = "history", description = "History and audit (auditor)"),
        (name = "workflow-bb", description = "The GovStack Workflow BB API (swagger 1.0)"),
        (name = "callbacks", description = "Endpoints other building blocks call back"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
struct ApiDoc;

const ERRORS: [(&str, &str); 10] = [
    ("400", "Invalid input (Workflow BB routes)"),
    ("401", "No token, or not a valid one"),
    ("403", "The token's role may not use this route"),
    ("404", "Not found"),
    ("409", "Conflict with the current state"),
    ("413", "The body is too large"),
    ("415", "The body is not JSON"),
    ("422", "Invalid input, or an invalid BPMN/DMN file"),
    ("500", "Internal error (details only in the server log)"),
    ("503", "Unavailable or timed out; retry later"),
];

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// The document, built once.
pub fn document() -> Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build).clone()
}

fn build() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    doc["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer", "description": "An API token (`govflow token create`) or a JWT from the configured OIDC provider"}
    });
    doc["security"] = json!([{"bearer": []}]);
    let paths = doc.get_mut("paths").and_then(Value::as_object_mut).map(std::mem::take).unwrap_or_default();
    let mut completed = Map::new();
    for (path, mut item) in paths {
        let mut is_workflow_bb = false;
        if let Some(operations) = item.as_object_mut() {
            for (_, operation) in operations.iter_mut() {
                let public = operation
                    .get("security")
                    .and_then(Value::as_array)
                    .is_some_and(|s| s.iter().all(|r| r.as_object().is_some_and(Map::is_empty)));
                is_workflow_bb |=
                    operation["tags"].as_array().is_some_and(|tags| tags.iter().any(|t| t == "workflow-bb"));
                let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else {
                    continue;
                };
                for (status, description) in ERRORS {
                    if public && (status == "401" || status == "403") {
                        continue;
                    }
                    responses.entry(status).or_insert_with(|| error_response(description));
                }
            }
        }
        if is_workflow_bb {
            completed.insert(format!("{MEDIATOR_PREFIX}{path}"), mediated(&item));
            if path == "/instances" {
                let slash = renamed(&item, "Slash");
                completed.insert(format!("{MEDIATOR_PREFIX}/instances/"), mediated(&slash));
                completed.insert("/instances/".to_owned(), slash);
            }
        }
        completed.insert(path, item);
    }
    completed.insert("/api/v1/callbacks/payments/{job}".to_owned(), callback_path());
    doc["paths"] = Value::Object(completed);
    doc
}

/// A copy of a path item with new operation ids (`{id}{suffix}`).
fn renamed(item: &Value, suffix: &str) -> Value {
    let mut item = item.clone();
    if let Some(operations) = item.as_object_mut() {
        for (method, operation) in operations.iter_mut() {
            let id = operation
                .get("operationId")
                .and_then(Value::as_str)
                .map_or_else(|| method.clone(), str::to_owned);
            operation["operationId"] = Value::String(format!("{id}{suffix}"));
        }
    }
    item
}

/// The path item under the Information Mediator prefix: four more path parameters.
fn mediated(item: &Value) -> Value {
    let mut item = renamed(item, "ViaMediator");
    let prefix: Vec<Value> = ["instance", "memberClass", "memberCode", "applicationCode"]
        .iter()
        .map(|name| {
            json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"},
            "description": "Information Mediator address part (ignored by govflow)"})
        })
        .collect();
    if let Some(operations) = item.as_object_mut() {
        for (_, operation) in operations.iter_mut() {
            let mut parameters = prefix.clone();
            if let Some(existing) = operation.get("parameters").and_then(Value::as_array) {
                parameters.extend(existing.iter().cloned());
            }
            operation["parameters"] = Value::Array(parameters);
        }
    }
    item
}

fn callback_path() -> Value {
    let mut responses = Map::new();
    responses.insert("200".to_owned(), json!({
        "description": "The job took the outcome",
        "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}}}
    }));
    for (status, description) in [
        ("400", "The body is not a payment callback"),
        ("404", "The job id names no job (or the callback secret is wrong)"),
        ("409", "The job already ended; nothing changed"),
        ("413", "The body is too large"),
        ("503", "The engine could not commit; retry"),
    ] {
        responses.insert(status.to_owned(), error_response(description));
    }
    json!({"post": {
        "tags": ["callbacks"],
        "operationId": "paymentCallback",
        "summary": "The Payments BB's outcome of a batch (mounted under /api/v1/callbacks/{secret}/ when a callback secret is configured)",
        "security": [{}],
        "parameters": [{"name": "job", "in": "path", "required": true, "schema": {"type": "string"}, "description": "The job's idempotency key `{instance}-{job}`"}],
        "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
        "responses": responses,
    }})
}
