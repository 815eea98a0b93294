//! The Python fakes under `tests/fakes/` (token endpoints, OTLP receiver, load generators),
//! started as processes that print their port and stopped when dropped.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::clients::{json, python, run};
use super::env::Opts;

/// The fake authorization server, Google token endpoint and Vault (`tests/fakes/authserver.py`).
pub struct Fake {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: std::process::Child,
}

/// Names the fake's certificate covers; pin them to `fake.addr()`.
pub const FAKE_NAMES: [&str; 3] = ["token.test", "vault.test", "aws.test"];

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
