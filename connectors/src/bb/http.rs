//! The generic HTTP/JSON connector, `http.json`: one request to an absolute URL, or to a path of a
//! configured building block (header `bb`), which is then routed directly or through the Information
//! Mediator like every other connector call. The whole answer becomes the output `response` =
//! `{status, headers, body}` for the designer's FEEL output mappings.
//!
//! # Failure mapping
//! | answer | becomes |
//! |---|---|
//! | a status named in the `errorCodes` header (`404=RECORD_NOT_FOUND,409=DUPLICATE_RECORD`) | that BPMN error |
//! | 2xx, 3xx | `response` |
//! | other 4xx | permanent (an incident) |
//! | 5xx, 408, 429, connection failures, timeouts | retryable (with `Retry-After` when given) |
//!
//! Only statuses below 500 (but 408 and 429) can be named in `errorCodes`: the others are retried.
//!
//! # Contract
//! Every request carries `X-Request-Id` and `Idempotency-Key` = the job's idempotency key, so a far side
//! that deduplicates can; through the mediator, `X-Road-Id` too. Header values (they may hold
//! credentials) never appear in a message.
//!
//! Leaves out: non-JSON request bodies (forms, files), streaming, and authentication schemes beyond
//! headers the designer sets.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{complete, optional, optional_object, optional_str, permanent, TaskContract};
use crate::client::{BbClient, BbRequest, BbResponse};
use crate::config::Bb;
use crate::connector::{Connector, ConnectorError, ConnectorFuture, ConnectorRequest, Outcome};

pub const HTTP_JSON: &str = "http.json";

/// The timeout of a call to an absolute URL when `connectors.timeout_ms` is not set.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub const CONTRACTS: &[TaskContract] = &[TaskContract {
    job_type: HTTP_JSON,
    inputs: &[
        optional("method", "GET (default), POST, PUT, PATCH, DELETE, HEAD or OPTIONS"),
        optional("url", "absolute http(s) URL (or set 'path' and the header 'bb')"),
        optional("path", "path below the building block named by the header 'bb'"),
        optional("headers", "context of request headers"),
        optional("query", "context of query parameters"),
        optional("body", "JSON request body"),
    ],
    headers: &[
        optional("bb", "identity, registries, payments or messaging: route 'path' to that configured BB"),
        optional(
            "errorCodes",
            "statuses that are BPMN errors, e.g. 404=RECORD_NOT_FOUND,409=DUPLICATE_RECORD",
        ),
    ],
    outputs: &["response"],
    errors: &[],
}];

/// The generic HTTP/JSON connector.
#[derive(Debug, Clone)]
pub struct HttpConnector {
    client: BbClient,
}

impl HttpConnector {
    pub fn new(client: BbClient) -> HttpConnector {
        HttpConnector { client }
    }
}

impl Connector for HttpConnector {
    fn job_types(&self) -> Vec<String> {
        vec![HTTP_JSON.to_owned()]
    }

    fn invoke(&self, request: ConnectorRequest) -> ConnectorFuture {
        let client = self.client.clone();
        Box::pin(async move {
            let error_codes = error_codes(&request)?;
            let call = build(&request)?;
            let response = match &call.target {
                Target::Bb(bb) => client.call(*bb, call.request.clone()).await?,
                Target::Url(url) => absolute(&client, url, &call.request).await?,
            };
            interpret(&response, &error_codes, &call.request.operation)
        })
    }
}

/// Where a call goes.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Bb(Bb),
    Url(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Call {
    target: Target,
    request: BbRequest,
}

/// The `errorCodes` header: status → BPMN error code.
fn error_codes(request: &ConnectorRequest) -> Result<BTreeMap<u16, String>, ConnectorError> {
    let mut codes = BTreeMap::new();
    let Some(text) = request.headers.get("errorCodes") else { return Ok(codes) };
    for entry in text.split([',', ';']).map(str::trim).filter(|entry| !entry.is_empty()) {
        let bad = || {
            permanent(
                request,
                format!(
                    "task header errorCodes: '{entry}' is not STATUS=ERROR_CODE with a status from 100 to 499 \
                     (but 408 and 429, which are retried), e.g. 404=RECORD_NOT_FOUND"
                ),
            )
        };
        let (status, code) = entry.split_once('=').ok_or_else(bad)?;
        let status: u16 = status.trim().parse().map_err(|_| bad())?;
        let code = code.trim();
        if !(100..500).contains(&status) || matches!(status, 408 | 429) || code.is_empty() {
            return Err(bad());
        }
        codes.insert(status, code.to_owned());
    }
    Ok(codes)
}

fn bb_named(name: &str) -> Option<Bb> {
    Bb::ALL.into_iter().find(|bb| bb.name().eq_ignore_ascii_case(name.trim()))
}

/// A header or query value from a context field.
fn scalar(
    request: &ConnectorRequest,
    input: &str,
    field: &str,
    value: &Value,
) -> Result<String, ConnectorError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(flag) => Ok(flag.to_string()),
        other => Err(permanent(
            request,
            format!(
                "input variable '{input}': '{field}' must be a string, number or boolean, not {}",
                super::kind(other)
            ),
        )),
    }
}

fn build(request: &ConnectorRequest) -> Result<Call, ConnectorError> {
    let method_name =
        optional_str(request, "method")?.unwrap_or_else(|| "GET".to_owned()).to_ascii_uppercase();
    let method = match method_name.as_str() {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        "HEAD" => Method::HEAD,
        "OPTIONS" => Method::OPTIONS,
        _ => {
            return Err(permanent(
                request,
                format!("input variable 'method' is '{method_name}', not an HTTP method"),
            ))
        }
    };
    let url = optional_str(request, "url")?.filter(|url| !url.trim().is_empty());
    let path = optional_str(request, "path")?.filter(|path| !path.trim().is_empty());
    let bb = request.headers.get("bb").filter(|bb| !bb.trim().is_empty());
    let (target, path) = match (url, path, bb) {
        (Some(url), None, None) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(permanent(
                    request,
                    "input variable 'url' must be an absolute http:// or https:// URL",
                ));
            }
            (Target::Url(url.clone()), url)
        }
        (None, Some(path), Some(bb)) => {
            let bb = bb_named(bb).ok_or_else(|| {
                permanent(
                    request,
                    format!("task header bb is '{bb}'; expected identity, registries, payments or messaging"),
                )
            })?;
            let path = if path.starts_with('/') { path } else { format!("/{path}") };
            (Target::Bb(bb), path)
        }
        (None, Some(_), None) => {
            return Err(permanent(
                request,
                "input 'path' needs the task header 'bb' naming the building block",
            ))
        }
        (Some(_), _, Some(_)) | (Some(_), Some(_), None) => {
            return Err(permanent(
                request,
                "set either input 'url', or input 'path' with the task header 'bb', not both",
            ))
        }
        (None, None, _) => {
            return Err(permanent(
                request,
                "input variable 'url' is missing (or set 'path' and the task header 'bb')",
            ))
        }
    };
    let operation = match &target {
        Target::Bb(_) => format!("http.json {method} {path}"),
        // The URL may carry credentials in its query: name only the method.
        Target::Url(_) => format!("http.json {method}"),
    };
    let mut call = BbRequest::new(method, path, operation);
    // A null value leaves the header or parameter out (a FEEL context may hold an unset variable).
    for (name, value) in optional_object(request, "headers")?.unwrap_or_default() {
        if !value.is_null() {
            call = call.header(&name, scalar(request, "headers", &name, &value)?);
        }
    }
    for (name, value) in optional_object(request, "query")?.unwrap_or_default() {
        let values = match value {
            Value::Array(items) => items,
            value => vec![value],
        };
        for value in values.iter().filter(|value| !value.is_null()) {
            call = call.query(&name, scalar(request, "query", &name, value)?);
        }
    }
    if let Some(body) = request.variable("body") {
        call = call.json(body.clone());
    }
    let call = call
        .header("X-Request-Id", request.idempotency_key.clone())
        .header("Idempotency-Key", request.idempotency_key.clone())
        .for_job(&request.idempotency_key, request.user.as_deref());
    Ok(Call { target, request: call })
}

/// A call to an absolute URL, with the failure mapping of [`BbClient::call`].
async fn absolute(client: &BbClient, url: &str, call: &BbRequest) -> Result<BbResponse, ConnectorError> {
    let timeout = client.config().timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    let mut request = call.clone();
    // The path in messages: the URL's, never its query (which may carry a key).
    request.path = url.split(['?', '#']).next().unwrap_or(url).to_owned();
    client.send(&call.operation, url, false, timeout, &request).await
}

/// The answer as `response`, or the BPMN error / failure its status means.
fn interpret(
    response: &BbResponse,
    error_codes: &BTreeMap<u16, String>,
    operation: &str,
) -> Result<Outcome, ConnectorError> {
    if let Some(code) = error_codes.get(&response.status) {
        return Err(ConnectorError::business(
            code,
            format!("{operation}: HTTP {} from {}: {}", response.status, response.path, response.excerpt()),
        ));
    }
    if response.status >= 400 {
        return Err(ConnectorError::Permanent(format!(
            "{operation}: unexpected HTTP {} from {}: {}",
            response.status,
            response.path,
            response.excerpt()
        )));
    }
    let mut headers = Map::new();
    for (name, value) in &response.headers {
        let Ok(value) = value.to_str() else { continue };
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), json!(value));
            }
        }
    }
    let body = if response.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&response.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&response.body).into_owned()))
    };
    Ok(complete([("response", json!({"status": response.status, "headers": headers, "body": body}))]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bb::tests::request;
    use crate::client::Body;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn a_bb_path_is_routed_and_carries_the_idempotency_key() {
        let request = request(
            HTTP_JSON,
            json!({"method": "post", "path": "data/r/1.0/read", "headers": {"X-Trace": 7, "X-None": null}, "query": {"a": ["1", 2], "b": null}, "body": {"q": 1}}),
            &[("bb", "Registries")],
        );
        let call = build(&request).unwrap();
        assert_eq!(call.target, Target::Bb(Bb::Registries));
        assert_eq!(
            (call.request.method.clone(), call.request.path.as_str()),
            (Method::POST, "/data/r/1.0/read")
        );
        assert_eq!(call.request.query, [("a".to_owned(), "1".to_owned()), ("a".to_owned(), "2".to_owned())]);
        assert_eq!(call.request.body, Body::Json(json!({"q": 1})));
        let header =
            |name: &str| call.request.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(header("X-Trace"), Some("7"));
        assert_eq!(header("X-None"), None, "a null leaves the header out");
        assert_eq!(header("X-Request-Id"), Some("7-42"));
        assert_eq!(header("Idempotency-Key"), Some("7-42"));
        assert_eq!(call.request.idempotency_key.as_deref(), Some("7-42"));
    }

    #[test]
    fn the_target_must_be_one_url_or_one_bb_path() {
        for (variables, headers, named) in [
            (json!({}), &[][..], "'url'"),
            (json!({"url": "ftp://x"}), &[][..], "'url'"),
            (json!({"path": "/x"}), &[][..], "'bb'"),
            (json!({"path": "/x"}), &[("bb", "nowhere")][..], "nowhere"),
            (json!({"url": "http://x", "path": "/x"}), &[][..], "not both"),
            (json!({"url": "http://x", "method": "FETCH"}), &[][..], "'method'"),
            (json!({"url": "http://x", "headers": {"a": {"b": 1}}}), &[][..], "'headers'"),
        ] {
            let error = build(&request(HTTP_JSON, variables, headers)).unwrap_err();
            assert!(matches!(&error, ConnectorError::Permanent(m) if m.contains(named)), "{named}: {error}");
        }
    }

    #[test]
    fn error_codes_are_parsed_and_checked() {
        let ok =
            request(HTTP_JSON, json!({}), &[("errorCodes", "404=RECORD_NOT_FOUND, 409 = DUPLICATE_RECORD")]);
        assert_eq!(
            error_codes(&ok).unwrap(),
            BTreeMap::from([(404, "RECORD_NOT_FOUND".to_owned()), (409, "DUPLICATE_RECORD".to_owned())])
        );
        for bad in ["404", "503=DOWN", "429=BUSY", "x=Y", "404="] {
            let error = error_codes(&request(HTTP_JSON, json!({}), &[("errorCodes", bad)])).unwrap_err();
            assert!(error.to_string().contains("errorCodes"), "{bad}: {error}");
        }
    }

    #[test]
    fn answers_become_the_response_a_bpmn_error_or_an_incident() {
        let answer = |status: u16, body: &'static [u8]| {
            let mut headers = HeaderMap::new();
            headers.insert("content-type", HeaderValue::from_static("application/json"));
            BbResponse { status, headers, body: bytes::Bytes::from_static(body), path: "/x".into() }
        };
        let codes = BTreeMap::from([(404, "RECORD_NOT_FOUND".to_owned())]);
        assert_eq!(
            interpret(&answer(200, b"{\"a\":1}"), &codes, "op").unwrap(),
            complete([(
                "response",
                json!({"status": 200, "headers": {"content-type": "application/json"}, "body": {"a": 1}})
            )])
        );
        let Outcome::Complete(text) = interpret(&answer(201, b"plain"), &codes, "op").unwrap() else {
            panic!()
        };
        assert_eq!(text["response"]["body"], "plain");
        let error = interpret(&answer(404, b""), &codes, "op").unwrap_err();
        assert!(matches!(error, ConnectorError::Business { ref code, .. } if code == "RECORD_NOT_FOUND"));
        let error = interpret(&answer(403, b"no"), &codes, "op").unwrap_err();
        assert!(matches!(error, ConnectorError::Permanent(ref m) if m.contains("HTTP 403")));
    }
}
