//! The `govflow` command line: validate BPMN files today; serve, demo and audit as those land.
//! It is a thin shell over the engine crate: no BPMN logic lives here.

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
    /// Parse and validate BPMN files; print diagnostics like a compiler. Exit code 1 on any error.
    Validate {
        /// The .bpmn files to check.
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
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
        Command::Codes => {
            for code in govflow_engine::Code::ALL {
                println!("{code}  {}", code.summary());
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

fn validate(files: &[PathBuf], format: Format, deny_warnings: bool) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut n_errors = 0usize;
    let mut n_warnings = 0usize;
    let mut reports = Vec::new();
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let parsed = check(&bytes);
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
