//! Identity verification: `govstack.identity.verify` runs the Identity BB's OpenID Connect flow
//! (`identity/Identity-Provider.yaml`) as a back-office check of a national id, and
//! `govstack.identity.verifyByRegistry` reads the person from the population register (Digital
//! Registries) where a country offers that instead.
//!
//! # The OIDC flow (`govstack.identity.verify`)
//! 1. `GET /authorize?client_id&redirect_uri&scope&response_type=code&state&nonce&login_hint={nationalId}`,
//!    without following the redirect: the `Location` carries `code` (and our `state`) or `error`.
//!    `access_denied` and the other "the person did not authenticate" errors are `ID_NOT_VERIFIED`.
//! 2. `POST /oauth/token` (form) with the code and a private-key-JWT client assertion: RS256, signed with
//!    `connectors.identity.private_key_file`, `iss = sub = client_id`, `aud` = the token endpoint (from
//!    `/.well-known/openid-configuration`, else the URL called), `iat`, `exp` (+5 min), and
//!    `jti = {idempotencyKey}-{attempt}-{random}` (traceable to the job, unique even when a crash repeats
//!    an attempt number).
//! 3. The `id_token` is verified (signature against `/.well-known/jwks.json`, `iss`, `aud = client_id`,
//!    our `nonce`), then `GET /oidc/userinfo` with the access token answers a signed JWT, verified the same
//!    way; its `sub` must be the id token's, and an `individual_id` claim must be the national id asked.
//! 4. Expected claims (`firstName`, `lastName`, `birthDate`) are compared with `given_name`,
//!    `family_name`, `birthdate`, ignoring case and surrounding space; a mismatch is `ID_NOT_VERIFIED`
//!    naming the claims (never their values).
//!
//! The discovery document and the key set are cached; the key set is read again when a token names a key
//! it does not hold (key rotation).
//!
//! # Contract
//! - `/authorize` is the one call not made with [`BbClient::call`]: that client follows redirects, and
//!   this step must read the redirect itself. It is routed the same way (directly or through the
//!   mediator, with the same headers) and its failures map the same way.
//! - No message carries the national id, a claim value, a code or a token.
//!
//! Leaves out: encrypted (JWE) userinfo (the spec's nested JWT; we accept a signed JWT only), the
//! `claims` request parameter, wallet and linked authorisation, refresh tokens, PKCE.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{
    complete, optional, optional_str, permanent, require_text, required, setting_or, text_field, Param,
    TaskContract,
};
use crate::client::{BbClient, BbRequest, BbResponse};
use crate::config::{Bb, ConfigError};
use crate::connector::{Connector, ConnectorError, ConnectorFuture, ConnectorRequest, Outcome};

pub const VERIFY: &str = "govstack.identity.verify";
pub const VERIFY_BY_REGISTRY: &str = "govstack.identity.verifyByRegistry";
pub const ID_NOT_VERIFIED: &str = "ID_NOT_VERIFIED";

/// The OIDC scope asked for, unless the `scope` header says otherwise.
pub const DEFAULT_SCOPE: &str = "openid profile";
pub const DEFAULT_POPULATION_REGISTER: &str = "population-register";
/// The field of a population-register record holding the national id (the Data API's examples and the
/// sandbox use `ID`).
pub const DEFAULT_ID_FIELD: &str = "ID";

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const ASSERTION_LIFETIME_SECS: i64 = 300;
/// The errors by which an OIDC provider says the person did not (or could not) authenticate.
const NOT_AUTHENTICATED: &[&str] = &[
    "access_denied",
    "login_required",
    "interaction_required",
    "consent_required",
    "account_selection_required",
];

const NATIONAL_ID: Param = required("nationalId", "the national id to verify");
const EXPECTED: [Param; 3] = [
    optional("firstName", "expected first name (compared ignoring case)"),
    optional("lastName", "expected last name (compared ignoring case)"),
    optional("birthDate", "expected birth date, YYYY-MM-DD"),
];

pub const CONTRACTS: &[TaskContract] = &[
    TaskContract {
        job_type: VERIFY,
        inputs: &[NATIONAL_ID, EXPECTED[0], EXPECTED[1], EXPECTED[2]],
        headers: &[optional("scope", "OIDC scope (default \"openid profile\"; \"openid\" shares no claims)")],
        outputs: &["identity"],
        errors: &[ID_NOT_VERIFIED],
    },
    TaskContract {
        job_type: VERIFY_BY_REGISTRY,
        inputs: &[NATIONAL_ID, EXPECTED[0], EXPECTED[1], EXPECTED[2]],
        headers: &[
            optional("registry", "population register name (default population-register)"),
            optional("version", "register version (default 1.0)"),
            optional("idField", "the record field holding the national id (default ID)"),
        ],
        outputs: &["identity"],
        errors: &[ID_NOT_VERIFIED],
    },
];

/// The identity connector (both job types).
#[derive(Clone)]
pub struct IdentityConnector {
    client: BbClient,
    /// For `/authorize` only: never follows a redirect.
    no_redirect: reqwest::Client,
    /// Our client-assertion key, when `connectors.identity.private_key_file` is set.
    key: Option<Arc<EncodingKey>>,
    cache: Arc<Mutex<Cache>>,
}

impl std::fmt::Debug for IdentityConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConnector").field("has_key", &self.key.is_some()).finish_non_exhaustive()
    }
}

/// What the provider published, kept between jobs.
#[derive(Debug, Default)]
struct Cache {
    discovery: Option<Discovery>,
    keys: Option<Arc<KeySet>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Discovery {
    issuer: Option<String>,
    token_endpoint: Option<String>,
}

/// RSA public keys of the provider by key id (`""` for a key without one).
#[derive(Default)]
struct KeySet {
    keys: BTreeMap<String, DecodingKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

impl IdentityConnector {
    /// Reads the client-assertion key now, so a missing or malformed key file stops the start.
    pub fn new(client: BbClient) -> Result<IdentityConnector, ConfigError> {
        let key = match &client.config().identity.private_key_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|error| {
                    ConfigError(format!(
                        "connectors.identity.private_key_file: cannot read {}: {error}",
                        path.display()
                    ))
                })?;
                let not_a_key = || {
                    ConfigError(format!(
                        "connectors.identity.private_key_file: {} is not an RSA private key in PEM form",
                        path.display()
                    ))
                };
                let key = EncodingKey::from_rsa_pem(&pem).map_err(|_| not_a_key())?;
                // A public key parses too, and fails only when signing: sign once now.
                jsonwebtoken::encode(&Header::new(Algorithm::RS256), &json!({}), &key)
                    .map_err(|_| not_a_key())?;
                Some(Arc::new(key))
            }
            None => None,
        };
        let no_redirect = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| ConfigError(format!("cannot build the HTTP client: {error}")))?;
        Ok(IdentityConnector { client, no_redirect, key, cache: Arc::default() })
    }
}

impl Connector for IdentityConnector {
    fn job_types(&self) -> Vec<String> {
        CONTRACTS.iter().map(|contract| contract.job_type.to_owned()).collect()
    }

    fn invoke(&self, request: ConnectorRequest) -> ConnectorFuture {
        let connector = self.clone();
        Box::pin(async move {
            match request.job_type.as_str() {
                VERIFY => connector.verify(&request).await,
                VERIFY_BY_REGISTRY => verify_by_registry(&connector.client, &request).await,
                other => Err(permanent(&request, format!("the identity connector does not serve '{other}'"))),
            }
        })
    }
}

/// The claims a task expects, as (input variable, OIDC claim, expected value).
fn expected_claims(
    request: &ConnectorRequest,
) -> Result<Vec<(&'static str, &'static str, String)>, ConnectorError> {
    let mut expected = Vec::new();
    for (input, claim) in
        [("firstName", "given_name"), ("lastName", "family_name"), ("birthDate", "birthdate")]
    {
        if let Some(value) = optional_str(request, input)? {
            if !value.trim().is_empty() {
                expected.push((input, claim, value));
            }
        }
    }
    Ok(expected)
}

/// Case- and space-insensitive equality of names and dates.
fn same(a: &str, b: &str) -> bool {
    let normal = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    normal(a) == normal(b)
}

/// `ID_NOT_VERIFIED` when a claim differs from what the task expects, naming the claims that differ.
fn compare(
    expected: &[(&'static str, &'static str, String)],
    actual: &dyn Fn(&str) -> Option<String>,
    source: &str,
) -> Result<(), ConnectorError> {
    let mut mismatched = Vec::new();
    let mut missing = Vec::new();
    for (input, claim, value) in expected {
        match actual(claim) {
            Some(actual) if same(&actual, value) => {}
            Some(_) => mismatched.push(format!("{input} ({claim})")),
            None => missing.push(format!("{input} ({claim})")),
        }
    }
    if mismatched.is_empty() && missing.is_empty() {
        return Ok(());
    }
    let mut parts = Vec::new();
    if !mismatched.is_empty() {
        parts.push(format!("{} differ from {source}", mismatched.join(", ")));
    }
    if !missing.is_empty() {
        parts.push(format!("{} not shared by {source}", missing.join(", ")));
    }
    Err(ConnectorError::business(
        ID_NOT_VERIFIED,
        format!("the person's claims do not match: {}", parts.join("; ")),
    ))
}

impl IdentityConnector {
    async fn verify(&self, request: &ConnectorRequest) -> Result<Outcome, ConnectorError> {
        let national_id = require_text(request, "nationalId")?;
        let expected = expected_claims(request)?;
        let config = &self.client.config().identity;
        let client_id = config.client_id.clone().ok_or_else(|| {
            permanent(request, "set connectors.identity.client_id (our OIDC client id) in govflow.toml")
        })?;
        let redirect_uri = config.redirect_uri.clone().ok_or_else(|| {
            permanent(
                request,
                "set connectors.identity.redirect_uri (registered for our OIDC client) in govflow.toml",
            )
        })?;
        let key = self.key.clone().ok_or_else(|| {
            permanent(
                request,
                "set connectors.identity.private_key_file (the key of our private-key-JWT client assertion) in govflow.toml",
            )
        })?;
        let scope = setting_or(request, "scope", DEFAULT_SCOPE);
        if !expected.is_empty() && !scope.split_whitespace().any(|s| s == "profile") {
            return Err(permanent(
                request,
                format!(
                    "scope '{scope}' shares no profile claims, so the expected {} cannot be compared: add \
                     'profile' to the scope header or map no expected claims",
                    expected.iter().map(|(input, _, _)| *input).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let state = uuid::Uuid::new_v4().simple().to_string();
        let nonce = uuid::Uuid::new_v4().simple().to_string();

        let query = vec![
            ("client_id".to_owned(), client_id.clone()),
            ("redirect_uri".to_owned(), redirect_uri.clone()),
            ("scope".to_owned(), scope),
            ("response_type".to_owned(), "code".to_owned()),
            ("state".to_owned(), state.clone()),
            ("nonce".to_owned(), nonce.clone()),
            ("login_hint".to_owned(), national_id.clone()),
        ];
        let code = self.authorize(request, query, &state).await?;

        let discovery = self.discovery(request).await;
        let token_endpoint = match discovery.token_endpoint.clone() {
            Some(endpoint) => endpoint,
            None => self.client.url(Bb::Identity, "/oauth/token")?.0,
        };
        let assertion = client_assertion(&key, &client_id, &token_endpoint, request)?;
        let token = self.token(request, &code, &client_id, &redirect_uri, assertion).await?;

        let id_claims = self
            .verified_claims(
                request,
                "id token",
                &token.id_token,
                &client_id,
                discovery.issuer.as_deref(),
                true,
            )
            .await?;
        if text_field(&id_claims, "nonce") != Some(nonce.as_str()) {
            return Err(ConnectorError::Permanent(
                "identity BB token: the id token does not carry our nonce (possible replay)".to_owned(),
            ));
        }
        let userinfo = self.userinfo(request, &token.access_token).await?;
        let claims = self
            .verified_claims(request, "userinfo", &userinfo, &client_id, discovery.issuer.as_deref(), false)
            .await?;
        let sub = text_field(&claims, "sub").unwrap_or_default().to_owned();
        if sub.is_empty() || text_field(&id_claims, "sub") != Some(sub.as_str()) {
            return Err(ConnectorError::Permanent(
                "identity BB userinfo: its sub is not the id token's sub".to_owned(),
            ));
        }
        if let Some(individual) = text_field(&claims, "individual_id") {
            if individual != national_id {
                return Err(ConnectorError::business(
                    ID_NOT_VERIFIED,
                    "the Identity BB authenticated a different person than the national id asked",
                ));
            }
        }
        let claim = |name: &str| text_field(&claims, name).map(str::to_owned);
        compare(&expected, &claim, "the Identity BB")?;
        let mut identity = Map::new();
        identity.insert("verified".into(), Value::Bool(true));
        identity.insert("method".into(), json!("oidc"));
        for (name, value) in claims.as_object().into_iter().flatten() {
            if !matches!(name.as_str(), "iss" | "aud" | "iat" | "exp" | "nbf" | "jti" | "nonce") {
                identity.insert(name.clone(), value.clone());
            }
        }
        Ok(complete([("identity", Value::Object(identity))]))
    }

    /// Step 1: the authorization code for the person, or `ID_NOT_VERIFIED`.
    async fn authorize(
        &self,
        request: &ConnectorRequest,
        query: Vec<(String, String)>,
        state: &str,
    ) -> Result<String, ConnectorError> {
        const OPERATION: &str = "authorize";
        let (url, mediated) = self.client.url(Bb::Identity, "/authorize")?;
        let config = self.client.config();
        let timeout = config.timeout(Bb::Identity);
        let mut headers = HeaderMap::new();
        if mediated {
            if let Some(mediator) = &config.mediator {
                insert(&mut headers, mediator.client_header.name(), &mediator.client)?;
            }
            insert(&mut headers, "X-Road-Id", &request.idempotency_key)?;
            if let Some(user) = &request.user {
                insert(&mut headers, "X-Road-UserId", user)?;
            }
        }
        let response = self
            .no_redirect
            .get(&url)
            .query(&query)
            .headers(headers)
            .timeout(timeout)
            .send()
            .await
            .map_err(|error| transport(OPERATION, timeout, &error))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|error| transport(OPERATION, timeout, &error))?;
        let answer = BbResponse { status, headers, body, path: "/authorize".to_owned() };
        if let Some(code) = answer.headers.get("X-Road-Error").and_then(|value| value.to_str().ok()) {
            let message = format!(
                "identity BB {OPERATION}: the Information Mediator answered {code} (HTTP {status}) for /authorize: {}",
                answer.excerpt()
            );
            return Err(if code.starts_with("Client") {
                ConnectorError::Permanent(message)
            } else {
                ConnectorError::retryable(message)
            });
        }
        if status >= 500 || status == 429 || status == 408 {
            return Err(ConnectorError::retryable(format!(
                "identity BB {OPERATION}: HTTP {status} from /authorize: {}",
                answer.excerpt()
            )));
        }
        if !(300..400).contains(&status) {
            if (200..300).contains(&status) {
                return Err(ConnectorError::Permanent(format!(
                    "identity BB {OPERATION}: HTTP {status} (a login page) instead of a redirect: this provider does \
                     not authenticate by login_hint, so it cannot verify a national id in the back office"
                )));
            }
            return Err(ConnectorError::Permanent(format!(
                "identity BB {OPERATION}: HTTP {status} from /authorize: {}",
                oauth_error(&answer)
            )));
        }
        let location =
            answer.headers.get(LOCATION).and_then(|value| value.to_str().ok()).ok_or_else(|| {
                ConnectorError::Permanent(format!(
                    "identity BB {OPERATION}: HTTP {status} without a Location header"
                ))
            })?;
        let parsed = reqwest::Url::parse(&url).and_then(|base| base.join(location)).map_err(|_| {
            ConnectorError::Permanent(format!("identity BB {OPERATION}: the redirect is not a URL"))
        })?;
        let params: BTreeMap<String, String> = parsed.query_pairs().into_owned().collect();
        if params.get("state").map(String::as_str) != Some(state) {
            return Err(ConnectorError::Permanent(format!(
                "identity BB {OPERATION}: the redirect does not carry our state (possible forgery)"
            )));
        }
        if let Some(error) = params.get("error") {
            let description = params.get("error_description").map(|d| format!(" ({d})")).unwrap_or_default();
            if NOT_AUTHENTICATED.contains(&error.as_str()) {
                return Err(ConnectorError::business(
                    ID_NOT_VERIFIED,
                    format!("the Identity BB did not authenticate the person: {error}{description}"),
                ));
            }
            return Err(ConnectorError::Permanent(format!(
                "identity BB {OPERATION}: the provider refused the request: {error}{description}"
            )));
        }
        params.get("code").filter(|code| !code.is_empty()).cloned().ok_or_else(|| {
            ConnectorError::Permanent(format!(
                "identity BB {OPERATION}: the redirect carries neither code nor error"
            ))
        })
    }

    /// The provider's issuer and token endpoint (cached); empty when it publishes no discovery document.
    async fn discovery(&self, request: &ConnectorRequest) -> Discovery {
        if let Some(discovery) = lock(&self.cache).discovery.clone() {
            return discovery;
        }
        let call = BbRequest::new(Method::GET, "/.well-known/openid-configuration", "identity discovery")
            .for_job(&request.idempotency_key, request.user.as_deref());
        let Ok(response) = self.client.call(Bb::Identity, call).await else {
            // Not cached: a provider that was down is asked again by the next job.
            return Discovery { issuer: None, token_endpoint: None };
        };
        let body = if response.is_success() { response.json(Bb::Identity, "discovery").ok() } else { None };
        let discovery = Discovery {
            issuer: body.as_ref().and_then(|b| text_field(b, "issuer")).map(str::to_owned),
            token_endpoint: body.as_ref().and_then(|b| text_field(b, "token_endpoint")).map(str::to_owned),
        };
        if response.is_success() || response.status == 404 {
            lock(&self.cache).discovery = Some(discovery.clone());
        }
        discovery
    }

    /// Step 2: the tokens for an authorization code.
    async fn token(
        &self,
        request: &ConnectorRequest,
        code: &str,
        client_id: &str,
        redirect_uri: &str,
        assertion: String,
    ) -> Result<Tokens, ConnectorError> {
        let form = vec![
            ("grant_type".to_owned(), "authorization_code".to_owned()),
            ("code".to_owned(), code.to_owned()),
            ("client_id".to_owned(), client_id.to_owned()),
            ("redirect_uri".to_owned(), redirect_uri.to_owned()),
            ("client_assertion_type".to_owned(), ASSERTION_TYPE.to_owned()),
            ("client_assertion".to_owned(), assertion),
        ];
        let call = BbRequest::new(Method::POST, "/oauth/token", "identity token")
            .form(form)
            .for_job(&request.idempotency_key, request.user.as_deref());
        let response = self.client.call(Bb::Identity, call).await?;
        tokens(&response)
    }

    /// Step 3: the userinfo JWT.
    async fn userinfo(
        &self,
        request: &ConnectorRequest,
        access_token: &str,
    ) -> Result<String, ConnectorError> {
        let call = BbRequest::new(Method::GET, "/oidc/userinfo", "identity userinfo")
            .header("Authorization", format!("Bearer {access_token}"))
            .for_job(&request.idempotency_key, request.user.as_deref());
        let response = self.client.call(Bb::Identity, call).await?;
        if !response.is_success() {
            return Err(ConnectorError::Permanent(format!(
                "identity BB userinfo: HTTP {} from /oidc/userinfo: {}",
                response.status,
                oauth_error(&response)
            )));
        }
        let text = String::from_utf8_lossy(&response.body).trim().to_owned();
        if text.split('.').count() != 3 {
            return Err(ConnectorError::Permanent(
                "identity BB userinfo: the answer is not a signed JWT (an encrypted or plain answer is not accepted)"
                    .to_owned(),
            ));
        }
        Ok(text)
    }

    /// The claims of a JWT signed by the provider, after checking signature, issuer and audience.
    async fn verified_claims(
        &self,
        request: &ConnectorRequest,
        what: &str,
        jwt: &str,
        client_id: &str,
        issuer: Option<&str>,
        id_token: bool,
    ) -> Result<Value, ConnectorError> {
        let header = jsonwebtoken::decode_header(jwt)
            .map_err(|error| ConnectorError::Permanent(format!("identity BB {what}: not a JWT: {error}")))?;
        let kid = header.kid.unwrap_or_default();
        let mut keys = self.keys(request, false).await?;
        let known = |keys: &KeySet| keys.keys.contains_key(&kid) || (kid.is_empty() && keys.keys.len() == 1);
        if !known(&keys) {
            keys = self.keys(request, true).await?;
        }
        let key =
            keys.keys.get(&kid).or_else(|| if kid.is_empty() { keys.keys.values().next() } else { None });
        let key = key.ok_or_else(|| {
            ConnectorError::Permanent(format!(
                "identity BB {what}: signed with key '{kid}', which /.well-known/jwks.json does not publish"
            ))
        })?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.algorithms = vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ];
        validation.set_audience(&[client_id]);
        if let Some(issuer) = issuer {
            validation.set_issuer(&[issuer]);
        }
        if id_token {
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        } else {
            // A userinfo JWT need not expire; its `aud` and `iss` are checked when present.
            validation.set_required_spec_claims(&["sub"]);
        }
        let data = jsonwebtoken::decode::<Value>(jwt, key, &validation).map_err(|error| {
            ConnectorError::Permanent(format!("identity BB {what}: the JWT failed verification: {error}"))
        })?;
        Ok(data.claims)
    }

    /// The provider's key set (cached unless `refresh`).
    async fn keys(&self, request: &ConnectorRequest, refresh: bool) -> Result<Arc<KeySet>, ConnectorError> {
        if !refresh {
            if let Some(keys) = lock(&self.cache).keys.clone() {
                return Ok(keys);
            }
        }
        let call = BbRequest::new(Method::GET, "/.well-known/jwks.json", "identity jwks")
            .for_job(&request.idempotency_key, request.user.as_deref());
        let response = self.client.call(Bb::Identity, call).await?;
        if !response.is_success() {
            return Err(response.unexpected(Bb::Identity, "jwks"));
        }
        let keys = Arc::new(key_set(&response.json(Bb::Identity, "jwks")?)?);
        lock(&self.cache).keys = Some(Arc::clone(&keys));
        Ok(keys)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn insert(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), ConnectorError> {
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        ConnectorError::Permanent(format!("identity BB authorize: '{name}' is not a header name"))
    })?;
    let value = HeaderValue::from_str(value).map_err(|_| {
        ConnectorError::Permanent(format!(
            "identity BB authorize: the value of header '{name}' is not valid in HTTP"
        ))
    })?;
    headers.insert(name, value);
    Ok(())
}

fn transport(operation: &str, timeout: Duration, error: &reqwest::Error) -> ConnectorError {
    let what = if error.is_timeout() {
        format!("no answer within {} ms", timeout.as_millis())
    } else if error.is_connect() {
        "cannot connect (connection refused or host unreachable)".to_owned()
    } else {
        "the connection failed".to_owned()
    };
    ConnectorError::retryable(format!("identity BB {operation} (/authorize): {what}"))
}

/// `error: error_description` of an OAuth error answer, else an excerpt.
fn oauth_error(response: &BbResponse) -> String {
    match serde_json::from_slice::<Value>(&response.body) {
        Ok(body) if text_field(&body, "error").is_some() => {
            let error = text_field(&body, "error").unwrap_or_default();
            match text_field(&body, "error_description") {
                Some(description) => format!("{error}: {description}"),
                None => error.to_owned(),
            }
        }
        _ => response.excerpt(),
    }
}

/// The tokens of a token answer.
#[derive(Debug, Clone, PartialEq)]
struct Tokens {
    id_token: String,
    access_token: String,
}

fn tokens(response: &BbResponse) -> Result<Tokens, ConnectorError> {
    if !response.is_success() {
        let error = oauth_error(response);
        // A code is single use and short-lived: a new attempt runs the flow again with a new one.
        if error.starts_with("invalid_transaction") {
            return Err(ConnectorError::retryable(format!(
                "identity BB token: the authorization code was refused ({error}); retrying with a new one"
            )));
        }
        let hint = if response.status == 401
            || error.starts_with("invalid_client")
            || error.starts_with("invalid_assertion")
        {
            " — check connectors.identity.client_id and private_key_file"
        } else {
            ""
        };
        return Err(ConnectorError::Permanent(format!(
            "identity BB token: HTTP {} from /oauth/token: {error}{hint}",
            response.status
        )));
    }
    let body = response.json(Bb::Identity, "token")?;
    let field = |name: &str| {
        text_field(&body, name).filter(|value| !value.is_empty()).map(str::to_owned).ok_or_else(|| {
            ConnectorError::Permanent(format!(
                "identity BB token: the answer from /oauth/token has no {name}"
            ))
        })
    };
    Ok(Tokens { id_token: field("id_token")?, access_token: field("access_token")? })
}

/// The RSA keys of a JWKS document.
fn key_set(body: &Value) -> Result<KeySet, ConnectorError> {
    let mut set = KeySet::default();
    for key in body.get("keys").and_then(Value::as_array).into_iter().flatten() {
        if text_field(key, "kty") != Some("RSA") || text_field(key, "use").is_some_and(|use_| use_ != "sig") {
            continue;
        }
        let (Some(n), Some(e)) = (text_field(key, "n"), text_field(key, "e")) else { continue };
        let Ok(decoding) = DecodingKey::from_rsa_components(n, e) else { continue };
        set.keys.insert(text_field(key, "kid").unwrap_or_default().to_owned(), decoding);
    }
    if set.keys.is_empty() {
        return Err(ConnectorError::Permanent(
            "identity BB jwks: /.well-known/jwks.json publishes no RSA signing key".to_owned(),
        ));
    }
    Ok(set)
}

/// Our private-key-JWT client assertion for the token endpoint.
fn client_assertion(
    key: &EncodingKey,
    client_id: &str,
    token_endpoint: &str,
    request: &ConnectorRequest,
) -> Result<String, ConnectorError> {
    let now = chrono::Utc::now().timestamp();
    let random = uuid::Uuid::new_v4().simple().to_string();
    let claims = json!({
        "iss": client_id,
        "sub": client_id,
        "aud": token_endpoint,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECS,
        "jti": format!("{}-{}-{}", request.idempotency_key, request.attempt, &random[..8]),
    });
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, key).map_err(|error| {
        ConnectorError::Permanent(format!("identity BB token: cannot sign the client assertion: {error}"))
    })
}

/// `govstack.identity.verifyByRegistry`: the person as the population register has them.
async fn verify_by_registry(
    client: &BbClient,
    request: &ConnectorRequest,
) -> Result<Outcome, ConnectorError> {
    let national_id = require_text(request, "nationalId")?;
    let expected = expected_claims(request)?;
    let registry = setting_or(request, "registry", DEFAULT_POPULATION_REGISTER);
    let version = setting_or(request, "version", super::registries::DEFAULT_VERSION);
    let id_field = setting_or(request, "idField", DEFAULT_ID_FIELD);
    let query = json!({ id_field.clone(): national_id });
    let Some(record) = super::registries::read_one(client, request, &registry, &version, query).await? else {
        return Err(ConnectorError::business(
            ID_NOT_VERIFIED,
            format!("no person with this national id in registry '{registry}'"),
        ));
    };
    if deceased(&record) {
        return Err(ConnectorError::business(
            ID_NOT_VERIFIED,
            format!("registry '{registry}' records the person as deceased"),
        ));
    }
    let field = |names: &[&str]| {
        names.iter().find_map(|name| match record.get(*name) {
            Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
            _ => None,
        })
    };
    let given = field(&["firstName", "given_name", "givenName"]);
    let family = field(&["lastName", "family_name", "familyName"]);
    let birthdate = field(&["birthDate", "birthdate", "dateOfBirth"]);
    let claim = |claim: &str| match claim {
        "given_name" => given.clone(),
        "family_name" => family.clone(),
        "birthdate" => birthdate.clone(),
        _ => None,
    };
    compare(&expected, &claim, &format!("registry '{registry}'"))?;
    let mut identity = Map::new();
    identity.insert("verified".into(), Value::Bool(true));
    identity.insert("method".into(), json!("registry"));
    identity.insert("registry".into(), json!(registry));
    identity.insert("sub".into(), json!(national_id));
    let name = [given.clone(), family.clone()].into_iter().flatten().collect::<Vec<_>>().join(" ");
    if !name.is_empty() {
        identity.insert("name".into(), json!(name));
    }
    for (claim, value) in [("given_name", given), ("family_name", family), ("birthdate", birthdate)] {
        if let Some(value) = value {
            identity.insert(claim.into(), json!(value));
        }
    }
    if let Some(gender) = field(&["gender", "sex"]) {
        identity.insert("gender".into(), json!(gender));
    }
    Ok(complete([("identity", Value::Object(identity))]))
}

/// Whether a population-register record says the person died.
fn deceased(record: &Value) -> bool {
    let flag = match record.get("deceased") {
        Some(Value::Bool(flag)) => *flag,
        Some(Value::String(text)) => text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("yes"),
        _ => false,
    };
    let status = ["status", "vitalStatus"]
        .iter()
        .any(|name| text_field(record, name).is_some_and(|status| status.eq_ignore_ascii_case("deceased")));
    let date = ["dateOfDeath", "deathDate"]
        .iter()
        .any(|name| record.get(*name).is_some_and(|value| !value.is_null()));
    flag || status || date
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bb::tests::request;

    #[test]
    fn claims_are_compared_ignoring_case_and_space_and_mismatches_are_named_not_shown() {
        let request = request(
            VERIFY,
            json!({"nationalId": "1", "firstName": " amina ", "lastName": "Okafor", "birthDate": "1990-01-02"}),
            &[],
        );
        let expected = expected_claims(&request).unwrap();
        let claims = json!({"given_name": "Amina", "family_name": "OKAFOR", "birthdate": "1990-01-02"});
        let claim = |name: &str| text_field(&claims, name).map(str::to_owned);
        compare(&expected, &claim, "the Identity BB").unwrap();
        let claims = json!({"given_name": "Grace", "family_name": "Okafor"});
        let claim = |name: &str| text_field(&claims, name).map(str::to_owned);
        let error = compare(&expected, &claim, "the Identity BB").unwrap_err();
        let ConnectorError::Business { code, message } = error else { panic!("{error:?}") };
        assert_eq!(code, ID_NOT_VERIFIED);
        assert!(message.contains("firstName (given_name) differ"), "{message}");
        assert!(message.contains("birthDate (birthdate) not shared"), "{message}");
        assert!(
            !message.contains("Grace") && !message.contains("amina"),
            "values are personal data: {message}"
        );
    }

    #[test]
    fn deceased_is_read_from_flags_statuses_and_dates() {
        assert!(deceased(&json!({"deceased": true})));
        assert!(deceased(&json!({"status": "Deceased"})));
        assert!(deceased(&json!({"dateOfDeath": "2020-01-01"})));
        assert!(!deceased(&json!({"deceased": false, "dateOfDeath": null})));
    }

    #[test]
    fn token_answers_map_to_failures() {
        let answer = |status: u16, body: Value| BbResponse {
            status,
            headers: Default::default(),
            body: bytes::Bytes::from(body.to_string()),
            path: "/oauth/token".into(),
        };
        let error = tokens(&answer(401, json!({"error": "invalid_client", "error_description": "bad sig"})))
            .unwrap_err();
        assert!(
            matches!(&error, ConnectorError::Permanent(m) if m.contains("invalid_client") && m.contains("private_key_file"))
        );
        let error = tokens(&answer(400, json!({"error": "invalid_transaction"}))).unwrap_err();
        assert!(matches!(error, ConnectorError::Retryable { .. }), "{error:?}");
        let error = tokens(&answer(200, json!({"access_token": "a"}))).unwrap_err();
        assert!(error.to_string().contains("id_token"), "{error}");
        let ok = tokens(&answer(200, json!({"access_token": "a", "id_token": "i", "token_type": "Bearer"})))
            .unwrap();
        assert_eq!(ok, Tokens { id_token: "i".into(), access_token: "a".into() });
    }

    #[test]
    fn the_client_assertion_is_signed_with_the_spec_claims() {
        let key =
            EncodingKey::from_rsa_pem(crate::sandbox::SANDBOX_CLIENT_PRIVATE_KEY_PEM.as_bytes()).unwrap();
        let mut request = request(VERIFY, json!({}), &[]);
        request.attempt = 3;
        let jwt = client_assertion(&key, "govflow", "https://idp/oauth/token", &request).unwrap();
        let public =
            DecodingKey::from_rsa_pem(crate::sandbox::SANDBOX_CLIENT_PUBLIC_KEY_PEM.as_bytes()).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&["https://idp/oauth/token"]);
        validation.set_issuer(&["govflow"]);
        let claims = jsonwebtoken::decode::<Value>(&jwt, &public, &validation).unwrap().claims;
        assert_eq!(claims["sub"], "govflow");
        assert!(claims["jti"].as_str().unwrap().starts_with("7-42-3-"), "{claims}");
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            ASSERTION_LIFETIME_SECS
        );
    }

    fn connector(key_file: &str) -> Result<IdentityConnector, ConfigError> {
        let config = crate::config::ConnectorsConfig {
            identity: crate::config::BbConfig {
                url: Some("http://127.0.0.1:9".into()),
                client_id: Some("govflow".into()),
                redirect_uri: Some("http://127.0.0.1:9/cb".into()),
                private_key_file: Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(key_file)),
                ..Default::default()
            },
            ..Default::default()
        };
        IdentityConnector::new(BbClient::new(Arc::new(config)).unwrap())
    }

    #[tokio::test]
    async fn expected_claims_under_a_scope_that_shares_none_are_a_design_error() {
        let connector = connector("sandbox-keys/client-private.pem").unwrap();
        let request = request(VERIFY, json!({"nationalId": "1", "firstName": "A"}), &[("scope", "openid")]);
        let error = connector.invoke(request).await.unwrap_err();
        assert!(
            matches!(&error, ConnectorError::Permanent(m) if m.contains("firstName") && m.contains("'openid'")),
            "{error}"
        );
    }

    #[test]
    fn a_missing_or_malformed_key_file_stops_the_start_naming_the_setting() {
        let error = connector("sandbox-keys/no-such-key.pem").unwrap_err();
        assert!(error.0.contains("connectors.identity.private_key_file"), "{error}");
        let error = connector("sandbox-keys/client-public.pem").unwrap_err();
        assert!(error.0.contains("not an RSA private key"), "{error}");
    }

    #[test]
    fn a_key_set_without_rsa_signing_keys_is_refused() {
        assert!(key_set(&json!({"keys": [{"kty": "EC", "kid": "x"}]})).is_err());
        assert!(key_set(&json!({})).is_err());
    }
}
