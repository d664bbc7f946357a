//! Connector configuration: the `[connectors]` part of `govflow.toml`, with environment overrides.
//!
//! ```toml
//! [connectors]
//! callback_url = "http://govflow.example.gov:8080/api/v1/callbacks"  # where building blocks call back
//! timeout_ms = 10000                                                  # default per call
//!
//! [connectors.mediator]                 # optional: route building-block calls through the Information Mediator
//! url = "http://localhost:8081"          # the local security server
//! client = "GOV/GOV/WORKFLOW/GOVFLOW"    # our client id: INSTANCE/CLASS/MEMBER/SUBSYSTEM
//! client_header = "X-Road-Client"        # or "Information-Mediator-Client", "X-GovStack-Client"
//!
//! [connectors.registries]
//! service = "GOV/GOV/REGISTRY/REGISTRIES/registries"   # through the mediator: INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE
//! # url = "https://registries.example.gov"             # or directly
//!
//! [connectors.identity]
//! url = "https://esignet.example.gov"
//! client_id = "govflow"
//! private_key_file = "/etc/govflow/identity-client.pem"   # the key of our private-key-JWT client assertion
//! redirect_uri = "https://govflow.example.gov/identity/callback"
//!
//! [connectors.payments]
//! url = "https://payments.example.gov"
//! tenant = "govflow"                     # Platform-TenantId
//!
//! [connectors.limits."govstack.payments.disburse"]   # per job type (optional)
//! max_concurrent = 16                   # jobs of this type at once
//! timeout_ms = 30000                    # a job still running after this has failed, and is retried
//!
//! [connectors.messaging]
//! url = "https://messaging.example.gov"
//! api_key_env = "MESSAGING_API_KEY"      # the key is read from this variable (or `api_key = "..."`)
//! ```
//!
//! Environment overrides (applied after the file): `GOVFLOW_CALLBACK_URL`, `GOVFLOW_MEDIATOR_URL`,
//! `GOVFLOW_MEDIATOR_CLIENT`, `GOVFLOW_MEDIATOR_CLIENT_HEADER`, and per building block (`IDENTITY`,
//! `REGISTRIES`, `PAYMENTS`, `MESSAGING`): `GOVFLOW_<BB>_URL`, `GOVFLOW_<BB>_SERVICE`,
//! `GOVFLOW_<BB>_TIMEOUT_MS`, `GOVFLOW_<BB>_API_KEY`.
//!
//! Secrets (API keys, private keys) are held in [`Secret`], whose `Debug` and `Display` print `***`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A secret value: never printed.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The building blocks govflow calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bb {
    Identity,
    Registries,
    Payments,
    Messaging,
}

impl Bb {
    pub const ALL: [Bb; 4] = [Bb::Identity, Bb::Registries, Bb::Payments, Bb::Messaging];

    pub fn name(self) -> &'static str {
        match self {
            Bb::Identity => "identity",
            Bb::Registries => "registries",
            Bb::Payments => "payments",
            Bb::Messaging => "messaging",
        }
    }
}

impl std::fmt::Display for Bb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} BB", self.name())
    }
}

/// The header carrying our client id to the Information Mediator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ClientHeader {
    #[default]
    #[serde(rename = "X-Road-Client")]
    XRoadClient,
    #[serde(rename = "Information-Mediator-Client")]
    InformationMediatorClient,
    #[serde(rename = "X-GovStack-Client")]
    XGovStackClient,
}

impl ClientHeader {
    pub fn name(self) -> &'static str {
        match self {
            ClientHeader::XRoadClient => "X-Road-Client",
            ClientHeader::InformationMediatorClient => "Information-Mediator-Client",
            ClientHeader::XGovStackClient => "X-GovStack-Client",
        }
    }

    fn parse(text: &str) -> Result<ClientHeader, ConfigError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "x-road-client" => Ok(ClientHeader::XRoadClient),
            "information-mediator-client" => Ok(ClientHeader::InformationMediatorClient),
            "x-govstack-client" => Ok(ClientHeader::XGovStackClient),
            _ => Err(ConfigError(format!(
                "mediator client_header '{text}' is not one of X-Road-Client, Information-Mediator-Client, X-GovStack-Client"
            ))),
        }
    }
}

/// The Information Mediator (X-Road style security server) settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediatorConfig {
    /// The local security server, e.g. `http://localhost:8081`; calls go to `{url}/r1/{service}/{path}`.
    pub url: String,
    /// Our client id, `INSTANCE/CLASS/MEMBER/SUBSYSTEM`.
    pub client: String,
    #[serde(default)]
    pub client_header: ClientHeader,
}

/// Where one building block is and how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BbConfig {
    /// Direct base URL.
    pub url: Option<String>,
    /// Through the mediator: `INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE`.
    pub service: Option<String>,
    pub timeout_ms: Option<u64>,
    /// Messaging: the `apiKey` header.
    pub api_key: Option<Secret>,
    /// Messaging: read the API key from this environment variable.
    pub api_key_env: Option<String>,
    /// Identity: our OIDC client id. Registries: the `Information-Mediator-Client` value sent when no
    /// mediator is configured (with one, the mediator's client id is used).
    pub client_id: Option<String>,
    /// Identity: the PEM private key signing our client assertions.
    pub private_key_file: Option<PathBuf>,
    /// Identity: the redirect URI registered for our client.
    pub redirect_uri: Option<String>,
    /// Payments: `Platform-TenantId`.
    pub tenant: Option<String>,
}

/// The `[connectors]` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorsConfig {
    /// The public base URL building blocks call back (`{callback_url}/payments/{job}`).
    pub callback_url: Option<String>,
    /// The default per-call timeout.
    pub timeout_ms: Option<u64>,
    pub mediator: Option<MediatorConfig>,
    #[serde(default)]
    pub identity: BbConfig,
    #[serde(default)]
    pub registries: BbConfig,
    #[serde(default)]
    pub payments: BbConfig,
    #[serde(default)]
    pub messaging: BbConfig,
    /// Per job type: how many jobs run at once and how long one may take (`[connectors.limits."TYPE"]`).
    #[serde(default)]
    pub limits: BTreeMap<String, LimitConfig>,
}

/// The limits of one job type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Jobs of this type running at once.
    pub max_concurrent: Option<usize>,
    /// A job still running after this many milliseconds has failed (and is retried).
    pub timeout_ms: Option<u64>,
}

impl LimitConfig {
    /// As the shell takes it.
    pub fn job_limits(&self) -> govflow_engine::shell::JobLimits {
        govflow_engine::shell::JobLimits {
            max_concurrent: self.max_concurrent,
            timeout: self.timeout_ms.map(Duration::from_millis),
        }
    }
}

/// A configuration mistake, naming the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("connector configuration: {0}")]
pub struct ConfigError(pub String);

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl ConnectorsConfig {
    /// Reads the `[connectors]` table of a `govflow.toml` text (other tables are ignored).
    pub fn from_toml(text: &str) -> Result<ConnectorsConfig, ConfigError> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            connectors: ConnectorsConfig,
        }
        let file: File = toml::from_str(text).map_err(|error| ConfigError(error.to_string()))?;
        Ok(file.connectors)
    }

    /// Applies `GOVFLOW_*` overrides from `env` (pass `std::env::vars()`).
    pub fn apply_env(&mut self, env: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
        let env: BTreeMap<String, String> =
            env.into_iter().filter(|(k, _)| k.starts_with("GOVFLOW_")).collect();
        if let Some(url) = env.get("GOVFLOW_CALLBACK_URL") {
            self.callback_url = Some(url.clone());
        }
        let mediator_url = env.get("GOVFLOW_MEDIATOR_URL");
        let mediator_client = env.get("GOVFLOW_MEDIATOR_CLIENT");
        if mediator_url.is_some() || mediator_client.is_some() {
            let current = self.mediator.take();
            let url = mediator_url.cloned().or_else(|| current.as_ref().map(|m| m.url.clone()));
            let client = mediator_client.cloned().or_else(|| current.as_ref().map(|m| m.client.clone()));
            let (Some(url), Some(client)) = (url, client) else {
                return Err(ConfigError(
                    "set both GOVFLOW_MEDIATOR_URL and GOVFLOW_MEDIATOR_CLIENT (or [connectors.mediator])"
                        .into(),
                ));
            };
            let client_header = current.map(|m| m.client_header).unwrap_or_default();
            self.mediator = Some(MediatorConfig { url, client, client_header });
        }
        if let Some(header) = env.get("GOVFLOW_MEDIATOR_CLIENT_HEADER") {
            let header = ClientHeader::parse(header)?;
            match &mut self.mediator {
                Some(mediator) => mediator.client_header = header,
                None => {
                    return Err(ConfigError(
                        "GOVFLOW_MEDIATOR_CLIENT_HEADER is set but no mediator is".into(),
                    ))
                }
            }
        }
        for bb in Bb::ALL {
            let prefix = format!("GOVFLOW_{}_", bb.name().to_ascii_uppercase());
            let config = self.bb_mut(bb);
            if let Some(url) = env.get(&format!("{prefix}URL")) {
                config.url = Some(url.clone());
                config.service = None;
            }
            if let Some(service) = env.get(&format!("{prefix}SERVICE")) {
                config.service = Some(service.clone());
                config.url = None;
            }
            if let Some(timeout) = env.get(&format!("{prefix}TIMEOUT_MS")) {
                config.timeout_ms = Some(timeout.parse().map_err(|_| {
                    ConfigError(format!("{prefix}TIMEOUT_MS is '{timeout}', not a number of milliseconds"))
                })?);
            }
            if let Some(key) = env.get(&format!("{prefix}API_KEY")) {
                config.api_key = Some(Secret::new(key.clone()));
            }
        }
        Ok(())
    }

    pub fn bb(&self, bb: Bb) -> &BbConfig {
        match bb {
            Bb::Identity => &self.identity,
            Bb::Registries => &self.registries,
            Bb::Payments => &self.payments,
            Bb::Messaging => &self.messaging,
        }
    }

    fn bb_mut(&mut self, bb: Bb) -> &mut BbConfig {
        match bb {
            Bb::Identity => &mut self.identity,
            Bb::Registries => &mut self.registries,
            Bb::Payments => &mut self.payments,
            Bb::Messaging => &mut self.messaging,
        }
    }

    /// The timeout of calls to `bb`.
    pub fn timeout(&self, bb: Bb) -> Duration {
        self.bb(bb).timeout_ms.or(self.timeout_ms).map_or(DEFAULT_TIMEOUT, Duration::from_millis)
    }

    /// The messaging API key: `api_key`, else the variable `api_key_env` names.
    pub fn messaging_api_key(&self) -> Option<Secret> {
        self.messaging.api_key.clone().or_else(|| {
            let name = self.messaging.api_key_env.as_deref()?;
            std::env::var(name).ok().map(Secret::new)
        })
    }

    /// Checks the whole configuration: every building block is reachable one way, routes through the
    /// mediator have a mediator and a well-formed service id, URLs are http(s).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(mediator) = &self.mediator {
            check_url("connectors.mediator.url", &mediator.url)?;
            if mediator.client.split('/').count() != 4 || mediator.client.split('/').any(str::is_empty) {
                return Err(ConfigError(format!(
                    "connectors.mediator.client is '{}'; expected INSTANCE/CLASS/MEMBER/SUBSYSTEM",
                    mediator.client
                )));
            }
        }
        if let Some(url) = &self.callback_url {
            check_url("connectors.callback_url", url)?;
        }
        for (job_type, limit) in &self.limits {
            if limit.max_concurrent == Some(0) || limit.timeout_ms == Some(0) {
                return Err(ConfigError(format!(
                    "connectors.limits.\"{job_type}\": max_concurrent and timeout_ms must be above 0"
                )));
            }
        }
        for bb in Bb::ALL {
            let config = self.bb(bb);
            let name = bb.name();
            match (&config.url, &config.service) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError(format!("connectors.{name}: set url or service, not both")))
                }
                (Some(url), None) => check_url(&format!("connectors.{name}.url"), url)?,
                (None, Some(service)) => {
                    if self.mediator.is_none() {
                        return Err(ConfigError(format!(
                            "connectors.{name}.service routes through the Information Mediator, but [connectors.mediator] is not set"
                        )));
                    }
                    if service.split('/').count() != 5 || service.split('/').any(str::is_empty) {
                        return Err(ConfigError(format!(
                            "connectors.{name}.service is '{service}'; expected INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE"
                        )));
                    }
                }
                (None, None) => {}
            }
        }
        Ok(())
    }
}

fn check_url(setting: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(ConfigError(format!("{setting} is '{url}'; expected an http:// or https:// URL")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_connectors_table_and_ignores_the_rest() {
        let config = ConnectorsConfig::from_toml(
            r#"
            [server]
            port = 8080
            [connectors]
            timeout_ms = 2000
            [connectors.mediator]
            url = "http://localhost:8081"
            client = "GOV/GOV/WORKFLOW/GOVFLOW"
            client_header = "X-GovStack-Client"
            [connectors.registries]
            service = "GOV/GOV/REG/REGISTRIES/registries"
            [connectors.messaging]
            url = "http://localhost:9000"
            api_key = "s3cret"
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.mediator.as_ref().unwrap().client_header, ClientHeader::XGovStackClient);
        assert_eq!(config.timeout(Bb::Registries), Duration::from_millis(2000));
        assert_eq!(config.messaging_api_key().unwrap().expose(), "s3cret");
        assert!(!format!("{config:?}").contains("s3cret"), "a secret must never be printed");
    }

    #[test]
    fn limits_per_job_type_are_read_and_checked() {
        let config = ConnectorsConfig::from_toml(
            "[connectors.limits.\"govstack.payments.disburse\"]\nmax_concurrent = 4\ntimeout_ms = 1500\n",
        )
        .unwrap();
        config.validate().unwrap();
        let limits = config.limits["govstack.payments.disburse"].job_limits();
        assert_eq!((limits.max_concurrent, limits.timeout), (Some(4), Some(Duration::from_millis(1500))));
        let config = ConnectorsConfig::from_toml("[connectors.limits.\"x\"]\nmax_concurrent = 0\n").unwrap();
        assert!(config.validate().unwrap_err().0.contains("connectors.limits.\"x\""));
    }

    #[test]
    fn mistakes_are_named() {
        let error =
            ConnectorsConfig::from_toml("[connectors.payments]\nurl = 'http://x'\nbogus = 1\n").unwrap_err();
        assert!(error.0.contains("bogus"), "{error}");
        let config = ConnectorsConfig::from_toml(
            "[connectors.registries]\nservice = 'GOV/GOV/REG/REGISTRIES/registries'\n",
        )
        .unwrap();
        let error = config.validate().unwrap_err();
        assert!(error.0.contains("connectors.registries.service") && error.0.contains("mediator"), "{error}");
        let config = ConnectorsConfig::from_toml("[connectors.identity]\nurl = 'localhost:80'\n").unwrap();
        assert!(config.validate().unwrap_err().0.contains("connectors.identity.url"));
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut config = ConnectorsConfig::from_toml("[connectors.payments]\nurl = 'http://file'\n").unwrap();
        config
            .apply_env([
                ("GOVFLOW_PAYMENTS_URL".to_owned(), "http://env".to_owned()),
                ("GOVFLOW_MEDIATOR_URL".to_owned(), "http://im".to_owned()),
                ("GOVFLOW_MEDIATOR_CLIENT".to_owned(), "A/B/C/D".to_owned()),
                ("GOVFLOW_REGISTRIES_TIMEOUT_MS".to_owned(), "1500".to_owned()),
                ("PATH".to_owned(), "/bin".to_owned()),
            ])
            .unwrap();
        assert_eq!(config.payments.url.as_deref(), Some("http://env"));
        assert_eq!(config.mediator.as_ref().unwrap().client, "A/B/C/D");
        assert_eq!(config.timeout(Bb::Registries), Duration::from_millis(1500));
        let error =
            config.apply_env([("GOVFLOW_IDENTITY_TIMEOUT_MS".to_owned(), "soon".to_owned())]).unwrap_err();
        assert!(error.0.contains("GOVFLOW_IDENTITY_TIMEOUT_MS"), "{error}");
    }
}
