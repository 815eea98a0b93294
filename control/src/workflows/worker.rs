//! The workflow worker: `python -m centaur_sdk.workflow` in a sandbox of its own behind a
//! gateway of its own (the `workflows.policy`), running many runs' handlers at once. Its
//! lines are routed to the run they name; when it exits every run it drove loses its
//! channel (the executor gives those runs back, and the next claim replays them).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::mpsc;

use crate::runner::local::LocalBackend;
use crate::runner::{SandboxBackend, SandboxEvent, SandboxSpec, Stdio, Stopper};
use crate::tools::spec::SDK_INSIDE;
use crate::tools::worker::next_line;
use crate::workflows::config::WorkflowSettings;
use sandbox::local::{Limits, Mount};

/// Where workflow folder `i` appears in the worker's sandbox.
pub fn dir_inside(i: usize) -> String {
    format!("/run/centaur/workflows/{i}")
}

/// A workflow the worker found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Found {
    /// `WORKFLOW_NAME`.
    pub name: String,
    /// Its file, inside the sandbox.
    pub file: String,
    /// A hash of its source.
    pub version: String,
    /// Its `SCHEDULE`, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Value>,
    /// Its `WEBHOOKS`, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Value>,
}

type Routes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Value>>>>;

/// A started worker.
#[derive(Debug)]
pub struct Worker {
    /// What it serves, by name.
    pub workflows: BTreeMap<String, Found>,
    stdin: tokio::sync::Mutex<ChildStdin>,
    routes: Routes,
    stopper: Stopper,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

/// Where the worker runs.
#[derive(Debug)]
pub struct Place<'a> {
    /// The data directory.
    pub data_dir: &'a Path,
    /// The written SDK.
    pub sdk: &'a Path,
    /// The sandbox user.
    pub uid: u32,
    /// Its group.
    pub gid: u32,
}

/// The worker's sandbox spec.
pub fn spec(
    s: &WorkflowSettings,
    policy: policy::Config,
    secrets: gateway::credential::store::SecretEnv,
    cx: &Place<'_>,
) -> Result<SandboxSpec, String> {
    let dir = cx.data_dir.join("workflows");
    crate::server::paths::private_dir(&dir, 0o711)?;
    let work = dir.join("work");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    std::os::unix::fs::chown(&work, Some(cx.uid), Some(cx.gid))
        .map_err(|e| format!("{}: {e}", work.display()))?;
    let audit = cx.data_dir.join("audit");
    crate::server::paths::private_dir(&audit, 0o700)?;
    let mut mounts = vec![Mount {
        src: cx.sdk.to_path_buf(),
        dest: SDK_INSIDE.into(),
        rw: false,
    }];
    let mut inside = Vec::new();
    for (i, d) in s.dirs.iter().enumerate() {
        mounts.push(Mount {
            src: d.clone(),
            dest: dir_inside(i).into(),
            rw: false,
        });
        inside.push(dir_inside(i));
    }
    Ok(SandboxSpec {
        command: vec![
            s.python.clone().into(),
            "-m".into(),
            "centaur_sdk.workflow".into(),
        ],
        policy,
        policy_name: "workflows.policy".into(),
        secrets,
        uid: cx.uid,
        gid: cx.gid,
        workdir: work,
        mounts,
        env: vec![
            ("PYTHONPATH".into(), SDK_INSIDE.into()),
            ("PYTHONUNBUFFERED".into(), "1".into()),
            ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
            ("CENTAUR_WORKFLOW_DIRS".into(), inside.join(":")),
        ],
        limits: Limits {
            memory: Some(s.memory),
            pids: Some(1024),
            cpus: None,
        },
        audit: Some(audit.join("workflows.jsonl")),
        labels: BTreeMap::from([("workflows".to_string(), "worker".to_string())]),
        stdio: Stdio::Piped,
    })
}

impl Worker {
    /// Starts the worker and waits for it to say which workflows it found (files that did
    /// not load are logged with their error).
    pub async fn start(spec: SandboxSpec, dirs: &[std::path::PathBuf]) -> Result<Worker, String> {
        let mut running = LocalBackend
            .start(spec)
            .await
            .map_err(|e| format!("the workflow worker's sandbox could not start: {e}"))?;
        let stopper = running.stopper();
        let (Some(stdin), Some(stdout)) = (running.stdin.take(), running.stdout.take()) else {
            stopper.stop(Duration::ZERO);
            return Err("the workflow worker did not start".into());
        };
        let mut events = std::mem::replace(
            &mut running.events,
            tokio::sync::mpsc::unbounded_channel().1,
        );
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                match e {
                    SandboxEvent::Warning(w) => tracing::warn!("workflow worker: {w}"),
                    SandboxEvent::Exited { code, .. } => {
                        tracing::info!("workflow worker exited with status {code}")
                    }
                    _ => {}
                }
            }
            let _ = running.wait().await;
        });
        let mut out = BufReader::new(stdout);
        let first =
            tokio::time::timeout(crate::tools::worker::START_TIMEOUT, next_line(&mut out)).await;
        let described = match first {
            Ok(Ok(Some(line))) => describe(&line, dirs),
            Ok(Ok(None)) => Err("the workflow worker exited before describing its workflows (the server log has its stderr)".into()),
            Ok(Err(e)) => Err(format!("the workflow worker: {e}")),
            Err(_) => Err("the workflow worker did not describe its workflows in time".into()),
        };
        let workflows = match described {
            Ok(w) => w,
            Err(e) => {
                stopper.stop(Duration::ZERO);
                return Err(e);
            }
        };
        let routes: Routes = Arc::default();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        tokio::spawn(route(out, routes.clone(), stopper.clone(), alive.clone()));
        Ok(Worker {
            workflows,
            stdin: tokio::sync::Mutex::new(stdin),
            routes,
            stopper,
            alive,
        })
    }

    /// Whether it still runs (its stdout is open).
    pub fn alive(&self) -> bool {
        self.alive.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Registers a run: the worker's lines for it arrive on the returned channel, which
    /// closes when the worker exits.
    pub fn attach(&self, run_id: &str) -> mpsc::UnboundedReceiver<Value> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.routes).insert(run_id.to_string(), tx);
        rx
    }

    /// Forgets a run.
    pub fn detach(&self, run_id: &str) {
        lock(&self.routes).remove(run_id);
    }

    /// Sends one message; `false` if the worker is gone.
    pub async fn send(&self, msg: &Value) -> bool {
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(b'\n');
        let mut stdin = self.stdin.lock().await;
        stdin.write_all(&bytes).await.is_ok()
    }

    /// Stops it.
    pub fn stop(&self) {
        self.stopper.stop(Duration::from_secs(1));
    }
}

fn describe(line: &[u8], dirs: &[std::path::PathBuf]) -> Result<BTreeMap<String, Found>, String> {
    let v: Value = serde_json::from_slice(line)
        .map_err(|e| format!("the workflow worker said something that is not JSON: {e}"))?;
    if v["type"] != "describe" {
        return Err("the workflow worker did not describe its workflows first".into());
    }
    let outside = |f: &str| {
        dirs.iter()
            .enumerate()
            .find_map(|(i, d)| {
                f.strip_prefix(&dir_inside(i))
                    .map(|rest| format!("{}{rest}", d.display()))
            })
            .unwrap_or_else(|| f.to_string())
    };
    for e in v["errors"].as_array().into_iter().flatten() {
        tracing::error!(
            "workflow {} was not loaded:\n{}",
            outside(e["file"].as_str().unwrap_or("?")),
            e["error"].as_str().unwrap_or("").trim_end()
        );
    }
    let found: Vec<Found> = serde_json::from_value(v["workflows"].clone())
        .map_err(|e| format!("the workflow worker described its workflows wrongly: {e}"))?;
    Ok(found
        .into_iter()
        .map(|mut f| {
            f.file = outside(&f.file);
            tracing::info!("workflow {}: {} (version {})", f.name, f.file, f.version);
            (f.name.clone(), f)
        })
        .collect())
}

async fn route(
    mut out: BufReader<ChildStdout>,
    routes: Routes,
    stopper: Stopper,
    alive: Arc<std::sync::atomic::AtomicBool>,
) {
    loop {
        let line = match next_line(&mut out).await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("workflow worker: {e}; stopping it");
                break;
            }
        };
        let Ok(v) = serde_json::from_slice::<Value>(&line) else {
            tracing::warn!("the workflow worker wrote a line that is not JSON; ignored");
            continue;
        };
        let Some(run) = v["run"].as_str() else {
            continue;
        };
        if v["type"] == "log" {
            tracing::info!(
                "workflow run {run}: {}",
                v["message"].as_str().unwrap_or_default()
            );
            continue;
        }
        if let Some(tx) = lock(&routes).get(run) {
            let _ = tx.send(v);
        }
    }
    alive.store(false, std::sync::atomic::Ordering::Release);
    stopper.stop(Duration::ZERO);
    lock(&routes).clear();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The real values for the policy's `env` secrets, from `secrets_from`.
pub fn secrets(s: &WorkflowSettings) -> Result<gateway::credential::store::SecretEnv, String> {
    let Some(p) = &s.secrets_from else {
        return Ok(gateway::credential::store::SecretEnv::new(HashMap::new()));
    };
    let text = std::fs::read_to_string(p)
        .map_err(|e| format!("workflows.secrets_from {}: {e}", p.display()))?;
    let values = crate::runner::gateway_config::parse_dotenv(&text)
        .map_err(|e| format!("workflows.secrets_from {}: {e}", p.display()))?;
    Ok(gateway::credential::store::SecretEnv::new(values))
}

/// The worker's policy: `workflows.policy`, or one that allows no host.
pub fn policy(path: Option<&Path>) -> Result<policy::Config, String> {
    let text = match path {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("workflows.policy {}: {e}", p.display()))?,
        ),
        None => None,
    };
    if let Some(t) = &text {
        return policy::Config::parse_placed(t).map_err(|e| format!("workflows.policy: {e}"));
    }
    let (mut doc, mut transforms) = crate::runner::gateway_config::open_transforms(None)?;
    crate::runner::gateway_config::allow_hosts(&mut transforms, Vec::new());
    doc["transforms"] = Value::Array(transforms);
    policy::Config::parse_placed(&doc.to_string())
        .map_err(|e| format!("the default workflows policy: {e}"))
}
