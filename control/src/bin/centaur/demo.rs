//! `centaur demo --gateway`: the gateway alone, in a minute, offline. A local "API" that needs a real key;
//! a sandboxed shell that calls it by name holding only a placeholder; the gateway of that
//! sandbox swaps the key in, refuses everything else, and audits all of it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, bail};
use control::runner::{SandboxSpec, Stdio, spec};
use sandbox::local::Limits;
use testkit::Origin;

use crate::sandbox::{run_sandbox, user};

pub(crate) const PLACEHOLDER: &str = "demo-placeholder-key";

pub(crate) fn policy_yaml(dir: &Path, origin: &Origin) -> String {
    format!(
        "# The demo policy: one API, reached by name; its key is a placeholder in the sandbox.
proxy:
  # The demo API lives on this machine's loopback, which is denied by default (invariant 2).
  upstream_allow_cidrs: [127.0.0.1/32]
upstream:
  hosts: {{api.demo.test: '{origin}'}}
  ca_files: [{dir}/origin-ca.pem]
transforms:
  - name: allowlist
    config:
      rules:
        - host: api.demo.test
          paths: ['/v1/*']
  - name: secrets
    config:
      secrets:
        - source: {{type: env, var: DEMO_API_KEY}}
          rules: [{{host: api.demo.test}}]
          replace: {{proxy_value: {PLACEHOLDER}, match_headers: [Authorization], require: true}}
",
        dir = dir.display(),
        origin = origin.addr,
    )
}

/// What runs inside the sandbox: plain curl and dig, nothing of ours.
const SCRIPT: &str = r#"
say() { printf '\n%s\n' "$*"; }
say "(1) curl https://api.demo.test/v1/models -H 'Authorization: Bearer \$DEMO_API_KEY'"
curl -sS -m 10 https://api.demo.test/v1/models -H "Authorization: Bearer $DEMO_API_KEY" \
  -w '\n    -> HTTP %{http_code}\n' | sed 's/^{/    the API echoed: {/' | cut -c1-150
say "(2) the sandbox's environment holds only the placeholder:"
env | grep -E '^DEMO_API_KEY=' | sed 's/^/    /'
printf '    cat %s -> ' "$SECRETS_FILE"; cat "$SECRETS_FILE" 2>&1 | head -1
say "(4) refused: a host the policy does not name (curl https://exfil.example.com/)"
curl -sS -m 5 https://exfil.example.com/ 2>&1 | sed 's/^/    /'
say "(4) refused: a literal IP (curl http://169.254.169.254/latest/meta-data/)"
curl -sS -m 5 http://169.254.169.254/latest/meta-data/ -w '\n    -> HTTP %{http_code}\n' | sed '1s/^/    /'
say "(4) refused: the right host, a path the policy does not allow (curl https://api.demo.test/admin)"
curl -sS -m 5 https://api.demo.test/admin -w '\n    -> HTTP %{http_code}\n' | sed '1s/^/    /'
say "(4) dropped: DNS to any other resolver (dig @8.8.8.8 example.com)"
dig +time=2 +tries=1 @8.8.8.8 example.com 2>&1 | grep -m1 -E 'timed out|no servers' | sed 's/^/    /'
true
"#;

/// Runs the demo, printing what happens.
pub async fn run() -> anyhow::Result<()> {
    sandbox::local::preflight().context("the demo runs a real sandbox")?;
    gateway::install_crypto();
    let dir = tempfile::Builder::new().prefix("centaur-demo-").tempdir()?;
    let d = dir.path();
    let real_key = format!("sk-live-{:032x}", rand::random::<u128>());
    let bearer = format!("Bearer {real_key}");
    let origin =
        Origin::https_requiring(&["api.demo.test"], true, Some(("authorization", &bearer))).await?;
    std::fs::write(d.join("origin-ca.pem"), &origin.ca_pem)?;
    let policy = d.join("policy.yaml");
    std::fs::write(&policy, policy_yaml(d, &origin))?;
    let secrets = d.join("secrets.env");
    std::fs::write(&secrets, format!("DEMO_API_KEY={real_key}\n"))?;
    let audit = d.join("audit.jsonl");
    let workdir = d.join("work");
    std::fs::create_dir(&workdir)?;
    let (uid, gid) = user(None)?;
    let (policy_config, policy_name) = spec::load_policy(Some(&policy))?;
    let spec = SandboxSpec {
        command: ["sh", "-c", SCRIPT].map(OsString::from).to_vec(),
        policy: policy_config,
        policy_name,
        secrets: spec::load_secrets(Some(&secrets))?,
        uid,
        gid,
        workdir: workdir.clone(),
        mounts: vec![],
        env: vec![("SECRETS_FILE".into(), secrets.display().to_string())],
        limits: Limits {
            memory: Some(1 << 30),
            pids: Some(256),
            cpus: None,
        },
        audit: Some(audit.clone()),
        labels: BTreeMap::from([("demo".into(), "true".into())]),
        stdio: Stdio::Inherit,
    };
    std::os::unix::fs::chown(&workdir, Some(uid), Some(gid))?;
    println!("== Centaur demo: a sandboxed shell whose only way out is its own gateway ==\n");
    println!(
        "{}",
        std::fs::read_to_string(&policy)?
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("\n    secrets.env (stays outside): DEMO_API_KEY=sk-live-…\n");
    let code = run_sandbox(spec, false).await?;
    if code != 0 {
        bail!("the sandboxed script exited with {code}");
    }
    println!("\n(3) what the API received (outside the sandbox):");
    let seen = origin.seen();
    if !seen
        .iter()
        .any(|r| r["headers"]["authorization"] == bearer.as_str())
    {
        bail!("the API never received the real key");
    }
    for r in seen {
        let auth = r["headers"]["authorization"].as_str().unwrap_or("");
        println!(
            "    {} {}  Authorization: {}…  (the real key from secrets.env: {})",
            r["method"].as_str().unwrap_or(""),
            r["path"].as_str().unwrap_or(""),
            auth.get(..18).unwrap_or(auth),
            if auth == bearer { "yes" } else { "no" }
        );
    }
    print_audit(&audit, "(5)")?;
    println!("\n    (files kept in {})", dir.keep().display());
    Ok(())
}

/// Prints an audit log's records under heading `step`, and checks its hash chain.
pub(crate) fn print_audit(audit: &Path, step: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(audit)?;
    println!(
        "\n{step} the audit records (`centaur audit query {}`):",
        audit.display()
    );
    println!(
        "    {:<7} {:<5} {:<36} {:<22} {:>4}  secrets",
        "action", "verb", "host/path", "reason", "code"
    );
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if v.get("kind").is_some() {
            continue;
        }
        let swapped = v["request_transforms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["annotations"]["swapped"].as_array())
            .flatten()
            .filter_map(|s| s["secret"].as_str())
            .collect::<Vec<_>>()
            .join(",");
        println!(
            "    {:<7} {:<5} {:<36} {:<22} {:>4}  {}",
            v["action"].as_str().unwrap_or(""),
            v["method"].as_str().unwrap_or("-"),
            format!(
                "{}{}",
                v["host"].as_str().unwrap_or(""),
                v["path"].as_str().unwrap_or("")
            ),
            v["reason"].as_str().unwrap_or(""),
            v["status_code"]
                .as_u64()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            if swapped.is_empty() {
                "-".into()
            } else {
                format!("{swapped} swapped")
            },
        );
    }
    let v = audit::read::verify::verify(&[audit.to_path_buf()])?;
    match (&v.problem, &v.head) {
        (None, Some(head)) => {
            println!(
                "\n    hash chain intact: {} records, head {head}",
                v.records
            );
            Ok(())
        }
        (Some(p), _) => bail!("the demo's audit chain is broken: {}", p.message),
        (None, None) => bail!("the demo wrote no audit records"),
    }
}
