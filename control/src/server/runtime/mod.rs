//! Sandboxes for assignments: each runs under its own supervisor in
//! `DATA/sandboxes/<runtime_id>/` (on Kubernetes, in its sandbox pod, with that directory as
//! its marker: `kube.rs`); this file starts, finds, stops and reaps them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::harness::{self, Harness, Launch};
use crate::runner::internal;
use crate::server::config::Settings;
use crate::server::paths::private_dir;
use crate::store::{Assignment, Store, StoreError, new_id};
use crate::supervisor::{Client, Internal, SupervisorSpec};

mod capacity;
mod kube;
mod pods;
mod pool;

/// Where the `centaur` binary appears inside every sandbox (the Codex bridge runs it).
pub const CENTAUR_INSIDE: &str = "/run/centaur/bin/centaur";

/// The folder of [`CENTAUR_INSIDE`], first on every harness's `PATH`.
pub const BIN_INSIDE: &str = "/run/centaur/bin";

/// `centaur-tool` (the same binary, named for what it does) inside every sandbox.
pub const TOOL_INSIDE: &str = "/run/centaur/bin/centaur-tool";

/// How a thread's CLI session goes on in a new sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The session or thread id to resume.
    pub resume: Option<String>,
    /// The session is lost (its files are not in the thread's home): the first turn gets
    /// the thread's transcript instead.
    pub replay: bool,
}

/// The supervisors of this data directory.
#[derive(Debug, Clone)]
pub struct Runtimes {
    settings: Arc<Settings>,
    exe: PathBuf,
    dir: PathBuf,
    /// The API's bound address: sandboxes reach it at `centaur.internal`.
    api: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
    /// Sandboxes being created at once: creation is CPU-bound (namespaces, nftables, a CA
    /// key); a storm of them on a small machine only makes every one late.
    starts: Arc<tokio::sync::Semaphore>,
    /// One lock per thread: held by the worker while it drives an execution, tried by idle
    /// suspension and the capacity limit, so a sandbox is never stopped under a turn.
    holds: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Serialises cold starts and pool refills while `sandbox.max_running` is set (count,
    /// evict, start).
    capacity: Arc<tokio::sync::Mutex<()>>,
    /// The warm pool (`sandbox.warm_pool`).
    pool: Arc<Pool>,
    /// The cluster, with `sandbox.backend: kubernetes`.
    kube: Option<Arc<kube::Kube>>,
}

/// The warm pool's settings and wake-up (`pool.rs`).
#[derive(Debug)]
struct Pool {
    target: usize,
    scope: String,
    hash: OnceLock<String>,
    /// Rings after a claim: the refiller makes the next member at once.
    wake: tokio::sync::Notify,
    /// One refiller at a time.
    filling: tokio::sync::Mutex<()>,
}

impl Pool {
    /// The pool of `scope`: its members are the sandboxes of this machine and data
    /// directory ([`Pool::local_scope`]), or of a cluster namespace.
    fn new(settings: &Settings, scope: String) -> Pool {
        Pool {
            target: settings.warm_pool,
            scope,
            hash: OnceLock::new(),
            wake: tokio::sync::Notify::new(),
            filling: tokio::sync::Mutex::new(()),
        }
    }

    fn local_scope(settings: &Settings) -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}:{}", host.trim(), settings.data_dir.display())
    }
}

/// A thread's lock (see [`Runtimes::hold`]).
pub type Hold = tokio::sync::OwnedMutexGuard<()>;

/// Sandboxes created at once.
const PARALLEL_STARTS: usize = 4;

impl Runtimes {
    /// Supervisors are `exe sandbox supervise DIR`, under `DATA/sandboxes`.
    pub fn new(settings: Arc<Settings>, exe: PathBuf) -> Self {
        let dir = settings.data_dir.join("sandboxes");
        Runtimes {
            pool: Arc::new(Pool::new(&settings, Pool::local_scope(&settings))),
            settings,
            exe,
            dir,
            api: Arc::default(),
            starts: Arc::new(tokio::sync::Semaphore::new(PARALLEL_STARTS)),
            holds: Arc::default(),
            capacity: Arc::default(),
            kube: None,
        }
    }

    /// Connects to the cluster when sandboxes run on Kubernetes.
    pub async fn connect(mut self) -> Result<Self, String> {
        if let crate::server::backend::Backend::Kubernetes(k) = &self.settings.backend {
            let kube = kube::Kube::connect(k).await?;
            // Members are the namespace's, whichever server pod made them: a new pod (a
            // deploy) evicts the old deploy's members.
            self.pool = Arc::new(Pool::new(
                &self.settings,
                format!("kubernetes:{}", kube.namespace()),
            ));
            self.kube = Some(Arc::new(kube));
            if self.settings.tools.is_some() && k.api.is_none() {
                tracing::warn!(
                    "tools: sandbox.kubernetes.api is not set, so threads on Kubernetes cannot reach centaur.internal (their tools and MCP calls fail)"
                );
            }
        }
        Ok(self)
    }

    /// Whether sandboxes run on Kubernetes.
    pub fn on_kubernetes(&self) -> bool {
        self.kube.is_some()
    }

    fn hold_of(&self, thread_key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self
            .holds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Locks nobody holds or waits for are dropped as they go.
        m.retain(|_, l| Arc::strong_count(l) > 1);
        m.entry(thread_key.to_string()).or_default().clone()
    }

    /// Holds the thread's sandbox while an execution uses it: idle suspension and the
    /// capacity limit leave it alone until the guard is dropped.
    pub async fn hold(&self, thread_key: &str) -> Hold {
        self.hold_of(thread_key).lock_owned().await
    }

    fn try_hold(&self, thread_key: &str) -> Option<Hold> {
        self.hold_of(thread_key).try_lock_owned().ok()
    }

    /// Records where the API listens (once bound).
    pub fn set_api(&self, addr: std::net::SocketAddr) {
        let _ = self.api.set(addr);
    }

    /// The supervisor of a runtime.
    pub fn client(&self, runtime_id: &str) -> Client {
        match &self.kube {
            Some(k) => k.client(&self.dir.join(runtime_id), runtime_id),
            None => Client::new(self.dir.join(runtime_id)),
        }
    }

    /// Whether a runtime ever started here (its directory exists).
    pub fn exists(&self, runtime_id: &str) -> bool {
        self.dir.join(runtime_id).exists()
    }

    /// The adapter of the assignment's harness.
    pub fn adapter(&self, a: &Assignment) -> &'static dyn Harness {
        self.settings
            .harnesses
            .get(&a.harness)
            .and_then(|h| harness::adapter(h.kind()))
            .unwrap_or(&harness::stream_json::StreamJson)
    }

    /// The thread's own directory (`DATA/threads/<hash of its key>`): its workspace
    /// (`work`) and its home (`home`), kept across its sandboxes.
    pub fn thread_dir(&self, thread_key: &str) -> PathBuf {
        self.settings
            .data_dir
            .join("threads")
            .join(crate::server::paths::thread_hash(thread_key))
    }

    /// How the thread's session continues in a new sandbox, before execution `current`: the
    /// last session id its harness named, if its files are still in the thread's home;
    /// else, when earlier turns ran, a transcript replay.
    pub async fn plan(
        &self,
        store: &Store,
        a: &Assignment,
        current: &str,
    ) -> Result<Plan, StoreError> {
        let h = self.adapter(a);
        if !h.resumes() {
            return Ok(Plan::default());
        }
        let earlier: Vec<_> = store
            .thread_executions(&a.thread_key, 1000)
            .await?
            .into_iter()
            .filter(|e| e.execution_id != current && e.turn_input.is_some())
            .collect();
        if earlier.is_empty() {
            return Ok(Plan::default());
        }
        let id = h
            .fixed_session()
            .map(str::to_string)
            .or_else(|| earlier.iter().find_map(|e| e.agent_thread_id.clone()));
        // A pod's home is not here: whether it kept the session is asked of the new pod
        // (`Runtimes::start`), and the worker replays the transcript when it did not.
        if self.kube.as_ref().is_some_and(|k| k.keeps_home()) {
            let replay = id.is_none();
            return Ok(Plan { resume: id, replay });
        }
        let home = self.thread_dir(&a.thread_key).join("home");
        Ok(match id {
            Some(id) if harness::session_exists(&home, &id) => Plan {
                resume: Some(id),
                replay: false,
            },
            _ => Plan {
                resume: None,
                replay: true,
            },
        })
    }

    /// Starts a sandbox for the assignment, resuming `resume`: a warm pool member when one
    /// is ready, else a cold start. A runtime that ran before (its sandbox is gone or its
    /// harness ended) is replaced by a new one, recorded first so the reaper keeps it;
    /// returns the assignment as it now is, and whether the session was resumed (a sandbox
    /// pod whose home lacks it starts the harness afresh).
    pub async fn start(
        &self,
        store: &Store,
        mut a: Assignment,
        resume: Option<String>,
    ) -> Result<(Client, Assignment, bool), String> {
        // A runtime that ran before (its directory is there, or its spool was read) is
        // replaced: the new sandbox's spool starts at line 1.
        if self.exists(&a.runtime_id) || a.spool_seq > 0 {
            self.stop(&a.runtime_id).await;
            let id = new_id("rt_");
            store
                .replace_runtime(&a.thread_key, a.generation, &id)
                .await
                .map_err(|e| e.to_string())?;
            a.runtime_id = id;
            a.spool_seq = 0;
        }
        let resumes = resume.is_some();
        if let Some(claimed) = self.claim(store, &a, resume.clone()).await {
            return Ok(claimed);
        }
        if let Some(k) = self.kube.clone() {
            return self.start_pod(&k, store, a, resume).await;
        }
        let internal = self.internal(store, &a).await?;
        let spec = self.spec(&a, resume, internal)?;
        private_dir(&self.dir, 0o711)?;
        let client = self.client(&a.runtime_id);
        let _capacity = match self.settings.max_running {
            Some(max) => Some(self.make_room(store, max, &a.runtime_id).await?),
            None => None,
        };
        let _permit = self.starts.acquire().await.map_err(|e| e.to_string())?;
        if let Err(e) = client.start(&self.exe, &spec).await {
            // Whatever started is stopped and removed: the next execution starts afresh.
            self.stop(&a.runtime_id).await;
            return Err(e.to_string());
        }
        Ok((client, a, resumes))
    }

    /// The route to the API for the assignment's sandbox, with a new token for its runtime.
    async fn internal(&self, store: &Store, a: &Assignment) -> Result<Option<Internal>, String> {
        let Some(api) = self.api.get() else {
            return Ok(None);
        };
        let token = self.sandbox_token(store, a).await?;
        Ok(Some(Internal { api: *api, token }))
    }

    /// A new token for the assignment's runtime, with its thread's tool scopes.
    async fn sandbox_token(&self, store: &Store, a: &Assignment) -> Result<String, String> {
        let rules = self
            .settings
            .tools
            .as_ref()
            .map_or(&[][..], |t| &t.threads[..]);
        let scopes = crate::tools::config::thread_scopes(rules, &a.thread_key);
        store
            .create_sandbox_token(&a.thread_key, &a.runtime_id, &scopes)
            .await
            .map_err(|e| e.to_string())
    }

    fn spec(
        &self,
        a: &Assignment,
        resume: Option<String>,
        internal: Option<Internal>,
    ) -> Result<SupervisorSpec, String> {
        let s = &self.settings;
        let h = s
            .harnesses
            .get(&a.harness)
            .ok_or_else(|| format!("harness {:?} is not in the server's config", a.harness))?;
        let adapter = self.adapter(a);
        // The adapter's switches first, so the config can override them.
        let mut merged: std::collections::BTreeMap<String, String> = adapter
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        merged.extend(s.env.clone());
        merged.extend(h.env.clone());
        let launch = Launch {
            command: h.command.clone(),
            args: h.args.clone(),
            env: merged.clone(),
            resume,
            centaur: if self.kube.is_some() {
                crate::supervisor::pod::CENTAUR.into()
            } else {
                CENTAUR_INSIDE.into()
            },
            mcp: internal
                .is_some()
                .then(|| format!("http://{}/mcp", internal::HOST)),
        };
        let mut env: Vec<(String, String)> = merged.into_iter().collect();
        env.push(("CENTAUR_THREAD_KEY".into(), a.thread_key.clone()));
        env.push(("CENTAUR_RUNTIME_ID".into(), a.runtime_id.clone()));
        if internal.is_some() {
            env.push((
                "CENTAUR_API_URL".into(),
                format!("http://{}", internal::HOST),
            ));
            let path = std::env::var("PATH")
                .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into());
            env.push(("PATH".into(), format!("{BIN_INSIDE}:{path}")));
        }
        let audit_dir = s.data_dir.join("audit");
        private_dir(&audit_dir, 0o700)?;
        let (work, home) = self.thread_dirs(a, h)?;
        let mut mounts = s.mounts.clone();
        mounts.push((self.exe.clone(), CENTAUR_INSIDE.into()));
        mounts.push((self.exe.clone(), TOOL_INSIDE.into()));
        Ok(SupervisorSpec {
            command: adapter.command(&launch),
            policy: s.policy.clone(),
            secrets_from: s.secrets_from.clone(),
            uid: s.uid,
            gid: s.gid,
            env,
            mounts,
            workdir: Some(work),
            home: Some(home),
            labels: vec![
                ("thread_key".into(), a.thread_key.clone()),
                ("runtime_id".into(), a.runtime_id.clone()),
            ],
            audit: audit_dir.join(format!("{}.jsonl", a.runtime_id)),
            memory: s.memory,
            internal,
        })
    }

    /// Makes the thread's workspace and home (the sandbox user's alone; the directories
    /// above list nothing to it) and copies the harness's home files in.
    fn thread_dirs(
        &self,
        a: &Assignment,
        h: &crate::server::config::HarnessConfig,
    ) -> Result<(PathBuf, PathBuf), String> {
        let (uid, gid) = (self.settings.uid, self.settings.gid);
        let dir = self.thread_dir(&a.thread_key);
        private_dir(&self.settings.data_dir.join("threads"), 0o711)?;
        private_dir(&dir, 0o711)?;
        let own = |p: &std::path::Path| -> Result<(), String> {
            use std::os::unix::fs::PermissionsExt;
            let err = |e: std::io::Error| format!("{}: {e}", p.display());
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(err)?;
            let mode = if p.is_dir() { 0o700 } else { 0o600 };
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(err)
        };
        let (work, home) = (dir.join("work"), dir.join("home"));
        for d in [&work, &home] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            own(d)?;
        }
        for (inside, src) in &h.home_files {
            // Made one component at a time, never through a link: the home is the sandbox
            // user's, and this runs as root (no sandbox of the thread runs meanwhile).
            let mut at = home.clone();
            let parts: Vec<_> = std::path::Path::new(inside).components().collect();
            for (i, c) in parts.iter().enumerate() {
                at.push(c);
                if std::fs::symlink_metadata(&at).is_ok_and(|m| !m.is_dir() || i + 1 == parts.len())
                {
                    std::fs::remove_file(&at).map_err(|e| format!("{}: {e}", at.display()))?;
                }
                if i + 1 < parts.len() && !at.exists() {
                    std::fs::create_dir(&at).map_err(|e| format!("{}: {e}", at.display()))?;
                    own(&at)?;
                }
            }
            std::fs::copy(src, &at)
                .map_err(|e| format!("home_files: {} → {}: {e}", src.display(), at.display()))?;
            own(&at)?;
        }
        Ok((work, home))
    }

    /// Stops a runtime's sandbox and removes its directory (on Kubernetes, its objects).
    pub async fn stop(&self, runtime_id: &str) {
        let c = self.client(runtime_id);
        if tokio::time::timeout(std::time::Duration::from_secs(25), c.stop())
            .await
            .is_err()
        {
            c.terminate();
        }
        if let Some(k) = &self.kube {
            k.delete(runtime_id).await;
        }
        let _ = std::fs::remove_dir_all(c.dir());
    }
}
