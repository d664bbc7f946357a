//! The GovStack connectors: what a BPMN service task of a `govstack.*` (or `http.json`) job type runs,
//! configured entirely in the diagram (job type, FEEL input mappings, task headers). Each connector turns
//! one job into calls through [`BbClient`] and its answer into variables, a BPMN error or a failure.
//!
//! | module | job types | building block |
//! |---|---|---|
//! | [`identity`] | `govstack.identity.verify`, `govstack.identity.verifyByRegistry` | Identity BB (OIDC), or Digital Registries |
//! | [`registries`] | `govstack.registries.{read,exists,create,update,updateOrCreate,list,delete}` | Digital Registries BB (Data API 1.3.0) |
//! | [`payments`] | `govstack.payments.{registerBeneficiary,disburse,reverse}` | Payments BB (G2P) |
//! | [`messaging`] | `govstack.messaging.{email,emailBatch,sms}` | Messaging BB |
//! | [`http`] | `http.json` | any JSON API, or a configured building block by path |
//!
//! Every task type's inputs, headers, outputs and BPMN errors are declared once, in a [`TaskContract`]
//! next to the code that reads them; the element templates and `docs/connectors.md` are checked against
//! [`contracts`] by tests, so the three cannot drift apart.
//!
//! # Contract
//! - A missing or ill-typed input is [`ConnectorError::Permanent`] naming the variable and the task; no
//!   input can make a connector panic.
//! - No message and no log line carries a secret (API key, private key, access token) or the body of a
//!   personal record; messages name the building block, the operation and what was wrong.
//!
//! Leaves out: the Registration and Consent BBs, the Information Mediator's pub/sub API, and any state
//! kept between jobs beyond caches of public keys and discovery documents.

pub mod http;
pub mod identity;
pub mod messaging;
pub mod payments;
pub mod registries;

use std::sync::Arc;

use govflow_engine::runtime::VariableMap;
use serde_json::{Map, Value};

use crate::client::BbClient;
use crate::config::{ConfigError, ConnectorsConfig};
use crate::connector::{Connector, ConnectorError, ConnectorRequest, Outcome};

/// Builds every connector over one shared HTTP client (used by `govflow serve` and `govflow demo`).
/// Checks the configuration first, and reads the Identity client's private key now, so a mistake stops
/// the start rather than the first job.
pub fn all(config: Arc<ConnectorsConfig>) -> Result<Vec<Arc<dyn Connector>>, ConfigError> {
    config.validate()?;
    let client = BbClient::new(Arc::clone(&config)).map_err(|error| ConfigError(error.to_string()))?;
    Ok(vec![
        Arc::new(identity::IdentityConnector::new(client.clone())?),
        Arc::new(registries::RegistriesConnector::new(client.clone())),
        Arc::new(payments::PaymentsConnector::new(client.clone())),
        Arc::new(messaging::MessagingConnector::new(client.clone())),
        Arc::new(http::HttpConnector::new(client)),
    ])
}

/// One input or header of a task type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    pub name: &'static str,
    pub required: bool,
    /// What it is, for the docs and the element templates.
    pub doc: &'static str,
}

/// A required parameter.
pub(crate) const fn required(name: &'static str, doc: &'static str) -> Param {
    Param { name, required: true, doc }
}

/// An optional parameter.
pub(crate) const fn optional(name: &'static str, doc: &'static str) -> Param {
    Param { name, required: false, doc }
}

/// What one task type reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskContract {
    pub job_type: &'static str,
    /// Input variables (`zeebe:input` targets).
    pub inputs: &'static [Param],
    /// Task headers (`zeebe:taskHeader` keys); the retry back-off headers of the engine are not listed.
    pub headers: &'static [Param],
    /// Variables the task completes with.
    pub outputs: &'static [&'static str],
    /// BPMN error codes it throws.
    pub errors: &'static [&'static str],
}

/// Every task type of every connector.
pub fn contracts() -> Vec<TaskContract> {
    [identity::CONTRACTS, registries::CONTRACTS, payments::CONTRACTS, messaging::CONTRACTS, http::CONTRACTS]
        .into_iter()
        .flatten()
        .copied()
        .collect()
}

/// The variables of a completed job.
pub(crate) fn complete(variables: impl IntoIterator<Item = (&'static str, Value)>) -> Outcome {
    Outcome::Complete(
        variables.into_iter().map(|(name, value)| (name.to_owned(), value)).collect::<VariableMap>(),
    )
}

/// A permanent failure of a task, naming it.
pub(crate) fn permanent(request: &ConnectorRequest, message: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Permanent(format!("task '{}' ({}): {message}", request.element, request.job_type))
}

/// An optional string input (numbers are written out); any other type is a permanent failure.
pub(crate) fn optional_str(request: &ConnectorRequest, name: &str) -> Result<Option<String>, ConnectorError> {
    match request.variable(name) {
        None => Ok(None),
        Some(_) => request.require_str(name).map(Some),
    }
}

/// A required non-empty string input.
pub(crate) fn require_text(request: &ConnectorRequest, name: &str) -> Result<String, ConnectorError> {
    let text = request.require_str(name)?;
    if text.trim().is_empty() {
        return Err(permanent(request, format!("input variable '{name}' is empty")));
    }
    Ok(text)
}

/// An optional context (JSON object) input.
pub(crate) fn optional_object(
    request: &ConnectorRequest,
    name: &str,
) -> Result<Option<Map<String, Value>>, ConnectorError> {
    match request.variable(name) {
        None => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object.clone())),
        Some(other) => Err(permanent(
            request,
            format!("input variable '{name}' must be a context (a JSON object), not {}", kind(other)),
        )),
    }
}

/// A required context (JSON object) input.
pub(crate) fn require_object(
    request: &ConnectorRequest,
    name: &str,
) -> Result<Map<String, Value>, ConnectorError> {
    request.require(name)?;
    optional_object(request, name)?
        .ok_or_else(|| permanent(request, format!("input variable '{name}' is missing")))
}

/// An optional non-negative integer input (a JSON number or a numeric string).
pub(crate) fn optional_count(request: &ConnectorRequest, name: &str) -> Result<Option<u64>, ConnectorError> {
    let Some(value) = request.variable(name) else { return Ok(None) };
    let parsed = match value {
        Value::Number(number) => number.as_u64().or_else(|| {
            number.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15).map(|f| f as u64)
        }),
        Value::String(text) => text.trim().parse::<u64>().ok(),
        _ => None,
    };
    parsed.map(Some).ok_or_else(|| {
        permanent(request, format!("input variable '{name}' must be a whole number ≥ 0, not {value}"))
    })
}

/// A setting (task header, else variable) with a default.
pub(crate) fn setting_or(request: &ConnectorRequest, name: &str, default: &str) -> String {
    request.setting(name).filter(|value| !value.trim().is_empty()).unwrap_or_else(|| default.to_owned())
}

/// The JSON type of a value, for messages (never the value: it may be personal data).
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a context",
    }
}

/// Percent-encodes one URL path segment (everything but RFC 3986 unreserved characters).
pub(crate) fn path_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A string field of a JSON object, if it is one.
pub(crate) fn text_field<'a>(value: &'a Value, name: &str) -> Option<&'a str> {
    value.get(name).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    pub(crate) fn request(job_type: &str, variables: Value, headers: &[(&str, &str)]) -> ConnectorRequest {
        let variables = match variables {
            Value::Object(object) => object.into_iter().collect(),
            _ => VariableMap::new(),
        };
        ConnectorRequest {
            job_type: job_type.to_owned(),
            element: "task".to_owned(),
            variables,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            idempotency_key: "7-42".to_owned(),
            attempt: 1,
            redelivered: false,
            user: None,
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path_segment("civil-register"), "civil-register");
        assert_eq!(path_segment("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(path_segment("é"), "%C3%A9");
    }

    #[test]
    fn ill_typed_inputs_are_permanent_and_named() {
        let request = request("t", serde_json::json!({"query": "x", "page": -1, "n": "12"}), &[]);
        let error = optional_object(&request, "query").unwrap_err();
        assert!(
            matches!(&error, ConnectorError::Permanent(m) if m.contains("'query'") && m.contains("task 'task'"))
        );
        assert!(optional_count(&request, "page").is_err());
        assert_eq!(optional_count(&request, "n").unwrap(), Some(12));
        assert_eq!(optional_count(&request, "absent").unwrap(), None);
        assert!(require_object(&request, "absent").unwrap_err().to_string().contains("'absent'"));
    }

    #[test]
    fn every_job_type_is_declared_once() {
        let contracts = contracts();
        let mut types: Vec<_> = contracts.iter().map(|c| c.job_type).collect();
        types.sort_unstable();
        let n = types.len();
        types.dedup();
        assert_eq!(types.len(), n, "a job type is declared twice");
        assert!(n >= 16, "{types:?}");
    }
}
