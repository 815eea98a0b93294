//! `centaur server` as a real process on 127.0.0.1:0, its keys made with `centaur keys`, and
//! the Python venv the client tests run in.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const CENTAUR: &str = env!("CARGO_BIN_EXE_centaur");

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The venv's Python (scripts/install-deps makes it).
pub fn python() -> PathBuf {
    let p = repo().join(".venv/bin/python");
    assert!(p.exists(), "run scripts/install-deps first (no .venv)");
    p
}

/// Whether a test that starts sandboxes can run.
pub fn root_or_skip(name: &str) -> bool {
    testkit::root_or_skip(
        name,
        "the server's sandboxes need root (namespaces, nftables, cgroups)",
    )
}

/// A data directory the sandbox user can reach (its parents must be traversable), and the
/// config file in it. Dropping it stops every sandbox its servers started (they outlive the
/// servers by design), even when the test panicked.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub database_url: Option<String>,
    /// Extra environment for the server process.
    pub env: Vec<(String, String)>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.data().join("sandboxes")) else {
            return;
        };
        let pids: Vec<String> = entries
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("pid")).ok())
            .map(|p| p.trim().to_string())
            .collect();
        for pid in &pids {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", pid])
                .status();
        }
        for _ in 0..200 {
            if pids
                .iter()
                .all(|p| !Path::new(&format!("/proc/{p}")).exists())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Setup {
    /// A config with these harnesses (`name: [argv…]`) plus the test agents mounted at
    /// /run/centaur/test-agents, and extra YAML at the top level.
    pub fn new(harnesses: &[(&str, &str)], extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o711);
        let agents = repo().join("control/tests/server/agents");
        let mut yaml = format!(
            "sandbox:\n  mounts: ['{}:/run/centaur/test-agents']\n  memory: 1GiB\nharnesses:\n",
            agents.display()
        );
        for (name, cmd) in harnesses {
            yaml.push_str(&format!("  {name}:\n    command: {cmd}\n"));
        }
        yaml.push_str(&format!("default_harness: {}\n{extra}", harnesses[0].0));
        let config = dir.path().join("server.yaml");
        std::fs::write(&config, yaml).unwrap();
        Setup {
            dir,
            config,
            database_url: None,
            env: Vec::new(),
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Makes a key with `centaur keys create`.
    pub fn key(&self, name: &str, scopes: &str) -> String {
        let mut c = std::process::Command::new(CENTAUR);
        c.args([
            "keys",
            "create",
            "--name",
            name,
            "--scopes",
            scopes,
            "--data-dir",
        ])
        .arg(self.data());
        if let Some(u) = &self.database_url {
            c.args(["--database-url", u]);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = String::from_utf8(out.stdout).unwrap();
        assert_eq!(key.lines().count(), 1, "the key alone on stdout");
        key.trim().to_string()
    }

    /// Starts the server on a free port and waits until it is ready.
    pub async fn start(&self) -> Server {
        self.start_on("127.0.0.1:0").await
    }

    /// Starts the server on `listen` and waits until it is ready.
    pub async fn start_on(&self, listen: &str) -> Server {
        let mut c = Command::new(CENTAUR);
        c.args(["server", "--listen", listen, "--config"])
            .arg(&self.config)
            .arg("--data-dir")
            .arg(self.data())
            .env_remove("CENTAUR_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(u) = &self.database_url {
            c.args(["--database-url", u]);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut child = c.spawn().unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut addr = None;
        let mut seen = String::new();
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(l)) = err.next_line().await {
                seen.push_str(&l);
                seen.push('\n');
                if let Some(rest) = l.split("listening on http://").nth(1) {
                    addr = rest.split_whitespace().next().map(str::to_string);
                    break;
                }
            }
        })
        .await;
        assert!(
            found.is_ok() && addr.is_some(),
            "the server did not start: {seen}"
        );
        let log = std::sync::Arc::new(std::sync::Mutex::new(seen));
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = err.next_line().await {
                sink.lock().unwrap().push_str(&format!("{l}\n"));
            }
        });
        let s = Server {
            child,
            base: format!("http://{}", addr.unwrap()),
            log,
        };
        s.wait_ready().await;
        s
    }
}

/// A loopback port free a moment ago (for a server that restarts on the same address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A running server.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    async fn wait_ready(&self) {
        for _ in 0..300 {
            let out = Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &format!("{}/readyz", self.base),
                ])
                .output()
                .await
                .unwrap();
            if out.stdout == b"200" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "the server never became ready: {}",
            self.log.lock().unwrap()
        );
    }

    /// `kill -9`.
    pub async fn kill9(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status();
        let _ = self.child.wait().await;
    }

    /// SIGTERM, and the exit status.
    pub async fn stop(mut self) -> i32 {
        let pid = self.child.id().unwrap().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        self.child.wait().await.unwrap().code().unwrap_or(-1)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// Stops every sandbox a test's server left (their supervisors outlive it by design).
pub async fn stop_sandboxes(data: &Path) {
    let Ok(entries) = std::fs::read_dir(data.join("sandboxes")) else {
        return;
    };
    for e in entries.flatten() {
        let _ = control::supervisor::Client::new(e.path()).stop().await;
    }
}
