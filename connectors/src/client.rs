//! One HTTP call to a building block: directly to its base URL, or through the Information Mediator as
//! `{mediator}/r1/{INSTANCE}/{CLASS}/{MEMBER}/{SUBSYSTEM}/{SERVICE}/{path}` with our client header,
//! `X-Road-Id` = the job's idempotency key and `X-Road-UserId` = the acting user where known.
//!
//! # Failure mapping
//! | what happened | becomes |
//! |---|---|
//! | connection refused, reset, DNS, timeout | [`ConnectorError::Retryable`] |
//! | `X-Road-Error: Server.*` (the far side or its security server failed) | retryable |
//! | `X-Road-Error: Client.*` (we are not allowed, or sent a bad request) | [`ConnectorError::Permanent`] |
//! | HTTP 5xx, 429 (with `Retry-After`), 408 | retryable |
//! | any other answer | returned; the connector interprets 4xx (404 → `RECORD_NOT_FOUND`, ...) |
//!
//! Every message names the building block, the operation and the URL path (never a header value).

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use serde_json::Value;

use crate::config::{Bb, ConnectorsConfig};
use crate::connector::ConnectorError;

/// The body of a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    None,
    Json(Value),
    Form(Vec<(String, String)>),
}

/// One call to a building block.
#[derive(Debug, Clone, PartialEq)]
pub struct BbRequest {
    pub method: Method,
    /// The path below the building block's root, starting with `/`.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// For messages: what the call does, e.g. "registries read".
    pub operation: String,
    /// `X-Road-Id` (through the mediator).
    pub idempotency_key: Option<String>,
    /// `X-Road-UserId` (through the mediator).
    pub user: Option<String>,
}

impl BbRequest {
    pub fn new(method: Method, path: impl Into<String>, operation: impl Into<String>) -> BbRequest {
        BbRequest {
            method,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Body::None,
            operation: operation.into(),
            idempotency_key: None,
            user: None,
        }
    }

    pub fn json(mut self, body: Value) -> BbRequest {
        self.body = Body::Json(body);
        self
    }

    pub fn form(mut self, fields: Vec<(String, String)>) -> BbRequest {
        self.body = Body::Form(fields);
        self
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> BbRequest {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn query(mut self, name: &str, value: impl Into<String>) -> BbRequest {
        self.query.push((name.to_owned(), value.into()));
        self
    }

    /// Passes the job's idempotency key and acting user on (as `X-Road-Id` / `X-Road-UserId`).
    pub fn for_job(mut self, idempotency_key: &str, user: Option<&str>) -> BbRequest {
        self.idempotency_key = Some(idempotency_key.to_owned());
        self.user = user.map(str::to_owned);
        self
    }
}

/// A building block's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct BbResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    /// The path called, for messages.
    pub path: String,
}

impl BbResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON (`Null` when empty); not JSON is a permanent failure naming the call.
    pub fn json(&self, bb: Bb, operation: &str) -> Result<Value, ConnectorError> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|error| {
            ConnectorError::Permanent(format!(
                "{bb} {operation}: the answer (HTTP {}) from {} is not JSON: {error}",
                self.status, self.path
            ))
        })
    }

    /// The body as text, cut to 300 characters (for messages).
    pub fn excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let mut excerpt: String = text.chars().take(300).collect();
        if text.chars().count() > 300 {
            excerpt.push('…');
        }
        excerpt
    }

    /// A 4xx answer the connector does not model: a permanent failure naming the call and the answer.
    pub fn unexpected(&self, bb: Bb, operation: &str) -> ConnectorError {
        ConnectorError::Permanent(format!(
            "{bb} {operation}: unexpected HTTP {} from {}: {}",
            self.status,
            self.path,
            self.excerpt()
        ))
    }
}

/// Calls building blocks as the configuration says.
#[derive(Debug, Clone)]
pub struct BbClient {
    http: reqwest::Client,
    config: std::sync::Arc<ConnectorsConfig>,
}

impl BbClient {
    pub fn new(config: std::sync::Arc<ConnectorsConfig>) -> Result<BbClient, ConnectorError> {
        // Redirects are answers to read (OIDC `/authorize` answers with one), never to follow silently.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|error| ConnectorError::Permanent(format!("cannot build the HTTP client: {error}")))?;
        Ok(BbClient { http, config })
    }

    pub fn config(&self) -> &ConnectorsConfig {
        &self.config
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The URL a call to `bb` at `path` goes to, and whether it goes through the mediator.
    pub fn url(&self, bb: Bb, path: &str) -> Result<(String, bool), ConnectorError> {
        let config = self.config.bb(bb);
        match (&config.service, &config.url, &self.config.mediator) {
            (Some(service), _, Some(mediator)) => Ok((
                format!("{}/r1/{}{}", mediator.url.trim_end_matches('/'), service.trim_matches('/'), path),
                true,
            )),
            (Some(_), _, None) => Err(ConnectorError::Permanent(format!(
                "{bb}: connectors.{}.service needs [connectors.mediator]",
                bb.name()
            ))),
            (None, Some(url), _) => Ok((format!("{}{}", url.trim_end_matches('/'), path), false)),
            (None, None, _) => Err(ConnectorError::Permanent(format!(
                "{bb} is not configured: set connectors.{0}.url or connectors.{0}.service in govflow.toml",
                bb.name()
            ))),
        }
    }

    /// Our client id (`INSTANCE/CLASS/MEMBER/SUBSYSTEM`), when a mediator is configured.
    pub fn client_id(&self) -> Option<&str> {
        self.config.mediator.as_ref().map(|mediator| mediator.client.as_str())
    }

    /// Makes the call; see the module docs for how failures map.
    pub async fn call(&self, bb: Bb, request: BbRequest) -> Result<BbResponse, ConnectorError> {
        let (url, mediated) = self.url(bb, &request.path)?;
        let label = format!("{bb} {}", request.operation);
        self.send(&label, &url, mediated, self.config.timeout(bb), &request).await
    }

    /// Makes a call to `url` (the generic HTTP connector's absolute URLs come here directly), with the
    /// headers, the mediator's headers when `mediated`, and the failure mapping of the module docs.
    /// `label` starts every message (e.g. "registries BB read").
    pub async fn send(
        &self,
        label: &str,
        url: &str,
        mediated: bool,
        timeout: Duration,
        request: &BbRequest,
    ) -> Result<BbResponse, ConnectorError> {
        let mut builder = self.http.request(request.method.clone(), url).timeout(timeout);
        if !request.query.is_empty() {
            builder = builder.query(&request.query);
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            insert(&mut headers, name, value, label)?;
        }
        if mediated {
            if let Some(mediator) = &self.config.mediator {
                insert(&mut headers, mediator.client_header.name(), &mediator.client, label)?;
            }
            if let Some(key) = &request.idempotency_key {
                insert(&mut headers, "X-Road-Id", key, label)?;
            }
            if let Some(user) = &request.user {
                insert(&mut headers, "X-Road-UserId", user, label)?;
            }
        }
        builder = builder.headers(headers);
        builder = match &request.body {
            Body::None => builder,
            Body::Json(body) => builder.json(body),
            Body::Form(fields) => builder.form(fields),
        };
        let path = &request.path;
        let response = builder.send().await.map_err(|error| transport_error(label, path, timeout, &error))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|error| transport_error(label, path, timeout, &error))?;
        let answer = BbResponse { status, headers, body, path: path.clone() };
        if let Some(code) = answer.headers.get("X-Road-Error").and_then(|value| value.to_str().ok()) {
            let detail = mediator_detail(&answer);
            let message = format!(
                "{label}: the Information Mediator answered {code} (HTTP {status}) for {path}: {detail}"
            );
            return Err(if code.starts_with("Client") {
                ConnectorError::Permanent(message)
            } else {
                ConnectorError::retryable(message)
            });
        }
        if status >= 500 || status == 429 || status == 408 {
            let retry_after = answer
                .headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(ConnectorError::Retryable {
                message: format!("{label}: HTTP {status} from {path}: {}", answer.excerpt()),
                retry_after,
            });
        }
        Ok(answer)
    }
}

fn insert(headers: &mut HeaderMap, name: &str, value: &str, label: &str) -> Result<(), ConnectorError> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConnectorError::Permanent(format!("{label}: '{name}' is not a valid header name")))?;
    let value = HeaderValue::from_str(value).map_err(|_| {
        ConnectorError::Permanent(format!("{label}: the value of header '{name}' is not valid in HTTP"))
    })?;
    headers.insert(header, value);
    Ok(())
}

fn transport_error(label: &str, path: &str, timeout: Duration, error: &reqwest::Error) -> ConnectorError {
    if error.is_builder() {
        return ConnectorError::Permanent(format!("{label} ({path}): the URL is not valid"));
    }
    let what = if error.is_timeout() {
        format!("no answer within {} ms", timeout.as_millis())
    } else if error.is_connect() {
        "cannot connect (connection refused or host unreachable)".to_owned()
    } else {
        // reqwest's Display names the URL; keep only the cause chain.
        let mut cause = String::new();
        let mut source = std::error::Error::source(error);
        while let Some(inner) = source {
            cause = inner.to_string();
            source = inner.source();
        }
        if cause.is_empty() {
            "the connection failed".to_owned()
        } else {
            format!("the connection failed: {cause}")
        }
    };
    ConnectorError::retryable(format!("{label} ({path}): {what}"))
}

/// The mediator's error body `{type, message, detail}`, as one line.
fn mediator_detail(answer: &BbResponse) -> String {
    match serde_json::from_slice::<Value>(&answer.body) {
        Ok(body) => {
            let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or("").to_owned();
            let parts: Vec<String> =
                [field("message"), field("detail")].into_iter().filter(|part| !part.is_empty()).collect();
            if parts.is_empty() {
                answer.excerpt()
            } else {
                parts.join(": ")
            }
        }
        Err(_) => answer.excerpt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MediatorConfig;

    fn client(config: ConnectorsConfig) -> BbClient {
        BbClient::new(std::sync::Arc::new(config)).unwrap()
    }

    #[test]
    fn routes_directly_or_through_the_mediator() {
        let mut config = ConnectorsConfig::default();
        config.payments.url = Some("http://payments.local/".into());
        config.registries.service = Some("GOV/GOV/REG/REGISTRIES/registries".into());
        config.mediator = Some(MediatorConfig {
            url: "http://ss.local:8081".into(),
            client: "GOV/GOV/WORKFLOW/GOVFLOW".into(),
            client_header: Default::default(),
        });
        let client = client(config);
        assert_eq!(
            client.url(Bb::Payments, "/batchtransactions").unwrap(),
            ("http://payments.local/batchtransactions".to_owned(), false)
        );
        assert_eq!(
            client.url(Bb::Registries, "/data/civil-register/1.0/read").unwrap(),
            (
                "http://ss.local:8081/r1/GOV/GOV/REG/REGISTRIES/registries/data/civil-register/1.0/read"
                    .to_owned(),
                true
            )
        );
        let error = client.url(Bb::Messaging, "/send/email/single").unwrap_err();
        assert!(error.to_string().contains("connectors.messaging.url"), "{error}");
    }
}
