//! The `govflow` command line: validate BPMN files today; serve, demo and audit as those land.
//! It is a thin shell over the engine crate: no BPMN logic lives here.

mod bench;
mod demo;
mod serve;

/// sled and the engine allocate many small, short-lived buffers; mimalloc serves them markedly faster than
/// glibc's allocator under two busy threads (see docs/benchmarks.md). Built without transparent huge pages
/// (`no_thp`): with them every 2 MiB region mimalloc touched stayed resident whole, a third more RSS.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use govflow_engine::{check, has_errors, outline, Diagnostic};

#[derive(Debug, Parser)]
#[command(name = "govflow", version, about = "A BPMN 2.0 workflow engine for GovStack service journeys")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse and validate BPMN (and DMN) files; print diagnostics like a compiler. Exit code 1 on any error.
    Validate {
        /// The .bpmn / .dmn files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Also fail (exit 1) on warnings.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Print the model govflow reads from a BPMN file, as an indented outline.
    Inspect { file: PathBuf },
    /// Print the table of diagnostic codes.
    Codes,
    /// Measure the durable engine: throughput, latency, commits per flush, bytes and memory per instance.
    Bench(bench::BenchArgs),
    /// Measure jobs through the HTTP external-worker API (batch activation, one completion per request).
    BenchWorkers(bench::WorkerBenchArgs),
    /// Serve the HTTP API on a fresh store with a one-task benchmark process, for an outside load tool.
    BenchServe(bench::ServeBenchArgs),
    /// Measure the timer scheduler: start-up time and memory with many pending timers, lateness of timers
    /// falling due.
    BenchTimers(bench::TimerArgs),
    /// The four life-event journeys end to end in the sandbox, in under a minute, through the HTTP API.
    Demo(demo::DemoArgs),
    /// Run govflow: the engine on sled, its connectors and the HTTP API (with `--sandbox`, also the
    /// simulated building blocks, and the connectors pointed at them).
    Serve(serve::ServeArgs),
    /// Run only the simulated GovStack building blocks (Identity, Registries, Payments, Messaging and an
    /// Information Mediator) until Ctrl-C.
    Sandbox(serve::SandboxArgs),
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Audit the history stored in a data directory: verify, replay, export, the operation log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
        /// The engine's data directory.
        #[arg(long, global = true, default_value = "./govflow-data")]
        data: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a new API token and the `[[auth.tokens]]` entry (its SHA-256 hash) to put in govflow.toml.
    Create {
        /// admin, designer, operator, worker or auditor.
        #[arg(long)]
        role: String,
        /// The user the token acts as (recorded in the audit trail).
        #[arg(long)]
        user: String,
        /// The user's organisation.
        #[arg(long)]
        affiliation: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute every hash chain (or one instance's) and check that replaying the events reproduces the
    /// stored state. Exit code 1 names the first bad sequence number.
    Verify {
        #[arg(long)]
        instance: Option<u64>,
        /// Also check every chain against a checkpoint file (`audit checkpoint`): the history up to each
        /// head it pinned must be unchanged.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The checkpoint's root as published (64 hex digits): the file must hash to it.
        #[arg(long, requires = "checkpoint")]
        root: Option<String>,
    },
    /// Pin every instance's chain head: write them to a checkpoint file and print its root hash, to publish
    /// outside govflow. A later `verify --checkpoint FILE --root ROOT` shows any history rewritten since,
    /// even one whose chain was sealed again. Run it periodically (cron).
    Checkpoint {
        /// Where to write the checkpoint (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Show an instance's history step by step: time, actor, element, event, variables changed.
    Replay {
        instance: u64,
        /// Stop after this sequence number.
        #[arg(long)]
        to: Option<u64>,
    },
    /// Write an instance's records as JSON lines, for external auditors.
    Export { instance: u64 },
    /// The operation log: who created, updated or deleted which definition, instance or variable, and when.
    Operations {
        /// Only operations by this user.
        #[arg(long)]
        user: Option<String>,
        /// Only operations on this instance (and its variables).
        #[arg(long)]
        instance: Option<u64>,
        /// Only operations on this process (its definitions and instances).
        #[arg(long)]
        process: Option<String>,
        /// Only entries after this sequence number (for paging).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many entries.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Write JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// `govflow audit replay … | head` closes our stdout early: stop quietly, as Unix tools do, rather than
/// report the failed print as a crash.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { files, format, deny_warnings } => validate(&files, format, deny_warnings),
        Command::Inspect { file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let parsed = check(&bytes);
            if let Some(definitions) = &parsed.definitions {
                print!("{}", outline::outline(definitions));
            }
            for diagnostic in &parsed.diagnostics {
                eprintln!("{}:{diagnostic}", file.display());
            }
            Ok(if has_errors(&parsed.diagnostics) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Audit { command, data } => audit(&data, command),
        Command::Bench(args) => bench::run(args).map(|()| ExitCode::SUCCESS),
        Command::BenchWorkers(args) => bench::run_workers(args).map(|()| ExitCode::SUCCESS),
        Command::BenchServe(args) => bench::run_serve(args).map(|()| ExitCode::SUCCESS),
        Command::Demo(args) => demo::run(args).map(|()| ExitCode::SUCCESS),
        Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
        Command::Sandbox(args) => serve::run_sandbox(args).map(|()| ExitCode::SUCCESS),
        Command::Token { command: TokenCommand::Create { role, user, affiliation } } => {
            serve::token(&role, &user, affiliation.as_deref()).map(|()| ExitCode::SUCCESS)
        }
        Command::BenchTimers(args) => bench::run_timers(args).map(|()| ExitCode::SUCCESS),
        Command::Codes => {
            for code in govflow_engine::Code::ALL {
                println!("{code}  {}", code.summary());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A checkpoint file's format tag.
const CHECKPOINT_FORMAT: &str = "govflow-checkpoint-1";

/// Every instance's chain head at a time, and their root hash (`govflow audit checkpoint`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    format: String,
    at: chrono::DateTime<chrono::FixedOffset>,
    root: String,
    heads: Vec<govflow_engine::audit::ChainHead>,
}

/// Reads a checkpoint file and checks that its heads hash to its root, and to `published` when given.
fn read_checkpoint(path: &std::path::Path, published: Option<&str>) -> anyhow::Result<Checkpoint> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read the checkpoint {}", path.display()))?;
    let checkpoint: Checkpoint = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a govflow checkpoint", path.display()))?;
    if checkpoint.format != CHECKPOINT_FORMAT {
        anyhow::bail!("{}: format {:?}, expected {CHECKPOINT_FORMAT:?}", path.display(), checkpoint.format);
    }
    let root = govflow_engine::audit::checkpoint_root(&checkpoint.heads).to_hex();
    if root != checkpoint.root {
        anyhow::bail!(
            "{}: its chain heads hash to {root}, not to the root it states ({}): the file was altered",
            path.display(),
            checkpoint.root
        );
    }
    if let Some(published) = published {
        if !root.eq_ignore_ascii_case(published.trim()) {
            anyhow::bail!("{}: its root {root} is not the published root {published}", path.display());
        }
    }
    Ok(checkpoint)
}

fn audit(data: &std::path::Path, command: AuditCommand) -> anyhow::Result<ExitCode> {
    use govflow_engine::audit::{checkpoint_root, replay, verify_against, verify_chain, ChainHead};
    use govflow_engine::runtime::{Event, InstanceKey};
    use govflow_engine::store::{InstanceFilter, Store};

    if !data.exists() {
        anyhow::bail!("no data directory at {} (give one with --data)", data.display());
    }
    // The auditor reads a store at whatever time scale it runs (a demo store runs faster).
    let config = govflow_engine::store::kv::CommitConfig { any_recorded_scale: true, ..Default::default() };
    let store = govflow_engine::store::sled::open_sled_with(data, config)
        .with_context(|| format!("cannot open the store at {}", data.display()))?;
    match command {
        AuditCommand::Checkpoint { out } => {
            let mut heads = Vec::new();
            for meta in store.instances(&InstanceFilter::default(), None, usize::MAX)? {
                let Some(stored) = store.instance(meta.key)? else { continue };
                if stored.last_seq > 0 {
                    heads.push(ChainHead {
                        instance: meta.key,
                        seq: stored.last_seq,
                        hash: stored.last_hash,
                    });
                }
            }
            let checkpoint = Checkpoint {
                format: CHECKPOINT_FORMAT.to_owned(),
                at: chrono::Utc::now().fixed_offset(),
                root: checkpoint_root(&heads).to_hex(),
                heads,
            };
            std::fs::write(&out, serde_json::to_vec_pretty(&checkpoint)?)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("{}", checkpoint.root);
            eprintln!(
                "checkpoint of {} chain heads at {} written to {}; publish its root (above)",
                checkpoint.heads.len(),
                checkpoint.at.to_rfc3339(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { instance, checkpoint, root } => {
            let pinned = match &checkpoint {
                Some(path) => match read_checkpoint(path, root.as_deref()) {
                    Ok(pinned) => Some(pinned),
                    Err(error) => {
                        println!("{error:#}");
                        return Ok(ExitCode::FAILURE);
                    }
                },
                None => None,
            };
            let keys: Vec<InstanceKey> = match instance {
                Some(key) => vec![InstanceKey(key)],
                None => store
                    .instances(&InstanceFilter::default(), None, usize::MAX)?
                    .iter()
                    .map(|m| m.key)
                    .collect(),
            };
            let mut failed = 0usize;
            for key in &keys {
                let records = match store.records(*key, 1, usize::MAX) {
                    Ok(records) => records,
                    Err(error) => {
                        println!("instance {key}: {error}");
                        failed += 1;
                        continue;
                    }
                };
                let Some(stored) = store.instance(*key)? else {
                    println!("instance {key}: not found");
                    failed += 1;
                    continue;
                };
                match verify_chain(*key, &records) {
                    Err(error) => {
                        println!("{error}");
                        failed += 1;
                    }
                    Ok(()) if replay(*key, &records) != stored.state => {
                        println!("instance {key}: the chain verifies, but replaying it does not reproduce the stored state");
                        failed += 1;
                    }
                    Ok(())
                        if records.last().map(|r| (r.seq, r.hash))
                            != Some((stored.last_seq, stored.last_hash)) =>
                    {
                        println!(
                            "instance {key}: the log ends before the stored chain head (records are missing)"
                        );
                        failed += 1;
                    }
                    Ok(()) => {
                        println!("instance {key}: ok ({} records, head {})", records.len(), stored.last_hash)
                    }
                }
            }
            eprintln!("{} instance(s) verified, {failed} failed", keys.len());
            if let Some(pinned) = pinned {
                let mut broken = 0usize;
                let heads: Vec<&ChainHead> = pinned
                    .heads
                    .iter()
                    .filter(|head| instance.is_none_or(|key| head.instance.0 == key))
                    .collect();
                for head in &heads {
                    let result = store
                        .records(head.instance, 1, usize::MAX)
                        .map_err(|error| format!("instance {}: {error}", head.instance))
                        .and_then(|records| {
                            verify_against(head, &records).map_err(|error| error.to_string())
                        });
                    if let Err(error) = result {
                        println!("{error}");
                        broken += 1;
                    }
                }
                eprintln!(
                    "{} chain head(s) of the checkpoint of {} checked, {broken} no longer match",
                    heads.len(),
                    pinned.at.to_rfc3339()
                );
                failed += broken;
            }
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        AuditCommand::Replay { instance, to } => {
            let key = InstanceKey(instance);
            let records = store.records(key, 1, usize::MAX)?;
            if records.is_empty() {
                anyhow::bail!("instance {instance} has no records in {}", data.display());
            }
            for record in records.iter().filter(|r| to.is_none_or(|to| r.seq <= to)) {
                let element = match &record.event {
                    Event::ElementActivated { element, .. }
                    | Event::ElementCompleted { element, .. }
                    | Event::ElementTerminated { element, .. }
                    | Event::VariablesChanged { element, .. }
                    | Event::JobCreated { element, .. }
                    | Event::IncidentRaised { element, .. } => element.to_string(),
                    Event::SequenceFlowTaken { flow, .. } => flow.to_string(),
                    _ => String::new(),
                };
                let changed = match &record.event {
                    Event::VariablesChanged { variables, .. } => serde_json::to_string(variables)?,
                    _ => String::new(),
                };
                println!(
                    "{:>5}  {}  {:<28}  {:<26}  {:<24}  {changed}",
                    record.seq,
                    record.at.to_rfc3339(),
                    record.actor.to_string(),
                    record.event.name(),
                    element
                );
            }
            let upto: Vec<_> = records.iter().filter(|r| to.is_none_or(|to| r.seq <= to)).cloned().collect();
            let state = replay(key, &upto);
            println!(
                "state after {} records: {:?}, {} open jobs, {} incidents",
                upto.len(),
                state.status,
                state.jobs.len(),
                state.incidents.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export { instance } => {
            for record in store.records(InstanceKey(instance), 1, usize::MAX)? {
                println!("{}", serde_json::to_string(&record)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Operations { user, instance, process, after, limit, json } => {
            use govflow_engine::store::{OperationFilter, OperationTarget};
            let filter = OperationFilter {
                user,
                instance: instance.map(InstanceKey),
                process_id: process,
                ..OperationFilter::default()
            };
            for operation in store.operations(&filter, after, limit)? {
                if json {
                    println!("{}", serde_json::to_string(&operation)?);
                    continue;
                }
                let target = match &operation.target {
                    OperationTarget::Definition { process_id, version } => {
                        format!("definition {process_id} v{version}")
                    }
                    OperationTarget::Instance { instance, process_id } => {
                        format!("instance {instance} ({process_id})")
                    }
                    OperationTarget::Variable { instance, scope, name } => {
                        format!("variable {name} of instance {instance} (scope {scope})")
                    }
                };
                println!(
                    "{:>6}  {}  {:<28}  {:?}  {target}{}",
                    operation.seq,
                    operation.at.to_rfc3339(),
                    operation.actor.to_string(),
                    operation.kind,
                    operation.detail.map(|detail| format!(" — {detail}")).unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Debug, serde::Serialize)]
struct FileReport<'a> {
    file: String,
    valid: bool,
    diagnostics: &'a [Diagnostic],
}

/// The findings about one file.
struct Checked {
    diagnostics: Vec<Diagnostic>,
}

fn validate(files: &[PathBuf], format: Format, deny_warnings: bool) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut n_errors = 0usize;
    let mut n_warnings = 0usize;
    let mut reports = Vec::new();
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        // A .dmn file is checked as a decision model (what deploying it checks), a .bpmn file as a process.
        let diagnostics = if file.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("dmn")) {
            govflow_engine::dmn::DecisionModel::parse(&bytes).err().unwrap_or_default()
        } else {
            check(&bytes).diagnostics
        };
        let parsed = Checked { diagnostics };
        let errors = parsed.diagnostics.iter().filter(|d| d.is_error()).count();
        let warnings = parsed.diagnostics.len() - errors;
        n_errors += errors;
        n_warnings += warnings;
        failed |= errors > 0 || (deny_warnings && warnings > 0);
        match format {
            Format::Text => {
                for diagnostic in &parsed.diagnostics {
                    println!("{}:{diagnostic}", file.display());
                }
            }
            Format::Json => reports.push((file.display().to_string(), errors == 0, parsed.diagnostics)),
        }
    }
    match format {
        Format::Text => {
            eprintln!("{} file(s) checked: {n_errors} error(s), {n_warnings} warning(s)", files.len());
        }
        Format::Json => {
            let reports: Vec<FileReport<'_>> = reports
                .iter()
                .map(|(file, valid, diagnostics)| FileReport {
                    file: file.clone(),
                    valid: *valid,
                    diagnostics,
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&reports)?);
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
