//! `govflow serve`: the engine on sled in a data directory, its connectors, and the HTTP API — how an
//! agency runs govflow. `govflow sandbox`: the simulated building blocks alone.
//!
//! Configuration, later sources winning: defaults, `govflow.toml` (`[server]`, `[api]`/`[auth]`,
//! `[connectors]`), `GOVFLOW_*` environment variables, command-line flags.
//!
//! ```toml
//! [server]
//! data = "./govflow-data"     # the sled store
//! bind = "127.0.0.1"
//! port = 8080
//! sandbox = false             # true: start the simulated building blocks and point the connectors at them
//! time_scale = 1.0            # demo time: 3600 runs an hour a second (recorded by the store; never mixed)
//! log = "text"                # or "json"
//! ```
//!
//! Shutdown (Ctrl-C or SIGTERM): the listener stops taking requests and finishes those in flight, the
//! shell waits for its handlers and their commits, then the store is flushed and closed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use govflow_connectors::config::ConnectorsConfig;
use govflow_connectors::sandbox::{Sandbox, SandboxConfig, Service};
use govflow_engine::engine::{Clock, Engine, ScaledClock, SystemClock};
use govflow_engine::shell::Shell;
use govflow_engine::store::kv::CommitConfig;
use govflow_engine::store::sled::open_sled_with;
use govflow_engine::store::Store;
use serde::Deserialize;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The configuration file (read when it exists; an error when named explicitly and missing).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The data directory (default ./govflow-data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The address to listen on (default 127.0.0.1).
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// The port (default 8080; 0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Start the simulated building blocks and point the connectors at them.
    #[arg(long)]
    pub sandbox: bool,
    /// Run engine time this many times faster than real time (demos). The store records it: a store
    /// created at one scale refuses to open at another.
    #[arg(long)]
    pub time_scale: Option<f64>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

/// The `[server]` keys the CLI reads (the API reads its own: limits, timeouts).
#[derive(Debug, Clone, Default, Deserialize)]
struct ServerSection {
    data: Option<PathBuf>,
    bind: Option<IpAddr>,
    port: Option<u16>,
    sandbox: Option<bool>,
    time_scale: Option<f64>,
    log: Option<String>,
}

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data: PathBuf,
    pub addr: SocketAddr,
    pub sandbox: bool,
    pub time_scale: f64,
    pub log_json: bool,
    pub connectors: ConnectorsConfig,
    pub api: govflow_designer_api::config::ApiConfig,
}

impl ServeConfig {
    /// Resolves defaults, the file, the environment and the flags.
    pub fn resolve(args: &ServeArgs, env: &[(String, String)]) -> anyhow::Result<ServeConfig> {
        let (path, explicit) = match &args.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from("govflow.toml"), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
            Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
        };
        #[derive(Deserialize, Default)]
        struct File {
            #[serde(default)]
            server: ServerSection,
        }
        let file: File = toml::from_str(&text)
            .map_err(|error| anyhow::anyhow!("{}: [server]: {error}", path.display()))?;
        let mut connectors =
            ConnectorsConfig::from_toml(&text).with_context(|| path.display().to_string())?;
        connectors.apply_env(env.iter().cloned())?;
        let api = govflow_designer_api::config::ApiConfig::from_toml(&text)
            .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
        let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let server = file.server;
        let data = args
            .data
            .clone()
            .or_else(|| var("GOVFLOW_DATA").map(PathBuf::from))
            .or(server.data)
            .unwrap_or_else(|| PathBuf::from("./govflow-data"));
        let bind = match (args.bind, var("GOVFLOW_BIND")) {
            (Some(bind), _) => bind,
            (None, Some(text)) => {
                text.parse().with_context(|| format!("GOVFLOW_BIND '{text}' is not an IP address"))?
            }
            (None, None) => server.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        };
        let port = match (args.port, var("GOVFLOW_PORT")) {
            (Some(port), _) => port,
            (None, Some(text)) => {
                text.parse().with_context(|| format!("GOVFLOW_PORT '{text}' is not a port"))?
            }
            (None, None) => server.port.unwrap_or(8080),
        };
        let sandbox = args.sandbox
            || var("GOVFLOW_SANDBOX").is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes"))
            || server.sandbox.unwrap_or(false);
        let time_scale = match (args.time_scale, var("GOVFLOW_TIME_SCALE")) {
            (Some(scale), _) => scale,
            (None, Some(text)) => {
                text.parse().with_context(|| format!("GOVFLOW_TIME_SCALE '{text}' is not a number"))?
            }
            (None, None) => server.time_scale.unwrap_or(1.0),
        };
        if !(time_scale.is_finite() && time_scale >= 1.0) {
            bail!("the time scale must be a number ≥ 1 (it is {time_scale})");
        }
        let log = var("GOVFLOW_LOG").or(server.log).unwrap_or_else(|| "text".to_owned());
        let log_json = args.log_json
            || match log.as_str() {
                "json" => true,
                "text" => false,
                other => bail!("[server] log is '{other}'; expected \"text\" or \"json\""),
            };
        Ok(ServeConfig {
            data,
            addr: SocketAddr::new(bind, port),
            sandbox,
            time_scale,
            log_json,
            connectors,
            api,
        })
    }
}

/// Installs the log subscriber (`RUST_LOG` filters; default `info`).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// Points the connectors at a running sandbox (the registries through its Information Mediator, so the
/// mediated path is exercised too); the sandbox's client key goes into the data directory.
pub fn sandbox_connectors(sandbox: &Sandbox, data: &Path, base: &str) -> anyhow::Result<ConnectorsConfig> {
    Ok(sandbox
        .connectors_config(&format!("{base}/api/v1/callbacks"), &data.join("sandbox-identity-client.pem"))?)
}

/// Opens the store at the configured time scale and the clock that goes with it.
pub fn open_engine(data: &Path, time_scale: f64) -> anyhow::Result<Arc<Engine<impl Store + 'static>>> {
    let config = CommitConfig { time_scale, ..CommitConfig::default() };
    let store = open_sled_with(data, config)
        .with_context(|| format!("cannot open the store in {}", data.display()))?;
    let scale = store.time_scale()?;
    let clock: Arc<dyn Clock> =
        if scale.scale == 1.0 { Arc::new(SystemClock) } else { Arc::new(ScaledClock { scale }) };
    Ok(Arc::new(Engine::open(store, clock)?))
}

/// Runs the server until Ctrl-C or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = ServeConfig::resolve(&args, &env)?;
    init_logging(config.log_json);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(config, shutdown_signal()))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let running = start(config, true).await?;
    shutdown.await;
    running.stop().await
}

/// A server running in this process: the API, the engine's shell, and the sandbox when asked for.
pub struct Running {
    pub base: String,
    /// The one-run admin token of a sandbox server with no tokens configured.
    pub token: Option<String>,
    pub sandbox: Option<Sandbox>,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops taking requests, finishes those in flight, waits for the jobs in flight and their commits,
    /// closes the store, then stops the sandbox.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        let served =
            self.serving.await.map_err(|error| anyhow::anyhow!("the server task failed: {error}"))?;
        if let Some(sandbox) = self.sandbox {
            sandbox.shutdown().await;
        }
        served
    }
}

/// Starts the server (and the sandbox when configured); `announce` prints the address and token.
pub async fn start(config: ServeConfig, announce: bool) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    let addr = listener.local_addr()?;
    let host = if addr.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { addr.ip() };
    let base = format!("http://{}", SocketAddr::new(host, addr.port()));
    let sandbox = if config.sandbox {
        let sandbox = Sandbox::start(SandboxConfig::default()).await.context("cannot start the sandbox")?;
        tracing::info!(url = %format!("http://{}", sandbox.addr()), "sandbox building blocks running");
        if announce {
            println!("sandbox building blocks on http://{} (outbox: /sandbox/messages, payments: /sandbox/disbursements)", sandbox.addr());
        }
        Some(sandbox)
    } else {
        None
    };
    let connectors = match &sandbox {
        Some(sandbox) => sandbox_connectors(sandbox, &config.data, &base)?,
        None => {
            config.connectors.validate()?;
            config.connectors.clone()
        }
    };
    let mut api = config.api.clone();
    let mut token = None;
    if config.sandbox && api.auth.tokens.is_empty() && api.auth.oidc.is_none() && !api.auth.disabled {
        // A sandbox with no tokens configured: one admin token for this run, printed once.
        let new = govflow_designer_api::new_token();
        api.auth.tokens.push(govflow_designer_api::TokenEntry {
            sha256: govflow_designer_api::hash_token(&new),
            role: govflow_designer_api::Role::Admin,
            user: "sandbox-admin".to_owned(),
            affiliation: Some("sandbox".to_owned()),
        });
        if announce {
            println!("sandbox admin token for this run: {new}");
            println!("  curl -H 'Authorization: Bearer {new}' {base}/api/v1/definitions");
        }
        token = Some(new);
    }
    let engine = open_engine(&config.data, config.time_scale)?;
    let limits = config.connectors.limits.clone();
    let connectors = govflow_connectors::bb::all(Arc::new(connectors))?;
    let waiters = govflow_designer_api::state::Waiters::new();
    let builder = Shell::builder(Arc::clone(&engine)).on_instance_ended(waiters.hook()).with_builtins();
    let builder = govflow_connectors::connector::register_with_limits(builder, &connectors, &limits);
    let shell = Arc::new(builder.start().await?);
    let state = govflow_designer_api::state::AppState::with_waiters(
        Arc::clone(&engine),
        Arc::clone(&shell),
        api,
        waiters,
    );
    let app = govflow_designer_api::app(state);
    tracing::info!(%addr, data = %config.data.display(), time_scale = config.time_scale, sandbox = config.sandbox, "govflow serving");
    if announce {
        println!(
            "govflow serving on {base} (data {}, sandbox {})",
            config.data.display(),
            if config.sandbox { "on" } else { "off" }
        );
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await?;
        tracing::info!("shutting down: waiting for jobs in flight");
        shell.shutdown().await;
        drop(shell);
        drop(engine);
        tracing::info!("stopped");
        Ok(())
    });
    Ok(Running { base, token, sandbox, stop, serving })
}

#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub addr: SocketAddr,
    /// Seed of the generated persons, farmers and records (the same seed gives the same data).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Delay before the Payments BB calls back, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub callback_delay_ms: u64,
}

/// `govflow sandbox`: the simulated building blocks until Ctrl-C.
pub fn run_sandbox(args: SandboxArgs) -> anyhow::Result<()> {
    init_logging(false);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let config = SandboxConfig {
            addr: args.addr,
            seed: args.seed,
            payment_callback_delay: std::time::Duration::from_millis(args.callback_delay_ms),
            ..SandboxConfig::default()
        };
        let sandbox = Sandbox::start(config)
            .await
            .with_context(|| format!("cannot start the sandbox on {}", args.addr))?;
        println!("govflow sandbox on http://{}", sandbox.addr());
        for service in Service::ALL {
            println!("  {service:<10} {}", sandbox.base_url(service));
        }
        println!(
            "  outbox     http://{}/sandbox/messages, payments http://{}/sandbox/disbursements",
            sandbox.addr(),
            sandbox.addr()
        );
        shutdown_signal().await;
        sandbox.shutdown().await;
        Ok(())
    })
}

/// `govflow token`: a new random API token, and its hashed entry for govflow.toml.
pub fn token(role: &str, user: &str, affiliation: Option<&str>) -> anyhow::Result<()> {
    let Some(role) = govflow_designer_api::config::Role::parse(role) else {
        bail!("role '{role}' is not one of admin, designer, operator, worker, auditor");
    };
    let token = govflow_designer_api::new_token();
    let hash = govflow_designer_api::hash_token(&token);
    println!("token (shown once; give it to {user}): {token}");
    println!();
    println!("[[auth.tokens]]");
    println!("sha256 = \"{hash}\"");
    println!("role = \"{}\"", role.as_str());
    println!("user = \"{user}\"");
    if let Some(affiliation) = affiliation {
        println!("affiliation = \"{affiliation}\"");
    }
    Ok(())
}
