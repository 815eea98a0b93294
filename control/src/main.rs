//! `centaur`: the platform binary. Today: `demo` and `audit`.

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
    /// Query, follow, summarise and verify audit logs.
    #[command(subcommand)]
    Audit(Box<control::audit_cmd::AuditCmd>),
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Audit(cmd) => return control::audit_cmd::run(*cmd),
        Cmd::Demo => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(control::demo::run())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("centaur: {e:#}");
            ExitCode::FAILURE
        }
    }
}
