//! Simulated Digital Registries BB, Data API 1.3.0 (`digital-registries/…Data_API_template-1.3.0.yaml`),
//! served under `/registries`. It must never answer without the `Information-Mediator-Client` header the
//! spec requires, so a connector that forgets it fails here as it would in production.
//!
//! Routes (all need `Information-Mediator-Client: INSTANCE/CLASS/MEMBER/SUBSYSTEM`, else 400 `{detail}`):
//! - `GET /data/{registry}/{version}?search&filter&ordering&page&pageSize&query.<field>` →
//!   `{count, next, previous, results}`; `search` is a case-insensitive substring match over every scalar
//!   field (only the field named by `filter` when given); `query.<field>=v` is an exact match;
//!   `ordering` is `ascending`/`descending` (by `ID`) or a field name, `-field` for descending;
//!   `page` starts at 1, `pageSize` defaults to 10 (at most 1000).
//! - `POST …/read` `{query:{content}}` → 200 `{content}` | 404 `{detail:"no record found"}`.
//! - `POST …/exists` `{query:{content}}` → 200 `{answer:{status, message}}`.
//! - `POST …/create` `{write:{content}}` → 200 `{content}` (an `ID` is assigned when missing);
//!   409 `{detail}` when a unique field (`ID`, and `nationalId` in the farmer register and social
//!   registry, `certificateNumber` in the civil register) already exists — the spec names no conflict
//!   answer, so this is ours.
//! - `PUT …/update` `{query:{content}, write:{content}}` → 200 `{content}` | 404 `{detail}`.
//! - `PUT …/updateEntries` `{query:{content}, write:{content}}` → 200 `{count}`.
//! - `POST …/updateOrCreate` `{query?:{content}, write:{content}}` → 200 `{content}`.
//! - `DELETE …/{ID}/delete` → 204 | 404 `{detail}`.
//! - `GET …/{ID}/readValue/{field}.json` → 200 `{value}` | 404 `{detail}`.
//!
//! A query matches a record when every field of `query.content` equals the record's field (a number and
//! its decimal string count as equal). The version segment is accepted whatever it is. A registry that
//! does not exist reads as empty (list → `count: 0`, read → 404, exists → false) and is created by its
//! first `create`/`updateOrCreate`.
//!
//! Seeded registries: `population-register`, `civil-register`, `farmer-register`, `social-registry`,
//! `licences` (see [`super::SeedData`]).
//!
//! Leaves out: regular expressions in `search` (substring only), `/data/myPersonalDataUsage`, the
//! Database API (schema management), file fields, and the `Authorization` API key (not checked).

use super::{json_error, lock, parse_json, ApiError, SeedData, Service, Shared};
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

const NOT_FOUND: &str = "no record found";
const DEFAULT_PAGE_SIZE: usize = 10;
const MAX_PAGE_SIZE: usize = 1000;

/// One registry's records, in insertion order.
#[derive(Debug, Default)]
struct Registry {
    records: Vec<Value>,
    /// Fields no two records may share (besides `ID`).
    unique: Vec<&'static str>,
    next_id: u64,
}

/// Every registry, by name.
#[derive(Debug, Default)]
pub(crate) struct Store {
    registries: BTreeMap<String, Registry>,
}

fn unique_fields(name: &str) -> Vec<&'static str> {
    match name {
        "farmer-register" | "social-registry" => vec!["nationalId"],
        "civil-register" => vec!["certificateNumber"],
        _ => Vec::new(),
    }
}

impl Store {
    pub(crate) fn seeded(seed: &SeedData) -> Store {
        let mut store = Store::default();
        for (name, records) in seed.registry_records() {
            let next_id = u64::try_from(records.len()).unwrap_or(0);
            store
                .registries
                .insert(name.to_string(), Registry { records, unique: unique_fields(name), next_id });
        }
        store
    }

    pub(crate) fn records(&self, name: &str) -> Vec<Value> {
        self.registries.get(name).map(|r| r.records.clone()).unwrap_or_default()
    }

    pub(crate) fn exists(&self, name: &str) -> bool {
        self.registries.contains_key(name)
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.registries.keys().cloned().collect()
    }

    fn registry_mut(&mut self, name: &str) -> &mut Registry {
        self.registries
            .entry(name.to_string())
            .or_insert_with(|| Registry { unique: unique_fields(name), ..Registry::default() })
    }

    fn find(&self, name: &str, query: &Map<String, Value>) -> Option<&Value> {
        self.registries.get(name)?.records.iter().find(|record| matches(record, query))
    }
}

/// Whether every field of `query` equals the record's field.
fn matches(record: &Value, query: &Map<String, Value>) -> bool {
    query.iter().all(|(field, wanted)| record.get(field).is_some_and(|have| loosely_equal(have, wanted)))
}

fn loosely_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            s.trim() == n.to_string()
                || s.trim().parse::<f64>().ok().zip(n.as_f64()).is_some_and(|(x, y)| x == y)
        }
        (Value::Bool(flag), Value::String(s)) | (Value::String(s), Value::Bool(flag)) => {
            s.trim().eq_ignore_ascii_case(if *flag { "true" } else { "false" })
        }
        _ => a == b,
    }
}

type Answer = Result<Response, ApiError>;

fn detail(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError::new(status, json!({"detail": message.into()}))
}

/// `body.<part>.content` as an object; `required` decides whether its absence is an error.
fn content<'a>(
    body: &'a Value,
    part: &str,
    required: bool,
) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    match body.get(part) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(detail(
            StatusCode::BAD_REQUEST,
            format!("body.{part}.content is required: {{\"{part}\": {{\"content\": {{...}}}}}}"),
        )),
        Some(outer) => match outer.get("content") {
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(_) => Err(detail(
                StatusCode::BAD_REQUEST,
                format!("body.{part}.content must be an object of field: value"),
            )),
            None => Err(detail(StatusCode::BAD_REQUEST, format!("body.{part}.content is required"))),
        },
    }
}

fn non_empty_query(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    match content(body, "query", true)? {
        Some(query) if !query.is_empty() => Ok(query),
        _ => Err(detail(StatusCode::BAD_REQUEST, "body.query.content must name at least one field")),
    }
}

fn body_json(bytes: &Bytes) -> Result<Value, ApiError> {
    let value = parse_json(bytes, StatusCode::BAD_REQUEST, "detail")?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(detail(StatusCode::BAD_REQUEST, "request body must be a JSON object"))
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/data/{registry}/{version}", get(list))
        .route("/data/{registry}/{version}/read", post(read))
        .route("/data/{registry}/{version}/exists", post(exists))
        .route("/data/{registry}/{version}/create", post(create))
        .route("/data/{registry}/{version}/update", put(update))
        .route("/data/{registry}/{version}/updateEntries", put(update_entries))
        .route("/data/{registry}/{version}/updateOrCreate", post(update_or_create))
        .route("/data/{registry}/{version}/{id}/delete", delete(remove))
        .route("/data/{registry}/{version}/{id}/readValue/{file}", get(read_value))
        .fallback(|| async {
            json_error(
                StatusCode::NOT_FOUND,
                json!({"detail": "no such Data API route; see /data/{registryName}/{versionNumber}/..."}),
            )
        })
        .layer(middleware::from_fn(require_client_header))
        .with_state(shared)
}

/// The spec makes `Information-Mediator-Client` a required header of every Data API call.
async fn require_client_header(request: Request, next: Next) -> Response {
    match client_header(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

fn client_header(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get("Information-Mediator-Client") else {
        return Err(detail(
            StatusCode::BAD_REQUEST,
            "missing required header Information-Mediator-Client (format INSTANCE/CLASS/MEMBER/SUBSYSTEM)",
        ));
    };
    let well_formed = value
        .to_str()
        .map(|v| {
            v.split('/').filter(|part| !part.trim().is_empty()).count() == 4 && v.split('/').count() == 4
        })
        .unwrap_or(false);
    if well_formed {
        Ok(())
    } else {
        Err(detail(
            StatusCode::BAD_REQUEST,
            "header Information-Mediator-Client must be INSTANCE/CLASS/MEMBER/SUBSYSTEM",
        ))
    }
}

fn unwrap_answer(answer: Answer) -> Response {
    answer.unwrap_or_else(IntoResponse::into_response)
}

async fn read(
    State(shared): State<Arc<Shared>>,
    Path((registry, _version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    unwrap_answer((|| {
        let body = body_json(&body)?;
        let query = non_empty_query(&body)?;
        let store = lock(&shared.registries);
        match store.find(&registry, query) {
            Some(record) => Ok(Json(json!({"content": record})).into_response()),
            None => Err(detail(StatusCode::NOT_FOUND, NOT_FOUND)),
        }
    })())
}

async fn exists(
    State(shared): State<Arc<Shared>>,
    Path((registry, _version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    unwrap_answer((|| {
        let body = body_json(&body)?;
        let query = non_empty_query(&body)?;
        let found = lock(&shared.registries).find(&registry, query).is_some();
        let message = if found { "Object found from database" } else { "Object not found from database" };
        Ok(Json(json!({"answer": {"status": found, "message": message}})).into_response())
    })())
}

/// Checks that no record other than `except` holds a unique value of `record`.
fn check_unique(
    registry: &Registry,
    name: &str,
    record: &Map<String, Value>,
    except: Option<usize>,
) -> Result<(), ApiError> {
    for field in std::iter::once("ID").chain(registry.unique.iter().copied()) {
        let Some(value) = record.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        let taken =
            registry.records.iter().enumerate().any(|(i, other)| {
                Some(i) != except && other.get(field).is_some_and(|o| loosely_equal(o, value))
            });
        if taken {
            return Err(detail(
                StatusCode::CONFLICT,
                format!("a record with {field}={value} already exists in {name}"),
            ));
        }
    }
    Ok(())
}

fn insert(store: &mut Store, name: &str, content: &Map<String, Value>) -> Answer {
    let registry = store.registry_mut(name);
    let mut record = content.clone();
    let id_missing = record.get("ID").is_none_or(|id| id.is_null() || id == "");
    if id_missing {
        // Assign the next free id of the registry's own form.
        loop {
            registry.next_id += 1;
            let id = id_for(name, registry.next_id);
            if !registry.records.iter().any(|r| r.get("ID") == Some(&Value::String(id.clone()))) {
                record.insert("ID".to_string(), Value::String(id));
                break;
            }
        }
    }
    if name == "civil-register" && record.get("certificateNumber").is_none_or(Value::is_null) {
        if let Some(id) = record.get("ID").cloned() {
            record.insert("certificateNumber".to_string(), id);
        }
    }
    check_unique(registry, name, &record, None)?;
    let record = Value::Object(record);
    registry.records.push(record.clone());
    Ok(Json(json!({"content": record})).into_response())
}

fn id_for(name: &str, n: u64) -> String {
    match name {
        "population-register" => format!("P-{n:06}"),
        "civil-register" => format!("BC-NEW-{n:05}"),
        "farmer-register" => format!("FR-{n:05}"),
        "social-registry" => format!("HH-{n:05}"),
        "licences" => format!("TL-NEW-{n:04}"),
        _ => {
            let prefix: String =
                name.chars().filter(char::is_ascii_alphanumeric).take(4).collect::<String>().to_uppercase();
            format!("{prefix}-{n:06}")
        }
    }
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Path((registry, _version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    unwrap_answer((|| {
        let body = body_json(&body)?;
        let Some(write) = content(&body, "write", true)? else {
            return Err(detail(StatusCode::BAD_REQUEST, "body.write.content is required"));
        };
        if write.is_empty() {
            return Err(detail(StatusCode::BAD_REQUEST, "body.write.content must name at least one field"));
        }
        insert(&mut lock(&shared.registries), &registry, write)
    })())
}

/// Merges `write` into the record at `index` of `name`, keeping unique fields unique.
fn merge_at(store: &mut Store, name: &str, index: usize, write: &Map<String, Value>) -> Answer {
    let registry = store.registry_mut(name);
    let Some(Value::Object(existing)) = registry.records.get(index) else {
        return Err(detail(StatusCode::NOT_FOUND, NOT_FOUND));
    };
    let mut merged = existing.clone();
    for (field, value) in write {
        merged.insert(field.clone(), value.clone());
    }
    check_unique(registry, name, &merged, Some(index))?;
    let merged = Value::Object(merged);
    if let Some(slot) = registry.records.get_mut(index) {
        *slot = merged.clone();
    }
    Ok(Json(json!({"content": merged})).into_response())
}

fn position(store: &Store, name: &str, query: &Map<String, Value>) -> Option<usize> {
    store.registries.get(name)?.records.iter().position(|record| matches(record, query))
}

/// The query of an update: `query.content`, else the `ID` named in `write.content`.
fn update_query(body: &Value) -> Result<Map<String, Value>, ApiError> {
    if let Some(query) = content(body, "query", false)? {
        if !query.is_empty() {
            return Ok(query.clone());
        }
    }
    let id = body.get("write").and_then(|w| w.get("content")).and_then(|c| c.get("ID")).cloned();
    match id {
        Some(id) => Ok(Map::from_iter([("ID".to_string(), id)])),
        None => Err(detail(
            StatusCode::BAD_REQUEST,
            "body.query.content is required to find the record (or write.content.ID)",
        )),
    }
}

fn write_content(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    content(body, "write", true)?
        .ok_or_else(|| detail(StatusCode::BAD_REQUEST, "body.write.content is required"))
}

async fn update(
    State(shared): State<Arc<Shared>>,
    Path((registry, _version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    unwrap_answer((|| {
        let body = body_json(&body)?;
        let write = write_content(&body)?;
        let query = update_query(&body)?;
        let mut store = lock(&shared.registries);
        let Some(index) = position(&store, &registry, &query) else {
            return Err(detail(StatusCode::NOT_FOUND, NOT_FOUND));
        };
        merge_at(&mut store, &registry, index, write)
    })())
}

async fn update_entries(
    State(shared): State<Arc<Shared>>,
    Path((registry, _version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    unwrap_answer((|| {
        let body = body_json(&body)?;
        let write = write_content(&body)?;
        let query = non_empty_query(&body)?;
        let mut store = lock(&shared.registries);
        let unique =
            std::iter::once("ID").chain(unique_fields(&registry)).find(|field| write.contains_key(*field));
        if let Some(field) = unique {
            return Err(detail(
                StatusCode::BAD_REQUEST,
                format!("updateEntries cannot set the unique field {field} on many records"),
            ));
        }
        let mut count = 0u64;
        if let Some(reg) = store.registries.get_mut(&registry) {
            for record in reg.records.iter_mut().filter(|r| matches(r, query)) {
                if let Value::Object(fields) = record {
                    for (field, value) in write {
                        fields.insert(field.clone(), value.clone());
                    }
                    count += 1;
                }
            }
        }
        Ok(Json(json!({"count": count})).into_response())
    })())
}

async fn update_or_create(
    State(shared): State<Arc<Shared>>,
    Path((registry, _version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    unwrap_answer((|| {
        let body = body_json(&body)?;
        let write = write_content(&body)?;
        let query = match content(&body, "query", false)? {
            Some(query) if !query.is_empty() => Some(query.clone()),
            _ => write.get("ID").map(|id| Map::from_iter([("ID".to_string(), id.clone())])),
        };
        let mut store = lock(&shared.registries);
        match query.and_then(|q| position(&store, &registry, &q)) {
            Some(index) => merge_at(&mut store, &registry, index, write),
            None => insert(&mut store, &registry, write),
        }
    })())
}

async fn remove(
    State(shared): State<Arc<Shared>>,
    Path((registry, _version, id)): Path<(String, String, String)>,
) -> Response {
    let mut store = lock(&shared.registries);
    let query = Map::from_iter([("ID".to_string(), Value::String(id))]);
    match position(&store, &registry, &query) {
        Some(index) => {
            store.registry_mut(&registry).records.remove(index);
            StatusCode::NO_CONTENT.into_response()
        }
        None => detail(StatusCode::NOT_FOUND, NOT_FOUND).into_response(),
    }
}

async fn read_value(
    State(shared): State<Arc<Shared>>,
    Path((registry, _version, id, file)): Path<(String, String, String, String)>,
) -> Response {
    let Some((field, ext)) = file.rsplit_once('.') else {
        return detail(StatusCode::BAD_REQUEST, "path must end in {field}.{ext}, e.g. firstName.json")
            .into_response();
    };
    if ext != "json" {
        return detail(
            StatusCode::BAD_REQUEST,
            format!("unsupported extension .{ext}: the sandbox serves .json only"),
        )
        .into_response();
    }
    let store = lock(&shared.registries);
    let query = Map::from_iter([("ID".to_string(), Value::String(id))]);
    match store.find(&registry, &query).and_then(|record| record.get(field)) {
        Some(value) => Json(json!({"value": value})).into_response(),
        None => detail(StatusCode::NOT_FOUND, NOT_FOUND).into_response(),
    }
}

/// Sort key of a field: numbers before strings, both in natural order.
fn sort_key(record: &Value, field: &str) -> (u8, f64, String) {
    match record.get(field) {
        Some(Value::Number(n)) => (0, n.as_f64().unwrap_or(0.0), String::new()),
        Some(Value::String(s)) => (1, 0.0, s.clone()),
        Some(Value::Bool(b)) => (1, 0.0, b.to_string()),
        Some(other) if !other.is_null() => (1, 0.0, other.to_string()),
        _ => (2, 0.0, String::new()),
    }
}

fn contains_text(value: &Value, needle: &str) -> bool {
    match value {
        Value::String(s) => s.to_lowercase().contains(needle),
        Value::Number(n) => n.to_string().contains(needle),
        Value::Bool(b) => b.to_string() == needle,
        Value::Array(items) => items.iter().any(|v| contains_text(v, needle)),
        _ => false,
    }
}

fn positive_param(params: &[(String, String)], name: &str, default: usize) -> Result<usize, ApiError> {
    match params.iter().rev().find(|(k, _)| k == name) {
        None => Ok(default),
        Some((_, v)) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(detail(
                StatusCode::BAD_REQUEST,
                format!("query parameter {name} must be a positive integer, got {v:?}"),
            )),
        },
    }
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Path((registry, version)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    unwrap_answer((|| {
        let page = positive_param(&params, "page", 1)?;
        let page_size = positive_param(&params, "pageSize", DEFAULT_PAGE_SIZE)?.min(MAX_PAGE_SIZE);
        let param = |name: &str| params.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let search = param("search").map(str::to_lowercase).filter(|s| !s.is_empty());
        let filter = param("filter").filter(|f| !f.is_empty());
        let exact: Map<String, Value> = params
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("query.").map(|field| (field.to_string(), Value::String(v.clone())))
            })
            .collect();
        let mut results: Vec<Value> = lock(&shared.registries)
            .records(&registry)
            .into_iter()
            .filter(|record| matches(record, &exact))
            .filter(|record| match (&search, filter) {
                (None, _) => true,
                (Some(needle), Some(field)) => record.get(field).is_some_and(|v| contains_text(v, needle)),
                (Some(needle), None) => {
                    record.as_object().is_some_and(|fields| fields.values().any(|v| contains_text(v, needle)))
                }
            })
            .collect();
        match param("ordering").map(str::trim).filter(|o| !o.is_empty()) {
            None | Some("ascending" | "asc") => {}
            Some("descending" | "desc") => results.reverse(),
            Some(field) => {
                let (field, descending) = match field.strip_prefix('-') {
                    Some(rest) => (rest, true),
                    None => (field, false),
                };
                results.sort_by(|a, b| {
                    let (ka, kb) = (sort_key(a, field), sort_key(b, field));
                    ka.partial_cmp(&kb).unwrap_or(std::cmp::Ordering::Equal)
                });
                if descending {
                    results.reverse();
                }
            }
        }
        let count = results.len();
        let start = (page - 1).saturating_mul(page_size);
        let page_results: Vec<Value> = results.into_iter().skip(start).take(page_size).collect();
        let link = |target: usize| -> Value {
            let others = params
                .iter()
                .filter(|(k, _)| k != "page" && k != "pageSize")
                .map(|(k, v)| (k.clone(), v.clone()));
            let pairs = others
                .chain([
                    ("page".to_string(), target.to_string()),
                    ("pageSize".to_string(), page_size.to_string()),
                ])
                .collect::<Vec<_>>();
            let base = format!("{}/data/{}/{}", shared.base_url(Service::Registries), registry, version);
            reqwest::Url::parse_with_params(&base, &pairs)
                .map(|url| Value::String(url.to_string()))
                .unwrap_or(Value::Null)
        };
        let next = if start.saturating_add(page_size) < count { link(page + 1) } else { Value::Null };
        let previous = if page > 1 && count > 0 {
            link((page - 1).min(count.div_ceil(page_size)).max(1))
        } else {
            Value::Null
        };
        Ok(Json(json!({
            "count": count,
            "next": next,
            "previous": previous,
            "results": page_results,
        }))
        .into_response())
    })())
}
