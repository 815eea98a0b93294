//! The fake Kubernetes API server (`sandbox/tests/fakes/kube_api.py`, with its kubelet) as a
//! test's child process, killed on drop (the containers its kubelet runs die with it).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// The bearer token the fake accepts (written into its kubeconfig).
pub const TOKEN: &str = "t0ken";

/// A running fake API server.
#[derive(Debug)]
pub struct FakeApi {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    repo: PathBuf,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FakeApi {
    /// Starts the fake of the repository at `repo` (its `.venv` has trustme); its pods become
    /// ready 0.1 s after they are created.
    pub fn start(repo: &Path) -> FakeApi {
        let python = repo.join(".venv/bin/python");
        assert!(python.exists(), "run scripts/install-deps first (no .venv)");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}"));
        let mut child = Command::new(python)
            .arg(repo.join("sandbox/tests/fakes/kube_api.py"))
            .arg(dir.path())
            .args([TOKEN, "0.1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the fake API server: {e}"));
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let port = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("the fake API server did not start: {line:?}"));
        FakeApi {
            child,
            dir,
            port,
            repo: repo.to_path_buf(),
        }
    }

    /// Its scratch directory (kubeconfig, requests.jsonl, the kubelet's pods).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A kubeconfig for it (namespace `agents`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir().join("kubeconfig")
    }

    /// POSTs a test control (`/_fake/WHAT`, see the fake's docstring).
    pub fn control(&self, what: &str, body: &Value) {
        let out = Command::new("curl")
            .args(["-sS", "-f", "-k", "-H"])
            .arg(format!("Authorization: Bearer {TOKEN}"))
            .arg("-d")
            .arg(body.to_string())
            .arg(format!("https://127.0.0.1:{}/_fake/{what}", self.port))
            .output()
            .unwrap_or_else(|e| panic!("curl: {e}"));
        assert!(out.status.success(), "/_fake/{what}: {out:?}");
    }

    /// Every request it served: `{"method", "path", "query", "content_type"}`.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Runs the real kubectl (from scripts/install-deps) against the fake: whether it
    /// succeeded, and its stdout and stderr.
    pub fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let kubectl = self.repo.join(".k8s/kubectl");
        assert!(
            kubectl.exists(),
            "run scripts/install-deps first (no .k8s/kubectl)"
        );
        let out = Command::new(kubectl)
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir())
            .output()
            .unwrap_or_else(|e| panic!("kubectl: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// `Kind/name` of every pod, Service, ConfigMap, Secret and NetworkPolicy in the
    /// namespace (with `selector`, those it selects), sorted, as kubectl lists them.
    pub fn objects(&self, selector: Option<&str>) -> Vec<String> {
        let mut args = vec![
            "get",
            "pods,services,configmaps,secrets,networkpolicies",
            "-o",
            "json",
        ];
        if let Some(s) = selector {
            args.extend(["-l", s]);
        }
        let (ok, text) = self.kubectl(&args);
        assert!(ok, "{text}");
        let list: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("kubectl's list: {e}: {text}"));
        let mut v: Vec<String> = list["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default()
                )
            })
            .collect();
        v.sort();
        v
    }
}
