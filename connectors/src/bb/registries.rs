//! Digital Registries BB connector (Data API 1.3.0): read, exists, create, update, updateOrCreate, list
//! and delete records of a registry at `/data/{registry}/{version}/…`, with the spec's required
//! `Information-Mediator-Client` header.
//!
//! | job type | call | outputs |
//! |---|---|---|
//! | `govstack.registries.read` | `POST …/read {query:{content}}` | `record` |
//! | `govstack.registries.exists` | `POST …/exists {query:{content}}` | `exists` |
//! | `govstack.registries.create` | `POST …/create {write:{content}}` | `record` |
//! | `govstack.registries.update` | `PUT …/update {query, write}` | `record` |
//! | `govstack.registries.updateOrCreate` | `POST …/updateOrCreate {query, write}` | `record` |
//! | `govstack.registries.list` | `GET /data/{registry}/{version}?search&filter&ordering&page&pageSize&query.<field>` | `records`, `count`, `next` |
//! | `govstack.registries.delete` | `DELETE …/{id}/delete` | `deleted` |
//!
//! BPMN errors: `RECORD_NOT_FOUND` (404 from read, update, delete), `DUPLICATE_RECORD` (409 from create).
//! The spec defines no answer to a duplicate create; 409 Conflict is the HTTP answer for it and what the
//! sandbox gives.
//!
//! # Idempotency
//! The Data API has no request id. read, exists, list, update, updateOrCreate and delete are safe to
//! repeat. `create` is made safe to *retry*: when a retry (attempt 2 or later, e.g. after a timeout whose
//! answer was lost) is refused as a duplicate, the connector reads the registry with every field it meant
//! to write as the query; a record that has them all is its own earlier write, and the job completes with
//! it. A first attempt refused as a duplicate throws `DUPLICATE_RECORD` whatever the record holds (two
//! applications for the same birth must not both succeed). Not covered: a create redelivered after a
//! crash of govflow is a first attempt again (the attempt count lives in the job's failures); journeys
//! that must write exactly once whatever happens use `updateOrCreate`.
//!
//! Leaves out: `updateEntries`, `readValue` and `myPersonalDataUsage`, and the Database API.

use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{
    complete, optional, optional_count, optional_object, optional_str, path_segment, permanent,
    require_object, require_text, required, setting_or, Param, TaskContract,
};
use crate::client::{BbClient, BbRequest, BbResponse};
use crate::config::Bb;
use crate::connector::{Connector, ConnectorError, ConnectorFuture, ConnectorRequest, Outcome};

pub const READ: &str = "govstack.registries.read";
pub const EXISTS: &str = "govstack.registries.exists";
pub const CREATE: &str = "govstack.registries.create";
pub const UPDATE: &str = "govstack.registries.update";
pub const UPDATE_OR_CREATE: &str = "govstack.registries.updateOrCreate";
pub const LIST: &str = "govstack.registries.list";
pub const DELETE: &str = "govstack.registries.delete";

pub const RECORD_NOT_FOUND: &str = "RECORD_NOT_FOUND";
pub const DUPLICATE_RECORD: &str = "DUPLICATE_RECORD";

/// The header naming the registry.
pub const REGISTRY: &str = "registry";
/// The header naming the registry's version; default [`DEFAULT_VERSION`].
pub const VERSION: &str = "version";
pub const DEFAULT_VERSION: &str = "1.0";

const HEADERS: &[Param] = &[
    required(REGISTRY, "registry name, the {registryName} of /data/{registryName}/{versionNumber}"),
    optional(VERSION, "registry version (default 1.0)"),
];
const QUERY: Param = required("query", "context of the fields to match, e.g. {ID: nationalId}");
const RECORD: Param = required("record", "context of the record's fields to write");

pub const CONTRACTS: &[TaskContract] = &[
    TaskContract {
        job_type: READ,
        inputs: &[QUERY],
        headers: HEADERS,
        outputs: &["record"],
        errors: &[RECORD_NOT_FOUND],
    },
    TaskContract { job_type: EXISTS, inputs: &[QUERY], headers: HEADERS, outputs: &["exists"], errors: &[] },
    TaskContract {
        job_type: CREATE,
        inputs: &[RECORD],
        headers: HEADERS,
        outputs: &["record"],
        errors: &[DUPLICATE_RECORD],
    },
    TaskContract {
        job_type: UPDATE,
        inputs: &[optional("query", "context of the fields that find the record to update"), RECORD],
        headers: HEADERS,
        outputs: &["record"],
        errors: &[RECORD_NOT_FOUND],
    },
    TaskContract {
        job_type: UPDATE_OR_CREATE,
        inputs: &[optional("query", "context of the fields that find the record to update"), RECORD],
        headers: HEADERS,
        outputs: &["record"],
        errors: &[],
    },
    TaskContract {
        job_type: LIST,
        inputs: &[
            optional("query", "context of field = value filters, sent as query.<field>"),
            optional("search", "free-text search"),
            optional("filter", "the field to filter on"),
            optional("ordering", "how to order the results"),
            optional("page", "result page number"),
            optional("pageSize", "results on one page"),
        ],
        headers: HEADERS,
        outputs: &["records", "count", "next"],
        errors: &[],
    },
    TaskContract {
        job_type: DELETE,
        inputs: &[required("id", "the record's ID")],
        headers: HEADERS,
        outputs: &["deleted"],
        errors: &[RECORD_NOT_FOUND],
    },
];

/// The Digital Registries connector (all its job types).
#[derive(Debug, Clone)]
pub struct RegistriesConnector {
    client: BbClient,
}

impl RegistriesConnector {
    pub fn new(client: BbClient) -> RegistriesConnector {
        RegistriesConnector { client }
    }
}

impl Connector for RegistriesConnector {
    fn job_types(&self) -> Vec<String> {
        CONTRACTS.iter().map(|contract| contract.job_type.to_owned()).collect()
    }

    fn invoke(&self, request: ConnectorRequest) -> ConnectorFuture {
        let client = self.client.clone();
        Box::pin(async move {
            let operation = Operation::of(&request)?;
            let target = Target::of(&request)?;
            let call = build(operation, &target, &request, &client_id(&client, &request)?)?;
            let response = client.call(Bb::Registries, call).await?;
            // A 409 on a retry, or on a job delivered again after a restart, may be this job's own
            // earlier write whose answer was lost.
            let may_have_run = request.attempt > 1 || request.redelivered;
            if operation == Operation::Create && response.status == 409 && may_have_run {
                if let Some(record) = own_earlier_create(&client, &request, &target).await? {
                    tracing::info!(
                        job = %request.idempotency_key,
                        registry = %target.registry,
                        "registries create retried: the record written by an earlier attempt is taken as created"
                    );
                    return Ok(complete([("record", record)]));
                }
            }
            interpret(operation, &request, &response)
        })
    }
}

/// What a job asks of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Read,
    Exists,
    Create,
    Update,
    UpdateOrCreate,
    List,
    Delete,
}

impl Operation {
    fn of(request: &ConnectorRequest) -> Result<Operation, ConnectorError> {
        Ok(match request.job_type.as_str() {
            READ => Operation::Read,
            EXISTS => Operation::Exists,
            CREATE => Operation::Create,
            UPDATE => Operation::Update,
            UPDATE_OR_CREATE => Operation::UpdateOrCreate,
            LIST => Operation::List,
            DELETE => Operation::Delete,
            other => {
                return Err(permanent(request, format!("the registries connector does not serve '{other}'")))
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Exists => "exists",
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::UpdateOrCreate => "updateOrCreate",
            Operation::List => "list",
            Operation::Delete => "delete",
        }
    }
}

/// A registry and its version, as path segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub registry: String,
    pub version: String,
}

impl Target {
    fn of(request: &ConnectorRequest) -> Result<Target, ConnectorError> {
        let registry = request.require_setting(REGISTRY)?;
        Ok(Target { registry, version: setting_or(request, VERSION, DEFAULT_VERSION) })
    }

    /// `/data/{registry}/{version}`.
    fn root(&self) -> String {
        format!("/data/{}/{}", path_segment(&self.registry), path_segment(&self.version))
    }
}

/// The `Information-Mediator-Client` value: our mediator client id, else `connectors.registries.client_id`.
pub(crate) fn client_id(client: &BbClient, request: &ConnectorRequest) -> Result<String, ConnectorError> {
    client.client_id().map(str::to_owned).or_else(|| client.config().registries.client_id.clone()).ok_or_else(|| {
        permanent(
            request,
            "the Digital Registries API requires an Information-Mediator-Client header: set \
             [connectors.mediator] client, or connectors.registries.client_id (INSTANCE/CLASS/MEMBER/SUBSYSTEM)",
        )
    })
}

/// The call a job makes.
fn build(
    operation: Operation,
    target: &Target,
    request: &ConnectorRequest,
    client_id: &str,
) -> Result<BbRequest, ConnectorError> {
    let root = target.root();
    let operation_name = format!("registries {} on '{}'", operation.name(), target.registry);
    let call = match operation {
        Operation::Read | Operation::Exists => {
            let query = require_object(request, "query")?;
            BbRequest::new(Method::POST, format!("{root}/{}", operation.name()), operation_name)
                .json(json!({"query": {"content": query}}))
        }
        Operation::Create => {
            let record = require_object(request, "record")?;
            BbRequest::new(Method::POST, format!("{root}/create"), operation_name)
                .json(json!({"write": {"content": record}}))
        }
        Operation::Update | Operation::UpdateOrCreate => {
            let record = require_object(request, "record")?;
            let mut body = Map::new();
            if let Some(query) = optional_object(request, "query")? {
                body.insert("query".into(), json!({"content": query}));
            }
            body.insert("write".into(), json!({"content": record}));
            let (method, path) = if operation == Operation::Update {
                (Method::PUT, format!("{root}/update"))
            } else {
                (Method::POST, format!("{root}/updateOrCreate"))
            };
            BbRequest::new(method, path, operation_name).json(Value::Object(body))
        }
        Operation::List => {
            let mut call = BbRequest::new(Method::GET, root, operation_name);
            for name in ["search", "filter", "ordering"] {
                if let Some(value) = optional_str(request, name)? {
                    call = call.query(name, value);
                }
            }
            for name in ["page", "pageSize"] {
                if let Some(value) = optional_count(request, name)? {
                    call = call.query(name, value.to_string());
                }
            }
            for (field, value) in optional_object(request, "query")?.unwrap_or_default() {
                let value = match value {
                    Value::String(text) => text,
                    Value::Number(number) => number.to_string(),
                    Value::Bool(flag) => flag.to_string(),
                    other => {
                        return Err(permanent(
                            request,
                            format!(
                            "input variable 'query': field '{field}' must be a string, number or boolean to \
                                 filter a list, not {}",
                            super::kind(&other)
                        ),
                        ))
                    }
                };
                call = call.query(&format!("query.{field}"), value);
            }
            call
        }
        Operation::Delete => {
            let id = require_text(request, "id")?;
            BbRequest::new(Method::DELETE, format!("{root}/{}/delete", path_segment(&id)), operation_name)
        }
    };
    Ok(call
        .header("Information-Mediator-Client", client_id)
        .for_job(&request.idempotency_key, request.user.as_deref()))
}

/// On a retried create refused as a duplicate: the record in the registry that holds every field the job
/// meant to write (its own earlier attempt's write), if there is one.
async fn own_earlier_create(
    client: &BbClient,
    request: &ConnectorRequest,
    target: &Target,
) -> Result<Option<Value>, ConnectorError> {
    let record = require_object(request, "record")?;
    let query = Value::Object(record.clone());
    let found = read_one(client, request, &target.registry, &target.version, query).await?;
    Ok(found.filter(|stored| record.iter().all(|(field, value)| stored.get(field) == Some(value))))
}

/// The job's outcome from the registry's answer.
fn interpret(
    operation: Operation,
    request: &ConnectorRequest,
    response: &BbResponse,
) -> Result<Outcome, ConnectorError> {
    let operation_name = operation.name();
    let registry = request.setting(REGISTRY).unwrap_or_default();
    match (operation, response.status) {
        (Operation::Read | Operation::Update | Operation::Delete, 404) => {
            return Err(ConnectorError::business(
                RECORD_NOT_FOUND,
                format!("registry '{registry}' {operation_name}: no record matches the query"),
            ))
        }
        (Operation::Create, 409) => {
            return Err(ConnectorError::business(
                DUPLICATE_RECORD,
                format!("registry '{registry}' create: a record with this ID already exists"),
            ))
        }
        (_, status) if !(200..300).contains(&status) => {
            return Err(response.unexpected(Bb::Registries, &format!("{operation_name} on '{registry}'")))
        }
        _ => {}
    }
    let body = response.json(Bb::Registries, operation_name)?;
    let malformed = |what: &str| {
        ConnectorError::Permanent(format!(
            "registries BB {operation_name} on '{registry}': the answer from {} has no {what}",
            response.path
        ))
    };
    Ok(match operation {
        Operation::Read => {
            let record = body
                .get("content")
                .filter(|content| content.is_object())
                .ok_or_else(|| malformed("content"))?;
            complete([("record", record.clone())])
        }
        Operation::Exists => {
            let status = body
                .pointer("/answer/status")
                .and_then(Value::as_bool)
                .ok_or_else(|| malformed("answer.status"))?;
            complete([("exists", Value::Bool(status))])
        }
        Operation::Create | Operation::Update | Operation::UpdateOrCreate => {
            // The spec answers create and updateOrCreate with {content}; update with nothing: then the
            // written fields are what we know of the record.
            let record = match body.get("content") {
                Some(content) if content.is_object() => content.clone(),
                _ => Value::Object(require_object(request, "record")?),
            };
            complete([("record", record)])
        }
        Operation::List => {
            let records = body
                .get("results")
                .filter(|results| results.is_array())
                .ok_or_else(|| malformed("results"))?;
            let count =
                body.get("count").filter(|count| count.is_number()).ok_or_else(|| malformed("count"))?;
            let next = match body.get("next") {
                Some(Value::String(next)) if !next.is_empty() => Value::String(next.clone()),
                Some(Value::Number(next)) => Value::Number(next.clone()),
                _ => Value::Null,
            };
            complete([("records", records.clone()), ("count", count.clone()), ("next", next)])
        }
        Operation::Delete => complete([("deleted", Value::Bool(true))]),
    })
}

/// Reads one record for another connector (identity by registry): `None` when the registry answers 404.
pub(crate) async fn read_one(
    client: &BbClient,
    request: &ConnectorRequest,
    registry: &str,
    version: &str,
    query: Value,
) -> Result<Option<Value>, ConnectorError> {
    let target = Target { registry: registry.to_owned(), version: version.to_owned() };
    let call = BbRequest::new(
        Method::POST,
        format!("{}/read", target.root()),
        format!("registries read on '{registry}'"),
    )
    .json(json!({"query": {"content": query}}))
    .header("Information-Mediator-Client", client_id(client, request)?)
    .for_job(&request.idempotency_key, request.user.as_deref());
    let response = client.call(Bb::Registries, call).await?;
    match response.status {
        404 => Ok(None),
        200..=299 => {
            let body = response.json(Bb::Registries, "read")?;
            match body.get("content") {
                Some(record) if record.is_object() => Ok(Some(record.clone())),
                _ => Err(ConnectorError::Permanent(format!(
                    "registries BB read on '{registry}': the answer from {} has no content",
                    response.path
                ))),
            }
        }
        _ => Err(response.unexpected(Bb::Registries, &format!("read on '{registry}'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bb::tests::request;
    use crate::client::Body;

    fn answer(status: u16, body: Value) -> BbResponse {
        BbResponse {
            status,
            headers: Default::default(),
            body: bytes::Bytes::from(body.to_string()),
            path: "/data/civil-register/1.0/read".into(),
        }
    }

    const HEADERS: &[(&str, &str)] = &[("registry", "civil register"), ("version", "2.1")];

    #[test]
    fn read_posts_the_query_as_content_with_the_client_header() {
        let request = request(READ, json!({"query": {"ID": "123"}}), HEADERS);
        let call =
            build(Operation::Read, &Target::of(&request).unwrap(), &request, "GOV/GOV/WF/GOVFLOW").unwrap();
        assert_eq!(call.method, Method::POST);
        assert_eq!(call.path, "/data/civil%20register/2.1/read");
        assert_eq!(call.body, Body::Json(json!({"query": {"content": {"ID": "123"}}})));
        assert_eq!(
            call.headers,
            [("Information-Mediator-Client".to_owned(), "GOV/GOV/WF/GOVFLOW".to_owned())]
        );
        assert_eq!(call.idempotency_key.as_deref(), Some("7-42"));
    }

    #[test]
    fn update_sends_query_and_write_and_list_sends_query_fields() {
        let request = request(
            UPDATE,
            json!({"query": {"ID": "1"}, "record": {"ID": "1", "x": 2}}),
            &[("registry", "r")],
        );
        let call = build(Operation::Update, &Target::of(&request).unwrap(), &request, "c").unwrap();
        assert_eq!((call.method.clone(), call.path.as_str()), (Method::PUT, "/data/r/1.0/update"));
        assert_eq!(
            call.body,
            Body::Json(json!({"query": {"content": {"ID": "1"}}, "write": {"content": {"ID": "1", "x": 2}}}))
        );
        let request = request_list();
        let call = build(Operation::List, &Target::of(&request).unwrap(), &request, "c").unwrap();
        assert_eq!(call.path, "/data/r/1.0");
        assert_eq!(
            call.query,
            [
                ("search".to_owned(), "Amina".to_owned()),
                ("page".to_owned(), "2".to_owned()),
                ("pageSize".to_owned(), "5".to_owned()),
                ("query.district".to_owned(), "Lakeside".to_owned()),
                ("query.size".to_owned(), "3".to_owned()),
            ]
        );
    }

    fn request_list() -> ConnectorRequest {
        request(
            LIST,
            json!({"search": "Amina", "page": 2, "pageSize": "5", "query": {"district": "Lakeside", "size": 3}}),
            &[("registry", "r")],
        )
    }

    #[test]
    fn bad_inputs_are_permanent_and_named() {
        let no_registry = request(READ, json!({"query": {"ID": "1"}}), &[]);
        let error = Target::of(&no_registry).unwrap_err();
        assert!(error.to_string().contains("'registry'"), "{error}");
        let request = request(READ, json!({"query": "ID=1"}), HEADERS);
        let error = build(Operation::Read, &Target::of(&request).unwrap(), &request, "c").unwrap_err();
        assert!(
            matches!(&error, ConnectorError::Permanent(m) if m.contains("'query'") && m.contains("context"))
        );
        let request = request_list();
        let mut bad = request.clone();
        bad.variables.insert("query".into(), json!({"nested": {"a": 1}}));
        let error = build(Operation::List, &Target::of(&bad).unwrap(), &bad, "c").unwrap_err();
        assert!(error.to_string().contains("'nested'"), "{error}");
    }

    #[test]
    fn answers_map_to_outputs_and_bpmn_errors() {
        let read = request(READ, json!({"query": {"ID": "1"}}), HEADERS);
        assert_eq!(
            interpret(Operation::Read, &read, &answer(200, json!({"content": {"ID": "1"}}))).unwrap(),
            complete([("record", json!({"ID": "1"}))])
        );
        let error = interpret(Operation::Read, &read, &answer(404, json!({"detail": "no record found"})))
            .unwrap_err();
        assert!(matches!(error, ConnectorError::Business { ref code, .. } if code == RECORD_NOT_FOUND));
        assert_eq!(
            interpret(Operation::Exists, &read, &answer(200, json!({"answer": {"status": false}}))).unwrap(),
            complete([("exists", json!(false))])
        );
        let create = request(CREATE, json!({"record": {"ID": "1"}}), HEADERS);
        let error =
            interpret(Operation::Create, &create, &answer(409, json!({"detail": "exists"}))).unwrap_err();
        assert!(matches!(error, ConnectorError::Business { ref code, .. } if code == DUPLICATE_RECORD));
        let error =
            interpret(Operation::Create, &create, &answer(400, json!({"detail": "bad"}))).unwrap_err();
        assert!(matches!(error, ConnectorError::Permanent(ref m) if m.contains("HTTP 400")), "{error}");
        let update = request(UPDATE, json!({"record": {"ID": "1", "x": 1}}), HEADERS);
        assert_eq!(
            interpret(Operation::Update, &update, &answer(200, Value::Null)).unwrap(),
            complete([("record", json!({"ID": "1", "x": 1}))]),
            "update answers nothing: the written record is the output"
        );
        let list = interpret(
            Operation::List,
            &read,
            &answer(200, json!({"count": 3, "next": null, "previous": null, "results": [{"ID": "1"}]})),
        )
        .unwrap();
        assert_eq!(
            list,
            complete([("records", json!([{"ID": "1"}])), ("count", json!(3)), ("next", Value::Null)])
        );
        let error = interpret(Operation::Exists, &read, &answer(200, json!({"answer": {}}))).unwrap_err();
        assert!(error.to_string().contains("answer.status"), "{error}");
    }
}
