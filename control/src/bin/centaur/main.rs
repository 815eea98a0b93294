//! `centaur`: the platform binary. Parses flags and hands each command to its file here
//! (`demo`, `sandbox`, `audit`, `policy`); the work is in the `control`, `gateway` and `audit`
//! libraries.

mod audit;
mod demo;
mod sandbox;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Centaur: a shared AI agent whose sandboxes reach the network only through an auditing,
/// credential-injecting egress gateway.
#[derive(Parser)]
#[command(name = "centaur", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a gateway and a local HTTPS origin, send real curl requests through it, and show
    /// the decisions and audit records.
    Demo,
    /// Run commands in local sandboxes, each behind a gateway of its own.
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCmd),
    /// Query, follow, summarise and verify audit logs.
    #[command(subcommand)]
    Audit(Box<audit::AuditCmd>),
    /// Check a gateway policy, explain what it does with a request, run its test cases (the
    /// same commands as `centaur-gateway check|explain|test|schema`).
    #[command(subcommand)]
    Policy(gateway::cli::policy::PolicyCmd),
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Audit(cmd) => return audit::run(*cmd),
        Cmd::Policy(cmd) => return gateway::cli::policy::run(cmd, "centaur policy"),
        Cmd::Sandbox(cmd) => {
            logs();
            return match sandbox::run(cmd) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    use std::io::Write as _;
                    let _ = writeln!(std::io::stderr(), "centaur: {e:#}");
                    ExitCode::from(125)
                }
            };
        }
        Cmd::Demo => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(demo::run())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("centaur: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The in-process gateway's logs: warnings and errors on stderr (`CENTAUR_LOG` for more),
/// coloured only on a terminal.
fn logs() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CENTAUR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
}
