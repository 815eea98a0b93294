//! How many sandboxes run, which are idle, and which nobody owns: idle suspension
//! (`sandbox.idle_timeout`), the capacity limit (`sandbox.max_running`) and the reaper.

use std::time::{Duration, SystemTime};

use super::{Hold, Runtimes};
use crate::store::Store;

impl Runtimes {
    /// When a runtime's sandbox was last used: the latest change to its spool (output), its
    /// turns (input) and its directory (start). `None` when it has no directory.
    pub(super) fn last_used(&self, runtime_id: &str) -> Option<SystemTime> {
        let dir = self.dir.join(runtime_id);
        [dir.clone(), dir.join("spool"), dir.join("turns")]
            .iter()
            .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .max()
    }

    /// Up to `limit` running sandboxes of active assignments unused for at least `age` that
    /// may be stopped now (no execution of their thread queued or running, nobody holding
    /// the thread), least recently used first, each with its thread's hold.
    pub(super) async fn idle(
        &self,
        store: &Store,
        age: Duration,
        limit: usize,
    ) -> Vec<(String, Hold)> {
        let Ok(active) = store.active_runtime_threads().await else {
            return Vec::new();
        };
        let mut candidates: Vec<(SystemTime, String, String)> = active
            .into_iter()
            .filter_map(|(runtime, thread)| {
                let used = self.last_used(&runtime)?;
                used.elapsed()
                    .is_ok_and(|a| a >= age)
                    .then_some((used, runtime, thread))
            })
            .collect();
        candidates.sort();
        let mut out = Vec::new();
        for (_, runtime, thread) in candidates {
            if out.len() >= limit {
                break;
            }
            let Some(hold) = self.try_hold(&thread) else {
                continue;
            };
            if store.thread_busy(&thread).await.unwrap_or(true) {
                continue;
            }
            out.push((runtime, hold));
        }
        out
    }

    /// Stops (suspends) every sandbox unused for `sandbox.idle_timeout`; returns their ids.
    /// The thread stays: its next turn starts a new sandbox and resumes the session.
    pub async fn suspend_idle(&self, store: &Store) -> Vec<String> {
        let Some(timeout) = self.settings.idle_timeout else {
            return Vec::new();
        };
        let mut stopped = Vec::new();
        for (runtime, _hold) in self.idle(store, timeout, usize::MAX).await {
            self.stop(&runtime).await;
            stopped.push(runtime);
        }
        stopped
    }

    /// Before a cold start under `sandbox.max_running`: while `max` sandboxes run, stops the
    /// least recently used idle one; waits (up to a minute) while none is idle. Returns the
    /// guard that keeps other starts out until this one is done.
    pub(super) async fn make_room(
        &self,
        store: &Store,
        max: usize,
        own: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, String> {
        let guard = self.capacity.clone().lock_owned().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let running = self.running(own);
            if running < max {
                return Ok(guard);
            }
            // A warm member goes first: it serves nobody yet.
            if let Some(runtime) = self.evict_warm(store).await {
                tracing::info!(
                    "stopping warm sandbox {runtime}: {running} of sandbox.max_running {max} run"
                );
                continue;
            }
            if let Some((runtime, _hold)) = self.idle(store, Duration::ZERO, 1).await.pop() {
                tracing::info!(
                    "stopping idle sandbox {runtime}: {running} of sandbox.max_running {max} run"
                );
                self.stop(&runtime).await;
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{running} sandboxes run (sandbox.max_running is {max}) and none was idle for a minute"
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// How many sandboxes run here (their directories), `except` one.
    pub(super) fn running(&self, except: &str) -> usize {
        self.markers().iter().filter(|n| *n != except).count()
    }

    /// The runtimes with a directory here.
    pub(super) fn markers(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("rt_"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops every sandbox here that no active assignment or pool row owns; returns their ids. The
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
        if let Some(k) = &self.kube {
            // Sandboxes in the cluster with neither an owner nor a marker here (a server
            // killed between creating the objects and recording them).
            let mut markers: std::collections::BTreeSet<String> = keep.iter().cloned().collect();
            markers.extend(self.markers());
            reaped.extend(k.reap(&markers).await);
        }
        for name in found {
            if !keep.contains(&name) {
                self.stop(&name).await;
                reaped.push(name);
            }
        }
        reaped
    }
}
