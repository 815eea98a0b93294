//! A `centaur-gateway` process of its own: its directory, CA, policy (an origin `api.test`
//! with an injected key) and log, for the tests that kill it, fill its disk or restart it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use testkit::Origin;

use crate::common::{CANARY, assert_no_canary};

/// A gateway process with its own directory, CA and policy.
pub struct Proc {
    pub dir: tempfile::TempDir,
    child: Child,
    /// The CONNECT listener, `host:port`.
    pub tunnel: String,
    /// The metrics and probe listener, `host:port`.
    pub metrics: String,
    /// The management listener, `host:port`, with [`ProcPolicy::management_key_env`].
    pub management: Option<String>,
    /// The origin behind `api.test`.
    pub origin: Origin,
}

/// The default transforms: `api.test` allowed, its key injected from `API_KEY`.
const TRANSFORMS: &str = "  - name: allowlist
    config: {domains: [api.test]}
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: API_KEY}
          rules: [{host: api.test}]
          inject: {header: x-api-key}
";

/// What a process's policy has beyond the defaults.
#[derive(Default)]
pub struct ProcPolicy<'a> {
    /// `transforms:` list items, replacing the default ones.
    pub transforms: Option<&'a str>,
    /// Extra `upstream.hosts` pins.
    pub pins: Vec<(String, String)>,
    /// Extra trusted upstream CA files.
    pub ca_files: Vec<String>,
    /// A management listener, its key read from this variable.
    pub management_key_env: Option<&'a str>,
}

impl Proc {
    pub async fn start(audit: &str, env: &[(&str, String)]) -> Proc {
        Proc::start_with(audit, ProcPolicy::default(), env).await
    }

    /// A gateway with `policy`'s transforms, pins and trust, and `env` in its environment.
    pub async fn start_with(audit: &str, policy: ProcPolicy<'_>, env: &[(&str, String)]) -> Proc {
        gateway::install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        crate::common::test_ca(d);
        let origin = Origin::https(&["api.test"], false).await.unwrap();
        std::fs::write(d.join("origin-ca.pem"), &origin.ca_pem).unwrap();
        let yaml = format!(
            "dns: {{listen: '127.0.0.1:0', proxy_ip: 127.0.0.1}}
proxy:
  http_listen: 127.0.0.1:0
  https_listen: 127.0.0.1:0
  tunnel_listen: 127.0.0.1:0
  upstream_allow_cidrs: [127.0.0.1/32]
metrics: {{listen: '127.0.0.1:0'}}
{management}tls: {{ca_cert: {d}/ca.crt, ca_key: {d}/ca.key}}
upstream:
  hosts: {{api.test: '{o}'{pins}}}
  ca_files: [{d}/origin-ca.pem{cas}]
audit: {audit}
transforms:
{t}",
            d = d.display(),
            o = origin.addr,
            audit = audit.replace("DIR", &d.display().to_string()),
            pins = policy
                .pins
                .iter()
                .map(|(h, a)| format!(", {h}: '{a}'"))
                .collect::<String>(),
            cas = policy
                .ca_files
                .iter()
                .map(|c| format!(", {c}"))
                .collect::<String>(),
            t = policy.transforms.unwrap_or(TRANSFORMS),
            management = policy.management_key_env.map_or(String::new(), |v| format!(
                "management: {{listen: '127.0.0.1:0', api_key_env: {v}}}\n"
            )),
        );
        std::fs::write(d.join("gateway.yaml"), yaml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_centaur-gateway"))
            .args(["run", "--config"])
            .arg(d.join("gateway.yaml"))
            .env("API_KEY", format!("sk-{CANARY}-live"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = d.join("gateway.log");
        std::thread::spawn(move || {
            let mut out = std::fs::File::create(log).unwrap();
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                use std::io::Write;
                let _ = writeln!(out, "{line}");
                let addr = |name: &str| {
                    let t = line.split(&format!("{name}=Some(")).nth(1)?;
                    Some(t.split(')').next().unwrap_or("").to_string())
                };
                if !sent && let (Some(t), Some(m)) = (addr("tunnel"), addr("metrics")) {
                    let _ = tx.send((t, m, addr("management")));
                    sent = true;
                }
            }
        });
        let Ok((tunnel, metrics, management)) = rx.recv_timeout(Duration::from_secs(20)) else {
            // The reader thread has seen the end of its output: the log is complete.
            std::thread::sleep(Duration::from_millis(100));
            let log = std::fs::read_to_string(d.join("gateway.log")).unwrap_or_default();
            panic!("the gateway did not start:\n{log}");
        };
        Proc {
            dir,
            child,
            tunnel,
            metrics,
            management,
            origin,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// Every audit file of this gateway (live and rotated).
    pub fn audit_files(&self) -> Vec<PathBuf> {
        testkit::audit_files(self.dir.path())
    }

    /// What the gateway logged on standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("gateway.log")).unwrap_or_default()
    }

    /// The log once it holds `needle`, or as it is after 10 s: a thread copies the
    /// gateway's standard error into the file, so a line written before a response can
    /// reach the file after the client has the response.
    pub async fn log_with(&self, needle: &str) -> String {
        for _ in 0..200 {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.log()
    }

    pub fn records(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for f in self.audit_files() {
            let text = std::fs::read_to_string(&f).unwrap();
            assert_no_canary("an audit file", &text);
            for line in text.lines() {
                if let Ok(v) = serde_json::from_str::<Value>(line)
                    && v.get("kind").is_none()
                {
                    out.push(v);
                }
            }
        }
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every response a client received in full (by path) has a 200 record (invariant 4).
pub fn assert_recorded(records: &[Value], received: &[String]) {
    let recorded: std::collections::HashSet<&str> = records
        .iter()
        .filter(|r| r["status_code"] == 200)
        .filter_map(|r| r["path"].as_str())
        .collect();
    let missing: Vec<&String> = received
        .iter()
        .filter(|p| !recorded.contains(p.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} responses the client received have no record, e.g. {:?}",
        missing.len(),
        received.len(),
        &missing[..missing.len().min(5)]
    );
}
