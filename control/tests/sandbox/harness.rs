//! A local origin that needs a real key, a policy that binds the key's placeholder to it, and
//! `centaur sandbox run` started as a real process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use testkit::Origin;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// The real credential: only the gateway and the origin may ever see it.
pub const REAL_KEY: &str = "sk-real-0123456789abcdef";

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Whether a test that needs root can run (testkit's rule: never skipped under CI).
pub fn root_or_skip(name: &str) -> bool {
    testkit::root_or_skip(name, "needs root for namespaces, nftables and cgroups")
}

/// What a finished run printed.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub id: String,
    pub gateway: String,
}

/// A run still going.
pub struct Running {
    pub child: Child,
    pub stdout: tokio::task::JoinHandle<String>,
    pub stderr: tokio::task::JoinHandle<String>,
    pub id: String,
    pub gateway: String,
    pub sandbox: String,
}

impl Running {
    /// SIGTERM to `centaur`, then its exit code, stdout and stderr.
    pub async fn stop(mut self) -> (i32, String, String) {
        self.signal("TERM");
        let code = self
            .child
            .wait()
            .await
            .ok()
            .and_then(|s| s.code())
            .unwrap_or(-1);
        let out = self.stdout.await.unwrap_or_default();
        (code, out, self.stderr.await.unwrap_or_default())
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().unwrap_or_default().to_string();
        let _ = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status();
    }
}

/// An origin `api.test` that needs `Authorization: Bearer REAL_KEY`, a policy for it, a
/// secrets file, a workdir the sandbox user owns and a host listener nothing should reach.
pub struct Sandboxed {
    pub dir: tempfile::TempDir,
    pub origin: Origin,
    pub env_file: PathBuf,
    policy: PathBuf,
    workdir: PathBuf,
    audit: PathBuf,
    host: (String, u16, Arc<AtomicUsize>),
}

impl Sandboxed {
    pub async fn new() -> Sandboxed {
        Sandboxed::build(None).await
    }

    pub async fn with_policy(yaml: &str) -> Sandboxed {
        Sandboxed::build(Some(yaml)).await
    }

    async fn build(policy: Option<&str>) -> Sandboxed {
        gateway::install_crypto();
        let bearer = format!("Bearer {REAL_KEY}");
        let origin = Origin::https_requiring(&["api.test"], true, Some(("authorization", &bearer)))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("origin-ca.pem"), &origin.ca_pem).unwrap();
        let yaml = match policy {
            Some(p) => p.to_string(),
            None => format!(
                "proxy:\n  upstream_allow_cidrs: [127.0.0.1/32]
upstream:\n  hosts: {{api.test: '{addr}'}}\n  ca_files: [{d}/origin-ca.pem]
transforms:
  - name: allowlist
    config:
      rules:
        - host: api.test
          paths: ['/v1/*']
  - name: secrets
    config:
      secrets:
        - source: {{type: env, var: API_KEY}}
          rules: [{{host: api.test}}]
          replace: {{proxy_value: placeholder-api-key, match_headers: [Authorization]}}
",
                addr = origin.addr,
                d = d.display()
            ),
        };
        let policy = d.join("policy.yaml");
        std::fs::write(&policy, yaml).unwrap();
        let env_file = d.join("secrets.env");
        std::fs::write(&env_file, format!("API_KEY={REAL_KEY}\n")).unwrap();
        let workdir = d.join("work");
        std::fs::create_dir(&workdir).unwrap();
        let ok = std::process::Command::new("chown")
            .args(["65534:65534", &workdir.display().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        Sandboxed {
            origin,
            env_file,
            policy,
            workdir,
            audit: d.join("audit.jsonl"),
            host: host_listener().await,
            dir,
        }
    }

    fn command(&self, extra: &[&str], script: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_centaur"));
        c.args(["sandbox", "run", "--label", "suite=sandbox-tests"])
            .arg("--policy")
            .arg(&self.policy)
            .arg("--secrets-from")
            .arg(&self.env_file)
            .arg("--workdir")
            .arg(&self.workdir)
            .arg("--audit")
            .arg(&self.audit)
            .args(["--env", &format!("HOST_ADDR={}", self.host.0)])
            .args(["--env", &format!("HOST_PORT={}", self.host.1)])
            .args(extra)
            .args(["--", "sh", "-c", script])
            .env_remove("SUDO_UID")
            .env_remove("SUDO_GID")
            .kill_on_drop(true);
        c
    }

    /// Runs `script` with `sh -c` in a new sandbox and waits for it.
    pub async fn run(&self, extra: &[&str], script: &str) -> Out {
        self.run_with_stdin(extra, script, "").await
    }

    pub async fn run_with_stdin(&self, extra: &[&str], script: &str, stdin: &str) -> Out {
        let mut child = self
            .command(extra, script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(stdin.as_bytes()).await.unwrap();
        }
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            child.wait_with_output(),
        )
        .await
        .expect("the sandbox run did not finish in 120 s")
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let (id, gateway, _) = banner(&stderr);
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
            id,
            gateway,
        }
    }

    /// Starts `script` (which must print `ready` first) and returns once it has.
    pub async fn spawn(&self, extra: &[&str], script: &str) -> Running {
        let mut child = self
            .command(extra, script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut line = String::new();
        while let Some(l) = err.next_line().await.unwrap() {
            if l.starts_with("centaur: sandbox ") {
                line = l;
                break;
            }
        }
        let (id, gateway, sandbox) = banner(&line);
        assert!(!id.is_empty(), "no banner from centaur");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(out.next_line().await.unwrap().as_deref(), Some("ready"));
        // Keep both pipes open and drained, as a terminal would.
        Running {
            stdout: drain(out),
            stderr: drain(err),
            child,
            id,
            gateway,
            sandbox,
        }
    }

    /// The audit records written so far (headers and footers left out).
    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("kind").is_none())
            .collect()
    }

    /// Connections the host-side listener accepted.
    pub fn host_listener_hits(&self) -> usize {
        self.host.2.load(Ordering::SeqCst)
    }
}

/// Reads the rest of `lines` in the background.
fn drain<R>(mut lines: tokio::io::Lines<BufReader<R>>) -> tokio::task::JoinHandle<String>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut all = String::new();
        while let Ok(Some(l)) = lines.next_line().await {
            all.push_str(&l);
            all.push('\n');
        }
        all
    })
}

/// `(id, gateway, sandbox address)` from `centaur: sandbox ID (SB) -> gateway GW [...`.
fn banner(stderr: &str) -> (String, String, String) {
    let Some(line) = stderr.lines().find(|l| l.contains(") -> gateway ")) else {
        return Default::default();
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let get = |i: usize| words.get(i).copied().unwrap_or_default();
    (
        get(2).to_string(),
        get(6).to_string(),
        get(3).trim_matches(['(', ')']).to_string(),
    )
}

/// A listener on the host's first global IPv4 address that counts what it accepts.
async fn host_listener() -> (String, u16, Arc<AtomicUsize>) {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let addr = text
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)?
                .split('/')
                .next()
                .map(String::from)
        })
        .find(|a| !a.starts_with("10.77."))
        .unwrap_or_else(|| "127.0.0.1".into());
    let l = tokio::net::TcpListener::bind((addr.as_str(), 0))
        .await
        .unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while l.accept().await.is_ok() {
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, port, hits)
}

/// The fake OpenAI API (`tests/fakes/llm.py`) on the host, reached as `api.llm.test`.
pub struct FakeLlm {
    dir: tempfile::TempDir,
    port: u16,
    _child: Child,
}

impl FakeLlm {
    pub async fn start() -> FakeLlm {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(repo().join(".venv/bin/python"))
            .arg(repo().join("control/tests/fakes/llm.py"))
            .arg(dir.path())
            .arg(REAL_KEY)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next_line().await.unwrap().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        FakeLlm {
            port: v["port"].as_u64().unwrap() as u16,
            dir,
            _child: child,
        }
    }

    pub fn policy(&self) -> String {
        format!(
            "proxy:\n  upstream_allow_cidrs: [127.0.0.1/32]
upstream:\n  hosts: {{api.llm.test: '127.0.0.1:{port}'}}\n  ca_files: [{d}/ca.pem]
transforms:
  - name: allowlist
    config: {{domains: [api.llm.test]}}
  - name: secrets
    config:
      secrets:
        - source: {{type: env, var: API_KEY}}
          rules: [{{host: api.llm.test}}]
          replace: {{proxy_value: placeholder-api-key, match_headers: [Authorization]}}
",
            port = self.port,
            d = self.dir.path().display()
        )
    }

    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}
