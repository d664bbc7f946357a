//! The API's settings: the `[server]` and `[auth]` tables of `govflow.toml`. Tokens are stored only as
//! SHA-256 hashes; this module never holds or prints a clear-text token.
//!
//! ```toml
//! [server]
//! max_deploy_bytes = 10485760     # one deployment request (raw or multipart), 10 MiB
//! max_body_bytes = 1048576        # any other request body, 1 MiB
//! max_page_size = 500             # the largest `limit` a list accepts
//! default_page_size = 50
//! request_timeout_ms = 30000      # long polls and synchronous starts wait at most 1 s less than this
//! callback_secret_sha256 = "…"    # optional: callbacks only under /api/v1/callbacks/{secret}/…
//!
//! [auth]
//! disabled = false                # true: every request is an admin called "anonymous" (development only)
//!
//! [[auth.tokens]]                 # `govflow token create` prints a token and this entry
//! sha256 = "9f86d081…"
//! role = "operator"
//! user = "registrar-1"
//! affiliation = "Civil Registry"
//!
//! [auth.oidc]                     # optional: JWT bearer tokens from the Identity BB
//! issuer = "https://idp.example.gov"
//! jwks_url = "https://idp.example.gov/.well-known/jwks.json"
//! audience = "govflow"
//! role_claim = "roles"            # a dotted path; a string or an array of role names
//! user_claim = "sub"              # default
//! affiliation_claim = "org"       # optional
//! ```
//! Other keys of `[server]` (port, data directory, ...) belong to the CLI and are ignored here; unknown
//! keys of `[auth]` are refused, since a misspelt security setting must never be silently ignored.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// What a caller may do. Each route admits a fixed set of roles (see `auth::Access`); `Admin` is
/// admitted everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Deploys, enables, disables and deletes definitions; reads definitions.
    Designer,
    /// Starts, cancels and changes instances; publishes messages and signals; works user tasks;
    /// resolves incidents; reads definitions, instances and their history.
    Operator,
    /// External workers: activates, completes and fails jobs.
    Worker,
    /// Reads definitions, instances, history, the operation log and verifies audit chains; never mutates.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Admin, Role::Designer, Role::Operator, Role::Worker, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Designer => "designer",
            Role::Operator => "operator",
            Role::Worker => "worker",
            Role::Auditor => "auditor",
        }
    }

    /// The role a claim value names (case-insensitive); `None` for anything else.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One API token: only its SHA-256 is stored (`hash_token`).
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// SHA-256 of the token, 64 lowercase hex digits.
    pub sha256: String,
    pub role: Role,
    /// Who the token belongs to: recorded in events and the operation log.
    pub user: String,
    pub affiliation: Option<String>,
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash is not a secret, but logs have no use for it either.
        f.debug_struct("TokenEntry")
            .field("role", &self.role)
            .field("user", &self.user)
            .field("affiliation", &self.affiliation)
            .finish_non_exhaustive()
    }
}

/// JWT bearer tokens from an OpenID Connect provider (the Identity BB), verified against its JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// Where the provider publishes its signing keys; fetched when a token names an unknown key id.
    pub jwks_url: String,
    /// The `aud` every token must carry.
    pub audience: String,
    /// A dotted path into the claims (`roles`, `realm_access.roles`): a role name or an array of them.
    pub role_claim: String,
    /// The claim naming the user (default `sub`).
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// The claim naming the user's organisation, when the provider issues one.
    #[serde(default)]
    pub affiliation_claim: Option<String>,
}

fn default_user_claim() -> String {
    "sub".to_owned()
}

/// Who may call the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// Development only: no token is asked for and every caller is an admin named `anonymous`.
    #[serde(default)]
    pub disabled: bool,
}

/// Everything the API needs to know besides the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// The largest deployment request (raw file or multipart with several files).
    pub max_deploy_bytes: usize,
    /// The largest body of any other request.
    pub max_body_bytes: usize,
    /// The largest page a list answers (`limit` above it is refused with 422).
    pub max_page_size: usize,
    /// The page size when `limit` is not given.
    pub default_page_size: usize,
    /// Every request is answered within this (503 `TIMEOUT` otherwise); long polls and synchronous
    /// starts wait at most one second less.
    pub request_timeout: Duration,
    /// SHA-256 of the secret path segment callbacks must carry (`/api/v1/callbacks/{secret}/…`);
    /// `None`: callbacks are open under `/api/v1/callbacks/…` (protect them at the network level).
    pub callback_secret_sha256: Option<String>,
    pub auth: AuthConfig,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            max_deploy_bytes: 10 * 1024 * 1024,
            max_body_bytes: 1024 * 1024,
            max_page_size: 500,
            default_page_size: 50,
            request_timeout: Duration::from_secs(30),
            callback_secret_sha256: None,
            auth: AuthConfig::default(),
        }
    }
}

/// A mistake in the configuration, naming the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The `[server]` keys this crate reads (the CLI reads the others).
#[derive(Debug, Default, Deserialize)]
struct ServerTable {
    max_deploy_bytes: Option<usize>,
    max_body_bytes: Option<usize>,
    max_page_size: Option<usize>,
    default_page_size: Option<usize>,
    #[serde(default, deserialize_with = "millis")]
    request_timeout_ms: Option<Duration>,
    callback_secret_sha256: Option<String>,
}

fn millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_millis))
}

#[derive(Debug, Default, Deserialize)]
struct FileTables {
    #[serde(default)]
    server: ServerTable,
    #[serde(default)]
    auth: AuthConfig,
}

impl<'de> Deserialize<'de> for ApiConfig {
    /// Reads a whole `govflow.toml` document: the `[server]` and `[auth]` tables, ignoring the others.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ApiConfig, D::Error> {
        let tables = FileTables::deserialize(deserializer)?;
        let defaults = ApiConfig::default();
        let server = tables.server;
        Ok(ApiConfig {
            max_deploy_bytes: server.max_deploy_bytes.unwrap_or(defaults.max_deploy_bytes),
            max_body_bytes: server.max_body_bytes.unwrap_or(defaults.max_body_bytes),
            max_page_size: server.max_page_size.unwrap_or(defaults.max_page_size),
            default_page_size: server.default_page_size.unwrap_or(defaults.default_page_size),
            request_timeout: server.request_timeout_ms.unwrap_or(defaults.request_timeout),
            callback_secret_sha256: server.callback_secret_sha256,
            auth: tables.auth,
        })
    }
}

impl ApiConfig {
    /// Reads the `[server]` and `[auth]` tables of a `govflow.toml` document and checks them.
    pub fn from_toml(text: &str) -> Result<ApiConfig, ConfigError> {
        let config: ApiConfig = toml::from_str(text).map_err(|error| ConfigError(error.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: hashes are 64 hex digits, sizes and pages are positive, the timeout
    /// leaves room for long polls, and some way in exists unless auth is disabled.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let is_hash = |text: &str| text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit());
        for (i, token) in self.auth.tokens.iter().enumerate() {
            if !is_hash(&token.sha256) {
                return Err(ConfigError(format!(
                    "auth.tokens[{i}].sha256 must be the 64 hex digits of a SHA-256 (see `govflow token create`)"
                )));
            }
            if token.user.trim().is_empty() {
                return Err(ConfigError(format!("auth.tokens[{i}].user is empty")));
            }
        }
        if let Some(secret) = &self.callback_secret_sha256 {
            if !is_hash(secret) {
                return Err(ConfigError("server.callback_secret_sha256 must be 64 hex digits".to_owned()));
            }
        }
        if let Some(oidc) = &self.auth.oidc {
            if !(oidc.jwks_url.starts_with("https://") || oidc.jwks_url.starts_with("http://")) {
                return Err(ConfigError(format!(
                    "auth.oidc.jwks_url is '{}'; expected an http(s) URL",
                    oidc.jwks_url
                )));
            }
            if oidc.role_claim.trim().is_empty() {
                return Err(ConfigError("auth.oidc.role_claim is empty".to_owned()));
            }
        }
        if self.max_deploy_bytes == 0 || self.max_body_bytes == 0 {
            return Err(ConfigError(
                "server.max_deploy_bytes and server.max_body_bytes must be positive".into(),
            ));
        }
        if self.max_page_size == 0
            || self.default_page_size == 0
            || self.default_page_size > self.max_page_size
        {
            return Err(ConfigError(
                "server.default_page_size must be positive and at most server.max_page_size".to_owned(),
            ));
        }
        if self.request_timeout < Duration::from_secs(2) {
            return Err(ConfigError("server.request_timeout_ms must be at least 2000".to_owned()));
        }
        Ok(())
    }

    /// How long a long poll or a synchronous start may wait: one second less than the request timeout.
    pub fn max_wait(&self) -> Duration {
        self.request_timeout.saturating_sub(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_server_and_auth_and_ignores_the_rest() {
        let config = ApiConfig::from_toml(
            r#"
            [server]
            port = 8080
            max_page_size = 100
            request_timeout_ms = 5000
            [connectors]
            timeout_ms = 1
            [[auth.tokens]]
            sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            role = "operator"
            user = "registrar-1"
            affiliation = "Civil Registry"
            "#,
        )
        .unwrap();
        assert_eq!(config.max_page_size, 100);
        assert_eq!(config.max_deploy_bytes, 10 * 1024 * 1024);
        assert_eq!(config.request_timeout, Duration::from_secs(5));
        assert_eq!(config.auth.tokens[0].role, Role::Operator);
        assert!(!format!("{:?}", config.auth.tokens[0]).contains("9f86"));
    }

    #[test]
    fn mistakes_are_named() {
        let error = ApiConfig::from_toml("[auth]\ndisabeld = true\n").unwrap_err();
        assert!(error.0.contains("disabeld"), "{error}");
        let error = ApiConfig::from_toml("[[auth.tokens]]\nsha256 = 'abc'\nrole = 'admin'\nuser = 'a'\n")
            .unwrap_err();
        assert!(error.0.contains("auth.tokens[0].sha256"), "{error}");
        let error =
            ApiConfig::from_toml("[[auth.tokens]]\nsha256 = 'abc'\nrole = 'root'\nuser = 'a'\n").unwrap_err();
        assert!(error.0.contains("root"), "{error}");
        let error =
            ApiConfig::from_toml("[server]\nmax_page_size = 10\ndefault_page_size = 50\n").unwrap_err();
        assert!(error.0.contains("default_page_size"), "{error}");
    }
}
