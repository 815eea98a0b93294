//! The tool host: discovers tools in the configured folders, keeps one worker per usable
//! tool, reloads a tool when its folder (or the secrets file, or the base policy) changes,
//! and serves calls. A broken tool is kept with its error and never takes the others down.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use gateway::credential::store::SecretValue;
use serde_json::Value;

use crate::runner::gateway_config::parse_dotenv;
use crate::tools::config::ToolSettings;
use crate::tools::manifest::{self, Manifest};
use crate::tools::policy;
use crate::tools::spec::{Context, worker_spec, write_sdk};
use crate::tools::worker::{Description, Reply, Worker};

/// How often the folders are looked at for changes.
pub const RESCAN: Duration = Duration::from_secs(1);

/// Files a folder's fingerprint reads at most (a tool is small; a huge folder is a mistake).
const MAX_FILES: usize = 5000;

/// One discovered tool.
#[derive(Debug)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
    /// Whether it can serve, and if not, why.
    pub state: State,
    fingerprint: u64,
    worker: tokio::sync::Mutex<Option<Arc<Worker>>>,
    start: Option<Start>,
}

/// Where a tool stands.
#[derive(Debug, Clone)]
pub enum State {
    /// It serves these methods.
    Ready {
        /// The declaration.
        manifest: Box<Manifest>,
        /// What its worker described.
        description: Description,
    },
    /// Required secrets have no value: the tool is hidden.
    MissingSecrets(Vec<String>),
    /// It cannot load: its error.
    Broken(String),
}

/// What starting (and restarting) its worker takes.
#[derive(Debug)]
struct Start {
    manifest: Manifest,
    policy: ::policy::Config,
}

/// The tool host.
#[derive(Debug)]
pub struct ToolHost {
    settings: ToolSettings,
    data_dir: PathBuf,
    sdk: PathBuf,
    uid: u32,
    gid: u32,
    tools: RwLock<BTreeMap<String, Arc<Tool>>>,
}

impl ToolHost {
    /// A host for these settings; writes the SDK. Nothing is discovered until
    /// [`ToolHost::run`].
    pub fn new(
        settings: ToolSettings,
        data_dir: &Path,
        uid: u32,
        gid: u32,
    ) -> Result<Self, String> {
        let sdk = write_sdk(data_dir)?;
        Ok(ToolHost {
            settings,
            data_dir: data_dir.to_path_buf(),
            sdk,
            uid,
            gid,
            tools: RwLock::default(),
        })
    }

    /// Every tool, by name.
    pub fn tools(&self) -> Vec<Arc<Tool>> {
        read(&self.tools).values().cloned().collect()
    }

    /// One tool.
    pub fn get(&self, name: &str) -> Option<Arc<Tool>> {
        read(&self.tools).get(name).cloned()
    }

    /// Scans now and then every [`RESCAN`], forever.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.rescan().await;
            tokio::time::sleep(RESCAN).await;
        }
    }

    /// Loads new and changed tools, drops removed ones.
    pub async fn rescan(&self) {
        let shared = self.shared_fingerprint();
        let found = discover(&self.settings.dirs);
        let current = read(&self.tools).clone();
        for (name, dir) in &found {
            let print = fingerprint(dir) ^ shared;
            if let Some(t) = current.get(name)
                && t.fingerprint == print
                && &t.dir == dir
            {
                continue;
            }
            let tool = Arc::new(self.load(name, dir, print).await);
            match &tool.state {
                State::Ready { description, .. } => tracing::info!(
                    "tool {name}: ready ({} methods) from {}",
                    description.methods.len(),
                    dir.display()
                ),
                State::MissingSecrets(m) => tracing::warn!(
                    "tool {name}: hidden, no value for {} in tools.secrets_from",
                    m.join(", ")
                ),
                State::Broken(e) => tracing::warn!("tool {name}: skipped: {e}"),
            }
            let old = write(&self.tools).insert(name.clone(), tool);
            if let Some(old) = old {
                old.stop().await;
            }
        }
        let gone: Vec<String> = current
            .keys()
            .filter(|n| !found.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            let old = write(&self.tools).remove(&name);
            if let Some(old) = old {
                tracing::info!("tool {name}: removed");
                old.stop().await;
            }
        }
    }

    async fn load(&self, name: &str, dir: &Path, print: u64) -> Tool {
        let mut tool = Tool {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            state: State::Broken(String::new()),
            fingerprint: print,
            worker: tokio::sync::Mutex::new(None),
            start: None,
        };
        let prepared = self.prepare(dir);
        let (manifest, config, missing) = match prepared {
            Ok(p) => p,
            Err(e) => {
                tool.state = State::Broken(e);
                return tool;
            }
        };
        if !missing.is_empty() {
            tool.state = State::MissingSecrets(missing);
            return tool;
        }
        tool.start = Some(Start {
            manifest: manifest.clone(),
            policy: config,
        });
        match tool.spawn(self).await {
            Ok(w) => {
                tool.state = State::Ready {
                    manifest: Box::new(manifest),
                    description: w.description.clone(),
                };
                *tool.worker.get_mut() = Some(w);
            }
            Err(e) => tool.state = State::Broken(e),
        }
        tool
    }

    /// The declaration, the generated policy and the required secrets without a value.
    fn prepare(&self, dir: &Path) -> Result<(Manifest, ::policy::Config, Vec<String>), String> {
        let file = dir.join("pyproject.toml");
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let manifest = manifest::parse(dir, &text)?
            .ok_or_else(|| "pyproject.toml has no [tool.centaur] table".to_string())?;
        let base = match &self.settings.base_policy {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("tools.base_policy {}: {e}", p.display()))?;
                policy::check_base(&p.display().to_string(), &text)?;
                Some(text)
            }
            None => None,
        };
        let config = policy::generate(&manifest, base.as_deref())?;
        let values = self.values()?;
        let missing = manifest
            .secrets
            .iter()
            .filter(|s| !s.optional)
            .filter(|s| {
                values.get(&s.name).is_none_or(|v| v.expose().is_empty())
                    && std::env::var_os(&s.name).is_none_or(|v| v.is_empty())
            })
            .map(|s| s.name.clone())
            .collect();
        Ok((manifest, config, missing))
    }

    fn values(&self) -> Result<HashMap<String, SecretValue>, String> {
        let Some(p) = &self.settings.secrets_from else {
            return Ok(HashMap::new());
        };
        let text = std::fs::read_to_string(p)
            .map_err(|e| format!("tools.secrets_from {}: {e}", p.display()))?;
        parse_dotenv(&text).map_err(|e| format!("tools.secrets_from {}: {e}", p.display()))
    }

    /// The secrets file and the base policy: a change to either reloads every tool.
    fn shared_fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in [&self.settings.secrets_from, &self.settings.base_policy]
            .into_iter()
            .flatten()
        {
            stamp(p).hash(&mut h);
        }
        h.finish()
    }

    /// Stops every worker and waits until their sandboxes are removed (server shutdown).
    pub async fn shut_down(&self) {
        let tools: Vec<Arc<Tool>> = write(&self.tools).values().cloned().collect();
        for t in tools {
            if let Some(w) = t.worker.lock().await.take() {
                w.shut_down(Duration::from_secs(10)).await;
            }
        }
    }

    /// Calls a method, starting the tool's worker first if it is not running (it crashed,
    /// or a call timed out).
    pub async fn call(
        &self,
        tool: &Tool,
        method: &str,
        args: &serde_json::Map<String, Value>,
        thread_key: Option<&str>,
    ) -> Reply {
        let Some(start) = &tool.start else {
            return Reply::Error {
                kind: "tool",
                message: format!("tool {} is not loaded", tool.name),
            };
        };
        let worker = {
            let mut slot = tool.worker.lock().await;
            match slot.as_ref().filter(|w| w.alive()) {
                Some(w) => w.clone(),
                None => match tool.spawn(self).await {
                    Ok(w) => {
                        tracing::info!("tool {}: worker restarted", tool.name);
                        *slot = Some(w.clone());
                        w
                    }
                    Err(e) => {
                        return Reply::Error {
                            kind: "crashed",
                            message: e,
                        };
                    }
                },
            }
        };
        worker
            .call(method, args, thread_key, start.manifest.timeout)
            .await
    }
}

impl Tool {
    async fn spawn(&self, host: &ToolHost) -> Result<Arc<Worker>, String> {
        let Some(start) = &self.start else {
            return Err(format!("tool {} is not loaded", self.name));
        };
        let values = host.values()?;
        let cx = Context {
            settings: &host.settings,
            data_dir: &host.data_dir,
            sdk: &host.sdk,
            uid: host.uid,
            gid: host.gid,
        };
        let spec = worker_spec(&start.manifest, start.policy.clone(), &values, &cx)?;
        Worker::start(&self.name, spec).await.map(Arc::new)
    }

    async fn stop(&self) {
        if let Some(w) = self.worker.lock().await.take() {
            w.stop();
        }
    }
}

/// Tool folders by name: `DIR/<name>/pyproject.toml` and `DIR/<group>/<name>/pyproject.toml`
/// (a group has no pyproject.toml of its own). A later folder wins a name.
pub fn discover(dirs: &[PathBuf]) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let children = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && !hidden(p))
            .collect();
        v.sort();
        v
    };
    for d in dirs {
        for c in children(d) {
            let candidates = if c.join("pyproject.toml").is_file() {
                vec![c]
            } else {
                children(&c)
                    .into_iter()
                    .filter(|g| g.join("pyproject.toml").is_file())
                    .collect()
            };
            for t in candidates {
                if !declares_tool(&t) {
                    continue;
                }
                if let Some(name) = t.file_name().and_then(|n| n.to_str()) {
                    out.insert(name.to_string(), t.clone());
                }
            }
        }
    }
    out
}

/// Whether the folder's pyproject.toml has a `[tool.centaur]` table (a quick look: the
/// full parse reports errors later).
fn declares_tool(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("pyproject.toml")).is_ok_and(|t| {
        t.lines().any(|l| {
            let l = l.trim();
            l.starts_with("[tool.centaur") || l.starts_with("[[tool.centaur")
        })
    })
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.') || n == "__pycache__" || n == "node_modules")
}

/// A hash of every file's path, size and modification time under `dir`.
fn fingerprint(dir: &Path) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| !hidden(p))
            .collect();
        entries.sort();
        for p in entries {
            seen += 1;
            if seen > MAX_FILES {
                return h.finish();
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                p.hash(&mut h);
                stamp(&p).hash(&mut h);
            }
        }
    }
    h.finish()
}

fn stamp(p: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.len(), m.modified().ok()?))
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_found_in_groups_and_a_later_folder_wins_a_name() {
        let base = tempfile::tempdir().unwrap();
        let overlay = tempfile::tempdir().unwrap();
        let tool = |root: &Path, rel: &str, table: bool| {
            let d = root.join(rel);
            std::fs::create_dir_all(&d).unwrap();
            let text = if table {
                "[tool.centaur]\n"
            } else {
                "[project]\nname = 'x'\n"
            };
            std::fs::write(d.join("pyproject.toml"), text).unwrap();
        };
        tool(base.path(), "github", true);
        tool(base.path(), "research/websearch", true);
        tool(base.path(), "sdk", false);
        tool(base.path(), ".hidden", true);
        tool(overlay.path(), "github", true);
        let found = discover(&[base.path().to_path_buf(), overlay.path().to_path_buf()]);
        let names: Vec<&str> = found.keys().map(String::as_str).collect();
        assert_eq!(names, ["github", "websearch"]);
        assert_eq!(found["github"], overlay.path().join("github"));
        assert_eq!(found["websearch"], base.path().join("research/websearch"));
    }

    #[test]
    fn a_folders_fingerprint_changes_with_its_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.py"), "x = 1\n").unwrap();
        let before = fingerprint(d.path());
        assert_eq!(before, fingerprint(d.path()));
        std::fs::write(d.path().join("a.py"), "x = 12\n").unwrap();
        assert_ne!(before, fingerprint(d.path()));
        std::fs::create_dir(d.path().join("__pycache__")).unwrap();
        std::fs::write(d.path().join("__pycache__/a.pyc"), "junk").unwrap();
        let now = fingerprint(d.path());
        std::fs::write(d.path().join("__pycache__/a.pyc"), "more junk").unwrap();
        assert_eq!(now, fingerprint(d.path()), "caches do not count");
    }
}
