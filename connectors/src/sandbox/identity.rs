//! Simulated Identity BB: an eSignet-like OpenID Connect provider (`identity/Identity-Provider.yaml`)
//! served under `/identity`. It must never be trusted by anything real: its signing key and its one
//! client's key are published in `connectors/sandbox-keys/` (sandbox only, never production).
//!
//! Routes:
//! - `GET /.well-known/openid-configuration`, `GET /.well-known/jwks.json` (the spec's shapes; the JWKS
//!   carries `x5c`/`x5t#S256` from the committed self-signed certificate).
//! - `GET /authorize?scope&response_type=code&client_id&redirect_uri&state&nonce&login_hint` — a back-office
//!   stand-in for the citizen's login: `login_hint` (or `individual_id`) is the national id of the person
//!   who "authenticates". A living person of the population register → 302 to `redirect_uri` with `code`
//!   and `state`; an unknown or deceased id → 302 with `error=access_denied`. Without a hint → 200 HTML
//!   (the spec's "loads the login UI"). A bad `client_id`/`redirect_uri` → 400 JSON (never redirected).
//! - `POST /oauth/token` (form): `grant_type=authorization_code`, `code`, `client_id`, `redirect_uri`,
//!   `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and a `client_assertion`
//!   RS256 JWT signed with the client key (iss = sub = client_id, `aud` = the token endpoint URL, the issuer,
//!   or any URL ending in `/oauth/token` — so the IM-mediated URL works too — `exp`, `iat`).
//!   Missing fields → 400 with the spec's codes (`invalid_input`, `invalid_assertion_type`,
//!   `invalid_assertion`, `invalid_redirect_uri`); an unknown client or an assertion that fails
//!   verification → 401 `invalid_client` (RFC 6749 §5.2; the spec lists only 400s); an unknown, used or
//!   expired code → 400 `invalid_transaction`. 200 → `{id_token, access_token, token_type, expires_in}`.
//! - `GET /oidc/userinfo` with `Authorization: Bearer <access_token>` → 200 `application/jwt`, an RS256 JWT
//!   with `iss`, `aud`, `iat`, `sub` and the claims the scope allows: `profile` → `name`, `given_name`,
//!   `family_name`, `birthdate`, `gender`, `individual_id` (the national id, as eSignet can share it);
//!   `email` → `email`; `phone` → `phone_number`; `address` → `address.locality` (the district). With
//!   `scope=openid` only, just `sub` (verification without sharing claims). Bad token → 401 with
//!   `WWW-Authenticate: Bearer error="invalid_token"`.
//!
//! `sub` is a partner-specific user token (PSUT): a hash of client id and national id, stable per client.
//! One registered client: [`SANDBOX_CLIENT_ID`] with [`SANDBOX_CLIENT_PUBLIC_KEY_PEM`]; any
//! `redirect_uri` is accepted for it (redirect URIs are not pinned), but the token call must repeat it.
//!
//! Leaves out: client management, wallet binding and linked authorisation, the `claims` request
//! parameter, `claims_locales`, refresh tokens, encryption of the userinfo JWT (it is signed only), PKCE.

use super::{json_error, lock, ApiError, Shared};
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The one OIDC client registered at the simulated Identity BB.
pub const SANDBOX_CLIENT_ID: &str = "govflow-sandbox";
/// The private key of [`SANDBOX_CLIENT_ID`], for signing the client assertion. SANDBOX ONLY.
pub const SANDBOX_CLIENT_PRIVATE_KEY_PEM: &str = include_str!("../../sandbox-keys/client-private.pem");
/// The public key registered for [`SANDBOX_CLIENT_ID`].
pub const SANDBOX_CLIENT_PUBLIC_KEY_PEM: &str = include_str!("../../sandbox-keys/client-public.pem");
/// The public key the simulated Identity BB signs with (also served in its JWKS).
pub const SANDBOX_IDENTITY_PUBLIC_KEY_PEM: &str = include_str!("../../sandbox-keys/identity-public.pem");

const IDENTITY_PRIVATE_KEY_PEM: &str = include_str!("../../sandbox-keys/identity-private.pem");
const IDENTITY_CERT_PEM: &str = include_str!("../../sandbox-keys/identity-cert.pem");
/// `notAfter` of `identity-cert.pem`, served as the JWKS `exp`.
const IDENTITY_CERT_EXPIRY: &str = "2126-11-03T16:24:23Z";
const KEY_ID: &str = "govflow-sandbox-identity-1";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const CODE_LIFETIME: Duration = Duration::from_secs(600);
const TOKEN_LIFETIME_SECS: u64 = 3600;
const ACR: &str = "idbb:acr:generated-code";

struct AuthCode {
    national_id: String,
    client_id: String,
    redirect_uri: String,
    scope: String,
    nonce: Option<String>,
    issued: Instant,
    auth_time: i64,
}

struct Grant {
    national_id: String,
    client_id: String,
    scope: String,
    expires: Instant,
}

#[derive(Default)]
struct Sessions {
    codes: HashMap<String, AuthCode>,
    tokens: HashMap<String, Grant>,
}

/// The provider's keys and its live codes and tokens.
pub(crate) struct Identity {
    issuer: String,
    signing_key: EncodingKey,
    client_key: DecodingKey,
    jwk: Value,
    sessions: Mutex<Sessions>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl Identity {
    /// `issuer` is the provider's base URL, e.g. `http://127.0.0.1:PORT/identity`.
    pub(crate) fn new(issuer: &str) -> Result<Identity, String> {
        let signing_key = EncodingKey::from_rsa_pem(IDENTITY_PRIVATE_KEY_PEM.as_bytes())
            .map_err(|e| format!("sandbox identity key: {e}"))?;
        let client_key = DecodingKey::from_rsa_pem(SANDBOX_CLIENT_PUBLIC_KEY_PEM.as_bytes())
            .map_err(|e| format!("sandbox client key: {e}"))?;
        let spki =
            pem_der(SANDBOX_IDENTITY_PUBLIC_KEY_PEM).ok_or("sandbox identity public key is not PEM")?;
        let (n, e) = rsa_components(&spki).ok_or("sandbox identity public key is not RSA SPKI")?;
        let cert = pem_der(IDENTITY_CERT_PEM).ok_or("sandbox identity certificate is not PEM")?;
        let jwk = json!({
            "kid": KEY_ID,
            "use": "sig",
            "kty": "RSA",
            "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(n),
            "e": URL_SAFE_NO_PAD.encode(e),
            "x5t#S256": URL_SAFE_NO_PAD.encode(Sha256::digest(&cert)),
            "x5c": [STANDARD.encode(&cert)],
            "exp": IDENTITY_CERT_EXPIRY,
        });
        Ok(Identity {
            issuer: issuer.to_string(),
            signing_key,
            client_key,
            jwk,
            sessions: Mutex::new(Sessions::default()),
        })
    }

    fn token_endpoint(&self) -> String {
        format!("{}/oauth/token", self.issuer)
    }

    fn sign(&self, claims: &Value) -> Result<String, ApiError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KEY_ID.to_string());
        jsonwebtoken::encode(&header, claims, &self.signing_key).map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "unknown_error", "error_description": "signing failed"}),
            )
        })
    }
}

/// The DER bytes of the first PEM block of `pem`.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .map(str::trim)
        .collect();
    STANDARD.decode(body).ok()
}

/// One DER TLV: (tag, contents, rest).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, tail) = rest.split_at(n);
        rest = tail;
        bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, tail) = rest.split_at(len);
    Some((tag, contents, tail))
}

/// Modulus and exponent (big-endian, no sign byte) of an RSA `SubjectPublicKeyInfo`.
fn rsa_components(spki: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    const SEQUENCE: u8 = 0x30;
    const BIT_STRING: u8 = 0x03;
    const INTEGER: u8 = 0x02;
    let (tag, info, _) = der_tlv(spki)?;
    (tag == SEQUENCE).then_some(())?;
    let (tag, _algorithm, rest) = der_tlv(info)?;
    (tag == SEQUENCE).then_some(())?;
    let (tag, bits, _) = der_tlv(rest)?;
    (tag == BIT_STRING).then_some(())?;
    let (&unused, key) = bits.split_first()?;
    (unused == 0).then_some(())?;
    let (tag, key, _) = der_tlv(key)?;
    (tag == SEQUENCE).then_some(())?;
    let (tag, n, rest) = der_tlv(key)?;
    (tag == INTEGER).then_some(())?;
    let (tag, e, _) = der_tlv(rest)?;
    (tag == INTEGER).then_some(())?;
    let strip = |v: &[u8]| {
        let start = v.iter().position(|&b| b != 0).unwrap_or(v.len().saturating_sub(1));
        v[start..].to_vec()
    };
    Some((strip(n), strip(e)))
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/authorize", get(authorize))
        .route("/oauth/token", post(token))
        .route("/oidc/userinfo", get(userinfo))
        .fallback(|| async {
            json_error(
                StatusCode::NOT_FOUND,
                json!({"error": "not_found", "error_description": "no such Identity BB route"}),
            )
        })
        .with_state(shared)
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let issuer = &shared.identity.issuer;
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": shared.identity.token_endpoint(),
        "userinfo_endpoint": format!("{issuer}/oidc/userinfo"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "registration_endpoint": format!("{issuer}/client-mgmt/oidc-client"),
        // The spec's schema admits only "openid" here; profile, email, phone and address scopes work too.
        "scopes_supported": ["openid"],
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "acr_values_supported": [ACR],
        "userinfo_signing_alg_values_supported": ["RS256"],
        "userinfo_encryption_alg_values_supported": [],
        "userinfo_encryption_enc_values_supported": [],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "display_values_supported": ["page"],
        "claim_types_supported": ["normal"],
        "claims_supported": [
            "sub", "name", "given_name", "family_name", "birthdate", "gender", "email", "phone_number",
            "address", "individual_id"
        ],
        "claims_locales_supported": ["en"],
        "ui_locales_supported": ["en"],
        "response_modes_supported": ["query"],
    }))
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"keys": [shared.identity.jwk.clone()]}))
}

fn oauth_error(status: StatusCode, error: &str, description: impl Into<String>) -> Response {
    json_error(status, json!({"error": error, "error_description": description.into()}))
}

/// `redirect_uri` with the given query parameters added.
fn redirect_with(redirect_uri: &reqwest::Url, params: &[(&str, &str)]) -> Response {
    let mut url = redirect_uri.clone();
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
    }
    match HeaderValue::from_str(url.as_str()) {
        // 302 Found, as OAuth 2.0 authorization servers answer (axum's `Redirect::to` is a 303).
        Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        Err(_) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
            "redirect_uri cannot be used in a Location header",
        ),
    }
}

async fn authorize(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    match param("client_id") {
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "query parameter client_id is required",
            )
        }
        Some(id) if id != SANDBOX_CLIENT_ID => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_client",
                format!("unknown client_id {id:?}; the sandbox client is {SANDBOX_CLIENT_ID:?}"),
            )
        }
        Some(_) => {}
    }
    let redirect_uri = match param("redirect_uri").map(reqwest::Url::parse) {
        Some(Ok(url)) if matches!(url.scheme(), "http" | "https") => url,
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_redirect_uri",
                "redirect_uri must be an absolute http(s) URL",
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_redirect_uri",
                "query parameter redirect_uri is required",
            )
        }
    };
    let state = param("state").unwrap_or("");
    let fail = |error: &str, description: &str| {
        let mut pairs = vec![("error", error), ("error_description", description)];
        if !state.is_empty() {
            pairs.push(("state", state));
        }
        redirect_with(&redirect_uri, &pairs)
    };
    if param("response_type") != Some("code") {
        return fail("unsupported_response_type", "response_type must be \"code\"");
    }
    let Some(scope) = param("scope") else {
        return fail("invalid_scope", "query parameter scope is required");
    };
    if !scope.split_whitespace().any(|s| s == "openid") {
        return fail("invalid_scope", "scope must include openid");
    }
    let Some(national_id) = param("login_hint").or_else(|| param("individual_id")) else {
        return Html(
            "<!doctype html><title>govflow sandbox Identity BB</title>\
             <p>Sandbox login: repeat this request with <code>login_hint=&lt;national id&gt;</code> \
             to authenticate as that person.</p>",
        )
        .into_response();
    };
    match shared.seed.person(national_id) {
        None => return fail("access_denied", "unknown individual id"),
        Some(person) if person.deceased => return fail("access_denied", "the individual is deceased"),
        Some(_) => {}
    }
    let code = uuid::Uuid::new_v4().simple().to_string();
    lock(&shared.identity.sessions).codes.insert(
        code.clone(),
        AuthCode {
            national_id: national_id.to_string(),
            client_id: SANDBOX_CLIENT_ID.to_string(),
            redirect_uri: redirect_uri.to_string(),
            scope: scope.to_string(),
            nonce: param("nonce").map(str::to_string),
            issued: Instant::now(),
            auth_time: chrono::Utc::now().timestamp(),
        },
    );
    let mut pairs = vec![("code", code.as_str())];
    if !state.is_empty() {
        pairs.push(("state", state));
    }
    redirect_with(&redirect_uri, &pairs)
}

/// Verifies the private-key-JWT client assertion of `client_id`.
fn verify_assertion(identity: &Identity, client_id: &str, assertion: &str) -> Result<(), String> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.set_issuer(&[client_id]);
    // `aud` is checked below: several spellings of the token endpoint are valid.
    validation.validate_aud = false;
    validation.leeway = 5;
    let data = jsonwebtoken::decode::<Map<String, Value>>(assertion, &identity.client_key, &validation)
        .map_err(|e| format!("client_assertion rejected: {e}"))?;
    let claims = data.claims;
    if claims.get("sub").and_then(Value::as_str) != Some(client_id) {
        return Err("client_assertion sub must equal client_id".to_string());
    }
    if !claims.contains_key("iat") {
        return Err("client_assertion must carry iat".to_string());
    }
    let token_endpoint = identity.token_endpoint();
    let audience_ok = |aud: &str| {
        aud == token_endpoint || aud == identity.issuer || aud.trim_end_matches('/').ends_with("/oauth/token")
    };
    let ok = match claims.get("aud") {
        Some(Value::String(aud)) => audience_ok(aud),
        Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(audience_ok),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("client_assertion aud must be the token endpoint {token_endpoint}"))
    }
}

fn psut(client_id: &str, national_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{client_id}:{national_id}")))
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn token(
    State(shared): State<Arc<Shared>>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "body must be application/x-www-form-urlencoded with grant_type, code, client_id, \
             client_assertion_type, client_assertion and redirect_uri",
        );
    };
    let field = |name: &str| form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    if form.values().all(|v| v.trim().is_empty()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "grant_type, code, client_id, client_assertion_type, client_assertion and redirect_uri are required",
        );
    }
    if field("grant_type") != Some("authorization_code") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type must be authorization_code",
        );
    }
    if field("client_assertion_type") != Some(ASSERTION_TYPE) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_assertion_type",
            format!("client_assertion_type must be {ASSERTION_TYPE}"),
        );
    }
    let Some(assertion) = field("client_assertion") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_assertion", "client_assertion is required");
    };
    let Some(redirect_uri) = field("redirect_uri") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_redirect_uri", "redirect_uri is required");
    };
    let Some(client_id) = field("client_id") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_input", "client_id is required");
    };
    let Some(code) = field("code") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_input", "code is required");
    };
    if client_id != SANDBOX_CLIENT_ID {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            format!("unknown client_id {client_id:?}"),
        );
    }
    if let Err(reason) = verify_assertion(&shared.identity, client_id, assertion) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", reason);
    }
    // A code is single-use: taken out whether or not the rest checks out.
    let Some(grant) = lock(&shared.identity.sessions).codes.remove(code) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_transaction",
            "unknown or already used authorization code",
        );
    };
    let same_redirect =
        reqwest::Url::parse(redirect_uri).map(|u| u.to_string() == grant.redirect_uri).unwrap_or(false);
    if grant.client_id != client_id || !same_redirect {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_transaction",
            "the code was issued to another client_id or redirect_uri",
        );
    }
    if grant.issued.elapsed() > CODE_LIFETIME {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_transaction", "the authorization code expired");
    }
    let identity = &shared.identity;
    let now = now_secs();
    let exp = now + i64::try_from(TOKEN_LIFETIME_SECS).unwrap_or(3600);
    let sub = psut(client_id, &grant.national_id);
    let access_claims = json!({
        "iss": identity.issuer, "sub": sub, "aud": client_id, "iat": now, "exp": exp,
        "scope": grant.scope, "jti": uuid::Uuid::new_v4().to_string(),
    });
    let access_token = match identity.sign(&access_claims) {
        Ok(token) => token,
        Err(e) => return e.into_response(),
    };
    let digest = Sha256::digest(access_token.as_bytes());
    let at_hash = URL_SAFE_NO_PAD.encode(&digest[..16]);
    let mut id_claims = json!({
        "iss": identity.issuer, "sub": sub, "aud": client_id, "iat": now, "exp": exp,
        "auth_time": grant.auth_time, "acr": ACR, "at_hash": at_hash,
    });
    if let (Some(nonce), Some(map)) = (&grant.nonce, id_claims.as_object_mut()) {
        map.insert("nonce".to_string(), Value::String(nonce.clone()));
    }
    let id_token = match identity.sign(&id_claims) {
        Ok(token) => token,
        Err(e) => return e.into_response(),
    };
    lock(&identity.sessions).tokens.insert(
        access_token.clone(),
        Grant {
            national_id: grant.national_id,
            client_id: client_id.to_string(),
            scope: grant.scope,
            expires: Instant::now() + Duration::from_secs(TOKEN_LIFETIME_SECS),
        },
    );
    let mut response = Json(json!({
        "id_token": id_token,
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_SECS,
    }))
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn invalid_token(description: &str) -> Response {
    let mut response = json_error(
        StatusCode::UNAUTHORIZED,
        json!({"error": "invalid_token", "error_description": description}),
    );
    let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{description}\"");
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

async fn userinfo(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let Some(token) = token else {
        return invalid_token("missing Authorization: Bearer <access_token>");
    };
    let (national_id, client_id, scope) = {
        let sessions = lock(&shared.identity.sessions);
        match sessions.tokens.get(token) {
            Some(grant) if grant.expires > Instant::now() => {
                (grant.national_id.clone(), grant.client_id.clone(), grant.scope.clone())
            }
            Some(_) => return invalid_token("the access token expired"),
            None => return invalid_token("the access token was not recognized"),
        }
    };
    let Some(person) = shared.seed.person(&national_id) else {
        return invalid_token("the access token's subject no longer exists");
    };
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(shared.identity.issuer));
    claims.insert("aud".into(), json!(client_id));
    claims.insert("iat".into(), json!(now_secs()));
    claims.insert("sub".into(), json!(psut(&client_id, &national_id)));
    if scopes.contains(&"profile") {
        claims.insert("name".into(), json!(format!("{} {}", person.first_name, person.last_name)));
        claims.insert("given_name".into(), json!(person.first_name));
        claims.insert("family_name".into(), json!(person.last_name));
        claims.insert("birthdate".into(), json!(person.birth_date));
        claims.insert("gender".into(), json!(person.gender));
        claims.insert("individual_id".into(), json!(person.national_id));
    }
    if scopes.contains(&"email") {
        if let Some(email) = &person.email {
            claims.insert("email".into(), json!(email));
        }
    }
    if scopes.contains(&"phone") {
        if let Some(phone) = &person.phone {
            claims.insert("phone_number".into(), json!(phone));
        }
    }
    if scopes.contains(&"address") {
        claims.insert("address".into(), json!({"locality": person.district}));
    }
    match shared.identity.sign(&Value::Object(claims)) {
        Ok(jwt) => {
            ([(header::CONTENT_TYPE, HeaderValue::from_static("application/jwt"))], jwt).into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_keys_load_and_match_the_certificate() {
        let identity = Identity::new("http://127.0.0.1:1/identity").expect("keys load");
        let n = identity.jwk["n"].as_str().expect("n");
        // A 2048-bit modulus is 256 bytes: 342 base64url characters without padding.
        assert_eq!(n.len(), 342);
        assert_eq!(identity.jwk["e"], "AQAB");
        let cert = pem_der(IDENTITY_CERT_PEM).expect("cert");
        let modulus = URL_SAFE_NO_PAD.decode(n).expect("b64");
        // The certificate embeds the same public key.
        assert!(cert.windows(modulus.len()).any(|w| w == modulus.as_slice()));
    }

    #[test]
    fn der_parser_rejects_garbage() {
        assert!(rsa_components(&[]).is_none());
        assert!(rsa_components(&[0x30, 0x82, 0xff]).is_none());
        assert!(rsa_components(&[0x02, 0x01, 0x01]).is_none());
    }
}
