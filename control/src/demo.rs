//! `centaur demo`: a gateway, a local HTTPS origin and real `curl` requests through both
//! front doors (CONNECT and transparent), then the audit records they produced.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use gateway::Gateway;
use gateway::ca::{CaAlgorithm, CaInit};
use gateway::origin::Origin;
use policy::Config;

fn policy_yaml(dir: &Path, origin: &Origin, audit: &Path) -> String {
    format!(
        "# The demo policy: one allowed API, nothing else.
dns: {{enabled: false}}
proxy:
  http_listen: null
  https_listen: 127.0.0.1:0
  tunnel_listen: 127.0.0.1:0
  # The demo origin lives on loopback, which is denied by default (invariant 2).
  upstream_allow_cidrs: [127.0.0.1/32]
metrics: {{listen: null}}
tls:
  ca_cert: {dir}/ca.crt
  ca_key: {dir}/ca.key
upstream:
  hosts: {{api.demo.test: '{origin}'}}
  ca_files: [{dir}/origin-ca.pem]
audit:
  output: {audit}
  sandbox: {{sandbox_id: demo}}
transforms:
  - name: allowlist
    config:
      rules:
        - host: api.demo.test
          paths: ['/v1/*']
",
        dir = dir.display(),
        origin = origin.addr,
        audit = audit.display(),
    )
}

struct Step {
    what: &'static str,
    args: Vec<String>,
}

/// Runs the demo, printing what happens.
pub async fn run() -> anyhow::Result<()> {
    if Command::new("curl").arg("--version").output().is_err() {
        bail!("the demo drives the gateway with curl: install it (apt-get install -y curl)");
    }
    gateway::install_crypto();
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    gateway::ca::init(
        d,
        &CaInit {
            name: "Centaur demo CA".into(),
            algorithm: CaAlgorithm::EcdsaP256,
            validity: Duration::from_secs(86400),
            permitted: vec![],
        },
    )?;
    let origin = Origin::https(&["api.demo.test"], true).await?;
    std::fs::write(d.join("origin-ca.pem"), &origin.ca_pem)?;
    let audit_path = d.join("audit.jsonl");
    let yaml = policy_yaml(d, &origin, &audit_path);
    println!("== policy ==\n{yaml}");
    let config = Config::parse(&yaml).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gw = Gateway::start(config, None).await?;
    let addrs = gw.addrs();
    let (tunnel, https) = (
        addrs.tunnel.context("tunnel listener")?,
        addrs.https.context("https listener")?,
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(gw.run(
        async {
            let _ = stop_rx.await;
        },
        Duration::from_secs(2),
    ));
    let ca = d.join("ca.crt").display().to_string();
    let proxy = format!("http://{tunnel}");
    let steps = [
        Step {
            what: "allowed: CONNECT tunnel, path under /v1/",
            args: vec![
                "-x".into(),
                proxy.clone(),
                "https://api.demo.test/v1/models".into(),
            ],
        },
        Step {
            what: "denied: allowed host, path outside /v1/",
            args: vec![
                "-x".into(),
                proxy.clone(),
                "https://api.demo.test/admin".into(),
            ],
        },
        Step {
            what: "denied: a host the policy does not name",
            args: vec![
                "-x".into(),
                proxy.clone(),
                "https://exfil.example.com/".into(),
            ],
        },
        Step {
            what: "denied: an IP literal",
            args: vec![
                "-x".into(),
                proxy,
                "https://169.254.169.254/latest/meta-data/".into(),
            ],
        },
        Step {
            what: "allowed: transparent TLS (as if DNS pointed here), HTTP/2",
            args: vec![
                "--http2".into(),
                "--connect-to".into(),
                format!("api.demo.test:443:{}:{}", https.ip(), https.port()),
                "https://api.demo.test/v1/chat".into(),
            ],
        },
    ];
    for step in &steps {
        let out = tokio::task::spawn_blocking({
            let (ca, args) = (ca.clone(), step.args.clone());
            move || {
                Command::new("curl")
                    .args([
                        "-sS",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code} %{http_version}",
                        "--max-time",
                        "10",
                        "--cacert",
                        &ca,
                    ])
                    .args(&args)
                    .output()
            }
        })
        .await??;
        let code = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        println!(
            "-- {}\n   curl {}\n   -> HTTP {} {}",
            step.what,
            step.args.join(" "),
            code.trim(),
            err.trim()
        );
    }
    let _ = stop_tx.send(());
    running.await?;
    let text = std::fs::read_to_string(&audit_path)?;
    println!("\n== audit records: one per request, tunnel and refusal ==");
    println!(
        "{:<7} {:<7} {:<32} {:<18} {:>4}  listener",
        "action", "method", "host/path", "reason", "code"
    );
    let records: Vec<&str> = text.lines().skip(1).collect();
    for line in &records {
        let v: serde_json::Value = serde_json::from_str(line)?;
        println!(
            "{:<7} {:<7} {:<32} {:<18} {:>4}  {}",
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
            v["listener"].as_str().unwrap_or(""),
        );
    }
    if let Some(first) = records.first() {
        let pretty =
            serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(first)?)?;
        println!(
            "\n== the first record in full (a JSON line; `centaur-gateway run` writes them to stdout) ==\n{pretty}"
        );
    }
    let v = audit::verify::verify(std::slice::from_ref(&audit_path))?;
    println!(
        "\n== the hash chain (`centaur audit verify {}`) ==",
        audit_path.display()
    );
    match (&v.problem, &v.head) {
        (None, Some(head)) => println!("intact: {} records, head {head}", v.records),
        (Some(p), _) => anyhow::bail!("the demo's audit chain is broken: {}", p.message),
        (None, None) => anyhow::bail!("the demo wrote no audit records"),
    }
    Ok(())
}
