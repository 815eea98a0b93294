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
    /// Show what the policy does with one request: decision, rule, each transform's effect.
    #[command(
        after_help = "Example:\n  centaur-gateway explain policy.yaml --request 'POST https://api.openai.com/v1/chat/completions' -H 'Authorization: Bearer OPENAI_PH'\n\nNo request is sent and no secret is read: only names and locations are shown."
    )]
    Explain {
        /// The policy file (YAML).
        file: PathBuf,
        /// The request: `METHOD URL`.
        #[arg(long, short)]
        request: String,
        /// A request header, `Name: value`; repeatable.
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
    },
    /// Run the policy's test cases (`tests:` in the file, and `--cases` files); exit 1 on a failure.
    #[command(
        after_help = "A case:\n  tests:\n    - name: chat is allowed and carries the key\n      request: POST https://api.openai.com/v1/chat/completions\n      headers: ['Authorization: Bearer OPENAI_PH']\n      expect: allow            # allow | deny\n      reason: allowed          # optional reason code\n      rule: transforms[0].config.rules[0]   # optional"
    )]
    Test {
        /// The policy file (YAML).
        file: PathBuf,
        /// More cases, in files holding only `tests:`; repeatable.
        #[arg(long)]
        cases: Vec<PathBuf>,
    },
    /// Print the policy file's JSON Schema (for editors and CI validation).
    Schema,
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
        Cmd::Explain {
            file,
            request,
            headers,
        } => explain(&file, &request, &headers),
        Cmd::Test { file, cases } => return test(&file, &cases),
        Cmd::Schema => {
            println!("{}", policy::schema());
            Ok(())
        }
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
            print!("{}", summary(&c));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One screen: what is allowed, which credentials go where.
fn summary(c: &Config) -> String {
    use std::fmt::Write;
    let p = &c.policy;
    let mut out = String::new();
    let hosts = |rules: &[policy::Rule]| {
        if rules.is_empty() {
            "every request".to_string()
        } else {
            rules
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let _ = writeln!(out, "  allow rules: {}", p.rule_count());
    if p.allowlists.is_empty() {
        let _ = writeln!(out, "    none: every request will be denied");
    }
    for list in &p.allowlists {
        for r in &list.rules {
            let mode = if list.warn { "  (report only)" } else { "" };
            let _ = writeln!(out, "    allow  {r}{mode}");
        }
    }
    let creds = p.secrets.len() + p.gcp_auth.len() + p.oauth.len() + p.hmac.len();
    let _ = writeln!(out, "  credentials: {creds}");
    for e in &p.secrets {
        let what = match &e.mode {
            policy::Mode::Replace(r) => {
                let mut at = vec![match &r.headers {
                    policy::HeaderScope::All => "all headers".to_string(),
                    policy::HeaderScope::Only(_) => "listed headers".to_string(),
                }];
                for (on, name) in [(r.query, "query"), (r.path, "path"), (r.body, "body")] {
                    if on {
                        at.push(name.into());
                    }
                }
                let req = if r.require { ", required" } else { "" };
                format!("replace `{}` in {}{req}", r.proxy_value, at.join(", "))
            }
            policy::Mode::Inject(i) => match &i.target {
                policy::InjectTarget::Header(h) => format!("inject header {h}"),
                policy::InjectTarget::Query(q) => format!("inject query {q}"),
            },
        };
        let _ = writeln!(out, "    secret {} → {what} → {}", e.name, hosts(&e.rules));
    }
    for g in &p.gcp_auth {
        let key = &p.sources[g.keyfile.0].name;
        let _ = writeln!(
            out,
            "    gcp_auth key {key} → Authorization → {}",
            hosts(&g.rules)
        );
    }
    for o in &p.oauth {
        let _ = writeln!(
            out,
            "    oauth_token {} at {} → {} → {}",
            o.grant.as_str(),
            o.token_endpoint,
            o.header,
            hosts(&o.rules)
        );
    }
    for h in &p.hmac {
        let names: Vec<&str> = h.headers.iter().map(|(n, _)| n.as_str()).collect();
        let _ = writeln!(
            out,
            "    hmac_sign {} → {} → {}",
            h.algorithm.as_str(),
            names.join(", "),
            hosts(&h.rules)
        );
    }
    if !c.tests.is_empty() {
        let _ = writeln!(
            out,
            "  test cases: {} (run `centaur-gateway test`)",
            c.tests.len()
        );
    }
    out
}

fn explain(path: &PathBuf, request: &str, headers: &[String]) -> anyhow::Result<()> {
    let c = load(path)?;
    let mut sample = policy::Sample::parse(request).map_err(anyhow::Error::msg)?;
    for h in headers {
        sample.header(h).map_err(anyhow::Error::msg)?;
    }
    let e = c.policy.explain(&sample);
    let verdict = if e.verdict() == policy::Verdict::Allow {
        "allow"
    } else {
        "deny"
    };
    println!("request   {sample}");
    println!("decision  {verdict}");
    println!("reason    {}", e.reason());
    println!(
        "rule      {}",
        e.decision.rule.as_deref().unwrap_or("(none)")
    );
    if let Some((status, _)) = e.refusal {
        println!("status    {status}");
    }
    if let Some(stub) = &e.stub {
        println!(
            "stub      answered by the gateway with a stub token ({})",
            stub.id()
        );
    }
    for eff in &e.effects {
        println!("{:<9} {}  [{}]", eff.transform, eff.what, eff.id);
    }
    if e.verdict() == policy::Verdict::Allow && e.effects.is_empty() && e.stub.is_none() {
        println!("(no credential transform applies)");
    }
    Ok(())
}

fn test(path: &PathBuf, extra: &[PathBuf]) -> ExitCode {
    let result = load(path).and_then(|c| {
        let mut cases = c.tests.clone();
        for f in extra {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let more =
                policy::parse_cases(&text).map_err(|e| anyhow::anyhow!("{}:\n{e}", f.display()))?;
            cases.extend(more);
        }
        Ok((c, cases))
    });
    let (c, cases) = match result {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    if cases.is_empty() {
        eprintln!(
            "{}: no test cases (add `tests:` to the file or pass --cases FILE)",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    let mut failed = 0;
    for case in &cases {
        match case.run(&c.policy) {
            (e, None) => println!("PASS  {}  ({})", case.name, e.reason()),
            (_, Some(why)) => {
                failed += 1;
                println!("FAIL  {}: {why}", case.name);
            }
        }
    }
    println!("{} passed, {failed} failed", cases.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = load(&path)?;
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
