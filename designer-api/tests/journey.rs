//! The full journey of docs/api.md through `app().oneshot`: deploy → start → external worker → user
//! task → message → history and verify, then incidents, cancellation, synchronous start, the Workflow
//! BB routes (also under the Information Mediator prefix) and the callbacks. Every answer is checked
//! against the OpenAPI document by `TestApp::send`; at the end every documented operation must have
//! answered a success at least once, so an endpoint without a success test fails this test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use axum::http::Method;
use common::{token, Payload, TestApp, BROKEN, PERMIT, QUICK};
use govflow_designer_api::Role::{Admin, Auditor, Designer, Operator, Worker};
use serde_json::{json, Value};

const IM: &str = "/GOV/GOV/1234/WORKFLOW";

async fn activate_one(app: &TestApp, job_type: &str) -> Value {
    let answer = app
        .post(
            Worker,
            "/api/v1/jobs/activate",
            json!({"type": job_type, "maxJobs": 1, "requestTimeout": 5000}),
        )
        .await;
    answer.expect(200);
    answer.json["jobs"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_journey_and_every_operation_once() {
    let app = TestApp::new().await;

    // Operations endpoints need no token.
    app.send(Method::GET, "/health", None, Payload::None).await.expect(200);
    app.send(Method::GET, "/ready", None, Payload::None).await.expect(200);
    let openapi = app.send(Method::GET, "/api/openapi.json", None, Payload::None).await;
    assert_eq!(openapi.json["openapi"], "3.1.0");

    // Deploy: invalid files are refused with diagnostics, nothing deployed.
    let broken = app
        .send(
            Method::POST,
            "/api/v1/deployments?name=broken.bpmn",
            Some(&token(Designer)),
            Payload::Raw("application/xml", BROKEN.into()),
        )
        .await;
    broken.expect_error(422, "INVALID_BPMN");
    let diagnostic = &broken.json["details"]["diagnostics"][0];
    assert_eq!(diagnostic["code"], "BPMN0007", "{}", broken.text());
    assert!(diagnostic["line"].as_u64().unwrap() > 0 && diagnostic["element"].is_string());
    let deployed = app.deploy("permit.bpmn", PERMIT).await;
    deployed.expect(201);
    assert_eq!(
        deployed.json["deployed"][0],
        json!({"resourceName": "permit.bpmn", "processId": "permit", "version": 1, "key": "permit:1", "new": true})
    );
    app.deploy("permit.bpmn", PERMIT).await.expect(200);
    // Several files at once, as multipart.
    let boundary = "govflow-boundary";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"quick.bpmn\"\r\nContent-Type: application/xml\r\n\r\n{QUICK}\r\n--{boundary}--\r\n"
    );
    let multipart = app
        .send(
            Method::POST,
            "/api/v1/deployments",
            Some(&token(Designer)),
            Payload::Raw("multipart/form-data; boundary=govflow-boundary", form.into_bytes()),
        )
        .await;
    multipart.expect(201);
    assert_eq!(multipart.json["deployed"][0]["processId"], "quick");

    // Definitions.
    let list = app.get(Operator, "/api/v1/definitions").await;
    list.expect(200);
    assert_eq!(list.json["items"].as_array().unwrap().len(), 2);
    app.get(Auditor, "/api/v1/definitions/permit").await.expect(200);
    let version = app.get(Designer, "/api/v1/definitions/permit/versions/1").await;
    assert_eq!(version.expect(200).json["deployedBy"]["user"], "designer-user");
    let xml = app.get(Designer, "/api/v1/definitions/permit/versions/1/xml").await;
    assert_eq!(xml.expect(200).text(), PERMIT);
    assert_eq!(
        app.post(Designer, "/api/v1/definitions/permit/versions/1/disable", json!({})).await.expect(200).json
            ["enabled"],
        false
    );
    app.post(Operator, "/api/v1/instances", json!({"processId": "permit"}))
        .await
        .expect_error(409, "CONFLICT");
    app.post(Designer, "/api/v1/definitions/permit/versions/1/enable", json!({})).await.expect(200);

    // Start and look.
    let instance = app.start("permit", json!({"applicationId": "A-1", "applicant": {"name": "Ama"}})).await;
    let listed = app.get(Operator, "/api/v1/instances?processId=permit&state=active").await;
    assert_eq!(listed.expect(200).json["items"][0]["instance"], instance);
    let detail = app.get(Auditor, &format!("/api/v1/instances/{instance}")).await;
    detail.expect(200);
    assert_eq!(detail.json["jobs"][0]["type"], "verify");
    assert_eq!(detail.json["variables"]["applicationId"], "A-1");

    // The external worker.
    let job = activate_one(&app, "verify").await;
    assert_eq!(job["variables"]["applicationId"], "A-1");
    let job_id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job_id, format!("{instance}-{}", job["job"]));
    app.post(Worker, &format!("/api/v1/jobs/{job_id}/complete"), json!({"variables": {"verified": true}}))
        .await
        .expect(204);
    // Again: 409, saying how the job ended; a job the instance never had: 404.
    let again = app.post(Worker, &format!("/api/v1/jobs/{job_id}/complete"), json!({})).await;
    again.expect_error(409, "CONFLICT");
    let message = again.json["message"].as_str().unwrap();
    assert!(
        message.contains("is no longer open: it was completed at") && message.contains("by 'worker"),
        "{message}"
    );
    app.post(Worker, &format!("/api/v1/jobs/{instance}-9999/fail"), json!({"errorMessage": "x"}))
        .await
        .expect_error(404, "NOT_FOUND");

    // The user task: listed for its group, read with its form, claimed, completed.
    let tasks = app.get(Operator, "/api/v1/user-tasks?candidateGroup=clerks").await;
    tasks.expect(200);
    let task_id = tasks.json["items"][0]["id"].as_str().unwrap().to_owned();
    let task = app.get(Operator, &format!("/api/v1/user-tasks/{task_id}")).await;
    task.expect(200);
    assert_eq!(task.json["form"]["schema"]["id"], "review");
    assert_eq!(task.json["variables"]["verified"], true);
    let claimed = app.post(Operator, &format!("/api/v1/user-tasks/{task_id}/claim"), json!({})).await;
    assert_eq!(claimed.expect(200).json["assignee"], "operator-user");
    let mine = app.get(Operator, "/api/v1/user-tasks?assignee=operator-user").await;
    assert_eq!(mine.json["items"].as_array().unwrap().len(), 1);
    let unclaimed = app.post(Operator, &format!("/api/v1/user-tasks/{task_id}/unclaim"), json!({})).await;
    assert_eq!(unclaimed.expect(200).json["assignee"], Value::Null);
    app.post(Admin, &format!("/api/v1/user-tasks/{task_id}/claim"), json!({"assignee": "clerk-7"}))
        .await
        .expect(200);
    let taken = app.post(Operator, &format!("/api/v1/user-tasks/{task_id}/claim"), json!({})).await;
    taken.expect_error(409, "CONFLICT");
    assert!(taken.json["message"].as_str().unwrap().contains("claimed by 'clerk-7'"), "{}", taken.text());
    let detail = app.get(Operator, &format!("/api/v1/instances/{instance}")).await;
    assert_eq!(detail.json["userTasks"][0]["assignee"], "clerk-7", "{}", detail.text());
    assert!(detail.json["variables"].get("claimedBy").is_none(), "claims are not variables");
    let theirs = app.get(Operator, "/api/v1/user-tasks?assignee=clerk-7").await;
    assert_eq!(theirs.json["items"][0]["id"], task_id.as_str());
    app.post(
        Operator,
        &format!("/api/v1/user-tasks/{task_id}/complete"),
        json!({"variables": {"approved": true}}),
    )
    .await
    .expect_error(409, "CONFLICT");
    app.post(
        Admin,
        &format!("/api/v1/user-tasks/{task_id}/complete"),
        json!({"variables": {"approved": true}}),
    )
    .await
    .expect(204);
    let again = app.post(Admin, &format!("/api/v1/user-tasks/{task_id}/complete"), json!({})).await;
    again.expect_error(409, "CONFLICT");
    let message = again.json["message"].as_str().unwrap();
    assert!(
        message.contains("is no longer open: it was completed at") && message.contains("by 'admin"),
        "{message}"
    );

    // The message ends it.
    let published = app
        .post(
            Operator,
            "/api/v1/messages",
            json!({"name": "payment-settled", "correlationKey": "A-1", "variables": {"receipt": "R-9"}}),
        )
        .await;
    assert_eq!(published.expect(200).json["correlated"], json!([instance]));
    let ended = app.get(Operator, &format!("/api/v1/instances/{instance}")).await;
    assert_eq!(ended.json["state"], "completed");
    assert_eq!(ended.json["variables"]["receipt"], "R-9");

    // History and audit.
    let events = app.get(Auditor, &format!("/api/v1/instances/{instance}/events?limit=5")).await;
    events.expect(200);
    assert_eq!(events.json["items"][0]["type"], "InstanceCreated");
    assert_eq!(
        events.json["items"][0]["actor"],
        json!({"user": "operator-user", "affiliation": "Civil Registry"})
    );
    assert_eq!(events.json["next"], 6);
    let replay = app.get(Auditor, &format!("/api/v1/instances/{instance}/replay?to=3")).await;
    assert_eq!(replay.expect(200).json["seq"], 3);
    assert_eq!(replay.json["state"], "active");
    let verified = app.get(Auditor, &format!("/api/v1/instances/{instance}/verify")).await;
    assert_eq!(verified.expect(200).json["ok"], true);
    let operations = app.get(Auditor, "/api/v1/operations?user=operator-user&kind=create").await;
    operations.expect(200);
    let first = &operations.json["items"][0];
    assert_eq!(first["actor"]["affiliation"], "Civil Registry");
    assert_eq!(first["target"]["type"], "instance");

    // Incidents: a failure without retries raises one; resolving it makes a new job.
    let second = app.start("permit", json!({"applicationId": "A-2"})).await;
    app.post(
        Operator,
        &format!("/api/v1/instances/{second}/variables"),
        json!({"variables": {"priority": "high"}}),
    )
    .await
    .expect(204);
    let job = activate_one(&app, "verify").await;
    let job_id = job["id"].as_str().unwrap().to_owned();
    app.post(
        Worker,
        &format!("/api/v1/jobs/{job_id}/fail"),
        json!({"errorMessage": "registry down", "retries": 0}),
    )
    .await
    .expect(204);
    let incidents = app.get(Operator, &format!("/api/v1/incidents?instance={second}")).await;
    incidents.expect(200);
    assert_eq!(incidents.json["items"][0]["kind"], "job_no_retries");
    let incident_id = incidents.json["items"][0]["id"].as_str().unwrap().to_owned();
    app.post(
        Operator,
        &format!("/api/v1/incidents/{incident_id}/resolve"),
        json!({"variables": {"retried": true}}),
    )
    .await
    .expect(204);
    let job = activate_one(&app, "verify").await;
    assert_eq!(job["instance"], second);
    app.post(
        Worker,
        &format!("/api/v1/jobs/{}/error", job["id"].as_str().unwrap()),
        json!({"errorCode": "NOT_ELIGIBLE"}),
    )
    .await
    .expect(204);
    let cancelled = app.post(Operator, &format!("/api/v1/instances/{second}/cancel"), json!({})).await;
    assert_eq!(cancelled.expect(200).json["state"], "cancelled");
    app.post(Operator, &format!("/api/v1/instances/{second}/cancel"), json!({}))
        .await
        .expect_error(409, "CONFLICT");

    let signal = app.post(Operator, "/api/v1/signals", json!({"name": "census-closed"})).await;
    assert_eq!(signal.expect(200).json["delivered"], 0);

    // A synchronous start returns the final variables.
    let sync = app
        .post(Operator, "/api/v1/instances?wait=completed&timeout=10s", json!({"processId": "quick"}))
        .await;
    sync.expect(200);
    assert_eq!(sync.json["state"], "completed");
    assert_eq!(sync.json["variables"]["autoDone"], true);

    // The Workflow BB API, at the root and under the Information Mediator prefix.
    for prefix in ["", IM] {
        let processes = app.get(Operator, &format!("{prefix}/processes")).await;
        processes.expect(200);
        assert!(processes.json.as_array().unwrap().iter().any(|p| p["id"] == "permit"));
        let process = app.get(Operator, &format!("{prefix}/processes/permit")).await;
        assert_eq!(process.expect(200).json["processDefinition"]["name"], "Market stall permit");
        let started = app
            .post(Operator, &format!("{prefix}/processes/permit/start"), json!({"processStartedBy": "clinic-42", "InstanceValues": [{"code": "applicationId", "value": "A-3"}]}))
            .await;
        started.expect(201);
        let id = started.json["id"].as_str().unwrap().to_owned();
        assert_eq!(started.json["state"], "running");
        let instances = app.get(Auditor, &format!("{prefix}/instances?processId=permit")).await;
        assert!(instances.expect(200).json.as_array().unwrap().iter().any(|i| i["id"]
            .as_u64()
            .map(|n| n.to_string())
            .as_deref()
            == Some(id.as_str())));
        app.get(Auditor, &format!("{prefix}/instances/")).await.expect(200);
        let one = app.get(Operator, &format!("{prefix}/instances/{id}")).await;
        one.expect(200);
        assert_eq!(one.json["variables"]["processStartedBy"], "clinic-42");
        assert!(!one.json["logs"].as_array().unwrap().is_empty());
        let stopped = app.post(Operator, &format!("{prefix}/instances/{id}/stop"), json!({})).await;
        assert_eq!(stopped.expect(201).json["state"], "stopped");
        let name = if prefix.is_empty() { "Extra" } else { "Extra mediated" };
        let xml = QUICK.replace("\"quick\"", "\"extra\"").replace("quick-defs", "extra-defs");
        let added = app
            .post(Designer, &format!("{prefix}/processes"), json!({"name": name, "type": "Public", "version": "1", "processBody": [{"code": "bpmn", "value": xml}]}))
            .await;
        assert_eq!(added.expect(201).json["id"], "extra");
        app.put(Designer, &format!("{prefix}/processes/extra"), json!({"enabled": false})).await.expect(204);
        let processes = app.get(Operator, &format!("{prefix}/processes")).await;
        assert!(
            !processes.json.as_array().unwrap().iter().any(|p| p["id"] == "extra"),
            "disabled processes are hidden"
        );
        app.delete(Designer, &format!("{prefix}/processes/extra")).await.expect(200);
    }
    // A synchronous Workflow BB start.
    let sync = app
        .post(Operator, "/processes/quick/start?wait=completed", json!({"processStartedBy": "kiosk"}))
        .await;
    assert_eq!(sync.expect(201).json["ended"], true);

    // Delete an unused version; a used one is refused.
    app.deploy("permit.bpmn", &PERMIT.replace("Market stall permit", "Market stall permit v2"))
        .await
        .expect(201);
    app.delete(Designer, "/api/v1/definitions/permit/versions/1").await.expect_error(409, "CONFLICT");
    app.delete(Designer, "/api/v1/definitions/permit/versions/2").await.expect(204);

    // The payment callback completes a waiting job by its id.
    let third = app.start("permit", json!({"applicationId": "A-4"})).await;
    let job = activate_one(&app, "verify").await;
    assert_eq!(job["instance"], third);
    let callback = format!("/api/v1/callbacks/payments/{}", job["id"].as_str().unwrap());
    let paid = app
        .send(Method::POST, &callback, None, Payload::Json(json!({"batchId": "B-1", "status": "COMPLETED"})))
        .await;
    paid.expect(200);
    app.send(Method::POST, &callback, None, Payload::Json(json!({"batchId": "B-1", "status": "COMPLETED"})))
        .await
        .expect(409);

    let metrics = app.send(Method::GET, "/metrics", None, Payload::None).await;
    metrics.expect(200);
    let text = metrics.text();
    assert!(text.contains("govflow_instances_started_total{process=\"permit\"}"), "{text}");
    assert!(
        text.contains("govflow_instances_ended_total{process=\"permit\",status=\"completed\"} 1"),
        "{text}"
    );
    assert!(text.contains("govflow_job_duration_seconds_count{type=\"verify\"}"), "{text}");
    let counter = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} is missing: {text}"))
    };
    let (flushes, commits) =
        (counter("govflow_store_flushes_total "), counter("govflow_store_commits_total "));
    assert!(
        flushes >= 1.0 && commits >= flushes,
        "every flush carries at least one commit: {flushes} / {commits}"
    );
    assert!(
        text.contains(
            "govflow_http_requests_total{method=\"POST\",route=\"/api/v1/instances\",status=\"201\"}"
        ),
        "{text}"
    );

    // Every documented operation answered a success at least once.
    let documented = documented_operations();
    let succeeded: BTreeSet<(String, String)> = app
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, status)| (200..300).contains(status))
        .map(|(method, template, _)| (method.clone(), template.clone()))
        .collect();
    let missing: Vec<_> = documented.difference(&succeeded).collect();
    assert!(missing.is_empty(), "operations without a success in this journey: {missing:?}");
}

/// Every (METHOD, path template) of the OpenAPI document.
pub fn documented_operations() -> BTreeSet<(String, String)> {
    let doc = govflow_designer_api::openapi::document();
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    operations
}

/// Two operators claim the same unclaimed task at the same moment, ten times over: each time exactly one
/// gets it (200) and the other is told who holds it (409), whichever way the requests interleave: the
/// claim is a compare-and-set in the engine, not a check in the API followed by a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_racing_for_one_task_never_both_get_it() {
    use govflow_designer_api::{hash_token, TokenEntry};
    let mut config = common::test_config();
    for clerk in ["clerk-a", "clerk-b"] {
        config.auth.tokens.push(TokenEntry {
            sha256: hash_token(&format!("{clerk}-token")),
            role: Operator,
            user: clerk.to_owned(),
            affiliation: None,
        });
    }
    let app = TestApp::with_config(config).await;
    let bpmn = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d" targetNamespace="t">
  <bpmn:process id="review" isExecutable="true">
    <bpmn:startEvent id="s"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:userTask id="check" name="Check"><bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing></bpmn:userTask>
    <bpmn:endEvent id="e"><bpmn:incoming>f2</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="check" />
    <bpmn:sequenceFlow id="f2" sourceRef="check" targetRef="e" />
  </bpmn:process>
</bpmn:definitions>"#;
    let deployed = app
        .send(
            Method::POST,
            "/api/v1/deployments?name=review.bpmn",
            Some(&token(Designer)),
            Payload::Raw("application/xml", bpmn.as_bytes().to_vec()),
        )
        .await;
    deployed.expect(201);
    for _ in 0..10 {
        let instance = app.start("review", json!({})).await;
        let tasks = app.get(Operator, "/api/v1/user-tasks?processId=review").await;
        let task = tasks.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["instance"] == instance)
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .unwrap();
        let claim = |clerk: &'static str| {
            let path = format!("/api/v1/user-tasks/{task}/claim");
            let app = &app;
            async move {
                app.send(Method::POST, &path, Some(&format!("{clerk}-token")), Payload::Json(json!({}))).await
            }
        };
        let (a, b) = tokio::join!(claim("clerk-a"), claim("clerk-b"));
        let mut statuses = [a.status, b.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "a: {} b: {}", a.text(), b.text());
        let winner = if a.status == 200 { "clerk-a" } else { "clerk-b" };
        let loser = if a.status == 200 { &b } else { &a };
        assert!(
            loser.json["message"].as_str().unwrap().contains(&format!("claimed by '{winner}'")),
            "{}",
            loser.text()
        );
        let detail = app.get(Operator, &format!("/api/v1/user-tasks/{task}")).await;
        assert_eq!(detail.json["assignee"], winner);
    }
}
