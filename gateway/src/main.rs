//! `centaur-gateway`: the egress gateway appliance. Parses flags, loads configuration and
//! calls the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway::Gateway;
use gateway::ca::{self, CaAlgorithm, CaInit};
use policy::Config;

/// Transparent MITM TLS egress gateway: every outbound request of a workload is decided by a
/// policy, intercepted, and recorded.
#[derive(Parser)]
#[command(
    name = "centaur-gateway",
    version,
    after_help = "Quick start:\n  centaur-gateway ca init --out ./ca\n  centaur-gateway check gateway.yaml\n  centaur-gateway run --config gateway.yaml\n\nAudit records go to stdout (JSON lines), logs to stderr."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway with a policy file.
    Run {
        /// The policy file (YAML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Certificate authority tools.
    Ca {
        #[command(subcommand)]
        cmd: CaCmd,
    },
    /// Validate a policy file: prints every error with line:column, or a summary.
    Check {
        /// The policy file (YAML).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum CaCmd {
    /// Create a new CA (ca.crt, ca.key) in a directory; never overwrites.
    Init {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Key algorithm.
        #[arg(long, value_enum, default_value = "ecdsa-p256")]
        alg: CaAlgorithm,
        /// Subject common name.
        #[arg(long, default_value = "Centaur gateway CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u64,
        /// Restrict the CA to these DNS subtrees (name constraints); repeatable.
        #[arg(long = "permit")]
        permitted: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run { config } => run(config),
        Cmd::Ca {
            cmd:
                CaCmd::Init {
                    out,
                    alg,
                    name,
                    days,
                    permitted,
                },
        } => {
            let opts = CaInit {
                name,
                algorithm: alg,
                validity: Duration::from_secs(days * 86400),
                permitted,
            };
            ca::init(&out, &opts)
                .map(|()| {
                    eprintln!("wrote {0}/ca.crt and {0}/ca.key", out.display());
                    eprintln!("trust ca.crt in the workload (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, ...); keep ca.key private");
                })
                .map_err(anyhow::Error::from)
        }
        Cmd::Check { file } => return check(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("centaur-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &PathBuf) -> anyhow::Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Config::parse(&text).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))
}

fn check(path: &PathBuf) -> ExitCode {
    match load(path) {
        Ok(c) => {
            println!("{}: ok", path.display());
            println!(
                "  allowlists: {}, rules: {}",
                c.policy.allowlists.len(),
                c.policy.rule_count()
            );
            for list in &c.policy.allowlists {
                for r in &list.rules {
                    let target = match &r.target {
                        policy::Target::Host(h) => h.to_string(),
                        policy::Target::Cidr(c) => c.to_string(),
                    };
                    println!(
                        "    allow {target}{}",
                        if list.warn { " (report only)" } else { "" }
                    );
                }
            }
            if c.policy.allowlists.is_empty() {
                println!("  no allowlist: every request will be denied");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = load(&path)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CENTAUR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    gateway::install_crypto();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let gw = Gateway::start(config, Some(path)).await?;
        let a = gw.addrs();
        tracing::info!(https = ?a.https, http = ?a.http, tunnel = ?a.tunnel, dns = ?a.dns, management = ?a.management, metrics = ?a.metrics, "gateway listening");
        gw.run(shutdown_signal(), Duration::from_secs(10)).await;
        tracing::info!("gateway stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
