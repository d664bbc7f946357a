//! The sandbox's answers checked against the GovStack OpenAPI files in `shared/govstack` (or
//! `$GOVFLOW_GOVSTACK`): registries read/exists/list/create, payments 202 and both callbacks, messaging
//! send/status, identity discovery/JWKS/token. The validator covers the subset of JSON Schema the specs
//! use: `type`, `nullable`/`x-nullable`, `required`, `properties`, `items`, `enum`, `maxLength`,
//! `anyOf`/`oneOf`/`allOf` and local `$ref`s. It never fetches anything; without the specs it says
//! "skipped", as the BPMN corpus test does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use govflow_connectors::sandbox::{
    Sandbox, SandboxConfig, Service, SANDBOX_CLIENT_ID, SANDBOX_CLIENT_PRIVATE_KEY_PEM,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Client, StatusCode};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------------------
// Loading: YAML → JSON values, keys stringified (`200:` is an integer key in YAML), later duplicates win
// (BulkPayment.yml repeats `parameters` under one operation).

struct Loose(Value);

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Loose, D::Error> {
        deserializer.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Loose, E> {
        Ok(Loose(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Loose, E> {
        Ok(Loose(json!(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Loose, E> {
        Ok(Loose(json!(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Loose, E> {
        Ok(Loose(json!(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose, E> {
        Ok(Loose(Value::String(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Loose, E> {
        Ok(Loose(Value::String(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Loose, E> {
        Ok(Loose(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Loose, E> {
        Ok(Loose(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Loose, D::Error> {
        Loose::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose, A::Error> {
        let mut items = Vec::new();
        while let Some(Loose(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Loose(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
        let mut out = Map::new();
        while let Some((Loose(key), Loose(value))) = map.next_entry()? {
            let key = match key {
                Value::String(s) => s,
                other => other.to_string(),
            };
            out.insert(key, value);
        }
        Ok(Loose(Value::Object(out)))
    }
}

fn specs_root() -> PathBuf {
    match std::env::var_os("GOVFLOW_GOVSTACK") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/govstack"),
    }
}

struct Spec {
    name: String,
    doc: Value,
}

fn load(relative: &str) -> Option<Spec> {
    let path = specs_root().join(relative);
    if !path.exists() {
        println!("skipped: no GovStack specs at {} (set GOVFLOW_GOVSTACK)", path.display());
        return None;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let Loose(doc) = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Some(Spec { name: relative.to_string(), doc })
}

impl Spec {
    fn operation(&self, path: &str, method: &str) -> &Value {
        let op = &self.doc["paths"][path][method];
        assert!(op.is_object(), "{}: no {method} {path}", self.name);
        op
    }

    fn response(&self, path: &str, method: &str, status: &str, media: &str) -> &Value {
        let schema = &self.operation(path, method)["responses"][status]["content"][media]["schema"];
        assert!(schema.is_object(), "{}: no {status} {media} schema for {method} {path}", self.name);
        schema
    }

    fn request(&self, path: &str, method: &str) -> &Value {
        let schema = &self.operation(path, method)["requestBody"]["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{}: no request schema for {method} {path}", self.name);
        schema
    }

    /// Panics listing every violation of `schema` by `instance`.
    fn check(&self, what: &str, schema: &Value, instance: &Value) {
        let errors = self.violations(schema, instance);
        assert!(
            errors.is_empty(),
            "{what} violates {}:\n  {}\ninstance: {instance:#}",
            self.name,
            errors.join("\n  ")
        );
    }

    fn violations(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.validate(schema, instance, "$", &mut errors, 0);
        errors
    }

    fn resolve<'a>(&'a self, reference: &str) -> &'a Value {
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("non-local $ref {reference}"));
        self.doc.pointer(pointer).unwrap_or_else(|| panic!("{}: dangling $ref {reference}", self.name))
    }

    fn validate(&self, schema: &Value, instance: &Value, at: &str, errors: &mut Vec<String>, depth: usize) {
        assert!(depth < 64, "schema recursion too deep at {at}");
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            return self.validate(self.resolve(reference), instance, at, errors, depth + 1);
        }
        let nullable =
            schema.get("nullable") == Some(&json!(true)) || schema.get("x-nullable") == Some(&json!(true));
        if instance.is_null() && nullable {
            return;
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.validate(sub, instance, at, errors, depth + 1);
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(options) = schema.get(key).and_then(Value::as_array) {
                let n_ok =
                    options.iter().filter(|s| self.violations_at(s, instance, at, depth).is_empty()).count();
                let ok = if key == "anyOf" { n_ok >= 1 } else { n_ok == 1 };
                if !ok {
                    errors.push(format!("{at}: matches {n_ok} of the {key} options"));
                }
            }
        }
        if let Some(kind) = schema.get("type").and_then(Value::as_str) {
            let ok = match kind {
                "object" => instance.is_object(),
                "array" => instance.is_array(),
                "string" => instance.is_string(),
                "boolean" => instance.is_boolean(),
                "number" => instance.is_number(),
                "integer" => {
                    instance.is_i64()
                        || instance.is_u64()
                        || instance.as_f64().is_some_and(|f| f.fract() == 0.0)
                }
                other => panic!("unknown schema type {other}"),
            };
            if !ok {
                errors.push(format!("{at}: expected {kind}, got {instance}"));
                return;
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if !options.contains(instance) {
                errors.push(format!("{at}: {instance} is not one of {options:?}"));
            }
        }
        if let (Some(max), Some(s)) = (schema.get("maxLength").and_then(Value::as_u64), instance.as_str()) {
            if s.chars().count() as u64 > max {
                errors.push(format!("{at}: {s:?} is longer than {max}"));
            }
        }
        if let (Some(min), Some(s)) = (schema.get("minLength").and_then(Value::as_u64), instance.as_str()) {
            if (s.chars().count() as u64) < min {
                errors.push(format!("{at}: {s:?} is shorter than {min}"));
            }
        }
        if let Some(object) = instance.as_object() {
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if !object.contains_key(name) {
                        errors.push(format!("{at}: missing required property {name}"));
                    }
                }
            }
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, sub) in properties {
                    if let Some(value) = object.get(name) {
                        self.validate(sub, value, &format!("{at}.{name}"), errors, depth + 1);
                    }
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), instance.as_array()) {
            for (i, item) in array.iter().enumerate() {
                self.validate(items, item, &format!("{at}[{i}]"), errors, depth + 1);
            }
        }
    }

    fn violations_at(&self, schema: &Value, instance: &Value, at: &str, depth: usize) -> Vec<String> {
        let mut errors = Vec::new();
        self.validate(schema, instance, at, &mut errors, depth + 1);
        errors
    }
}

// ---------------------------------------------------------------------------------------------------

const CLIENT_ID: &str = "GOV/GOV/WORKFLOW/GOVFLOW";

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig {
        payment_callback_delay: Duration::from_millis(20),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts")
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn answer(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    response.json().await.expect("JSON")
}

#[test]
fn the_validator_rejects_what_the_schema_forbids() {
    let Some(spec) = load("digital-registries/GovStack_Digital_registries_BB_Data_API_template-1.3.0.yaml")
    else {
        return;
    };
    let exists =
        spec.response("/data/{registryName}/{versionNumber}/exists", "post", "200", "application/json");
    assert!(spec.violations(exists, &json!({"answer": {"status": true, "message": "ok"}})).is_empty());
    assert!(!spec.violations(exists, &json!({"answer": {"status": "yes"}})).is_empty());
    assert!(!spec.violations(exists, &json!({})).is_empty());
    let not_found =
        spec.response("/data/{registryName}/{versionNumber}/read", "post", "404", "application/json");
    assert!(!spec.violations(not_found, &json!({"detail": "gone"})).is_empty(), "enum");
    let list = spec.response("/data/{registryName}/{versionNumber}", "get", "200", "application/json");
    assert!(spec
        .violations(list, &json!({"count": 0, "next": null, "previous": null, "results": []}))
        .is_empty());
    assert!(!spec.violations(list, &json!({"count": 1.5, "results": []})).is_empty(), "integer");
    // $ref into components: a result whose firstName is a number is refused.
    assert!(!spec.violations(list, &json!({"count": 1, "results": [{"firstName": 3}]})).is_empty());
}

#[tokio::test]
async fn registries_answers_match_the_data_api() {
    let Some(spec) = load("digital-registries/GovStack_Digital_registries_BB_Data_API_template-1.3.0.yaml")
    else {
        return;
    };
    let sandbox = sandbox().await;
    let base = format!("{}/data/population-register/1.0", sandbox.base_url(Service::Registries));
    let person = sandbox.seed_data().verified_mother().clone();
    let post = |op: &str, body: Value| {
        let url = format!("{base}/{op}");
        async move {
            client()
                .post(url)
                .header("Information-Mediator-Client", CLIENT_ID)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };

    let read =
        answer(post("read", json!({"query": {"content": {"ID": person.national_id}}})).await, StatusCode::OK)
            .await;
    spec.check(
        "read 200",
        spec.response("/data/{registryName}/{versionNumber}/read", "post", "200", "application/json"),
        &read,
    );
    let missing =
        answer(post("read", json!({"query": {"content": {"ID": "none"}}})).await, StatusCode::NOT_FOUND)
            .await;
    spec.check(
        "read 404",
        spec.response("/data/{registryName}/{versionNumber}/read", "post", "404", "application/json"),
        &missing,
    );
    for id in [person.national_id.as_str(), "none"] {
        let exists =
            answer(post("exists", json!({"query": {"content": {"ID": id}}})).await, StatusCode::OK).await;
        spec.check(
            "exists",
            spec.response("/data/{registryName}/{versionNumber}/exists", "post", "200", "application/json"),
            &exists,
        );
    }
    let create_body = json!({"write": {"content": {"firstName": "Test", "lastName": "Person", "birthCertificateId": "RR-1"}}});
    spec.check(
        "create request",
        spec.request("/data/{registryName}/{versionNumber}/create", "post"),
        &create_body,
    );
    let created = answer(post("create", create_body).await, StatusCode::OK).await;
    spec.check(
        "create 200",
        spec.response("/data/{registryName}/{versionNumber}/create", "post", "200", "application/json"),
        &created,
    );

    let list_schema = spec.response("/data/{registryName}/{versionNumber}", "get", "200", "application/json");
    for query in [vec![("pageSize", "5"), ("page", "2")], vec![("search", "zzzz-nothing")]] {
        let list = answer(
            client()
                .get(&base)
                .header("Information-Mediator-Client", CLIENT_ID)
                .query(&query)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        spec.check("list", list_schema, &list);
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn payments_answers_and_callbacks_match_the_g2p_apis() {
    let (Some(bulk), Some(status), Some(register), Some(onboarded), Some(update)) = (
        load("payments/api/G2P-API-YAMLs/BulkPayment.yml"),
        load("payments/api/G2P-API-YAMLs/BulkPaymentStatusUpdate.yml"),
        load("payments/api/G2P-API-YAMLs/RegisterBeneficiaryRequest.yml"),
        load("payments/api/G2P-API-YAMLs/RegisterBeneficiaryResponse.yml"),
        load("payments/api/G2P-API-YAMLs/UpdateBeneficiaryRequest.yml"),
    ) else {
        return;
    };
    let sandbox = sandbox().await;
    let payments = sandbox.base_url(Service::Payments);
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let app = Router::new()
        .route(
            "/cb",
            post(|State(tx): State<mpsc::UnboundedSender<Value>>, Json(body): Json<Value>| async move {
                let _ = tx.send(body);
            }),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!("http://{}/cb", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let farmer = sandbox.seed_data().farmer_with_bank_account().clone();
    let batch = json!([{
        "requestId": "schema-1",
        "creditParty": [{"key": "nationalId", "value": farmer.national_id}],
        "debitParty": [{"key": "accountNumber", "value": "TREASURY"}],
        "paymentMode": "bank", "amount": 25.0, "currency": "USD", "descriptionText": "relief",
    }]);
    bulk.check("batch request", bulk.request("/batchtransactions", "post"), &batch);
    let accepted = answer(
        client()
            .post(format!("{payments}/batchtransactions?type=raw"))
            .header("X-CorrelationID", "corr-schema")
            .header("Platform-TenantId", "gov")
            .header("X-Callback-URL", &callback)
            .json(&batch)
            .send()
            .await
            .unwrap(),
        StatusCode::ACCEPTED,
    )
    .await;
    bulk.check(
        "batch 202",
        bulk.response("/batchtransactions", "post", "202", "application/json"),
        &accepted,
    );
    let outcome =
        tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("callback").expect("open");
    status.check("batch callback", status.request("/api/v1/batch", "post"), &outcome);

    let registration = json!({"RequestID": "reg-schema", "Beneficiaries": [
        {"payeeIdentity": sandbox.seed_data().farmer_without_bank_account().national_id, "PaymentModality": "00", "FinancialAddress": "123456789012"}
    ]});
    register.check(
        "register request",
        register.request("/identityAccountMapper/beneficiary", "post"),
        &registration,
    );
    let registered = answer(
        client()
            .post(format!("{payments}/identityAccountMapper/beneficiary"))
            .header("X-Callback-URL", &callback)
            .header("X-Registering-Institution-ID", "MINAGRI")
            .json(&registration)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    register.check(
        "register 200",
        register.response("/identityAccountMapper/beneficiary", "post", "200", "application/json"),
        &registered,
    );
    let notification =
        tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("callback").expect("open");
    onboarded.check("onboarding callback", onboarded.request("/callback", "post"), &notification);

    let refused = answer(
        client()
            .post(format!("{payments}/identityAccountMapper/beneficiary"))
            .json(&registration)
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    register.check(
        "register 400",
        register.response("/identityAccountMapper/beneficiary", "post", "400", "application/json"),
        &refused,
    );

    let change = json!({"requestID": "upd-schema", "sourceBBID": "REGISTRY", "beneficiaries": [{"payeeIdentity": farmer.national_id, "paymentModality": "01", "financialAddress": "+99970000000"}]});
    update.check("update request", update.request("/identityAccountMapper/beneficiary", "put"), &change);
    let updated = answer(
        client()
            .put(format!("{payments}/identityAccountMapper/beneficiary"))
            .json(&change)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    update.check(
        "update 200",
        update.response("/identityAccountMapper/beneficiary", "put", "200", "application/json"),
        &updated,
    );
    server.abort();
    sandbox.shutdown().await;
}

#[tokio::test]
async fn messaging_answers_match_the_swagger() {
    let Some(spec) = load("messaging/swagger.yaml") else {
        return;
    };
    let sandbox = sandbox().await;
    let messaging = sandbox.base_url(Service::Messaging);
    let email = json!({
        "senderInfo": {"organisationName": "Ministry of Health", "email": "noreply@gov.example"},
        "recipientInfo": {"email": "amina@mail.example", "name": "Amina"},
        "emailContent": {"encoding": "UTF-8", "title": "Card", "content": "Your card is ready."},
    });
    spec.check("email request", &json!({"$ref": "#/definitions/email"}), &email);
    let sent = answer(
        client()
            .post(format!("{messaging}/send/email/single"))
            .header("apiKey", "sandbox-api-key")
            .json(&email)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    spec.check(
        "send single 200",
        spec.response("/send/email/single", "post", "200", "application/json"),
        &sent,
    );
    let batch = answer(
        client()
            .post(format!("{messaging}/send/email/batch"))
            .header("apiKey", "sandbox-api-key")
            .json(&json!({"recipientInfo": {"batchEmailAsBase64": "W3sicmVjaXBpZW50SW5mbyI6IHsiZW1haWwiOiAiY3VzdG9tZXJAZXhhbXBsZS5jb20ifX1d"},
                          "emailContent": {"content": "x"}}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    spec.check(
        "send batch 200",
        spec.response("/send/email/batch", "post", "200", "application/json"),
        &batch,
    );
    let status = answer(
        client()
            .get(format!("{messaging}/status/email"))
            .header("apiKey", "sandbox-api-key")
            .header("requestUid", sent["requestUid"].as_str().unwrap())
            .query(&[("status", "scheduled,processing,deferred,bounced,notSent,delivered")])
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    spec.check("status 200", spec.response("/status/email", "get", "200", "application/json"), &status);
    assert_eq!(status["delivered"], 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn identity_answers_match_the_identity_provider_api() {
    let Some(spec) = load("identity/Identity-Provider.yaml") else {
        return;
    };
    let sandbox = sandbox().await;
    let identity = sandbox.base_url(Service::Identity);
    let discovery = answer(
        client().get(format!("{identity}/.well-known/openid-configuration")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    spec.check(
        "discovery",
        spec.response("/.well-known/openid-configuration", "get", "200", "application/json"),
        &discovery,
    );
    let jwks = answer(
        client().get(format!("{identity}/.well-known/jwks.json")).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    spec.check("jwks", spec.response("/.well-known/jwks.json", "get", "200", "application/json"), &jwks);

    let mother = sandbox.seed_data().verified_mother().national_id.clone();
    let redirect = client()
        .get(format!("{identity}/authorize"))
        .query(&[
            ("scope", "openid profile"),
            ("response_type", "code"),
            ("client_id", SANDBOX_CLIENT_ID),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("login_hint", mother.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), StatusCode::FOUND);
    let location = reqwest::Url::parse(redirect.headers()["location"].to_str().unwrap()).unwrap();
    let code = location.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let now = chrono::Utc::now().timestamp();
    let key = EncodingKey::from_rsa_pem(SANDBOX_CLIENT_PRIVATE_KEY_PEM.as_bytes()).unwrap();
    let token_endpoint = discovery["token_endpoint"].as_str().unwrap().to_string();
    let assertion = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &json!({"iss": SANDBOX_CLIENT_ID, "sub": SANDBOX_CLIENT_ID, "aud": token_endpoint, "iat": now, "exp": now + 60}),
        &key,
    )
    .unwrap();
    let form = |code: &str, assertion: &str| {
        vec![
            ("grant_type".to_string(), "authorization_code".to_string()),
            ("code".to_string(), code.to_string()),
            ("client_id".to_string(), SANDBOX_CLIENT_ID.to_string()),
            (
                "client_assertion_type".to_string(),
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
            ),
            ("client_assertion".to_string(), assertion.to_string()),
            ("redirect_uri".to_string(), "http://127.0.0.1:9/cb".to_string()),
        ]
    };
    let tokens = answer(
        client().post(&token_endpoint).form(&form(&code, &assertion)).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    spec.check("token 200", spec.response("/oauth/token", "post", "200", "application/json"), &tokens);
    let reused = answer(
        client().post(&token_endpoint).form(&form(&code, &assertion)).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    spec.check("token 400", spec.response("/oauth/token", "post", "400", "application/json"), &reused);
    let no_assertion: Vec<_> = form("c", "").into_iter().filter(|(k, _)| k != "client_assertion").collect();
    let missing = answer(
        client().post(&token_endpoint).form(&no_assertion).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    spec.check("token 400", spec.response("/oauth/token", "post", "400", "application/json"), &missing);
    assert_eq!(missing["error"], "invalid_assertion");
    sandbox.shutdown().await;
}
