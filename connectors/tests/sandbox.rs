//! The sandbox's simulated building blocks over real HTTP: success and error paths of each BB, the
//! Information Mediator, fault injection and seed determinism. Never sleeps to synchronise: callbacks are
//! awaited on a channel with a generous deadline; only the timeout tests use short client timeouts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use govflow_connectors::sandbox::{
    Channel, Fault, Sandbox, SandboxConfig, SeedData, Service, SANDBOX_CLIENT_ID,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const IM_CLIENT: &str = "GOV/GOV/WORKFLOW/GOVFLOW";
const REGISTRY_CLIENT: &str = "GOV/GOV/WORKFLOW/GOVFLOW";
/// Deadline for anything that should happen "soon" on a loaded 2-core machine.
const SOON: Duration = Duration::from_secs(20);

async fn sandbox() -> Sandbox {
    sandbox_with(SandboxConfig {
        payment_callback_delay: Duration::from_millis(20),
        ..SandboxConfig::default()
    })
    .await
}

async fn sandbox_with(config: SandboxConfig) -> Sandbox {
    Sandbox::start(config).await.expect("sandbox starts")
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn short_timeout_client(timeout: Duration) -> Client {
    Client::builder().timeout(timeout).build().expect("client")
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON body")
}

// ---------------------------------------------------------------------------------------------------
// Digital Registries

fn registry_url(sandbox: &Sandbox, registry: &str, op: &str) -> String {
    format!("{}/data/{registry}/1.0/{op}", sandbox.base_url(Service::Registries))
}

async fn registry_post(sandbox: &Sandbox, registry: &str, op: &str, body: Value) -> reqwest::Response {
    client()
        .post(registry_url(sandbox, registry, op))
        .header("Information-Mediator-Client", REGISTRY_CLIENT)
        .json(&body)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn registries_read_and_exists_find_seeded_persons_and_miss_unknown_ones() {
    let sandbox = sandbox().await;
    let mother = sandbox.seed_data().verified_mother().clone();
    let unknown = sandbox.seed_data().unknown_national_id().to_string();

    let found = registry_post(
        &sandbox,
        "population-register",
        "read",
        json!({"query": {"content": {"ID": mother.national_id}}}),
    )
    .await;
    assert_eq!(found.status(), StatusCode::OK);
    let content = json_of(found).await["content"].clone();
    assert_eq!(content["firstName"], mother.first_name);
    assert_eq!(content["birthDate"], mother.birth_date);
    assert_eq!(content["deceased"], false);

    let missing = registry_post(
        &sandbox,
        "population-register",
        "read",
        json!({"query": {"content": {"ID": unknown}}}),
    )
    .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(missing).await, json!({"detail": "no record found"}));

    let exists = json_of(
        registry_post(
            &sandbox,
            "social-registry",
            "exists",
            json!({"query": {"content": {"nationalId": mother.national_id}}}),
        )
        .await,
    )
    .await;
    assert_eq!(exists["answer"]["status"], true);
    let not = json_of(
        registry_post(
            &sandbox,
            "social-registry",
            "exists",
            json!({"query": {"content": {"nationalId": unknown}}}),
        )
        .await,
    )
    .await;
    assert_eq!(not["answer"]["status"], false);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn registries_detect_an_existing_birth_and_refuse_a_duplicate_create() {
    let sandbox = sandbox().await;
    let (mother, birth) = sandbox.seed_data().registered_birth();
    let (mother, birth) = (mother.clone(), birth.clone());

    let exists = json_of(
        registry_post(
            &sandbox,
            "civil-register",
            "exists",
            json!({"query": {"content": {"motherId": mother.national_id, "birthDate": birth.birth_date}}}),
        )
        .await,
    )
    .await;
    assert_eq!(exists["answer"]["status"], true);

    let duplicate = registry_post(
        &sandbox,
        "civil-register",
        "create",
        json!({"write": {"content": {"certificateNumber": birth.certificate_number, "childFirstName": "X"}}}),
    )
    .await;
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);
    let body = json_of(duplicate).await;
    assert!(body["detail"].as_str().unwrap().contains("certificateNumber"), "{body}");

    // A new birth gets an ID and a certificate number from the register.
    let created = registry_post(
        &sandbox,
        "civil-register",
        "create",
        json!({"write": {"content": {"childFirstName": "Nala", "childLastName": mother.last_name,
            "birthDate": "2025-06-01", "motherId": mother.national_id}}}),
    )
    .await;
    assert_eq!(created.status(), StatusCode::OK);
    let record = json_of(created).await["content"].clone();
    assert_eq!(record["certificateNumber"], record["ID"]);
    let n_births = sandbox.seed_data().births().len();
    assert_eq!(sandbox.registry("civil-register").len(), n_births + 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn registries_list_pages_searches_and_filters() {
    let sandbox = sandbox().await;
    let farmer = sandbox.seed_data().farmer_with_bank_account().clone();
    let in_district = sandbox.seed_data().farmers().iter().filter(|f| f.district == farmer.district).count();
    let base = format!("{}/data/farmer-register/1.0", sandbox.base_url(Service::Registries));
    let response = client()
        .get(&base)
        .header("Information-Mediator-Client", REGISTRY_CLIENT)
        .query(&[("query.district", farmer.district.as_str()), ("pageSize", "2")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = json_of(response).await;
    assert_eq!(page["count"], in_district);
    assert!(page["results"].as_array().unwrap().len() <= 2);
    assert!(page["results"].as_array().unwrap().iter().all(|r| r["district"] == farmer.district.as_str()));
    assert!(page["previous"].is_null());
    if in_district > 2 {
        // `next` is a working absolute URL.
        let next = page["next"].as_str().expect("next link");
        let second = json_of(
            client().get(next).header("Information-Mediator-Client", REGISTRY_CLIENT).send().await.unwrap(),
        )
        .await;
        assert_eq!(second["count"], in_district);
        assert_ne!(second["results"][0], page["results"][0]);
        assert!(second["previous"].is_string());
    }

    let search = json_of(
        client()
            .get(&base)
            .header("Information-Mediator-Client", REGISTRY_CLIENT)
            .query(&[("search", farmer.national_id.as_str()), ("filter", "nationalId")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(search["count"], 1);
    assert_eq!(search["results"][0]["ID"], farmer.id);

    let bad_page = client()
        .get(&base)
        .header("Information-Mediator-Client", REGISTRY_CLIENT)
        .query(&[("page", "zero")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad_page.status(), StatusCode::BAD_REQUEST);
    assert!(json_of(bad_page).await["detail"].as_str().unwrap().contains("page"));

    // A registry nobody created lists as empty (the spec's "registryempty" scenario).
    let empty = json_of(
        client()
            .get(format!("{}/data/nothing-here/1.0", sandbox.base_url(Service::Registries)))
            .header("Information-Mediator-Client", REGISTRY_CLIENT)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(empty, json!({"count": 0, "next": null, "previous": null, "results": []}));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn registries_update_update_or_create_read_value_and_delete() {
    let sandbox = sandbox().await;
    let farmer = sandbox.seed_data().farmer_without_bank_account().clone();
    let registries = sandbox.base_url(Service::Registries);

    let updated = client()
        .put(registry_url(&sandbox, "farmer-register", "update"))
        .header("Information-Mediator-Client", REGISTRY_CLIENT)
        .json(&json!({"query": {"content": {"nationalId": farmer.national_id}},
                      "write": {"content": {"bankAccount": "000111222333"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    let value = json_of(
        client()
            .get(format!("{registries}/data/farmer-register/1.0/{}/readValue/bankAccount.json", farmer.id))
            .header("Information-Mediator-Client", REGISTRY_CLIENT)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(value, json!({"value": "000111222333"}));

    let missing_update = client()
        .put(registry_url(&sandbox, "farmer-register", "update"))
        .header("Information-Mediator-Client", REGISTRY_CLIENT)
        .json(&json!({"query": {"content": {"nationalId": "nobody"}}, "write": {"content": {"x": 1}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing_update.status(), StatusCode::NOT_FOUND);

    // updateOrCreate: creates in a new registry, then updates the same record.
    let licence = json!({"ID": "TL-TEST-1", "holderNationalId": farmer.national_id, "status": "pending"});
    let first =
        registry_post(&sandbox, "licences", "updateOrCreate", json!({"write": {"content": licence}})).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = registry_post(
        &sandbox,
        "licences",
        "updateOrCreate",
        json!({"query": {"content": {"ID": "TL-TEST-1"}}, "write": {"content": {"status": "active"}}}),
    )
    .await;
    assert_eq!(json_of(second).await["content"]["status"], "active");
    let n_licences = sandbox.seed_data().licences().len();
    assert_eq!(sandbox.registry("licences").len(), n_licences + 1);

    let delete_url = format!("{registries}/data/licences/1.0/TL-TEST-1/delete");
    let deleted = client()
        .delete(&delete_url)
        .header("Information-Mediator-Client", REGISTRY_CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let again = client()
        .delete(&delete_url)
        .header("Information-Mediator-Client", REGISTRY_CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    assert_eq!(sandbox.registry("licences").len(), n_licences);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn registries_reject_missing_header_and_bad_bodies_with_named_fields() {
    let sandbox = sandbox().await;
    let no_header = client()
        .post(registry_url(&sandbox, "population-register", "read"))
        .json(&json!({"query": {"content": {"ID": "1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_header.status(), StatusCode::BAD_REQUEST);
    assert!(json_of(no_header).await["detail"].as_str().unwrap().contains("Information-Mediator-Client"));

    let malformed = client()
        .post(registry_url(&sandbox, "population-register", "read"))
        .header("Information-Mediator-Client", "just-one-part")
        .json(&json!({"query": {"content": {"ID": "1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);

    for (body, field) in [
        (json!({}), "query.content"),
        (json!({"query": {"content": "x"}}), "query.content"),
        (json!([1, 2]), "JSON object"),
    ] {
        let response = registry_post(&sandbox, "population-register", "read", body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let detail = json_of(response).await["detail"].as_str().unwrap().to_string();
        assert!(detail.contains(field), "{detail}");
    }
    let not_json = client()
        .post(registry_url(&sandbox, "population-register", "create"))
        .header("Information-Mediator-Client", REGISTRY_CLIENT)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    sandbox.shutdown().await;
}

// ---------------------------------------------------------------------------------------------------
// Identity

fn committed_client_key() -> EncodingKey {
    let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/sandbox-keys/client-private.pem"))
        .expect("committed client key");
    EncodingKey::from_rsa_pem(&pem).expect("RSA key")
}

fn assertion(key: &EncodingKey, aud: &str, exp_in: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": SANDBOX_CLIENT_ID, "sub": SANDBOX_CLIENT_ID, "aud": aud,
                        "iat": now, "exp": now + exp_in, "jti": uuid::Uuid::new_v4().to_string()});
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, key).expect("sign")
}

/// Runs `/authorize` for `national_id`; returns the redirect's query pairs.
async fn authorize(sandbox: &Sandbox, national_id: &str, scope: &str) -> Vec<(String, String)> {
    let response = client()
        .get(format!("{}/authorize", sandbox.base_url(Service::Identity)))
        .query(&[
            ("scope", scope),
            ("response_type", "code"),
            ("client_id", SANDBOX_CLIENT_ID),
            ("redirect_uri", "http://127.0.0.1:9/callback"),
            ("state", "st-42"),
            ("nonce", "n-7"),
            ("login_hint", national_id),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let url = reqwest::Url::parse(&location).unwrap();
    assert_eq!(url.path(), "/callback");
    url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn pair<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

async fn token_request(sandbox: &Sandbox, code: &str, client_assertion: &str) -> reqwest::Response {
    client()
        .post(format!("{}/oauth/token", sandbox.base_url(Service::Identity)))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", SANDBOX_CLIENT_ID),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", client_assertion),
            ("redirect_uri", "http://127.0.0.1:9/callback"),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn identity_full_flow_yields_claims_verified_against_the_jwks() {
    let sandbox = sandbox().await;
    let identity = sandbox.base_url(Service::Identity);
    let mother = sandbox.seed_data().verified_mother().clone();

    let config =
        json_of(client().get(format!("{identity}/.well-known/openid-configuration")).send().await.unwrap())
            .await;
    let token_endpoint = config["token_endpoint"].as_str().unwrap().to_string();
    assert_eq!(config["issuer"], identity.as_str());

    let pairs = authorize(&sandbox, &mother.national_id, "openid profile email phone").await;
    assert_eq!(pair(&pairs, "state"), Some("st-42"));
    let code = pair(&pairs, "code").expect("code").to_string();

    let response =
        token_request(&sandbox, &code, &assertion(&committed_client_key(), &token_endpoint, 60)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens = json_of(response).await;
    assert_eq!(tokens["token_type"], "Bearer");
    let access_token = tokens["access_token"].as_str().unwrap();

    let jwks = json_of(client().get(config["jwks_uri"].as_str().unwrap()).send().await.unwrap()).await;
    let jwk = &jwks["keys"][0];
    let key = DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
        .expect("JWKS key");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[SANDBOX_CLIENT_ID]);
    validation.set_issuer(&[identity.as_str()]);

    let id_token = jsonwebtoken::decode::<Value>(tokens["id_token"].as_str().unwrap(), &key, &validation)
        .expect("id token verifies against the JWKS");
    assert_eq!(id_token.header.kid.as_deref(), jwk["kid"].as_str());
    assert_eq!(id_token.claims["nonce"], "n-7");

    let userinfo =
        client().get(format!("{identity}/oidc/userinfo")).bearer_auth(access_token).send().await.unwrap();
    assert_eq!(userinfo.status(), StatusCode::OK);
    assert_eq!(userinfo.headers()["content-type"], "application/jwt");
    let jwt = userinfo.text().await.unwrap();
    let mut userinfo_validation = validation.clone();
    userinfo_validation.set_required_spec_claims(&["sub"]);
    let claims = jsonwebtoken::decode::<Value>(&jwt, &key, &userinfo_validation)
        .expect("userinfo verifies against the JWKS")
        .claims;
    assert_eq!(claims["sub"], id_token.claims["sub"]);
    assert_eq!(claims["given_name"], mother.first_name);
    assert_eq!(claims["family_name"], mother.last_name);
    assert_eq!(claims["birthdate"], mother.birth_date);
    assert_eq!(claims["gender"], "female");
    assert_eq!(claims["individual_id"], mother.national_id);
    assert_eq!(claims["phone_number"], json!(mother.phone));
    assert_eq!(claims.get("email").cloned(), mother.email.clone().map(Value::from));

    // The code is single-use.
    let reuse =
        token_request(&sandbox, &code, &assertion(&committed_client_key(), &token_endpoint, 60)).await;
    assert_eq!(reuse.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(reuse).await["error"], "invalid_transaction");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn identity_openid_scope_only_shares_no_claims() {
    let sandbox = sandbox().await;
    let mother = sandbox.seed_data().verified_mother().national_id.clone();
    let pairs = authorize(&sandbox, &mother, "openid").await;
    let endpoint = format!("{}/oauth/token", sandbox.base_url(Service::Identity));
    let tokens = json_of(
        token_request(
            &sandbox,
            pair(&pairs, "code").unwrap(),
            &assertion(&committed_client_key(), &endpoint, 60),
        )
        .await,
    )
    .await;
    let jwt = client()
        .get(format!("{}/oidc/userinfo", sandbox.base_url(Service::Identity)))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let payload = jwt.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
            .unwrap();
    assert!(claims.get("sub").is_some());
    assert!(claims.get("name").is_none() && claims.get("individual_id").is_none(), "{claims}");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn identity_denies_unknown_and_deceased_persons() {
    let sandbox = sandbox().await;
    let unknown = sandbox.seed_data().unknown_national_id().to_string();
    let deceased = sandbox.seed_data().deceased_person().national_id.clone();
    for id in [unknown, deceased] {
        let pairs = authorize(&sandbox, &id, "openid profile").await;
        assert_eq!(pair(&pairs, "error"), Some("access_denied"), "{id}");
        assert_eq!(pair(&pairs, "state"), Some("st-42"));
        assert!(pair(&pairs, "code").is_none());
    }
    // An unknown client is never redirected.
    let response = client()
        .get(format!("{}/authorize", sandbox.base_url(Service::Identity)))
        .query(&[
            ("scope", "openid"),
            ("response_type", "code"),
            ("client_id", "evil"),
            ("redirect_uri", "http://evil.invalid/"),
            ("login_hint", "1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(response).await["error"], "invalid_client");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn identity_rejects_bad_client_assertions() {
    let sandbox = sandbox().await;
    let endpoint = format!("{}/oauth/token", sandbox.base_url(Service::Identity));
    let mother = sandbox.seed_data().verified_mother().national_id.clone();
    let wrong_key = EncodingKey::from_rsa_pem(
        &std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/sandbox-keys/identity-private.pem")).unwrap(),
    )
    .unwrap();
    let hmac = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": SANDBOX_CLIENT_ID, "sub": SANDBOX_CLIENT_ID, "aud": endpoint, "exp": 4_000_000_000u64, "iat": 1}),
        &EncodingKey::from_secret(b"guess"),
    )
    .unwrap();
    for (what, bad) in [
        ("signed by another key", assertion(&wrong_key, &endpoint, 60)),
        ("wrong audience", assertion(&committed_client_key(), "https://elsewhere.invalid/token", 60)),
        ("expired", assertion(&committed_client_key(), &endpoint, -3600)),
        ("HS256", hmac),
        ("garbage", "not-a-jwt".to_string()),
    ] {
        let pairs = authorize(&sandbox, &mother, "openid profile").await;
        let response = token_request(&sandbox, pair(&pairs, "code").unwrap(), &bad).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(json_of(response).await["error"], "invalid_client", "{what}");
    }

    // Missing fields answer the spec's 400 codes.
    let token = |form: Vec<(&'static str, &'static str)>| {
        let endpoint = endpoint.clone();
        async move { client().post(endpoint).form(&form).send().await.unwrap() }
    };
    let no_type = token(vec![
        ("grant_type", "authorization_code"),
        ("code", "c"),
        ("client_id", SANDBOX_CLIENT_ID),
        ("client_assertion", "x"),
        ("redirect_uri", "http://a/"),
    ])
    .await;
    assert_eq!(no_type.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(no_type).await["error"], "invalid_assertion_type");
    let no_assertion = token(vec![
        ("grant_type", "authorization_code"),
        ("code", "c"),
        ("client_id", SANDBOX_CLIENT_ID),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("redirect_uri", "http://a/"),
    ])
    .await;
    assert_eq!(json_of(no_assertion).await["error"], "invalid_assertion");
    let empty = client().post(&endpoint).send().await.unwrap();
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(empty).await["error"], "invalid_input");

    let userinfo = client()
        .get(format!("{}/oidc/userinfo", sandbox.base_url(Service::Identity)))
        .bearer_auth("forged")
        .send()
        .await
        .unwrap();
    assert_eq!(userinfo.status(), StatusCode::UNAUTHORIZED);
    assert!(userinfo.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    sandbox.shutdown().await;
}

// ---------------------------------------------------------------------------------------------------
// Payments

/// A tiny server receiving callbacks; answers 500 to the first `n_refusals` of them.
struct CallbackSink {
    url: String,
    received: mpsc::UnboundedReceiver<(HeaderMap, Value)>,
    hits: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct SinkState {
    tx: mpsc::UnboundedSender<(HeaderMap, Value)>,
    hits: Arc<AtomicUsize>,
    n_refusals: usize,
}

async fn callback_sink(n_refusals: usize) -> CallbackSink {
    let (tx, received) = mpsc::unbounded_channel();
    let hits = Arc::new(AtomicUsize::new(0));
    let state = SinkState { tx, hits: hits.clone(), n_refusals };
    let app = Router::new()
        .route(
            "/cb",
            post(|State(s): State<SinkState>, headers: HeaderMap, Json(body): Json<Value>| async move {
                let n = s.hits.fetch_add(1, Ordering::SeqCst);
                if n < s.n_refusals {
                    return AxumStatus::INTERNAL_SERVER_ERROR;
                }
                let _ = s.tx.send((headers, body));
                AxumStatus::OK
            }),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    CallbackSink { url, received, hits, server }
}

impl CallbackSink {
    async fn next(&mut self) -> (HeaderMap, Value) {
        tokio::time::timeout(SOON, self.received.recv())
            .await
            .expect("callback within the deadline")
            .expect("sink open")
    }
}

impl Drop for CallbackSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn transfer(request_id: &str, key: &str, value: &str, amount: Value) -> Value {
    json!({
        "requestId": request_id,
        "creditParty": [{"key": key, "value": value}],
        "debitParty": [{"key": "accountNumber", "value": "TREASURY-001"}],
        "paymentMode": "bank",
        "amount": amount,
        "currency": "USD",
        "descriptionText": "flood relief",
    })
}

async fn submit_batch(
    sandbox: &Sandbox,
    correlation: &str,
    callback: &str,
    body: &Value,
) -> reqwest::Response {
    client()
        .post(format!("{}/batchtransactions?type=raw", sandbox.base_url(Service::Payments)))
        .header("X-CorrelationID", correlation)
        .header("Platform-TenantId", "gov")
        .header("X-Callback-URL", callback)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn payments_accept_a_batch_and_call_back_with_each_outcome() {
    let sandbox = sandbox().await;
    let mut sink = callback_sink(0).await;
    let paid = sandbox.seed_data().farmer_with_bank_account().clone();
    let unpaid = sandbox.seed_data().farmer_without_bank_account().clone();
    let batch = json!([
        transfer("tx-1", "nationalId", &paid.national_id, json!(120.5)),
        transfer("tx-2", "nationalId", &unpaid.national_id, json!(80)),
        transfer("tx-3", "accountNumber", "998877665544", json!(0)),
        transfer("tx-4", "msisdn", "+99971234567", json!(15)),
    ]);
    let response = submit_batch(&sandbox, "corr-1", &sink.url, &batch).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let batch_id = json_of(response).await["batchId"].as_str().unwrap().to_string();

    let (headers, body) = sink.next().await;
    assert_eq!(headers["x-correlationid"], "corr-1");
    assert_eq!(body["batchId"], batch_id.as_str());
    assert_eq!(body["correlationId"], "corr-1");
    assert_eq!(body["status"], "FAILED", "two transactions failed");
    assert_eq!(body["completed"], 2);
    assert_eq!(body["failed"], 2);
    let tx = |id: &str| {
        body["transactions"].as_array().unwrap().iter().find(|t| t["requestId"] == id).unwrap().clone()
    };
    assert_eq!(tx("tx-1")["status"], "COMPLETED");
    assert_eq!(tx("tx-2")["status"], "FAILED");
    assert!(tx("tx-2")["reason"].as_str().unwrap().contains("no account"));
    assert!(tx("tx-3")["reason"].as_str().unwrap().contains("greater than 0"));
    assert_eq!(tx("tx-4")["status"], "COMPLETED");

    let disbursements = sandbox.disbursements();
    assert_eq!(disbursements.len(), 2);
    assert_eq!(disbursements[0].request_id, "tx-1");
    assert_eq!(disbursements[0].financial_address, paid.bank_account.clone().unwrap());
    assert_eq!(disbursements[0].amount, 120.5);
    assert_eq!(disbursements[0].batch_id, batch_id);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn payments_never_pay_a_request_id_twice_and_call_back_again_on_resubmission() {
    let sandbox = sandbox().await;
    let mut sink = callback_sink(0).await;
    let farmer = sandbox.seed_data().farmer_with_bank_account().clone();
    let batch = json!([transfer("dup-1", "nationalId", &farmer.national_id, json!(50))]);

    let first = json_of(submit_batch(&sandbox, "corr-dup", &sink.url, &batch).await).await;
    let (_, first_callback) = sink.next().await;
    // The caller "lost" the callback and sends the same batch again.
    let again = submit_batch(&sandbox, "corr-dup", &sink.url, &batch).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(json_of(again).await["batchId"], first["batchId"]);
    let (_, second_callback) = sink.next().await;
    assert_eq!(second_callback["transactions"], first_callback["transactions"]);
    assert_eq!(sandbox.disbursements().len(), 1, "paid once");

    // A new batch (new correlation id) holding the same requestId is not paid either.
    let third = submit_batch(&sandbox, "corr-dup-2", &sink.url, &batch).await;
    assert_eq!(third.status(), StatusCode::ACCEPTED);
    let (_, third_callback) = sink.next().await;
    assert_eq!(third_callback["transactions"][0]["status"], "COMPLETED");
    assert!(third_callback["transactions"][0]["reason"].as_str().unwrap().contains("duplicate"));
    assert_eq!(sandbox.disbursements().len(), 1, "still paid once");

    // The same requestId twice inside one batch: paid once.
    let twice = json!([
        transfer("dup-2", "nationalId", &farmer.national_id, json!(10)),
        transfer("dup-2", "nationalId", &farmer.national_id, json!(10)),
    ]);
    submit_batch(&sandbox, "corr-dup-3", &sink.url, &twice).await;
    sink.next().await;
    assert_eq!(sandbox.disbursements().iter().filter(|d| d.request_id == "dup-2").count(), 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn payments_retry_a_refused_callback() {
    let sandbox = sandbox().await;
    let mut sink = callback_sink(2).await;
    let farmer = sandbox.seed_data().farmer_with_bank_account().clone();
    let batch = json!([transfer("retry-1", "nationalId", &farmer.national_id, json!(5))]);
    submit_batch(&sandbox, "corr-retry", &sink.url, &batch).await;
    let (_, body) = sink.next().await;
    assert_eq!(body["status"], "COMPLETED");
    assert_eq!(sink.hits.load(Ordering::SeqCst), 3, "two 500s, then delivered");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn payments_reject_missing_headers_and_invalid_instructions_naming_them() {
    let sandbox = sandbox().await;
    let url = format!("{}/batchtransactions?type=raw", sandbox.base_url(Service::Payments));
    let body = json!([transfer("h-1", "accountNumber", "1234567", json!(1))]);
    let headers = [
        ("X-CorrelationID", "corr-h"),
        ("Platform-TenantId", "gov"),
        ("X-Callback-URL", "http://127.0.0.1:9/cb"),
    ];
    for missing in 0..headers.len() {
        let mut request = client().post(&url).json(&body);
        for (i, (name, value)) in headers.iter().enumerate() {
            if i != missing {
                request = request.header(*name, *value);
            }
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let error = json_of(response).await["error"].as_str().unwrap().to_string();
        assert!(error.contains(headers[missing].0), "{error}");
    }

    let send = |body: Value| {
        let url = url.clone();
        async move {
            let mut request = client().post(url).json(&body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            json_of(response).await["error"].as_str().unwrap().to_string()
        }
    };
    assert!(send(json!([])).await.contains("at least one"));
    assert!(send(json!({"requestId": "x"})).await.contains("array"));
    let mut no_amount = transfer("h-2", "accountNumber", "1234567", json!(1));
    no_amount.as_object_mut().unwrap().remove("amount");
    assert!(send(json!([no_amount])).await.contains("[0].amount"));
    assert!(send(json!([transfer("h-3", "accountNumber", "1", json!("12.5"))])).await.contains("[0].amount"));
    assert!(send(json!([transfer("a-request-id-longer-than-16", "accountNumber", "1", json!(1))]))
        .await
        .contains("[0].requestId"));

    let no_type = client()
        .post(format!("{}/batchtransactions", sandbox.base_url(Service::Payments)))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_type.status(), StatusCode::BAD_REQUEST);
    assert!(sandbox.disbursements().is_empty());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn payments_beneficiary_registration_makes_a_payee_payable() {
    let sandbox = sandbox().await;
    let mut sink = callback_sink(0).await;
    let farmer = sandbox.seed_data().farmer_without_bank_account().clone();
    let payments = sandbox.base_url(Service::Payments);

    let registered = client()
        .post(format!("{payments}/identityAccountMapper/beneficiary"))
        .header("X-Callback-URL", &sink.url)
        .header("X-Registering-Institution-ID", "MINAGRI")
        .json(&json!({"RequestID": "reg-1", "Beneficiaries": [
            {"payeeIdentity": farmer.national_id, "PaymentModality": "00", "FinancialAddress": "555000111222"}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::OK);
    assert_eq!(json_of(registered).await["responseCode"], "00");
    let (_, notification) = sink.next().await;
    assert_eq!(notification["registerRequestID"], "reg-1");
    assert_eq!(notification["numberFailedCases"], 0);
    assert!(sandbox.beneficiaries().iter().any(|b| b["payeeIdentity"] == farmer.national_id.as_str()));

    let updated = client()
        .put(format!("{payments}/identityAccountMapper/beneficiary"))
        .json(&json!({"requestID": "upd-1", "sourceBBID": "REGISTRATION", "beneficiaries": [
            {"payeeIdentity": farmer.national_id, "financialAddress": "555000999888"}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);

    submit_batch(
        &sandbox,
        "corr-ben",
        &sink.url,
        &json!([transfer("ben-1", "nationalId", &farmer.national_id, json!(30))]),
    )
    .await;
    let (_, outcome) = sink.next().await;
    assert_eq!(outcome["status"], "COMPLETED");
    assert_eq!(sandbox.disbursements()[0].financial_address, "555000999888");

    let missing_header = client()
        .post(format!("{payments}/identityAccountMapper/beneficiary"))
        .header("X-Callback-URL", &sink.url)
        .json(&json!({"RequestID": "reg-2", "Beneficiaries": [{"payeeIdentity": "1"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing_header.status(), StatusCode::BAD_REQUEST);
    let body = json_of(missing_header).await;
    assert_eq!(body["ResponseCode"], "01");
    assert!(body["ResponseDescription"].as_str().unwrap().contains("X-Registering-Institution-ID"));
    sandbox.shutdown().await;
}

// ---------------------------------------------------------------------------------------------------
// Messaging

#[tokio::test]
async fn messaging_sends_email_and_sms_into_the_outbox_and_reports_status() {
    let sandbox = sandbox().await;
    let messaging = sandbox.base_url(Service::Messaging);
    let single = client()
        .post(format!("{messaging}/send/email/single"))
        .header("apiKey", "sandbox-api-key")
        .json(&json!({"senderInfo": {"organisationName": "Ministry"},
                      "recipientInfo": {"email": "amina@mail.example", "name": "Amina"},
                      "emailContent": {"title": "Your card", "content": "It is ready."}}))
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), StatusCode::OK);
    let uid = json_of(single).await["requestUid"].as_str().unwrap().to_string();

    let recipients = STANDARD.encode(
        json!([{"recipientInfo": {"email": "a@mail.example"}}, {"recipientInfo": {"email": "b@mail.example"}}]).to_string(),
    );
    let batch = client()
        .post(format!("{messaging}/send/email/batch"))
        .header("apiKey", "sandbox-api-key")
        .json(&json!({"recipientInfo": {"batchEmailAsBase64": recipients},
                      "emailContent": {"title": "Notice", "content": "Hello"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), StatusCode::OK);
    let batch_uid = json_of(batch).await["requestUid"].as_str().unwrap().to_string();

    let sms = client()
        .post(format!("{messaging}/send/sms/single"))
        .header("apiKey", "sandbox-api-key")
        .json(&json!({"recipientInfo": {"phoneNumber": "+999 7123 4567"}, "smsContent": {"content": "Paid 50 USD"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(sms.status(), StatusCode::OK);

    let messages = sandbox.messages();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[0].to, "amina@mail.example");
    assert_eq!(messages[0].subject.as_deref(), Some("Your card"));
    assert_eq!(messages[0].request_uid, uid);
    assert_eq!(messages[1].request_uid, batch_uid);
    assert_eq!(messages[3].channel, Channel::Sms);
    assert_eq!(messages[3].to, "+99971234567");

    let status = client()
        .get(format!("{messaging}/status/email"))
        .header("apiKey", "sandbox-api-key")
        .header("requestUid", &batch_uid)
        .query(&[("status", "delivered"), ("status", "bounced")])
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), StatusCode::OK);
    assert_eq!(json_of(status).await, json!({"delivered": 2, "bounced": 0}));

    // The admin route lists the same outbox.
    let listed =
        json_of(client().get(format!("http://{}/sandbox/messages", sandbox.addr())).send().await.unwrap())
            .await;
    assert_eq!(listed.as_array().unwrap().len(), 4);
    assert_eq!(listed[3]["channel"], "sms");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn messaging_rejects_missing_or_wrong_api_keys_and_bad_bodies() {
    let sandbox = sandbox().await;
    let url = format!("{}/send/email/single", sandbox.base_url(Service::Messaging));
    let body = json!({"recipientInfo": {"email": "a@mail.example"}, "emailContent": {"content": "x"}});
    let missing = client().post(&url).json(&body).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::METHOD_NOT_ALLOWED, "the spec's 405 Invalid input");
    assert!(json_of(missing).await["error"].as_str().unwrap().contains("apiKey"));
    let wrong = client().post(&url).header("apiKey", "nope").json(&body).send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let no_recipient = client()
        .post(&url)
        .header("apiKey", "sandbox-api-key")
        .json(&json!({"emailContent": {"content": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_recipient.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(json_of(no_recipient).await["error"].as_str().unwrap().contains("recipientInfo.email"));
    let bad_phone = client()
        .post(format!("{}/send/sms/single", sandbox.base_url(Service::Messaging)))
        .header("apiKey", "sandbox-api-key")
        .json(&json!({"to": "call me", "message": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_phone.status(), StatusCode::METHOD_NOT_ALLOWED);
    let get_on_send = client().get(&url).send().await.unwrap();
    assert_eq!(get_on_send.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(sandbox.messages().is_empty());
    sandbox.shutdown().await;
}

// ---------------------------------------------------------------------------------------------------
// Information Mediator

fn im_url(sandbox: &Sandbox, service: &str, path: &str) -> String {
    format!("{}/r1/GOV/GOV/REGISTRY/PROVIDER/{service}/{path}", sandbox.base_url(Service::Mediator))
}

#[tokio::test]
async fn mediator_forwards_allowed_clients_and_logs_them() {
    let sandbox = sandbox().await;
    let mother = sandbox.seed_data().verified_mother().clone();
    let response = client()
        .post(im_url(&sandbox, "registries", "data/population-register/1.0/read"))
        .header("X-Road-Client", IM_CLIENT)
        .header("X-Road-UserId", "officer-7")
        .header("X-Road-Id", "req-123")
        .json(&json!({"query": {"content": {"ID": mother.national_id}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-road-id"], "req-123");
    assert_eq!(json_of(response).await["content"]["lastName"], mother.last_name);

    // Query strings survive the hop.
    let listed = client()
        .get(im_url(&sandbox, "registries", "data/farmer-register/1.0"))
        .query(&[("pageSize", "3")])
        .header("X-GovStack-Client", IM_CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(listed).await["results"].as_array().unwrap().len(), 3);

    let log = sandbox.mediator_log();
    assert_eq!(log.len(), 2);
    assert!(log[0].allowed);
    assert_eq!(log[0].client_header.as_deref(), Some("X-Road-Client"));
    assert_eq!(log[0].client_id.as_deref(), Some(IM_CLIENT));
    assert_eq!(log[0].x_road_user_id.as_deref(), Some("officer-7"));
    assert_eq!(log[0].x_road_id, "req-123");
    assert_eq!(log[0].service, "registries");
    assert_eq!(log[1].client_header.as_deref(), Some("X-GovStack-Client"));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn mediator_refuses_unknown_clients_services_and_missing_headers() {
    let sandbox = sandbox().await;
    let url = im_url(&sandbox, "registries", "data/population-register/1.0/read");
    let body = json!({"query": {"content": {"ID": "1"}}});

    let denied =
        client().post(&url).header("X-Road-Client", "GOV/GOV/STRANGER/APP").json(&body).send().await.unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    assert_eq!(denied.headers()["x-road-error"], "Client.AccessDenied");
    let error = json_of(denied).await;
    assert_eq!(error["type"], "Client.AccessDenied");
    assert!(error["message"].is_string() && error["detail"].is_string());

    let missing = client().post(&url).json(&body).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert_eq!(missing.headers()["x-road-error"], "Client.BadRequest");

    let unknown = client()
        .get(im_url(&sandbox, "weather", "today"))
        .header("X-Road-Client", IM_CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(unknown.headers()["x-road-error"], "Server.ServerProxy.UnknownService");

    let log = sandbox.mediator_log();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|entry| !entry.allowed));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn mediator_marks_failed_services_and_faults_reach_through_it() {
    let sandbox = sandbox().await;
    sandbox.set_fault(Service::Registries, Fault { error_rate: 1.0, ..Fault::default() });
    let failed = client()
        .get(im_url(&sandbox, "registries", "data/farmer-register/1.0"))
        .header("X-Road-Client", IM_CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failed.headers()["x-road-error"], "Server.ServerProxy.ServiceFailed");

    sandbox.set_fault(Service::Registries, Fault { down: true, ..Fault::default() });
    let down = client()
        .get(im_url(&sandbox, "registries", "data/farmer-register/1.0"))
        .header("X-Road-Client", IM_CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);

    sandbox.clear_faults();
    sandbox.set_fault(Service::Mediator, Fault { down: true, ..Fault::default() });
    let mediator_down = client()
        .get(im_url(&sandbox, "registries", "data/farmer-register/1.0"))
        .header("X-Road-Client", IM_CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(mediator_down.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The direct route is unaffected by a mediator fault.
    let direct = client()
        .get(format!("{}/data/farmer-register/1.0", sandbox.base_url(Service::Registries)))
        .header("Information-Mediator-Client", REGISTRY_CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), StatusCode::OK);
    sandbox.shutdown().await;
}

// ---------------------------------------------------------------------------------------------------
// Faults

#[tokio::test]
async fn fault_down_answers_503_until_cleared() {
    let sandbox = sandbox().await;
    sandbox.set_fault(Service::Messaging, Fault { down: true, ..Fault::default() });
    let url = format!("{}/send/email/single", sandbox.base_url(Service::Messaging));
    let body = json!({"recipientInfo": {"email": "a@mail.example"}, "emailContent": {"content": "x"}});
    let down = client().post(&url).header("apiKey", "sandbox-api-key").json(&body).send().await.unwrap();
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(sandbox.messages().is_empty(), "a down BB does nothing");
    sandbox.clear_faults();
    let up = client().post(&url).header("apiKey", "sandbox-api-key").json(&body).send().await.unwrap();
    assert_eq!(up.status(), StatusCode::OK);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn fault_process_then_timeout_keeps_the_work_but_loses_the_answer() {
    let sandbox = sandbox().await;
    sandbox.set_fault(Service::Registries, Fault { process_then_timeout: true, ..Fault::default() });
    // The work takes milliseconds; 2 s leaves a loaded machine ample time to finish it before the client
    // gives up (a client that gives up first would cancel the work with its connection).
    let result = short_timeout_client(Duration::from_secs(2))
        .post(registry_url(&sandbox, "licences", "create"))
        .header("Information-Mediator-Client", REGISTRY_CLIENT)
        .json(&json!({"write": {"content": {"ID": "TL-LOST-1", "holderNationalId": "1"}}}))
        .send()
        .await;
    assert!(result.expect_err("no answer").is_timeout());
    assert!(sandbox.registry("licences").iter().any(|r| r["ID"] == "TL-LOST-1"), "the record exists");

    // Payments: the payment is made and the callback still comes; a resubmission is answered from the books.
    let mut sink = callback_sink(0).await;
    let farmer = sandbox.seed_data().farmer_with_bank_account().clone();
    let batch = json!([transfer("lost-1", "nationalId", &farmer.national_id, json!(40))]);
    sandbox.set_fault(Service::Payments, Fault { process_then_timeout: true, ..Fault::default() });
    let lost = short_timeout_client(Duration::from_secs(2))
        .post(format!("{}/batchtransactions?type=raw", sandbox.base_url(Service::Payments)))
        .header("X-CorrelationID", "corr-lost")
        .header("Platform-TenantId", "gov")
        .header("X-Callback-URL", &sink.url)
        .json(&batch)
        .send()
        .await;
    assert!(lost.expect_err("no answer").is_timeout());
    assert_eq!(sandbox.disbursements().len(), 1, "the payment was made");
    let (_, first) = sink.next().await;
    sandbox.clear_faults();
    let retry = submit_batch(&sandbox, "corr-lost", &sink.url, &batch).await;
    assert_eq!(retry.status(), StatusCode::ACCEPTED);
    assert_eq!(json_of(retry).await["batchId"], first["batchId"]);
    sink.next().await;
    assert_eq!(sandbox.disbursements().len(), 1, "and made once");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn fault_timeout_does_nothing_and_shutdown_still_completes() {
    let sandbox = sandbox().await;
    sandbox.set_fault(Service::Registries, Fault { timeout: true, ..Fault::default() });
    let result = short_timeout_client(Duration::from_millis(500))
        .post(registry_url(&sandbox, "licences", "create"))
        .header("Information-Mediator-Client", REGISTRY_CLIENT)
        .json(&json!({"write": {"content": {"ID": "TL-NEVER"}}}))
        .send()
        .await;
    assert!(result.expect_err("no answer").is_timeout());
    assert!(!sandbox.registry("licences").iter().any(|r| r["ID"] == "TL-NEVER"));

    // A request still hanging must not keep the sandbox alive. It goes through the mediator, whose log
    // tells when it has arrived (then it hangs in the registries' fault).
    let hanging_url = im_url(&sandbox, "registries", "data/licences/1.0/read");
    let hanging = tokio::spawn(async move {
        client()
            .post(hanging_url)
            .header("X-Road-Client", IM_CLIENT)
            .json(&json!({"query": {"content": {"ID": "x"}}}))
            .send()
            .await
    });
    let started = Instant::now();
    while sandbox.mediator_log().is_empty() {
        assert!(started.elapsed() < SOON, "the request never arrived");
        tokio::task::yield_now().await;
    }
    tokio::time::timeout(SOON, sandbox.shutdown()).await.expect("shutdown completes");
    let outcome = tokio::time::timeout(SOON, hanging).await.expect("hanging request ends").unwrap();
    if let Ok(response) = outcome {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

#[tokio::test]
async fn fault_latency_delays_answers() {
    let sandbox = sandbox().await;
    sandbox.set_fault(Service::Identity, Fault { latency: Duration::from_millis(300), ..Fault::default() });
    let started = Instant::now();
    let response = client()
        .get(format!("{}/.well-known/jwks.json", sandbox.base_url(Service::Identity)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    sandbox.shutdown().await;
}

/// Which of `n` requests to the registries fail under `error_rate`.
async fn failure_pattern(sandbox: &Sandbox, n: usize) -> Vec<bool> {
    let mut pattern = Vec::with_capacity(n);
    for _ in 0..n {
        let status = client()
            .get(format!("{}/data/licences/1.0", sandbox.base_url(Service::Registries)))
            .header("Information-Mediator-Client", REGISTRY_CLIENT)
            .send()
            .await
            .unwrap()
            .status();
        pattern.push(status == StatusCode::INTERNAL_SERVER_ERROR);
    }
    pattern
}

#[tokio::test]
async fn fault_error_rate_is_deterministic_per_seed() {
    let config = || SandboxConfig { seed: 99, ..SandboxConfig::default() };
    let a = sandbox_with(config()).await;
    let b = sandbox_with(config()).await;
    for sandbox in [&a, &b] {
        sandbox.set_fault(Service::Registries, Fault { error_rate: 0.5, ..Fault::default() });
    }
    let pattern_a = failure_pattern(&a, 40).await;
    let pattern_b = failure_pattern(&b, 40).await;
    assert_eq!(pattern_a, pattern_b, "same seed, same failures");
    let n_failed = pattern_a.iter().filter(|f| **f).count();
    assert!((8..=32).contains(&n_failed), "about half fail: {n_failed}/40");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn faults_are_settable_over_the_admin_routes() {
    let sandbox = sandbox().await;
    let admin = format!("http://{}/sandbox/faults/payments", sandbox.addr());
    let put = client().put(&admin).json(&json!({"down": true, "latency_ms": 5})).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(
        sandbox.fault(Service::Payments),
        Fault { down: true, latency: Duration::from_millis(5), ..Fault::default() }
    );
    let got = json_of(client().get(&admin).send().await.unwrap()).await;
    assert_eq!(got["down"], true);
    assert_eq!(got["latency_ms"], 5);
    let bad = client().put(&admin).json(&json!({"error_rate": 2.0})).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let typo = client().put(&admin).json(&json!({"dwn": true})).send().await.unwrap();
    assert_eq!(typo.status(), StatusCode::BAD_REQUEST);
    let unknown =
        client().get(format!("http://{}/sandbox/faults/weather", sandbox.addr())).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let cleared = client().delete(format!("http://{}/sandbox/faults", sandbox.addr())).send().await.unwrap();
    assert_eq!(cleared.status(), StatusCode::NO_CONTENT);
    assert_eq!(sandbox.fault(Service::Payments), Fault::default());
    sandbox.shutdown().await;
}

// ---------------------------------------------------------------------------------------------------
// Seed data and admin routes

#[tokio::test]
async fn same_seed_same_data_different_seed_different_data() {
    let a = sandbox_with(SandboxConfig { seed: 7, ..SandboxConfig::default() }).await;
    let b = sandbox_with(SandboxConfig { seed: 7, ..SandboxConfig::default() }).await;
    let c = sandbox_with(SandboxConfig { seed: 8, ..SandboxConfig::default() }).await;
    assert_eq!(a.seed_data(), b.seed_data());
    assert_eq!(a.registry("population-register"), b.registry("population-register"));
    assert_eq!(a.beneficiaries(), b.beneficiaries());
    assert_ne!(a.seed_data().persons(), c.seed_data().persons());
    assert_eq!(*a.seed_data(), SeedData::generate(7));

    let data = a.seed_data();
    assert!((250..=400).contains(&data.persons().len()), "{} persons", data.persons().len());
    assert!(data.farmers().len() >= 30 && data.births().len() >= 30);
    assert_eq!(a.registry("population-register").len(), data.persons().len());
    // Every farmer and every birth's mother is a person of the population register.
    assert!(data.farmers().iter().all(|f| data.person(&f.national_id).is_some()));
    assert!(data.births().iter().all(|b| data.person(&b.mother_id).is_some()));
    for sandbox in [a, b, c] {
        sandbox.shutdown().await;
    }
}

#[tokio::test]
async fn admin_routes_list_state_and_unknown_routes_answer_json_404() {
    let sandbox = sandbox().await;
    let root = format!("http://{}", sandbox.addr());
    let index = json_of(client().get(format!("{root}/sandbox")).send().await.unwrap()).await;
    assert_eq!(index["services"]["registries"], sandbox.base_url(Service::Registries).as_str());
    let registry =
        json_of(client().get(format!("{root}/sandbox/registries/farmer-register")).send().await.unwrap())
            .await;
    assert_eq!(registry.as_array().unwrap().len(), sandbox.seed_data().farmers().len());
    let disbursements =
        json_of(client().get(format!("{root}/sandbox/disbursements")).send().await.unwrap()).await;
    assert_eq!(disbursements, json!([]));
    let missing = client().get(format!("{root}/sandbox/registries/nope")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let nowhere = client().get(format!("{root}/nowhere")).send().await.unwrap();
    assert_eq!(nowhere.status(), StatusCode::NOT_FOUND);
    assert!(json_of(nowhere).await["error"].is_string());
    assert_eq!("payments".parse::<Service>(), Ok(Service::Payments));
    assert_eq!(Service::Mediator.to_string(), "mediator");
    assert!("weather".parse::<Service>().is_err());
    sandbox.shutdown().await;
}
