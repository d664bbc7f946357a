//! Every route checks its role, as one table: no token → 401, an unknown token → 401, each role the
//! route does not admit → 403, each role it admits → neither. The table must list exactly the
//! operations of the OpenAPI document, so a new route cannot ship without its row. Also: JWT bearer
//! tokens verified against a JWKS served on a local socket, and disabled auth for development.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::Method;
use common::{test_config, token, Payload, TestApp};
use govflow_designer_api::{OidcConfig, Role};
use serde_json::json;

use Role::{Admin, Auditor, Designer, Operator, Worker};

const READ_DEFINITIONS: &[Role] = &[Admin, Designer, Operator, Auditor];
const DESIGN: &[Role] = &[Admin, Designer];
const READ_INSTANCES: &[Role] = &[Admin, Operator, Auditor];
const OPERATE: &[Role] = &[Admin, Operator];
const WORK: &[Role] = &[Admin, Worker];
const HISTORY: &[Role] = &[Admin, Operator, Auditor];
const AUDIT: &[Role] = &[Admin, Auditor];
/// No token needed.
const PUBLIC: &[Role] = &[];

/// (method, path template, roles admitted).
const TABLE: &[(&str, &str, &[Role])] = &[
    ("POST", "/api/v1/deployments", DESIGN),
    ("GET", "/api/v1/definitions", READ_DEFINITIONS),
    ("GET", "/api/v1/definitions/{processId}", READ_DEFINITIONS),
    ("GET", "/api/v1/definitions/{processId}/versions/{version}", READ_DEFINITIONS),
    ("DELETE", "/api/v1/definitions/{processId}/versions/{version}", DESIGN),
    ("GET", "/api/v1/definitions/{processId}/versions/{version}/xml", READ_DEFINITIONS),
    ("POST", "/api/v1/definitions/{processId}/versions/{version}/enable", DESIGN),
    ("POST", "/api/v1/definitions/{processId}/versions/{version}/disable", DESIGN),
    ("POST", "/api/v1/instances", OPERATE),
    ("GET", "/api/v1/instances", READ_INSTANCES),
    ("GET", "/api/v1/instances/{instance}", READ_INSTANCES),
    ("POST", "/api/v1/instances/{instance}/cancel", OPERATE),
    ("POST", "/api/v1/instances/{instance}/variables", OPERATE),
    ("GET", "/api/v1/instances/{instance}/events", HISTORY),
    ("GET", "/api/v1/instances/{instance}/replay", HISTORY),
    ("GET", "/api/v1/instances/{instance}/verify", AUDIT),
    ("POST", "/api/v1/messages", OPERATE),
    ("POST", "/api/v1/signals", OPERATE),
    ("GET", "/api/v1/user-tasks", READ_INSTANCES),
    ("GET", "/api/v1/user-tasks/{task}", READ_INSTANCES),
    ("POST", "/api/v1/user-tasks/{task}/claim", OPERATE),
    ("POST", "/api/v1/user-tasks/{task}/unclaim", OPERATE),
    ("POST", "/api/v1/user-tasks/{task}/complete", OPERATE),
    ("POST", "/api/v1/jobs/activate", WORK),
    ("POST", "/api/v1/jobs/{id}/complete", WORK),
    ("POST", "/api/v1/jobs/{id}/fail", WORK),
    ("POST", "/api/v1/jobs/{id}/error", WORK),
    ("GET", "/api/v1/incidents", READ_INSTANCES),
    ("POST", "/api/v1/incidents/{id}/resolve", OPERATE),
    ("GET", "/api/v1/operations", AUDIT),
    ("POST", "/api/v1/callbacks/payments/{job}", PUBLIC),
    ("GET", "/health", PUBLIC),
    ("GET", "/ready", PUBLIC),
    ("GET", "/metrics", PUBLIC),
    ("GET", "/api/openapi.json", PUBLIC),
    ("GET", "/processes", READ_DEFINITIONS),
    ("POST", "/processes", DESIGN),
    ("GET", "/processes/{processId}", READ_DEFINITIONS),
    ("PUT", "/processes/{processId}", DESIGN),
    ("DELETE", "/processes/{processId}", DESIGN),
    ("POST", "/processes/{processId}/start", OPERATE),
    ("GET", "/instances", READ_INSTANCES),
    ("GET", "/instances/", READ_INSTANCES),
    ("GET", "/instances/{instanceId}", READ_INSTANCES),
    ("POST", "/instances/{instanceId}/stop", OPERATE),
];

const MEDIATOR: &str = "/{instance}/{memberClass}/{memberCode}/{applicationCode}";

/// The table, with every Workflow BB row repeated under the Information Mediator prefix.
fn rows() -> Vec<(String, String, &'static [Role])> {
    let mut rows = Vec::new();
    for (method, path, roles) in TABLE {
        rows.push((method.to_string(), path.to_string(), *roles));
        if path.starts_with("/processes") || path.starts_with("/instances") {
            rows.push((method.to_string(), format!("{MEDIATOR}{path}"), *roles));
        }
    }
    rows
}

/// A concrete path for a template (ids that need not exist: auth is checked first).
fn concrete(template: &str) -> String {
    template
        .replace("{instance}/{memberClass}/{memberCode}/{applicationCode}", "GOV/GOV/1234/WORKFLOW")
        .replace("{processId}", "permit")
        .replace("{version}", "1")
        .replace("{instanceId}", "1")
        .replace("{instance}", "1")
        .replace("{task}", "1-1")
        .replace("{id}", "1-1")
        .replace("{job}", "1-1")
}

#[test]
fn the_table_lists_exactly_the_documented_operations() {
    let doc = govflow_designer_api::openapi::document();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    let table: BTreeSet<(String, String)> = rows().into_iter().map(|(m, p, _)| (m, p)).collect();
    assert_eq!(table, documented, "the role table and the OpenAPI document differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_its_role() {
    let app = TestApp::new().await;
    for (method, template, admitted) in rows() {
        let path = concrete(&template);
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let send = |token: Option<String>| {
            let (method, path) = (method.clone(), path.clone());
            let app = &app;
            async move { app.send(method, &path, token.as_deref(), Payload::None).await }
        };
        if admitted.is_empty() {
            let answer = send(None).await;
            assert!(
                ![401, 403].contains(&answer.status.as_u16()),
                "{method} {path} is public: {}",
                answer.text()
            );
            continue;
        }
        send(None).await.expect_error(401, "UNAUTHORIZED");
        send(Some("not-a-token".to_owned())).await.expect_error(401, "UNAUTHORIZED");
        for role in Role::ALL {
            let answer = send(Some(token(role))).await;
            if admitted.contains(&role) {
                assert!(
                    ![401, 403].contains(&answer.status.as_u16()),
                    "{method} {path} must admit {role}: {}",
                    answer.text()
                );
            } else {
                assert_eq!(
                    answer.status.as_u16(),
                    403,
                    "{method} {path} must refuse {role}: {}",
                    answer.text()
                );
                assert_eq!(answer.json["code"], "FORBIDDEN");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_auth_makes_everyone_an_anonymous_admin() {
    let mut config = test_config();
    config.auth.disabled = true;
    let app = TestApp::with_config(config).await;
    app.deploy("quick.bpmn", common::QUICK).await;
    let answer = app.send(Method::GET, "/api/v1/definitions/quick/versions/1", None, Payload::None).await;
    assert_eq!(answer.expect(200).json["deployedBy"]["user"], "anonymous");
}

/// A JWT signed with the test key, with `claims` over the defaults.
fn jwt(claims: serde_json::Value, kid: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut body = json!({"iss": "https://idp.test", "aud": "govflow", "exp": now + 300, "sub": "officer-9", "org": "Ministry of Health", "roles": ["operator"]});
    for (key, value) in claims.as_object().unwrap() {
        body[key] = value.clone();
    }
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("data/jwt-test-private.pem")).unwrap();
    jsonwebtoken::encode(&header, &body, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bearer_tokens_are_verified_against_the_jwks() {
    // The provider's JWKS, on a local socket.
    let jwks: serde_json::Value = serde_json::from_str(include_str!("data/jwt-test-jwks.json")).unwrap();
    let provider =
        axum::Router::new().route("/jwks", axum::routing::get(move || async move { axum::Json(jwks) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, provider).await });

    let mut config = test_config();
    config.auth.oidc = Some(OidcConfig {
        issuer: "https://idp.test".to_owned(),
        jwks_url: format!("http://{address}/jwks"),
        audience: "govflow".to_owned(),
        role_claim: "roles".to_owned(),
        user_claim: "sub".to_owned(),
        affiliation_claim: Some("org".to_owned()),
    });
    let app = TestApp::with_config(config).await;
    app.deploy("quick.bpmn", common::QUICK).await;
    let good = jwt(json!({}), "test-key-1");
    let started = app
        .send(Method::POST, "/api/v1/instances", Some(&good), Payload::Json(json!({"processId": "quick"})))
        .await;
    started.expect(201);
    let instance = started.json["instance"].as_u64().unwrap();
    let events = app.get(Auditor, &format!("/api/v1/instances/{instance}/events")).await;
    assert_eq!(
        events.json["items"][0]["actor"],
        json!({"user": "officer-9", "affiliation": "Ministry of Health"})
    );

    // Role claims decide: an auditor token may read but not start.
    let auditor = jwt(json!({"roles": "auditor"}), "test-key-1");
    app.send(Method::GET, "/api/v1/instances", Some(&auditor), Payload::None).await.expect(200);
    app.send(Method::POST, "/api/v1/instances", Some(&auditor), Payload::Json(json!({"processId": "quick"})))
        .await
        .expect_error(403, "FORBIDDEN");
    let no_role = jwt(json!({"roles": ["citizen"]}), "test-key-1");
    app.send(Method::GET, "/api/v1/instances", Some(&no_role), Payload::None)
        .await
        .expect_error(403, "FORBIDDEN");
    // Wrong audience, issuer, expired, unknown key, tampered: 401.
    for bad in [
        jwt(json!({"aud": "someone-else"}), "test-key-1"),
        jwt(json!({"iss": "https://evil.test"}), "test-key-1"),
        jwt(json!({"exp": 1_000_000}), "test-key-1"),
        jwt(json!({}), "unknown-key"),
        format!("{}x", jwt(json!({}), "test-key-1")),
    ] {
        app.send(Method::GET, "/api/v1/instances", Some(&bad), Payload::None)
            .await
            .expect_error(401, "UNAUTHORIZED");
    }
    // HS256 (a shared secret) is refused whatever it claims.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("test-key-1".to_owned());
    let hs = jsonwebtoken::encode(
        &header,
        &json!({"sub": "x", "roles": ["admin"], "exp": u64::MAX / 2}),
        &jsonwebtoken::EncodingKey::from_secret(b"guess"),
    )
    .unwrap();
    app.send(Method::GET, "/api/v1/instances", Some(&hs), Payload::None)
        .await
        .expect_error(401, "UNAUTHORIZED");
    server.abort();
}
