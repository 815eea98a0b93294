//! The server's shared state: the settings, the store (once open), the worker's identity and
//! wake-ups, counters, the sandboxes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{Notify, watch};

use crate::clock::Clock;
use crate::server::config::Settings;
use crate::server::metrics::Metrics;
use crate::server::runtime::Runtimes;
use crate::server::slack::state::Slack;
use crate::store::Store;
use crate::tools::host::ToolHost;

/// The server's shared state.
#[derive(Debug)]
pub struct App {
    /// The checked config.
    pub settings: Arc<Settings>,
    pub(crate) store: OnceLock<Store>,
    /// This process's worker id (leases name it).
    pub worker_id: String,
    /// Wakes the worker (something was queued here).
    pub kick: Notify,
    /// The server's counters.
    pub metrics: Metrics,
    /// The sandboxes.
    pub runtimes: Runtimes,
    /// Running executions' wake-ups (a cancel arrived).
    pub(crate) running: Mutex<HashMap<String, Arc<Notify>>>,
    /// Flips to true when the server is shutting down (event streams end).
    pub shutdown: watch::Sender<bool>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Slack, when configured.
    pub slack: Option<Arc<Slack>>,
    /// The tool host, when tools are configured.
    pub tools: Option<Arc<ToolHost>>,
    /// The workflow engine, when workflows are configured (set once the store is open).
    pub workflows: OnceLock<Arc<crate::workflows::executor::Engine>>,
}

impl App {
    /// The store; only called once it is open (routes check [`App::ready`] first).
    pub fn store(&self) -> Store {
        match self.store.get() {
            Some(s) => s.clone(),
            None => unreachable_store(),
        }
    }

    /// Whether the store is open and migrated.
    pub fn ready(&self) -> bool {
        self.store.get().is_some()
    }

    /// The worker's lease in milliseconds.
    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.settings.lease.as_millis()).unwrap_or(30_000)
    }

    /// Now, in Unix ms.
    pub fn clock_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    pub(crate) fn watch_execution(&self, id: &str) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        lock(&self.running).insert(id.to_string(), n.clone());
        n
    }

    pub(crate) fn unwatch_execution(&self, id: &str) {
        lock(&self.running).remove(id);
    }

    /// Wakes the worker running this execution, if it runs here.
    pub fn wake_execution(&self, id: &str) {
        if let Some(n) = lock(&self.running).get(id) {
            n.notify_one();
        }
    }
}

#[cold]
fn unreachable_store() -> ! {
    // Every route answers 503 before the store is set; the worker starts after it.
    panic!("the store was used before it was opened")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
