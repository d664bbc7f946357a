//! Bad input on every endpoint that takes input, as one table: each row is a request an admitted role
//! sends and the status and code it must get (422 native, 400 Workflow BB, 404 unknown, 409 state,
//! 413 too large, 415 not JSON); out-of-range numbers are among them (never a panic). Then the limits (body sizes, page sizes, waits), the callback secret,
//! and a self-test of the OpenAPI checker the other tests rely on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use axum::http::Method;
use common::openapi::{no_duplicate_keys, Spec};
use common::{test_config, token, Payload, TestApp, PERMIT, QUICK};
use govflow_designer_api::hash_token;
use govflow_designer_api::Role::{self, Admin, Designer, Operator, Worker};
use serde_json::{json, Value};

enum Body {
    None,
    Json(Value),
    Text(&'static str),
}

/// (method, path, role, body, status, code).
#[rustfmt::skip]
fn table(instance: u64) -> Vec<(&'static str, String, Role, Body, u16, &'static str)> {
    let i = instance;
    vec![
        // Deployments and definitions.
        (
            "POST",
            "/api/v1/deployments?name=notes.txt".into(),
            Designer,
            Body::Text("hello"),
            422,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/api/v1/deployments?name=x.bpmn".into(),
            Designer,
            Body::Text("<not-xml"),
            422,
            "INVALID_BPMN",
        ),
        (
            "POST",
            "/api/v1/deployments?name=x.dmn".into(),
            Designer,
            Body::Text("<definitions/>"),
            422,
            "INVALID_BPMN",
        ),
        ("GET", "/api/v1/definitions?limit=0".into(), Admin, Body::None, 422, "INVALID_INPUT"),
        ("GET", "/api/v1/definitions?limit=100000".into(), Admin, Body::None, 422, "INVALID_INPUT"),
        ("GET", "/api/v1/definitions?after=nocolon".into(), Admin, Body::None, 422, "INVALID_INPUT"),
        ("GET", "/api/v1/definitions/nothing".into(), Admin, Body::None, 404, "NOT_FOUND"),
        ("GET", "/api/v1/definitions/permit/versions/9".into(), Admin, Body::None, 404, "NOT_FOUND"),
        ("GET", "/api/v1/definitions/permit/versions/one".into(), Admin, Body::None, 422, "INVALID_INPUT"),
        ("GET", "/api/v1/definitions/permit/versions/9/xml".into(), Admin, Body::None, 404, "NOT_FOUND"),
        (
            "POST",
            "/api/v1/definitions/permit/versions/9/enable".into(),
            Designer,
            Body::None,
            404,
            "NOT_FOUND",
        ),
        (
            "POST",
            "/api/v1/definitions/permit/versions/9/disable".into(),
            Designer,
            Body::None,
            404,
            "NOT_FOUND",
        ),
        ("DELETE", "/api/v1/definitions/permit/versions/1".into(), Designer, Body::None, 409, "CONFLICT"),
        // Instances.
        (
            "POST",
            "/api/v1/instances".into(),
            Operator,
            Body::Json(json!({"processId": "nothing"})),
            404,
            "NOT_FOUND",
        ),
        (
            "POST",
            "/api/v1/instances".into(),
            Operator,
            Body::Json(json!({"processId": 5})),
            422,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/api/v1/instances".into(),
            Operator,
            Body::Json(json!({"processId": "permit", "variables": [1]})),
            422,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/api/v1/instances".into(),
            Operator,
            Body::Json(json!({"processId": "permit", "color": "red"})),
            422,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/api/v1/instances".into(),
            Operator,
            Body::Json(json!({"processId": "permit", "startEvent": "nowhere"})),
            422,
            "INVALID_INPUT",
        ),
        ("POST", "/api/v1/instances".into(), Operator, Body::Text("{\"processId\": "), 422, "INVALID_INPUT"),
        (
            "POST",
            "/api/v1/instances?wait=forever".into(),
            Operator,
            Body::Json(json!({"processId": "permit"})),
            422,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/api/v1/instances?wait=completed&timeout=soon".into(),
            Operator,
            Body::Json(json!({"processId": "permit"})),
            422,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/api/v1/instances?timeout=1s".into(),
            Operator,
            Body::Json(json!({"processId": "permit"})),
            422,
            "INVALID_INPUT",
        ),
        ("GET", "/api/v1/instances?state=sleeping".into(), Operator, Body::None, 422, "INVALID_INPUT"),
        (
            "GET",
            "/api/v1/instances?startedAfter=yesterday".into(),
            Operator,
            Body::None,
            422,
            "INVALID_INPUT",
        ),
        ("GET", "/api/v1/instances?after=x".into(), Operator, Body::None, 422, "INVALID_INPUT"),
        ("GET", "/api/v1/instances/999".into(), Operator, Body::None, 404, "NOT_FOUND"),
        ("GET", "/api/v1/instances/abc".into(), Operator, Body::None, 422, "INVALID_INPUT"),
        ("POST", "/api/v1/instances/999/cancel".into(), Operator, Body::None, 404, "NOT_FOUND"),
        (
            "POST",
            format!("/api/v1/instances/{i}/variables"),
            Operator,
            Body::Json(json!({"variables": 3})),
            422,
            "INVALID_INPUT",
        ),
        (
            "POST",
            format!("/api/v1/instances/{i}/variables"),
            Operator,
            Body::Json(json!({"variables": {}, "scope": 999})),
            422,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/api/v1/instances/999/variables".into(),
            Operator,
            Body::Json(json!({"variables": {}})),
            404,
            "NOT_FOUND",
        ),
        ("GET", "/api/v1/instances/999/events".into(), Operator, Body::None, 404, "NOT_FOUND"),
        ("GET", format!("/api/v1/instances/{i}/events?limit=-1"), Operator, Body::None, 422, "INVALID_INPUT"),
        ("GET", format!("/api/v1/instances/{i}/replay?to=0"), Operator, Body::None, 422, "INVALID_INPUT"),
        ("GET", "/api/v1/instances/999/replay".into(), Operator, Body::None, 404, "NOT_FOUND"),
        ("GET", "/api/v1/instances/999/verify".into(), Admin, Body::None, 404, "NOT_FOUND"),
        ("GET", "/api/v1/operations?kind=rename".into(), Admin, Body::None, 422, "INVALID_INPUT"),
        ("GET", "/api/v1/operations?from=monday".into(), Admin, Body::None, 422, "INVALID_INPUT"),
        // Messages and signals.
        ("POST", "/api/v1/messages".into(), Operator, Body::Json(json!({"name": ""})), 422, "INVALID_INPUT"),
        (
            "POST",
            "/api/v1/messages".into(),
            Operator,
            Body::Json(json!({"name": "m", "timeToLive": -5})),
            422,
            "INVALID_INPUT",
        ),
        ("POST", "/api/v1/signals".into(), Operator, Body::Json(json!({"name": " "})), 422, "INVALID_INPUT"),
        ("POST", "/api/v1/messages".into(), Operator, Body::Json(json!({"name": "m", "timeToLive": u64::MAX})), 422, "INVALID_INPUT"),
        ("POST", format!("/api/v1/instances?wait=completed&timeout={}m", u64::MAX), Operator, Body::Json(json!({"processId": "nothing"})), 404, "NOT_FOUND"),
        // User tasks.
        ("GET", "/api/v1/user-tasks?after=x".into(), Operator, Body::None, 422, "INVALID_INPUT"),
        ("GET", "/api/v1/user-tasks/x".into(), Operator, Body::None, 422, "INVALID_INPUT"),
        ("GET", format!("/api/v1/user-tasks/{i}-999"), Operator, Body::None, 404, "NOT_FOUND"),
        (
            "POST",
            format!("/api/v1/user-tasks/{i}-999/claim"),
            Operator,
            Body::Json(json!({})),
            404,
            "NOT_FOUND",
        ),
        ("POST", format!("/api/v1/user-tasks/{i}-999/unclaim"), Operator, Body::None, 404, "NOT_FOUND"),
        (
            "POST",
            format!("/api/v1/user-tasks/{i}-999/complete"),
            Operator,
            Body::Json(json!({})),
            404,
            "NOT_FOUND",
        ),
        // Jobs.
        (
            "POST",
            "/api/v1/jobs/activate".into(),
            Worker,
            Body::Json(json!({"type": ""})),
            422,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/api/v1/jobs/activate".into(),
            Worker,
            Body::Json(json!({"type": "verify", "maxJobs": 0})),
            422,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/api/v1/jobs/activate".into(),
            Worker,
            Body::Json(json!({"type": "verify", "lease": 0})),
            422,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/api/v1/jobs/activate".into(),
            Worker,
            Body::Json(json!({"maxJobs": 1})),
            422,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/api/v1/jobs/nonsense/complete".into(),
            Worker,
            Body::Json(json!({})),
            422,
            "INVALID_INPUT",
        ),
        ("POST", "/api/v1/jobs/999-4/complete".into(), Worker, Body::Json(json!({})), 404, "NOT_FOUND"),
        ("POST", format!("/api/v1/jobs/{i}-999/complete"), Worker, Body::Json(json!({})), 404, "NOT_FOUND"),
        (
            "POST",
            format!("/api/v1/jobs/{i}-999/fail"),
            Worker,
            Body::Json(json!({"errorMessage": "x"})),
            404,
            "NOT_FOUND",
        ),
        ("POST", format!("/api/v1/jobs/{i}-999/fail"), Worker, Body::Json(json!({})), 422, "INVALID_INPUT"),
        (
            "POST",
            format!("/api/v1/jobs/{i}-999/error"),
            Worker,
            Body::Json(json!({"errorCode": ""})),
            422,
            "INVALID_INPUT",
        ),
        (
            "POST",
            format!("/api/v1/jobs/{i}-999/error"),
            Worker,
            Body::Json(json!({"errorCode": "E"})),
            404,
            "NOT_FOUND",
        ),
        ("POST", "/api/v1/jobs/activate".into(), Worker, Body::Json(json!({"type": "verify", "lease": u64::MAX})), 422, "INVALID_INPUT"),
        ("POST", "/api/v1/jobs/activate".into(), Worker, Body::Json(json!({"type": "verify", "requestTimeout": u64::MAX, "maxJobs": 1})), 200, ""),
        // Incidents.
        ("GET", "/api/v1/incidents?after=1".into(), Operator, Body::None, 422, "INVALID_INPUT"),
        ("POST", "/api/v1/incidents/x/resolve".into(), Operator, Body::Json(json!({})), 422, "INVALID_INPUT"),
        ("POST", "/api/v1/incidents/999-1/resolve".into(), Operator, Body::Json(json!({})), 404, "NOT_FOUND"),
        (
            "POST",
            format!("/api/v1/incidents/{i}-999/resolve"),
            Operator,
            Body::Json(json!({})),
            409,
            "CONFLICT",
        ),
        // The Workflow BB answers invalid input with 400.
        ("GET", "/processes?limit=x".into(), Operator, Body::None, 400, "INVALID_INPUT"),
        ("GET", "/processes/bad%20id!".into(), Operator, Body::None, 400, "INVALID_INPUT"),
        ("GET", "/processes/nothing".into(), Operator, Body::None, 404, "NOT_FOUND"),
        (
            "POST",
            "/processes".into(),
            Designer,
            Body::Json(json!({"name": "x", "type": "Secret", "version": "1"})),
            400,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/processes".into(),
            Designer,
            Body::Json(json!({"name": "x", "type": "Public", "version": "1"})),
            400,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/processes".into(),
            Designer,
            Body::Json(
                json!({"name": "x", "type": "Public", "version": "1", "processBody": [{"code": "bpmn", "value": "<broken"}]}),
            ),
            400,
            "INVALID_BPMN",
        ),
        ("PUT", "/processes/permit".into(), Designer, Body::Json(json!({})), 400, "INVALID_INPUT"),
        (
            "PUT",
            "/processes/nothing".into(),
            Designer,
            Body::Json(json!({"enabled": true})),
            404,
            "NOT_FOUND",
        ),
        ("DELETE", "/processes/permit".into(), Designer, Body::None, 409, "CONFLICT"),
        ("DELETE", "/processes/nothing".into(), Designer, Body::None, 404, "NOT_FOUND"),
        ("POST", "/processes/permit/start".into(), Operator, Body::Json(json!({})), 400, "INVALID_INPUT"),
        (
            "POST",
            "/processes/permit/start".into(),
            Operator,
            Body::Json(json!({"processStartedBy": " "})),
            400,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/processes/permit:1/start".into(),
            Operator,
            Body::Json(json!({"processStartedBy": "x"})),
            400,
            "INVALID_INPUT",
        ),
        (
            "POST",
            "/processes/nothing/start".into(),
            Operator,
            Body::Json(json!({"processStartedBy": "x"})),
            404,
            "NOT_FOUND",
        ),
        ("GET", "/instances?processId=a%20b".into(), Operator, Body::None, 400, "INVALID_INPUT"),
        ("GET", "/instances/abc".into(), Operator, Body::None, 400, "INVALID_INPUT"),
        ("GET", "/instances/999".into(), Operator, Body::None, 404, "NOT_FOUND"),
        ("POST", "/instances/abc/stop".into(), Operator, Body::None, 400, "INVALID_INPUT"),
        ("POST", "/instances/999/stop".into(), Operator, Body::None, 404, "NOT_FOUND"),
        ("GET", "/GOV/GOV/1234/WORKFLOW/instances/abc".into(), Operator, Body::None, 400, "INVALID_INPUT"),
        // JSON routes want JSON.
        ("POST", "/api/v1/messages".into(), Operator, Body::None, 415, "UNSUPPORTED_MEDIA_TYPE"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_status_and_code() {
    let app = TestApp::new().await;
    app.deploy("permit.bpmn", PERMIT).await;
    let instance = app.start("permit", json!({"applicationId": "B-1"})).await;
    for (method, path, role, body, status, code) in table(instance) {
        let payload = match body {
            Body::None => Payload::None,
            Body::Json(value) => Payload::Json(value),
            Body::Text(text) => Payload::Raw("application/json", text.as_bytes().to_vec()),
        };
        // Deployments take XML: the raw-text rows there are files.
        let payload = match (path.starts_with("/api/v1/deployments"), payload) {
            (true, Payload::Raw(_, bytes)) => Payload::Raw("application/xml", bytes),
            (_, payload) => payload,
        };
        let answer = app
            .send(Method::from_bytes(method.as_bytes()).unwrap(), &path, Some(&token(role)), payload)
            .await;
        assert_eq!(answer.status.as_u16(), status, "{method} {path}: {}", answer.text());
        if status >= 400 {
            assert_eq!(answer.json["code"], code, "{method} {path}: {}", answer.text());
        }
    }
    // Nothing above changed the instance.
    let detail = app.get(Operator, &format!("/api/v1/instances/{instance}")).await;
    assert_eq!(detail.json["state"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_enforced() {
    let mut config = test_config();
    config.max_deploy_bytes = 4096;
    config.max_body_bytes = 1024;
    config.max_page_size = 3;
    config.default_page_size = 2;
    config.request_timeout = Duration::from_secs(2);
    let app = TestApp::with_config(config).await;
    let big = format!("<!-- {} -->{PERMIT}", "x".repeat(4096));
    let answer = app
        .send(
            Method::POST,
            "/api/v1/deployments?name=big.bpmn",
            Some(&token(Designer)),
            Payload::Raw("application/xml", big.into_bytes()),
        )
        .await;
    answer.expect_error(413, "PAYLOAD_TOO_LARGE");
    let big_json = json!({"name": "m", "variables": {"blob": "y".repeat(2048)}});
    app.post(Operator, "/api/v1/messages", big_json).await.expect_error(413, "PAYLOAD_TOO_LARGE");
    // A deployment may be larger than other bodies.
    app.deploy("permit.bpmn", PERMIT).await.expect(201);
    let padded = format!("{QUICK}{}", " ".repeat(1200));
    let body = json!({"name": "Quick", "type": "None", "version": "1", "processBody": [{"code": "bpmn", "value": padded}]});
    app.post(Designer, "/processes", body).await.expect(201);
    for n in 0..5 {
        app.start("permit", json!({"n": n})).await;
    }
    let page = app.get(Operator, "/api/v1/instances").await;
    assert_eq!(page.expect(200).json["items"].as_array().unwrap().len(), 2, "default page size");
    let next = page.json["next"].as_u64().unwrap();
    let rest = app.get(Operator, &format!("/api/v1/instances?after={next}&limit=3")).await;
    assert_eq!(rest.json["items"].as_array().unwrap().len(), 3);
    assert_eq!(rest.json["next"], Value::Null);
    app.get(Operator, "/api/v1/instances?limit=4").await.expect_error(422, "INVALID_INPUT");
    assert_eq!(app.get(Operator, "/processes").await.json.as_array().unwrap().len(), 2);
    // A long poll asking for a minute waits at most the request timeout less one second.
    let started = Instant::now();
    let answer =
        app.post(Worker, "/api/v1/jobs/activate", json!({"type": "nobody", "requestTimeout": 60_000})).await;
    assert_eq!(answer.expect(200).json["jobs"], json!([]));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(2), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_message_ids_conflict_and_buffered_messages_wait() {
    let app = TestApp::new().await;
    app.deploy("permit.bpmn", PERMIT).await;
    let message = json!({"name": "payment-settled", "correlationKey": "C-1", "timeToLive": 60_000, "messageId": "pay-1"});
    let first = app.post(Operator, "/api/v1/messages", message.clone()).await;
    assert!(first.expect(200).json["buffered"].is_u64());
    app.post(Operator, "/api/v1/messages", message).await.expect_error(409, "CONFLICT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_need_the_secret_when_one_is_configured() {
    let mut config = test_config();
    config.callback_secret_sha256 = Some(hash_token("s3cret"));
    let app = TestApp::with_config(config).await;
    let body = || Payload::Json(json!({"batchId": "B", "status": "COMPLETED"}));
    // Not in the OpenAPI document (the secret is a path segment), so sent without the document check.
    let known = app.send_unchecked(Method::POST, "/api/v1/callbacks/s3cret/payments/77-1", body()).await;
    assert_eq!(known.status.as_u16(), 404);
    assert_eq!(known.json["code"], "UNKNOWN_JOB", "the secret lets the callback through to the job lookup");
    let wrong = app.send_unchecked(Method::POST, "/api/v1/callbacks/guess/payments/77-1", body()).await;
    assert_eq!(wrong.json["code"], "NOT_FOUND");
    let none = app.send_unchecked(Method::POST, "/api/v1/callbacks/payments/77-1", body()).await;
    assert_eq!(none.json["code"], "NOT_FOUND");
}

#[test]
fn the_openapi_checker_catches_wrong_answers() {
    let spec = Spec::new(govflow_designer_api::openapi::document());
    let ok = br#"{"items": [], "next": null}"#;
    spec.check("GET", "/api/v1/instances", 200, "application/json", ok).unwrap();
    let wrong_type = br#"{"items": [{"instance": "one"}], "next": null}"#;
    assert!(spec.check("GET", "/api/v1/instances", 200, "application/json", wrong_type).is_err());
    let missing = br#"{"next": null}"#;
    assert!(spec.check("GET", "/api/v1/instances", 200, "application/json", missing).is_err());
    assert!(
        spec.check("GET", "/api/v1/instances", 299, "application/json", ok).is_err(),
        "undocumented status"
    );
    assert!(spec.check("GET", "/api/v1/instances", 200, "text/html", ok).is_err(), "undocumented media type");
    let error = br#"{"code": "NOT_FOUND", "message": "m", "details": {}}"#;
    spec.check("GET", "/api/v1/instances/7", 404, "application/json", error).unwrap();
    assert!(spec.check("GET", "/api/v1/instances/7", 404, "application/json", br#"{"error": "x"}"#).is_err());
    assert!(spec.check("POST", "/api/v1/jobs/1-1/complete", 204, "", b"").is_ok());
    assert!(spec.check("GET", "/no/such/route", 200, "application/json", ok).is_err());
    assert!(no_duplicate_keys(br#"{"a": 1, "b": {"a": 2}}"#).is_ok());
    assert!(no_duplicate_keys(br#"{"a": 1, "a": 2}"#).is_err());
}
