//! The warm pool (`sandbox.warm_pool`): sandboxes made ahead of need, each a supervisor
//! whose sandbox and gateway are up with a neutral policy (every request denied) and no
//! harness. A thread's cold start claims one instead: in one transaction the member leaves
//! the pool and becomes the thread's runtime, then its gateway takes the thread's policy,
//! token and audit labels and the harness starts (the supervisor's `launch`). The pool
//! refills in the background.
//!
//! Membership is durable (`sandbox_pool`), per machine and data directory (`scope`), with
//! the hash of what a member was made from. At start-up the members of any other hash are
//! evicted and deleted, as are members that do not answer as warm: a deploy never leaves
//! the old ones running beside the new.

use std::time::Duration;

use serde_json::{Value, json};

use super::Runtimes;
use crate::server::paths::private_dir;
use crate::store::{Assignment, Store, new_id};
use crate::supervisor::{Client, Internal, SupervisorSpec};

/// How long the refiller waits after a member could not be made, and between checks.
const RETRY: Duration = Duration::from_secs(10);

impl Runtimes {
    /// What a warm member is made from: this binary, the policy and secrets files, the
    /// sandbox's user and memory, and the API's address (its gateway pins the route to it).
    /// A member made from anything else is not claimed, and is deleted at the next start.
    fn deploy_hash(&self) -> &str {
        self.pool.hash.get_or_init(|| {
            let s = &self.settings;
            let mut d = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            let mut part = |b: &[u8]| {
                d.update(&(b.len() as u64).to_le_bytes());
                d.update(b);
            };
            part(env!("CARGO_PKG_VERSION").as_bytes());
            let exe = std::fs::metadata(&self.exe).ok();
            let stamp = exe.as_ref().and_then(|m| m.modified().ok());
            part(format!("{:?} {stamp:?}", exe.map(|m| m.len())).as_bytes());
            for f in [&s.policy, &s.secrets_from] {
                part(
                    &f.as_ref()
                        .and_then(|p| std::fs::read(p).ok())
                        .unwrap_or_default(),
                );
            }
            part(format!("{} {} {:?} {:?}", s.uid, s.gid, s.memory, self.api.get()).as_bytes());
            // On Kubernetes, the images too.
            part(self.kube.as_ref().map_or("", |k| k.deploy()).as_bytes());
            let sum = d.finish();
            sum.as_ref()[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
    }

    /// Keeps the pool: evicts what a previous deploy left, then refills after every claim
    /// and every ten seconds. Runs for the server's life.
    pub async fn keep_pool(&self, store: Store) {
        for id in self.evict_stale(&store).await {
            tracing::info!("deleted warm sandbox {id}: from another deploy, or not warm");
        }
        if self.pool.target == 0 {
            return;
        }
        loop {
            if let Err(e) = self.fill(&store).await {
                tracing::warn!("warm pool: {e}; retrying in {}s", RETRY.as_secs());
            }
            tokio::select! {
                () = self.pool.wake.notified() => {}
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    /// Stops and forgets this scope's members from another deploy, members left `starting`
    /// by a previous process, members that do not answer as warm, and members beyond the
    /// target; returns their ids.
    async fn evict_stale(&self, store: &Store) -> Vec<String> {
        let Ok(members) = store.pool_members(Some(&self.pool.scope)).await else {
            return Vec::new();
        };
        let mut kept = 0;
        let mut evicted = Vec::new();
        for m in members {
            let client = self.client(&m.runtime_id);
            let warm = tokio::time::timeout(Duration::from_secs(5), client.status())
                .await
                .is_ok_and(|s| s.is_ok_and(|s| s["state"] == "warm"));
            // A member still `starting` was being made by a process that died: its row was
            // never marked ready, so it would never be claimed, yet it fills a place.
            let ready = m.state == "ready";
            if m.deploy_hash == self.deploy_hash() && ready && warm && kept < self.pool.target {
                kept += 1;
                continue;
            }
            // Stopped first: a crash in between leaves the row for the next start.
            self.stop(&m.runtime_id).await;
            if store.pool_remove(&m.runtime_id).await.unwrap_or(false) {
                evicted.push(m.runtime_id);
            }
        }
        evicted
    }

    /// Forgets ready members whose supervisor is gone (killed, crashed), then makes members
    /// until the pool holds its target (within `sandbox.max_running`).
    async fn fill(&self, store: &Store) -> Result<(), String> {
        let _one = self.pool.filling.lock().await;
        let members = store
            .pool_members(Some(&self.pool.scope))
            .await
            .map_err(|e| e.to_string())?;
        for m in members.iter().filter(|m| m.state == "ready") {
            let client = self.client(&m.runtime_id);
            let status = tokio::time::timeout(Duration::from_secs(5), client.status()).await;
            if matches!(
                status,
                Ok(Err(crate::supervisor::SupervisorError::Gone { .. }))
            ) && store.pool_remove(&m.runtime_id).await.unwrap_or(false)
            {
                self.stop(&m.runtime_id).await;
                // What its sandbox left (namespace, nftables table, cgroup) goes now.
                let _ = tokio::task::spawn_blocking(sandbox::local::gc).await;
                tracing::warn!(
                    "warm sandbox {} is gone (its supervisor died)",
                    m.runtime_id
                );
            }
        }
        loop {
            let members = store
                .pool_members(Some(&self.pool.scope))
                .await
                .map_err(|e| e.to_string())?;
            let current = members
                .iter()
                .filter(|m| m.deploy_hash == self.deploy_hash())
                .count();
            if current >= self.pool.target {
                return Ok(());
            }
            let _capacity = match self.settings.max_running {
                Some(max) => {
                    let guard = self.capacity.clone().lock_owned().await;
                    if self.running("") >= max {
                        return Ok(());
                    }
                    Some(guard)
                }
                None => None,
            };
            let id = self.make_member(store).await?;
            tracing::info!("warm sandbox {id} ready");
        }
    }

    /// One new member: recorded, started, then marked ready.
    async fn make_member(&self, store: &Store) -> Result<String, String> {
        let id = new_id("rt_");
        store
            .pool_add(&id, &self.pool.scope, self.deploy_hash())
            .await
            .map_err(|e| e.to_string())?;
        let started = async {
            private_dir(&self.dir, 0o711)?;
            if let Some(k) = &self.kube {
                // Its marker, as for a thread's sandbox: counted, and kept by the reaper.
                let dir = self.dir.join(&id);
                private_dir(&dir, 0o700)?;
                let _permit = self.starts.acquire().await.map_err(|e| e.to_string())?;
                return k.make_warm(&dir, &id).await;
            }
            let spec = self.warm_spec(&id)?;
            let _permit = self.starts.acquire().await.map_err(|e| e.to_string())?;
            self.client(&id)
                .start(&self.exe, &spec)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        let ready = match started {
            Ok(()) => store.pool_ready(&id).await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("a warm sandbox could not start: {e}")),
        };
        match ready {
            Ok(true) => Ok(id),
            Ok(false) => {
                self.stop(&id).await;
                Err(format!("warm sandbox {id} was evicted while it started"))
            }
            Err(e) => {
                self.stop(&id).await;
                let _ = store.pool_remove(&id).await;
                Err(e)
            }
        }
    }

    /// A member's supervisor spec: the policy file's configuration (its gateway starts
    /// with none of its rules), the route to the API without a token, no harness.
    fn warm_spec(&self, id: &str) -> Result<SupervisorSpec, String> {
        let s = &self.settings;
        let audit_dir = s.data_dir.join("audit");
        private_dir(&audit_dir, 0o700)?;
        Ok(SupervisorSpec {
            command: Vec::new(),
            policy: s.policy.clone(),
            secrets_from: s.secrets_from.clone(),
            uid: s.uid,
            gid: s.gid,
            env: Vec::new(),
            mounts: Vec::new(),
            labels: vec![
                ("runtime_id".into(), id.to_string()),
                ("pool".into(), "warm".into()),
            ],
            audit: audit_dir.join(format!("{id}.jsonl")),
            memory: s.memory,
            workdir: None,
            home: None,
            internal: self.api.get().map(|api| Internal {
                api: *api,
                token: String::new(),
            }),
        })
    }

    /// Claims a ready member for the assignment and starts its harness there; `None` when no
    /// member is ready, or the claimed one failed (it is stopped and the assignment keeps
    /// its runtime: the caller starts cold). With the client, the assignment as it now is
    /// and whether `resume` was resumed (a warm pod's home has no session).
    pub(super) async fn claim(
        &self,
        store: &Store,
        a: &Assignment,
        resume: Option<String>,
    ) -> Option<(Client, Assignment, bool)> {
        if self.pool.target == 0 {
            return None;
        }
        let id = store
            .pool_claim(
                &self.pool.scope,
                self.deploy_hash(),
                &a.thread_key,
                a.generation,
            )
            .await
            .ok()??;
        self.pool.wake.notify_one();
        let mut claimed = a.clone();
        claimed.runtime_id = id.clone();
        claimed.spool_seq = 0;
        let launched = async {
            if let Some(k) = &self.kube {
                return self.claim_pod(k, store, &claimed, resume).await;
            }
            let resumes = resume.is_some();
            let internal = self.internal(store, &claimed).await?;
            let spec = self.spec(&claimed, resume, internal)?;
            let client = self.client(&id);
            client.launch(&spec).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((client, resumes))
        }
        .await;
        match launched {
            Ok((client, resumed)) => {
                tracing::info!("thread {} claimed warm sandbox {id}", a.thread_key);
                Some((client, claimed, resumed))
            }
            Err(e) => {
                tracing::warn!("warm sandbox {id} could not take its thread: {e}; starting cold");
                self.stop(&id).await;
                let _ = store
                    .replace_runtime(&a.thread_key, a.generation, &a.runtime_id)
                    .await;
                None
            }
        }
    }

    /// Stops the oldest ready member (to make room for a cold start); its id.
    pub(super) async fn evict_warm(&self, store: &Store) -> Option<String> {
        let members = store.pool_members(Some(&self.pool.scope)).await.ok()?;
        for m in members.into_iter().filter(|m| m.state == "ready") {
            if store.pool_remove(&m.runtime_id).await.unwrap_or(false) {
                self.stop(&m.runtime_id).await;
                return Some(m.runtime_id);
            }
        }
        None
    }

    /// `GET /agent/pool`: the target, this server's scope and deploy hash, and every member
    /// of every scope.
    pub async fn pool_view(&self, store: &Store) -> Result<Value, crate::store::StoreError> {
        let members = store.pool_members(None).await?;
        let ready = members
            .iter()
            .filter(|m| {
                m.scope == self.pool.scope
                    && m.deploy_hash == self.deploy_hash()
                    && m.state == "ready"
            })
            .count();
        let list: Vec<Value> = members
            .into_iter()
            .map(|m| {
                json!({"runtime_id": m.runtime_id, "scope": m.scope, "deploy_hash": m.deploy_hash,
                       "state": m.state, "created_at": m.created_at, "ready_at": m.ready_at})
            })
            .collect();
        Ok(
            json!({"target": self.pool.target, "ready": ready, "scope": self.pool.scope,
                  "deploy_hash": self.deploy_hash(), "members": list}),
        )
    }
}
