//! Who is calling, and may they: API tokens (looked up by their SHA-256; the clear token is never
//! stored) and, optionally, JWT bearer tokens from an OpenID Connect provider verified against its
//! JWKS. Every route names the roles it admits through its [`Access`] type; the [`Auth`] extractor
//! answers 401 without a valid token and 403 for a role the route does not admit, before the
//! request's parameters or body are looked at.
//!
//! # Contract
//! - A handler that changes anything takes `Auth<…>` as its first argument, and passes
//!   `principal.actor()` (user and affiliation) to the engine, so they reach the events and the
//!   operation log.
//! - Symmetric JWT algorithms (`HS*`) and `none` are refused: a provider signs with its private key.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use govflow_engine::audit::Actor;
use govflow_engine::store::Store;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, OidcConfig, Role, TokenEntry};
use crate::error::ApiError;
use crate::state::AppState;

/// The SHA-256 of a token, as `[[auth.tokens]] sha256` stores it (64 lowercase hex digits).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random API token (`gf_` and 64 hex digits, 244 random bits), for `govflow token create`.
pub fn new_token() -> String {
    format!("gf_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub affiliation: Option<String>,
    pub roles: Vec<Role>,
}

impl Principal {
    /// Who the engine records as having done what this request does.
    pub fn actor(&self) -> Actor {
        Actor::user(self.user.clone(), self.affiliation.clone())
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn is_admin(&self) -> bool {
        self.has(Role::Admin)
    }
}

/// The roles a group of routes admits.
pub trait Access: Send + Sync + 'static {
    const ROLES: &'static [Role];
    /// What the group is, for the 403 message.
    const WHAT: &'static str;
}

macro_rules! access {
    ($($(#[$doc:meta])* $name:ident = [$($role:ident),*], $what:literal;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $name;
            impl Access for $name {
                const ROLES: &'static [Role] = &[$(Role::$role),*];
                const WHAT: &'static str = $what;
            }
        )*
    };
}

access! {
    /// Reading definitions and their XML.
    ReadDefinitions = [Admin, Designer, Operator, Auditor], "read definitions";
    /// Deploying, enabling, disabling and deleting definitions.
    Design = [Admin, Designer], "change definitions";
    /// Reading instances, user tasks and incidents.
    ReadInstances = [Admin, Operator, Auditor], "read instances";
    /// Starting, cancelling and changing instances; messages, signals, user tasks, incidents.
    Operate = [Admin, Operator], "operate instances";
    /// External workers' jobs.
    Work = [Admin, Worker], "work on jobs";
    /// An instance's event history and replay.
    History = [Admin, Operator, Auditor], "read history";
    /// Chain verification and the operation log.
    Audit = [Admin, Auditor], "audit";
}

/// The authenticated caller, admitted by the route's [`Access`] `A`.
#[derive(Debug, Clone)]
pub struct Auth<A: Access> {
    pub principal: Principal,
    access: PhantomData<A>,
}

impl<A: Access> Auth<A> {
    pub fn actor(&self) -> Actor {
        self.principal.actor()
    }
}

impl<S: Store + 'static, A: Access> FromRequestParts<AppState<S>> for Auth<A> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<S>) -> Result<Auth<A>, ApiError> {
        let principal = state.authenticator().authenticate(parts).await?;
        if principal.roles.iter().any(|role| A::ROLES.contains(role)) {
            Ok(Auth { principal, access: PhantomData })
        } else {
            let allowed: Vec<&str> = A::ROLES.iter().map(|r| r.as_str()).collect();
            Err(ApiError::Forbidden(format!(
                "your role may not {}; this needs one of: {}",
                A::WHAT,
                allowed.join(", ")
            )))
        }
    }
}

/// Checks bearer tokens.
#[derive(Debug)]
pub struct Authenticator {
    tokens: HashMap<String, TokenEntry>,
    oidc: Option<OidcVerifier>,
    disabled: bool,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Authenticator {
        Authenticator {
            tokens: config.tokens.iter().map(|t| (t.sha256.to_ascii_lowercase(), t.clone())).collect(),
            oidc: config.oidc.clone().map(OidcVerifier::new),
            disabled: config.disabled,
        }
    }

    /// The caller of a request: 401 when there is no valid bearer token.
    pub async fn authenticate(&self, parts: &Parts) -> Result<Principal, ApiError> {
        if self.disabled {
            return Ok(Principal {
                user: "anonymous".to_owned(),
                affiliation: None,
                roles: vec![Role::Admin],
            });
        }
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("send `Authorization: Bearer <token>`".to_owned()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header is not `Bearer <token>`".to_owned())
            })?;
        if let Some(entry) = self.tokens.get(&hash_token(token)) {
            return Ok(Principal {
                user: entry.user.clone(),
                affiliation: entry.affiliation.clone(),
                roles: vec![entry.role],
            });
        }
        match &self.oidc {
            Some(oidc) if token.split('.').count() == 3 => oidc.verify(token).await,
            _ => Err(ApiError::Unauthorized("the token is not valid".to_owned())),
        }
    }
}

/// How long after a JWKS fetch an unknown key id may trigger another (a flood of forged key ids must
/// not become a flood of requests to the provider).
const JWKS_REFETCH_AFTER: Duration = Duration::from_secs(10);

/// Verifies JWTs against the provider's JWKS, fetched on demand and cached by key id.
#[derive(Debug)]
pub struct OidcVerifier {
    config: OidcConfig,
    client: reqwest::Client,
    keys: Mutex<JwksCache>,
    /// Serialises fetches so that concurrent unknown key ids cause one fetch.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct JwksCache {
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
    fetched_at: Option<Instant>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("n_keys", &self.keys.len())
            .field("fetched_at", &self.fetched_at)
            .finish()
    }
}

impl OidcVerifier {
    pub fn new(config: OidcConfig) -> OidcVerifier {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        OidcVerifier { config, client, keys: Mutex::default(), fetching: tokio::sync::Mutex::new(()) }
    }

    fn cached_key(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let cache = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let matching = cache
            .keys
            .iter()
            .filter(|(key_id, key_alg, _)| *key_alg == alg && (kid.is_none() || key_id.as_deref() == kid));
        let found: Vec<&DecodingKey> = matching.map(|(_, _, key)| key).collect();
        // Without a key id the key must be unambiguous.
        match found.as_slice() {
            [key] => Some((*key).clone()),
            [key, ..] if kid.is_some() => Some((*key).clone()),
            _ => None,
        }
    }

    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, ApiError> {
        if let Some(key) = self.cached_key(kid, alg) {
            return Ok(key);
        }
        let _fetching = self.fetching.lock().await;
        if let Some(key) = self.cached_key(kid, alg) {
            return Ok(key);
        }
        let recently = {
            let cache = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            cache.fetched_at.is_some_and(|at| at.elapsed() < JWKS_REFETCH_AFTER)
        };
        if !recently {
            self.fetch().await?;
        }
        self.cached_key(kid, alg).ok_or_else(|| {
            ApiError::Unauthorized("the token is signed with a key the provider does not publish".into())
        })
    }

    async fn fetch(&self) -> Result<(), ApiError> {
        let fetched = async {
            let response = self.client.get(&self.config.jwks_url).send().await?.error_for_status()?;
            response.json::<JwkSet>().await
        }
        .await;
        let mut cache = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.fetched_at = Some(Instant::now());
        let set = match fetched {
            Ok(set) => set,
            Err(error) => {
                tracing::error!(url = %self.config.jwks_url, %error, "cannot fetch the OIDC provider's JWKS");
                return Err(ApiError::Unavailable);
            }
        };
        cache.keys = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let key = DecodingKey::from_jwk(jwk).ok()?;
                let alg = jwk
                    .common
                    .key_algorithm
                    .and_then(|alg| alg.to_string().parse::<Algorithm>().ok())
                    .or(match &jwk.algorithm {
                        jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
                        jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Some(Algorithm::ES256),
                        jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
                        jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_) => None,
                    })?;
                asymmetric(alg).then_some((jwk.common.key_id.clone(), alg, key))
            })
            .collect();
        Ok(())
    }

    /// Verifies signature, issuer, audience and expiry, then reads user, affiliation and roles.
    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::Unauthorized("the token is not a valid JWT".to_owned()))?;
        if !asymmetric(header.alg) {
            return Err(ApiError::Unauthorized(format!("tokens signed with {:?} are refused", header.alg)));
        }
        let key = self.key(header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 30;
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|error| ApiError::Unauthorized(format!("the token is not valid: {error}")))?
            .claims;
        let user = claim(&claims, &self.config.user_claim)
            .and_then(Value::as_str)
            .filter(|user| !user.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized(format!("the token has no '{}' claim", self.config.user_claim))
            })?
            .to_owned();
        let affiliation = self
            .config
            .affiliation_claim
            .as_deref()
            .and_then(|path| claim(&claims, path))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let roles: Vec<Role> = match claim(&claims, &self.config.role_claim) {
            Some(Value::String(name)) => name.split([' ', ',']).filter_map(Role::parse).collect(),
            Some(Value::Array(names)) => {
                names.iter().filter_map(Value::as_str).filter_map(Role::parse).collect()
            }
            _ => Vec::new(),
        };
        if roles.is_empty() {
            return Err(ApiError::Forbidden(format!(
                "the token's '{}' claim names no govflow role",
                self.config.role_claim
            )));
        }
        Ok(Principal { user, affiliation, roles })
    }
}

fn asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The claim at a dotted path (`realm_access.roles`).
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |value, part| value.get(part))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(hash_token("test"), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
        let token = new_token();
        assert!(token.starts_with("gf_") && token.len() == 67);
        assert_ne!(new_token(), token);
    }

    #[test]
    fn claims_are_found_by_dotted_path() {
        let claims = serde_json::json!({"realm_access": {"roles": ["operator"]}, "sub": "u"});
        assert_eq!(claim(&claims, "realm_access.roles").unwrap()[0], "operator");
        assert!(claim(&claims, "realm_access.groups").is_none());
    }
}
