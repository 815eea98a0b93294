//! Sandboxes for assignments: each runs under its own supervisor in
//! `DATA/sandboxes/<runtime_id>/`; this file starts, finds, stops and reaps them.

use std::path::PathBuf;
use std::sync::Arc;

use crate::server::config::Settings;
use crate::server::paths::private_dir;
use crate::store::{Assignment, Store, new_id};
use crate::supervisor::{Client, SupervisorSpec};

/// The supervisors of this data directory.
#[derive(Debug, Clone)]
pub struct Runtimes {
    settings: Arc<Settings>,
    exe: PathBuf,
    dir: PathBuf,
    /// Sandboxes being created at once: creation is CPU-bound (namespaces, nftables, a CA
    /// key); a storm of them on a small machine only makes every one late.
    starts: Arc<tokio::sync::Semaphore>,
}

/// Sandboxes created at once.
const PARALLEL_STARTS: usize = 4;

impl Runtimes {
    /// Supervisors are `exe sandbox supervise DIR`, under `DATA/sandboxes`.
    pub fn new(settings: Arc<Settings>, exe: PathBuf) -> Self {
        let dir = settings.data_dir.join("sandboxes");
        Runtimes {
            settings,
            exe,
            dir,
            starts: Arc::new(tokio::sync::Semaphore::new(PARALLEL_STARTS)),
        }
    }

    /// The supervisor of a runtime.
    pub fn client(&self, runtime_id: &str) -> Client {
        Client::new(self.dir.join(runtime_id))
    }

    /// Whether a runtime ever started here (its directory exists).
    pub fn exists(&self, runtime_id: &str) -> bool {
        self.dir.join(runtime_id).exists()
    }

    /// Starts a sandbox for the assignment. A runtime that ran before (its sandbox is gone or
    /// its harness ended) is replaced by a new one, recorded first so the reaper keeps it;
    /// returns the assignment as it now is.
    pub async fn start(
        &self,
        store: &Store,
        mut a: Assignment,
    ) -> Result<(Client, Assignment), String> {
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
        let spec = self.spec(&a)?;
        private_dir(&self.dir, 0o711)?;
        let client = self.client(&a.runtime_id);
        let _permit = self.starts.acquire().await.map_err(|e| e.to_string())?;
        if let Err(e) = client.start(&self.exe, &spec).await {
            // Whatever started is stopped and removed: the next execution starts afresh.
            self.stop(&a.runtime_id).await;
            return Err(e.to_string());
        }
        Ok((client, a))
    }

    fn spec(&self, a: &Assignment) -> Result<SupervisorSpec, String> {
        let s = &self.settings;
        let h = s
            .harnesses
            .get(&a.harness)
            .ok_or_else(|| format!("harness {:?} is not in the server's config", a.harness))?;
        let mut env: Vec<(String, String)> = s.env.clone().into_iter().collect();
        env.extend(h.env.clone());
        env.push(("CENTAUR_THREAD_KEY".into(), a.thread_key.clone()));
        env.push(("CENTAUR_RUNTIME_ID".into(), a.runtime_id.clone()));
        let audit_dir = s.data_dir.join("audit");
        private_dir(&audit_dir, 0o700)?;
        Ok(SupervisorSpec {
            command: h.command.clone(),
            policy: s.policy.clone(),
            secrets_from: s.secrets_from.clone(),
            uid: s.uid,
            gid: s.gid,
            env,
            mounts: s.mounts.clone(),
            labels: vec![
                ("thread_key".into(), a.thread_key.clone()),
                ("runtime_id".into(), a.runtime_id.clone()),
            ],
            audit: audit_dir.join(format!("{}.jsonl", a.runtime_id)),
            memory: s.memory,
        })
    }

    /// Stops a runtime's sandbox and removes its directory.
    pub async fn stop(&self, runtime_id: &str) {
        let c = self.client(runtime_id);
        if tokio::time::timeout(std::time::Duration::from_secs(25), c.stop())
            .await
            .is_err()
        {
            c.terminate();
        }
        let _ = std::fs::remove_dir_all(c.dir());
    }

    /// Stops every sandbox here that no active assignment owns; returns their ids. The
    /// directories are listed before the store is asked (a runtime is recorded before its
    /// directory is made, so one that starts meanwhile is never mistaken for an orphan), and
    /// one younger than a minute is left for the next round.
    pub async fn reap(&self, store: &Store) -> Vec<String> {
        // Sandboxes whose supervisor died (killed, crashed) are removed first.
        let _ = tokio::task::spawn_blocking(sandbox::local::gc).await;
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let young = |e: &std::fs::DirEntry| {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age < std::time::Duration::from_secs(60))
        };
        let found: Vec<String> = entries
            .flatten()
            .filter(|e| !young(e))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("rt_"))
            .collect();
        let Ok(keep) = store.active_runtimes().await else {
            return Vec::new();
        };
        let mut reaped = Vec::new();
        for name in found {
            if !keep.contains(&name) {
                self.stop(&name).await;
                reaped.push(name);
            }
        }
        reaped
    }
}
