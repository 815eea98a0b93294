//! `centaur server`: the control plane's HTTP API over the durable store, the execution
//! worker, and the sandboxes' supervisors.
//!
//! Start-up: bind the listener first (so `/healthz` answers and `/readyz` says 503 while the
//! store migrates), open and migrate the store, resume the executions a previous process
//! left running (their sandboxes kept running under their own supervisors), then claim
//! queued work. A reaper stops sandboxes no active assignment owns.

pub mod api;
pub mod config;
pub mod metrics;
pub mod runtime;
pub mod sse;
pub mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::clock::{Clock, SystemClock};
use crate::server::config::Settings;
use crate::server::metrics::Metrics;
use crate::server::runtime::{Runtimes, private_dir};
use crate::store::{Location, Store, StoreError};

/// The server's shared state.
#[derive(Debug)]
pub struct App {
    /// The checked config.
    pub settings: Arc<Settings>,
    store: OnceLock<Store>,
    /// This process's worker id (leases name it).
    pub worker_id: String,
    /// Wakes the worker (something was queued here).
    pub kick: Notify,
    /// The server's counters.
    pub metrics: Metrics,
    /// The sandboxes.
    pub runtimes: Runtimes,
    /// Running executions' wake-ups (a cancel arrived).
    running: Mutex<HashMap<String, Arc<Notify>>>,
    /// Flips to true when the server is shutting down (event streams end).
    pub shutdown: watch::Sender<bool>,
    clock: Arc<dyn Clock>,
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

    fn watch_execution(&self, id: &str) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        lock(&self.running).insert(id.to_string(), n.clone());
        n
    }

    fn unwatch_execution(&self, id: &str) {
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

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another server uses this data directory.
    #[error("{0}")]
    DataDir(String),
}

/// The sandbox user binds its workdir from under the data directory, so every directory
/// above it must be traversable by others (`o+x`).
fn reachable(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for d in dir.ancestors() {
        let mode = std::fs::metadata(d)
            .map_err(|e| format!("{}: {e}", d.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "the sandbox user cannot reach the data directory {}: {} is mode {:o}; make it traversable (chmod o+x) or pick another --data-dir",
                dir.display(),
                d.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
}

/// Runs the server until SIGTERM or SIGINT. `on_listen` gets the bound address (the
/// listener may be `:0`).
pub async fn serve(
    settings: Settings,
    on_listen: impl FnOnce(std::net::SocketAddr),
) -> Result<(), ServeError> {
    let settings = Arc::new(settings);
    private_dir(&settings.data_dir, 0o711).map_err(ServeError::DataDir)?;
    reachable(&settings.data_dir).map_err(ServeError::DataDir)?;
    let lock_path = settings.data_dir.join("server.lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| ServeError::DataDir(format!("{}: {e}", lock_path.display())))?;
    let sqlite = settings.database_url.is_none();
    if sqlite && lock_file.try_lock().is_err() {
        return Err(ServeError::DataDir(format!(
            "another centaur server uses {} (it holds {})",
            settings.data_dir.display(),
            lock_path.display()
        )));
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("centaur"));
    let (shutdown, _) = watch::channel(false);
    let app = Arc::new(App {
        settings: settings.clone(),
        store: OnceLock::new(),
        worker_id: format!("w_{:016x}", rand::random::<u64>()),
        kick: Notify::new(),
        metrics: Metrics::default(),
        runtimes: Runtimes::new(settings.clone(), exe),
        running: Mutex::new(HashMap::new()),
        shutdown,
        clock: Arc::new(SystemClock),
    });
    let listener = TcpListener::bind(&settings.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: settings.listen.clone(),
            source,
        })?;
    if let Ok(a) = listener.local_addr() {
        on_listen(a);
    }
    let router = api::router(app.clone());
    let stop = app.shutdown.clone();
    let http = tokio::spawn(async move {
        let mut rx = stop.subscribe();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
    });

    let location = Location::new(settings.database_url.as_deref(), &settings.data_dir)?;
    let store = Store::open(&location, app.clock.clone()).await?;
    if let Location::Sqlite(p) = &location {
        for suffix in ["", "-wal", "-shm"] {
            let f = PathBuf::from(format!("{}{suffix}", p.display()));
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600));
        }
    }
    tracing::info!("store: {}", location.describe());
    let _ = app.store.set(store.clone());
    {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = store.listen().await {
                    tracing::warn!("LISTEN centaur_events: {e}; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                } else {
                    return;
                }
            }
        });
    }
    worker::recover(&app, sqlite).await;
    tokio::spawn(worker::run(app.clone()));
    {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                for id in app.runtimes.reap(&app.store()).await {
                    tracing::info!("reaped sandbox {id}: no active assignment owns it");
                }
            }
        });
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| ServeError::Listen {
            addr: "signals".into(),
            source,
        })?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: sandboxes keep running under their supervisors");
    app.shutdown.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(25), http).await;
    store.close().await;
    drop(lock_file);
    Ok(())
}
