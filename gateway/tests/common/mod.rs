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
    assert_no_canary("a response to the sandbox", &stdout);
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (
        code.trim().parse().unwrap_or(0),
        body.to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The project's Python (a venv with requests, httpx and websockets).
/// Whether a test that needs root (namespaces) can run. Under `CI` a missing root is a
/// failure, never a silent skip.
pub fn root_or_skip(name: &str) -> bool {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name}: CI runs as root, so this test must not be skipped there"
        );
        eprintln!("SKIPPED {name}: needs root for network namespaces");
    }
    root
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

/// The fake authorization server, Google token endpoint and Vault (`tests/fakes/authserver.py`).
pub struct Fake {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: std::process::Child,
}

/// Names the fake's certificate covers; pin them to `fake.addr()`.
pub const FAKE_NAMES: [&str; 2] = ["token.test", "vault.test"];

impl Fake {
    /// Starts the fake; tokens it mints live `expires_in` seconds.
    pub fn start(expires_in: u64) -> Fake {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/authserver.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(dir.path())
            .arg(FAKE_NAMES.join(","))
            .env("FAKE_EXPIRES_IN", expires_in.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = json(&line)["port"].as_u64().expect("fake did not start") as u16;
        Fake { dir, port, child }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// `Opts` pins and trust for the fake's names.
    pub fn opts(&self, transforms: String) -> Opts {
        Opts {
            transforms: Some(transforms),
            pins: FAKE_NAMES
                .iter()
                .map(|n| (n.to_string(), format!("127.0.0.1:{}", self.port)))
                .collect(),
            ca_files: vec![self.path("fake-ca.pem")],
            ..Opts::default()
        }
    }

    /// What the fake saw and verified, oldest first.
    pub fn log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("log.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(json)
            .collect()
    }

    /// Entries of one kind.
    pub fn seen(&self, kind: &str) -> Vec<Value> {
        self.log()
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .collect()
    }

    /// Takes the token endpoints down (`true`) or up.
    pub async fn down(&self, down: bool) {
        let url = format!(
            "https://127.0.0.1:{}/admin/{}",
            self.port,
            if down { "down" } else { "up" }
        );
        let out = run(
            "curl",
            &[
                "-sSf".into(),
                "-X".into(),
                "POST".into(),
                "--cacert".into(),
                self.path("fake-ca.pem"),
                "--resolve".into(),
                format!("token.test:{}:127.0.0.1", self.port),
                url.replace("127.0.0.1", "token.test"),
            ],
            &[],
        )
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every real credential in the tests carries this marker; it must never reach a client, an
/// audit record or a log line (invariant 3).
pub const CANARY: &str = "c4n4ry";

/// Asserts that nothing the sandbox or the audit log sees carries a real credential.
pub fn assert_no_canary(what: &str, text: &str) {
    assert!(
        !text.contains(CANARY),
        "a real credential leaked into {what}: {text}"
    );
}

static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut l) = LOGS.lock() {
            l.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures the gateway's log (debug and up) for the canary check.
fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("gateway=debug,info")
        .with_writer(|| LogSink)
        .with_ansi(false)
        .try_init();
}

/// An allowlist for every `*.test` host, as the first transform.
pub fn allow_test_domains() -> String {
    "  - name: allowlist\n    config: {domains: ['*.test']}\n".into()
}

/// curl arguments for `url` on `api.test`, sent to the transparent listener.
pub fn via_api(env: &Env, url: &str, extra: &[&str]) -> Vec<String> {
    let mut a = env.to_https(API);
    a.push(url.into());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// A request to `api.test` with curl; (status, body). A transport failure fails the test.
pub async fn get(env: &Env, url: &str, extra: &[&str]) -> (u16, String) {
    let args = via_api(env, url, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body, err) = curl(env, &args).await;
    assert!(code != 0, "{err}");
    (code, body)
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

/// Reads the origin's `/sse` (three events, 300 ms apart) through the tunnel with httpx, with
/// `authorization` as the Authorization header when not empty; returns each event's arrival
/// time in seconds after the request started.
pub async fn sse_arrival_times(env: &Env, authorization: &str) -> Vec<f64> {
    let script = format!(
        r#"
import sys, time, httpx
auth = sys.argv[1]
t0 = time.monotonic()
with httpx.Client(timeout=10) as c:
    with c.stream("GET", "https://{API}/sse", headers={{"Authorization": auth}} if auth else {{}}) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                print(f"{{time.monotonic() - t0:.3f}} {{line}}", flush=True)
"#
    );
    let proxy = format!("http://{}", env.tunnel());
    let out = run(
        &python(),
        &["-c".into(), script, authorization.into()],
        &[("HTTPS_PROXY", proxy), ("SSL_CERT_FILE", env.ca())],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let times: Vec<f64> = stdout
        .lines()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        times.len(),
        3,
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    times
}
