//! The one place tests build an app and talk to it: an engine on the memory store, a started shell
//! (with an in-process handler for job type `auto`), one API token per role, and `TestApp::send`,
//! which answers through `Router::oneshot` and checks every answer against the generated OpenAPI
//! document (status documented, body valid against its schema) — and, for Workflow BB routes, the 2xx
//! answers also against GovStack's own swagger.yaml.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod openapi;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use govflow_designer_api::{app, hash_token, ApiConfig, AppState, Role, TokenEntry, Waiters};
use govflow_engine::engine::{Engine, SystemClock};
use govflow_engine::runtime::VariableMap;
use govflow_engine::shell::{JobOutcome, Shell};
use govflow_engine::store::kv::KvStore;
use govflow_engine::store::memory::{memory_store, MemoryKv};
use serde_json::{json, Value};
use tower::ServiceExt;

pub type TestStore = KvStore<MemoryKv>;

/// The API token of each role in tests: `"{role}-token"`.
pub fn token(role: Role) -> String {
    format!("{role}-token")
}

pub fn test_config() -> ApiConfig {
    let mut config =
        ApiConfig { request_timeout: std::time::Duration::from_secs(20), ..ApiConfig::default() };
    config.auth.tokens = Role::ALL
        .iter()
        .map(|role| TokenEntry {
            sha256: hash_token(&token(*role)),
            role: *role,
            user: format!("{role}-user"),
            affiliation: Some("Civil Registry".to_owned()),
        })
        .collect();
    config
}

/// The GovStack Workflow BB specification folder (shared/ beside the repository, or $GOVSTACK_SPEC_DIR).
pub fn govstack_dir() -> PathBuf {
    match std::env::var_os("GOVSTACK_SPEC_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/govstack/workflow"),
    }
}

fn generated_spec() -> &'static openapi::Spec {
    static SPEC: OnceLock<openapi::Spec> = OnceLock::new();
    SPEC.get_or_init(|| openapi::Spec::new(govflow_designer_api::openapi::document()))
}

fn govstack_spec() -> &'static openapi::Spec {
    static SPEC: OnceLock<openapi::Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = govstack_dir().join("swagger.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("the GovStack swagger at {} is needed: {error}", path.display()));
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        openapi::Spec::new(serde_json::to_value(yaml).unwrap())
    })
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Vec<u8>,
    pub json: Value,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Answer {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        self
    }

    /// Asserts an error answer: status and code.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Answer {
        self.expect(status);
        assert_eq!(self.json["code"], code, "body: {}", self.text());
        assert!(
            self.json["message"].is_string() && self.json["details"].is_object(),
            "shape: {}",
            self.text()
        );
        self
    }
}

/// What a request carries.
pub enum Payload {
    None,
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

pub struct TestApp {
    pub router: Router,
    pub engine: Arc<Engine<TestStore>>,
    pub shell: Arc<Shell<TestStore>>,
    /// Every (method, template, status) answered, for coverage checks.
    pub seen: Mutex<BTreeSet<(String, String, u16)>>,
}

impl TestApp {
    pub async fn new() -> TestApp {
        TestApp::with_config(test_config()).await
    }

    pub async fn with_config(config: ApiConfig) -> TestApp {
        let engine = Arc::new(Engine::open(memory_store().unwrap(), Arc::new(SystemClock)).unwrap());
        let waiters = Waiters::new();
        let shell = Shell::builder(Arc::clone(&engine))
            .handler("auto", |job: govflow_engine::engine::JobHandle| async move {
                let mut variables = VariableMap::new();
                variables.insert("autoDone".to_owned(), json!(true));
                variables.insert("sawAttempt".to_owned(), json!(job.attempt));
                JobOutcome::Complete(variables)
            })
            .on_instance_ended(waiters.hook())
            .start()
            .await
            .unwrap();
        let shell = Arc::new(shell);
        let state = AppState::with_waiters(Arc::clone(&engine), Arc::clone(&shell), config, waiters);
        TestApp { router: app(state), engine, shell, seen: Mutex::new(BTreeSet::new()) }
    }

    /// Sends a request and checks the answer against the OpenAPI document(s).
    pub async fn send(&self, method: Method, path: &str, token: Option<&str>, payload: Payload) -> Answer {
        let answer = self.exchange(method.clone(), path, token, payload).await;
        self.check(&method, path, &answer);
        answer
    }

    /// Sends a request without a token and without the document check (routes the document cannot
    /// name, such as callbacks under a secret path segment).
    pub async fn send_unchecked(&self, method: Method, path: &str, payload: Payload) -> Answer {
        self.exchange(method, path, None, payload).await
    }

    async fn exchange(&self, method: Method, path: &str, token: Option<&str>, payload: Payload) -> Answer {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match payload {
            Payload::None => Body::empty(),
            Payload::Json(value) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(&value).unwrap())
            }
            Payload::Raw(content_type, bytes) => {
                builder = builder.header(header::CONTENT_TYPE, content_type);
                Body::from(bytes)
            }
        };
        let response = self.router.clone().oneshot(builder.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Answer { status, content_type, body, json }
    }

    fn check(&self, method: &Method, path: &str, answer: &Answer) {
        let bare = path.split('?').next().unwrap_or(path);
        let status = answer.status.as_u16();
        // Routes that do not exist are not in the document: they must answer the error shape.
        if status == 404 && generated_spec().operation(method.as_str(), bare).is_none() {
            assert_eq!(answer.json["code"], "NOT_FOUND", "unknown route {method} {bare}: {}", answer.text());
            return;
        }
        if status == 405 {
            assert_eq!(answer.json["code"], "METHOD_NOT_ALLOWED", "{}", answer.text());
            return;
        }
        let template = generated_spec()
            .check(method.as_str(), bare, status, &answer.content_type, &answer.body)
            .unwrap_or_else(|error| panic!("OpenAPI check failed: {error}"));
        // Every 4xx/5xx answer has the one error shape.
        if status >= 400 && !template.starts_with("/api/v1/callbacks") {
            assert!(
                answer.json["code"].is_string()
                    && answer.json["message"].is_string()
                    && answer.json["details"].is_object(),
                "{method} {bare} {status}: not the error shape: {}",
                answer.text()
            );
        }
        if status >= 500 {
            let message = answer.json["message"].as_str().unwrap_or_default();
            assert!(
                ["internal error", "the engine cannot", "the request took too long", "unavailable"]
                    .iter()
                    .any(|m| message.contains(m)),
                "a 5xx must reveal no internals: {message}"
            );
        }
        if (200..300).contains(&status) {
            if let Some(swagger_path) = workflow_bb_path(bare) {
                govstack_spec()
                    .check(method.as_str(), &swagger_path, status, &answer.content_type, &answer.body)
                    .unwrap_or_else(|error| panic!("GovStack swagger check failed: {error}"));
            }
        }
        self.seen.lock().unwrap().insert((method.to_string(), template, status));
    }

    pub async fn get(&self, role: Role, path: &str) -> Answer {
        self.send(Method::GET, path, Some(&token(role)), Payload::None).await
    }

    pub async fn post(&self, role: Role, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(&token(role)), Payload::Json(body)).await
    }

    pub async fn put(&self, role: Role, path: &str, body: Value) -> Answer {
        self.send(Method::PUT, path, Some(&token(role)), Payload::Json(body)).await
    }

    pub async fn delete(&self, role: Role, path: &str) -> Answer {
        self.send(Method::DELETE, path, Some(&token(role)), Payload::None).await
    }

    /// Deploys a BPMN file as a raw body; asserts success.
    pub async fn deploy(&self, name: &str, xml: &str) -> Answer {
        let answer = self
            .send(
                Method::POST,
                &format!("/api/v1/deployments?name={name}"),
                Some(&token(Role::Designer)),
                Payload::Raw("application/xml", xml.as_bytes().to_vec()),
            )
            .await;
        assert!(answer.status.is_success(), "deploy {name}: {}", answer.text());
        answer
    }

    /// Starts an instance through the native API; its key.
    pub async fn start(&self, process_id: &str, variables: Value) -> u64 {
        let answer = self
            .post(
                Role::Operator,
                "/api/v1/instances",
                json!({"processId": process_id, "variables": variables}),
            )
            .await;
        answer.expect(201);
        answer.json["instance"].as_u64().unwrap()
    }
}

/// The swagger path of a Workflow BB request (the mediator prefix dropped; `/instances` is
/// `/instances/` there); `None` for other routes.
fn workflow_bb_path(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    let find = |segments: &[&str]| -> Option<String> {
        match segments.get(1) {
            Some(&"processes") => Some(segments.join("/")),
            Some(&"instances") if segments.len() == 2 || (segments.len() == 3 && segments[2].is_empty()) => {
                Some("/instances/".to_owned())
            }
            Some(&"instances") => Some(segments.join("/")),
            _ => None,
        }
    };
    if segments.get(1) == Some(&"api") {
        return None;
    }
    find(&segments).or_else(|| {
        // /{instance}/{memberClass}/{memberCode}/{applicationCode}/...
        (segments.len() > 5).then(|| [&[""][..], &segments[5..]].concat()).and_then(|rest| find(&rest))
    })
}

/// A process: start → `verify` (external worker) → `review` (user task with an embedded form) →
/// wait for message `payment-settled` (correlation key `=applicationId`) → end.
pub const PERMIT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="permit-defs" targetNamespace="http://govflow.example/test">
  <bpmn:message id="settled" name="payment-settled"><bpmn:extensionElements><zeebe:subscription correlationKey="=applicationId" /></bpmn:extensionElements></bpmn:message>
  <bpmn:process id="permit" name="Market stall permit" isExecutable="true">
    <bpmn:documentation>Issues a market stall permit.</bpmn:documentation>
    <bpmn:extensionElements>
      <zeebe:userTaskForm id="review-form">{"components":[{"label":"Approve","type":"checkbox","key":"approved"}],"type":"default","id":"review"}</zeebe:userTaskForm>
    </bpmn:extensionElements>
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="verify" />
    <bpmn:serviceTask id="verify" name="Verify applicant"><bpmn:extensionElements><zeebe:taskDefinition type="verify" retries="3" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:sequenceFlow id="f2" sourceRef="verify" targetRef="review" />
    <bpmn:userTask id="review" name="Review application"><bpmn:extensionElements>
      <zeebe:formDefinition formKey="camunda-forms:bpmn:review-form" />
      <zeebe:assignmentDefinition candidateGroups="clerks" />
    </bpmn:extensionElements></bpmn:userTask>
    <bpmn:sequenceFlow id="f3" sourceRef="review" targetRef="paid" />
    <bpmn:intermediateCatchEvent id="paid"><bpmn:messageEventDefinition messageRef="settled" /></bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f4" sourceRef="paid" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>"#;

/// A process whose only task runs in-process (`auto`): it ends on its own.
pub const QUICK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="quick-defs" targetNamespace="http://govflow.example/test">
  <bpmn:process id="quick" name="Quick check" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="auto" />
    <bpmn:serviceTask id="auto"><bpmn:extensionElements><zeebe:taskDefinition type="auto" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:sequenceFlow id="f2" sourceRef="auto" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>"#;

/// A BPMN file with an error: the flow leads to an element that does not exist.
pub const BROKEN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="broken-defs" targetNamespace="http://govflow.example/test">
  <bpmn:process id="broken" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="nowhere" />
  </bpmn:process>
</bpmn:definitions>"#;
