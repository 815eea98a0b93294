//! `centaur`: the platform binary. Today: `demo`.

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("centaur: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.cmd {
        Cmd::Demo => rt.block_on(control::demo::run()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("centaur: {e:#}");
            ExitCode::FAILURE
        }
    }
}
