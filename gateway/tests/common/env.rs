//! The gateway under test: a real gateway on 127.0.0.1:0 with a fresh CA, two real local
//! origins (HTTPS and plain HTTP) pinned by name, and its audit file to read back.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gateway::ca::{CaAlgorithm, CaInit};
use gateway::{Addrs, Gateway};
use policy::Config;
use serde_json::Value;
use testkit::Origin;

use super::logs::{LOGS, assert_no_canary, capture_logs};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub addrs: Addrs,
    pub origin: Origin,
    pub plain: Origin,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub const API: &str = "api.test";

/// A fresh gateway CA (`ca.crt`, `ca.key`) in `dir`.
pub fn test_ca(dir: &Path) {
    gateway::ca::init(
        dir,
        &CaInit {
            name: "test CA".into(),
            algorithm: CaAlgorithm::EcdsaP256,
            validity: Duration::from_secs(86400),
            permitted: vec![],
        },
    )
    .unwrap();
}

/// Options for the environment.
pub struct Opts {
    /// Extra YAML appended under `transforms:` (list items), replacing the default allowlist.
    pub transforms: Option<String>,
    /// Whether the origin offers h2.
    pub h2: bool,
    /// Whether loopback origins are allowed (most tests need it).
    pub allow_loopback: bool,
    /// Extra top-level YAML for `proxy:` (indented two spaces).
    pub proxy_extra: String,
    /// Set the management API up with this token.
    pub management_token: Option<&'static str>,
    /// Extra `upstream.hosts` pins.
    pub pins: Vec<(String, String)>,
    /// Extra trusted upstream CA files.
    pub ca_files: Vec<String>,
    /// Listen on this IP at the standard ports (53, 80, 443) instead of 127.0.0.1:0.
    pub listen_ip: Option<String>,
    /// Extra `tls:` settings, as flow-mapping entries (`cert_cache_size: 10`).
    pub tls_extra: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            transforms: None,
            h2: true,
            allow_loopback: true,
            proxy_extra: String::new(),
            management_token: None,
            pins: Vec::new(),
            ca_files: Vec::new(),
            listen_ip: None,
            tls_extra: String::new(),
        }
    }
}

pub fn default_allowlist() -> String {
    "  - name: allowlist
    config:
      domains: ['*.test']
      rules:
        - {host: paths.example, paths: ['/ok/*']}
"
    .into()
}

/// An allowlist for every `*.test` host, as the first transform.
pub fn allow_test_domains() -> String {
    "  - name: allowlist\n    config: {domains: ['*.test']}\n".into()
}

impl Env {
    pub async fn start(opts: Opts) -> Env {
        gateway::install_crypto();
        capture_logs();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        test_ca(d);
        let origin = Origin::https(&[API, "other.test", "h1.test", "paths.example"], opts.h2)
            .await
            .unwrap();
        let plain = Origin::http().await.unwrap();
        std::fs::write(d.join("origin-ca.pem"), &origin.ca_pem).unwrap();
        let yaml = Self::yaml(d, &origin, &plain, &opts);
        std::fs::write(d.join("gateway.yaml"), &yaml).unwrap();
        if let Some(t) = opts.management_token {
            std::fs::write(d.join("token"), t).unwrap();
        }
        let config = Config::parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let gw = Gateway::start(config, Some(d.join("gateway.yaml")))
            .await
            .unwrap();
        let addrs = gw.addrs();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gw.run(
            async {
                let _ = rx.await;
            },
            Duration::from_secs(2),
        ));
        Env {
            dir,
            addrs,
            origin,
            plain,
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn yaml(d: &Path, origin: &Origin, plain: &Origin, opts: &Opts) -> String {
        let allow = if opts.allow_loopback {
            "  upstream_allow_cidrs: [127.0.0.1/32]\n"
        } else {
            ""
        };
        let mgmt = match opts.management_token {
            Some(_) => format!(
                "management: {{listen: '127.0.0.1:0', api_key_file: {}/token}}\n",
                d.display()
            ),
            None => String::new(),
        };
        let pins: String = opts
            .pins
            .iter()
            .map(|(h, a)| format!("    {h}: '{a}'\n"))
            .collect();
        let cas: String = opts.ca_files.iter().map(|c| format!(", {c}")).collect();
        let (dns, http, https, ip) = match &opts.listen_ip {
            Some(ip) => (
                format!("{ip}:53"),
                format!("{ip}:80"),
                format!("{ip}:443"),
                ip.clone(),
            ),
            None => (
                "127.0.0.1:0".into(),
                "127.0.0.1:0".into(),
                "127.0.0.1:0".into(),
                "127.0.0.1".into(),
            ),
        };
        format!(
            "dns: {{listen: '{dns}', proxy_ip: {ip}, passthrough: ['localhost'], records: [{{name: static.test, type: A, value: 192.0.2.7}}]}}
proxy:
  http_listen: {http}
  https_listen: {https}
  tunnel_listen: 127.0.0.1:0
  client_header_timeout: 2s
{allow}{extra}metrics: {{listen: '127.0.0.1:0'}}
{mgmt}tls: {{ca_cert: {d}/ca.crt, ca_key: {d}/ca.key{tls}}}
upstream:
  hosts:
    api.test: '{o}'
    other.test: '{o}'
    h1.test: '{o}'
    paths.example: '{o}'
    plain.test: '{p}'
    denied-ip.test: '169.254.169.254'
{pins}  ca_files: [{d}/origin-ca.pem{cas}]
audit: {{output: {d}/audit.jsonl, sandbox: {{sandbox_id: t1}}}}
transforms:
{t}",
            d = d.display(),
            o = origin.addr,
            p = plain.addr,
            extra = opts.proxy_extra,
            tls = match opts.tls_extra.as_str() {
                "" => String::new(),
                t => format!(", {t}"),
            },
            t = opts.transforms.clone().unwrap_or_else(default_allowlist),
        )
    }

    pub fn ca(&self) -> String {
        self.dir.path().join("ca.crt").display().to_string()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn tunnel(&self) -> SocketAddr {
        self.addrs.tunnel.unwrap()
    }

    pub fn https(&self) -> SocketAddr {
        self.addrs.https.unwrap()
    }

    /// `--connect-to` arguments sending `host:443` to the transparent listener.
    pub fn to_https(&self, host: &str) -> Vec<String> {
        let a = self.https();
        vec![
            "--connect-to".into(),
            format!("{host}:443:{}:{}", a.ip(), a.port()),
        ]
    }

    /// Audit records, waiting until at least `n` are written.
    pub async fn audit(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(self.path("audit.jsonl")).unwrap_or_default();
            // Skip the file's header line (chain state, no request).
            let recs: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .filter(|v| v.get("kind").is_none())
                .collect();
            if recs.len() >= n || Instant::now() > deadline {
                return recs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many records carry `reason`, waiting (up to 10 s) until at least `n` do.
    pub async fn count_reason(&self, reason: &str, n: usize) -> usize {
        count_reason_in(&self.path("audit.jsonl"), reason, n).await
    }

    /// The single record matching `pred`, waiting for it.
    pub async fn record(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let recs = self.audit(0).await;
            let found: Vec<&Value> = recs.iter().filter(|r| pred(r)).collect();
            if found.len() == 1 {
                return found[0].clone();
            }
            assert!(found.len() < 2, "more than one matching record: {found:#?}");
            assert!(Instant::now() < deadline, "no matching record in {recs:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the gateway, then checks the canary: no audit line and no log line holds a
    /// real credential.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let audit = std::fs::read_to_string(self.path("audit.jsonl")).unwrap_or_default();
        assert_no_canary("the audit log", &audit);
        let logs = LOGS
            .lock()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        assert_no_canary("the gateway's log", &logs.unwrap_or_default());
    }
}

/// How many records of the audit file at `path` carry `reason`, waiting (up to 10 s) until at
/// least `n` do.
pub async fn count_reason_in(path: &Path, reason: &str, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let count = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["reason"] == reason)
            .count();
        if count >= n || Instant::now() > deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The annotations of transform `name` in a record.
pub fn ann(record: &Value, name: &str) -> Value {
    record["request_transforms"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .map(|t| t["annotations"].clone())
        .unwrap_or_else(|| panic!("no {name} transform in {record:#}"))
}

/// The `Authorization` the origin last received.
pub fn last_auth(env: &Env) -> Value {
    env.origin.seen().pop().unwrap()["headers"]["authorization"].clone()
}
