//! Test harness: a real gateway on 127.0.0.1:0 with a fresh CA, real local origins, and real
//! clients (curl, openssl, Python) run as processes.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use gateway::ca::{CaAlgorithm, CaInit};
use gateway::origin::Origin;
use gateway::{Addrs, Gateway};
use policy::Config;
use serde_json::Value;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub addrs: Addrs,
    pub origin: Origin,
    pub plain: Origin,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub const API: &str = "api.test";

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

impl Env {
    pub async fn start(opts: Opts) -> Env {
        gateway::install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        gateway::ca::init(
            d,
            &CaInit {
                name: "test CA".into(),
                algorithm: CaAlgorithm::EcdsaP256,
                validity: Duration::from_secs(86400),
                permitted: vec![],
            },
        )
        .unwrap();
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
{mgmt}tls: {{ca_cert: {d}/ca.crt, ca_key: {d}/ca.key}}
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
            let recs: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if recs.len() >= n || Instant::now() > deadline {
                return recs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Runs a command to completion off the async runtime.
pub async fn run(cmd: &str, args: &[String], envs: &[(&str, String)]) -> Output {
    let (cmd, args, envs) = (
        cmd.to_string(),
        args.to_vec(),
        envs.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        Command::new(&cmd)
            .args(&args)
            .envs(envs)
            .output()
            .unwrap_or_else(|e| panic!("{cmd} could not run ({e}): run scripts/install-deps"))
    })
    .await
    .unwrap()
}

/// curl with the test CA trusted; returns (http status, body, stderr).
pub async fn curl(env: &Env, args: &[&str]) -> (u16, String, String) {
    let mut a: Vec<String> = vec![
        "-sS".into(),
        "--max-time".into(),
        "10".into(),
        "--cacert".into(),
        env.ca(),
        "-w".into(),
        "\n%{http_code}".into(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    let out = run("curl", &a, &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (
        code.trim().parse().unwrap_or(0),
        body.to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The project's Python (a venv with requests, httpx and websockets).
pub fn python() -> String {
    if let Ok(p) = std::env::var("CENTAUR_PYTHON") {
        return p;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p = root.join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-deps",
        p.display()
    );
    p.display().to_string()
}

pub fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}
