//! `centaur-gateway`: the egress gateway appliance. Parses flags, loads configuration and
//! calls the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gateway::Gateway;
use gateway::ca::{self, CaAlgorithm, CaInit};
use gateway::cli::policy::{PolicyCmd, load};

/// mimalloc, not glibc's malloc: a request's many short-lived allocations (headers, bodies,
/// the audit record) were about a sixth of the gateway's CPU time in glibc (`_int_malloc`,
/// `_int_free`, `malloc_consolidate`). With mimalloc, CPU per request fell by a fifth with
/// 16 connections and by a quarter with 256 (`bench/run --baseline`, 3 rounds), for about
/// 1 MiB more idle RSS. `no_thp`: transparent huge pages on its arenas cost 13 MiB of idle RSS.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Transparent MITM TLS egress gateway: every outbound request of a workload is decided by a
/// policy, intercepted, and recorded.
#[derive(Parser)]
#[command(
    name = "centaur-gateway",
    version,
    after_help = "Quick start:\n  centaur-gateway ca init --out ./ca\n  centaur-gateway check gateway.yaml\n  centaur-gateway explain gateway.yaml --request 'GET https://api.github.com/repos'\n  centaur-gateway test gateway.yaml\n  centaur-gateway run --config gateway.yaml\n\nAudit records go to stdout (JSON lines), logs to stderr."
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
        /// Send NAME to HOST:PORT, past the deny ranges: a control plane's own API that its
        /// sandbox reaches through this gateway (Centaur's Kubernetes backend routes
        /// centaur.internal to the server's Service this way). HOST is resolved once, at
        /// start; NAME still needs the policy's allowlist. Repeatable. A policy file cannot
        /// add such a route: only whoever starts the gateway can.
        #[arg(long = "route", value_name = "NAME=HOST:PORT")]
        routes: Vec<String>,
    },
    /// Certificate authority tools.
    Ca {
        #[command(subcommand)]
        cmd: CaCmd,
    },
    /// Send a policy to a running gateway (its management API's PUT /v1/policy), read from
    /// stdin; print the gateway's answer (JSON) on stdout. Exits non-zero when it was refused.
    #[command(
        after_help = "Centaur's Kubernetes backend runs this in a warm sandbox's gateway pod (through\nthe pod's exec API) to hand it to a thread:\n  centaur-gateway put-policy --management 127.0.0.1:9092 --key-env CENTAUR_MANAGEMENT_KEY --with-env < takeover.json"
    )]
    PutPolicy {
        /// The management listener (HOST:PORT).
        #[arg(long, value_name = "HOST:PORT")]
        management: String,
        /// The variable that holds the management API key.
        #[arg(long, value_name = "VAR")]
        key_env: String,
        /// Stdin is `{"policy": "<policy file>", "env": {"NAME": "value"}}`: the values of the
        /// policy's env sources, and its audit labels, come with it.
        #[arg(long)]
        with_env: bool,
    },
    #[command(flatten)]
    Policy(PolicyCmd),
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
        Cmd::Run { config, routes } => run(config, &routes),
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
        Cmd::PutPolicy {
            management,
            key_env,
            with_env,
        } => put_policy(&management, &key_env, with_env),
        Cmd::Policy(cmd) => return gateway::cli::policy::run(cmd, "centaur-gateway"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("centaur-gateway: {}", gateway::cli::describe(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf, routes: &[String]) -> anyhow::Result<()> {
    let mut config = load(&path)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CENTAUR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    // Colour only for a person at a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    gateway::install_crypto();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        for r in routes {
            let (name, addr) = route(r).await?;
            tracing::info!(%name, %addr, "internal route");
            config.upstream.internal.insert(name, addr);
        }
        let gw = Gateway::start(config, Some(path)).await?;
        let a = gw.addrs();
        tracing::info!(https = ?a.https, http = ?a.http, tunnel = ?a.tunnel, dns = ?a.dns, management = ?a.management, metrics = ?a.metrics, "gateway listening");
        gw.run(shutdown_signal(), Duration::from_secs(10)).await;
        tracing::info!("gateway stopped");
        Ok(())
    })
}

/// `put-policy`: one HTTP/1.1 request on a plain connection (the management listener is
/// local to the caller: the same pod, or the same host).
fn put_policy(addr: &str, key_env: &str, with_env: bool) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let key = std::env::var(key_env)
        .map_err(|_| anyhow::anyhow!("{key_env} is not set: it holds the management API key"))?;
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
    let ctype = if with_env {
        "application/json"
    } else {
        "application/yaml"
    };
    let mut tcp = std::net::TcpStream::connect(addr).map_err(|e| {
        // On stdout too: a caller through an exec API may see stdout only.
        let why = format!("the management API at {addr}: {e}");
        println!("{}", serde_json::json!({"error": why}));
        anyhow::anyhow!(why)
    })?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(30)))?;
    write!(
        tcp,
        "PUT /v1/policy HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    tcp.write_all(&body)?;
    let mut answer = Vec::new();
    tcp.take(1 << 20).read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let (head, reply) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap_or_default();
    println!("{}", reply.trim_end());
    match status {
        "200" => Ok(()),
        "" => anyhow::bail!("the management API at {addr} gave no HTTP answer"),
        s => anyhow::bail!("the gateway refused the policy (HTTP {s})"),
    }
}

/// `NAME=HOST:PORT` of `--route`, with HOST resolved (its first address).
async fn route(text: &str) -> anyhow::Result<(policy::HostName, std::net::SocketAddr)> {
    let Some((name, target)) = text.split_once('=') else {
        anyhow::bail!("--route {text:?}: expected NAME=HOST:PORT");
    };
    let name = name
        .parse()
        .map_err(|e| anyhow::anyhow!("--route {text:?}: the name: {e}"))?;
    let addr = tokio::net::lookup_host(target)
        .await
        .map_err(|e| anyhow::anyhow!("--route {text:?}: cannot resolve {target}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--route {text:?}: {target} has no address"))?;
    Ok((name, addr))
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
