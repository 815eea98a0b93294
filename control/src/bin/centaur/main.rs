//! `centaur`: the platform binary. Parses flags and hands each command to its file here
//! (`demo`, `sandbox`, `audit`, `policy`); the work is in the `control`, `gateway` and `audit`
//! libraries.

mod ask;
mod audit;
mod client;
mod demo;
mod keys;
mod platform;
mod sandbox;
mod server;
mod tool;
mod workflows;

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
    /// Run the control plane: the agent API over a durable store (SQLite in the data
    /// directory, or PostgreSQL), every thread in a sandbox of its own behind its own gateway;
    /// with a `slack:` section, Slack's Events API at /api/slack/events (or Socket Mode).
    ///
    /// Example:
    ///   centaur server --data-dir ./centaur-data
    Server(server::ServerArgs),
    /// Make, list and revoke API keys.
    #[command(subcommand)]
    Keys(keys::KeysCmd),
    /// Ask the agent: live progress on stderr, the answer on stdout; non-zero on failure.
    ///
    /// Example:
    ///   centaur ask --server http://127.0.0.1:8700 --key "$KEY" "why do the billing tests fail?"
    Ask(ask::AskArgs),
    /// List threads.
    Threads(ask::Conn),
    /// Print a thread's events (`--follow` to keep going).
    Events(ask::EventsArgs),
    /// The platform in half a minute, offline: the server, a key, a question to the built-in
    /// scripted agent in its sandbox, events streamed live across a `kill -9` of the server,
    /// the gateway's audit records. Needs root (real sandboxes).
    ///
    /// `--gateway`: the gateway alone: a sandboxed shell, real curl requests, the decisions
    /// and audit records.
    Demo {
        /// Show the gateway alone (the first demo).
        #[arg(long)]
        gateway: bool,
    },
    /// Run commands in local sandboxes, each behind a gateway of its own.
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCmd),
    /// Query, follow, summarise and verify audit logs.
    #[command(subcommand)]
    Audit(Box<audit::AuditCmd>),
    /// Call tools: list them, describe one, call a method (JSON in and out). Inside every
    /// sandbox as `centaur-tool`, reaching the control plane through the sandbox's gateway.
    ///
    /// Example:
    ///   centaur tool --server http://127.0.0.1:8700 --key "$KEY" github search_issues --query crash
    Tool(tool::ToolArgs),
    /// Durable workflows: list them and their runs, start a run (and follow it), show,
    /// cancel, post an event.
    Workflows(workflows::WorkflowsArgs),
    /// Check a gateway policy, explain what it does with a request, run its test cases (the
    /// same commands as `centaur-gateway check|explain|test|schema`).
    #[command(subcommand)]
    Policy(gateway::cli::policy::PolicyCmd),
}

fn main() -> ExitCode {
    // Inside a sandbox the binary is also `centaur-tool`: `centaur-tool ARGS` is `centaur tool ARGS`.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "centaur-tool");
    if invoked {
        argv[0] = "centaur".into();
        argv.insert(1, "tool".into());
    }
    let result = match Cli::parse_from(argv).cmd {
        Cmd::Audit(cmd) => return audit::run(*cmd),
        Cmd::Policy(cmd) => return gateway::cli::policy::run(cmd, "centaur policy"),
        Cmd::Sandbox(cmd) => {
            logs();
            return match sandbox::run(cmd) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    use std::io::Write as _;
                    let _ = writeln!(std::io::stderr(), "centaur: {}", gateway::cli::describe(&e));
                    ExitCode::from(125)
                }
            };
        }
        Cmd::Server(a) => {
            logs_at("info");
            return block(server::run(a));
        }
        Cmd::Keys(c) => return block(keys::run(c)),
        Cmd::Ask(a) => return block(ask::ask(a)),
        Cmd::Threads(c) => return block(ask::threads(c)),
        Cmd::Events(a) => return block(ask::events(a)),
        Cmd::Tool(a) => return block(tool::run(a)),
        Cmd::Workflows(a) => return block(workflows::run(a)),
        Cmd::Demo { gateway } => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                if gateway {
                    rt.block_on(demo::run())
                } else {
                    rt.block_on(platform::run())
                }
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("centaur: {}", gateway::cli::describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// Runs a command's future; its error is printed, its status passed through.
fn block(f: impl std::future::Future<Output = anyhow::Result<u8>>) -> ExitCode {
    let r = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(f));
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("centaur: {}", gateway::cli::describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The in-process gateway's logs: warnings and errors on stderr (`CENTAUR_LOG` for more),
/// coloured only on a terminal.
fn logs() {
    logs_at("warn");
}

fn logs_at(level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CENTAUR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
}
