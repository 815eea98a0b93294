//! The policy commands, shared by `centaur-gateway check|explain|test|schema` and
//! `centaur policy check|explain|test|schema`: the same arguments, the same output, the same
//! exit codes. Results go to stdout; problems to stderr. Code for binaries: errors are
//! `anyhow`, made to be printed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use policy::Config;

/// The policy commands.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Validate a policy file: prints every error with line:column, or a summary.
    Check {
        /// The policy file (YAML).
        file: PathBuf,
    },
    /// Show what the policy does with one request: decision, rule, each transform's effect.
    #[command(
        after_help = "Example:\n  explain policy.yaml --request 'POST https://api.openai.com/v1/chat/completions' -H 'Authorization: Bearer OPENAI_PH'\n\nNo request is sent and no secret is read: only names and locations are shown."
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

/// Runs a policy command; `prog` is how the user calls these commands (`centaur-gateway`,
/// `centaur policy`), for hints and error prefixes.
pub fn run(cmd: PolicyCmd, prog: &str) -> ExitCode {
    let result = match cmd {
        PolicyCmd::Check { file } => return check(&file, prog),
        PolicyCmd::Explain {
            file,
            request,
            headers,
        } => explain(&file, &request, &headers),
        PolicyCmd::Test { file, cases } => return test(&file, &cases),
        PolicyCmd::Schema => {
            println!("{}", policy::schema());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{prog}: {}", super::describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// Reads and validates a policy file.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Config::parse(&text).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))
}

fn check(path: &Path, prog: &str) -> ExitCode {
    match load(path) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("{}: warning: {w}", path.display());
            }
            println!("{}: ok", path.display());
            print!("{}", summary(&c, prog));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", super::describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// One screen: what is allowed, which credentials go where.
pub fn summary(c: &Config, prog: &str) -> String {
    use std::fmt::Write;
    let p = &c.policy;
    let mut out = String::new();
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
    for h in &p.header_allowlists {
        let _ = writeln!(
            out,
            "  header allowlist ({}): {} names, {} patterns; other request headers are stripped",
            h.id,
            h.names.len(),
            h.patterns.len()
        );
    }
    let creds = p.secrets.len() + p.gcp_auth.len() + p.oauth.len() + p.hmac.len();
    let _ = writeln!(out, "  credentials: {creds}");
    credentials(p, &mut out);
    if !c.tests.is_empty() {
        let _ = writeln!(out, "  test cases: {} (run `{prog} test`)", c.tests.len());
    }
    out
}

/// The hosts a transform's rules name, or "every request".
fn hosts(rules: &[policy::Rule]) -> String {
    if rules.is_empty() {
        return "every request".to_string();
    }
    rules
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per credential transform: what it puts where, for which hosts.
fn credentials(p: &policy::Policy, out: &mut String) {
    use std::fmt::Write;
    for e in &p.secrets {
        let _ = writeln!(
            out,
            "    secret {} → {} → {}",
            e.name,
            secret_effect(&e.mode),
            hosts(&e.rules)
        );
    }
    for g in &p.gcp_auth {
        let key = &p.sources[g.keyfile.0].name;
        let audience = g
            .id_token
            .as_ref()
            .map(|t| format!(" for {}", t.audience))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "    {} key {key}{audience} → {} → {}",
            g.name(),
            g.header(),
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
}

/// What a `secrets` entry does, in words.
fn secret_effect(mode: &policy::Mode) -> String {
    match mode {
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
    }
}

fn explain(path: &Path, request: &str, headers: &[String]) -> anyhow::Result<()> {
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

fn test(path: &Path, extra: &[PathBuf]) -> ExitCode {
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
            eprintln!("{}", super::describe(&e));
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
