//! `centaur server`: the control plane's HTTP API over the durable store, the execution
//! worker, and the sandboxes' supervisors.
//!
//! Start-up: bind the listener first (so `/healthz` answers and `/readyz` says 503 while the
//! store migrates), open and migrate the store, resume the executions a previous process
//! left running (their sandboxes kept running under their own supervisors), then claim
//! queued work. A reaper stops sandboxes no active assignment owns.

pub mod api;
pub mod app;
pub mod attachments;
pub mod backend;
pub mod commit;
pub mod config;
pub mod egress;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod paths;
pub mod runtime;
pub mod slack;
pub mod sse;
pub mod tools;
pub mod webhooks;
pub mod worker;
pub mod workflows;

pub use app::App;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::clock::SystemClock;
use crate::server::config::Settings;
use crate::server::http::ApiError;
use crate::server::metrics::Metrics;
use crate::server::paths::{private_dir, reachable};
use crate::server::runtime::Runtimes;
use crate::store::{Code, Location, Store, StoreError};
use crate::tools::host::ToolHost;

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
    /// The control plane's own gateway could not start.
    #[error("{0}")]
    Egress(String),
    /// The sandbox backend cannot be reached (no kubeconfig, no service account).
    #[error("sandbox.backend: kubernetes: {0}")]
    Backend(String),
}

/// Runs the server until SIGTERM or SIGINT. `on_listen` gets the bound address (the
/// listener may be `:0`).
pub async fn serve(
    settings: Settings,
    on_listen: impl FnOnce(std::net::SocketAddr),
) -> Result<(), ServeError> {
    let settings = Arc::new(settings);
    let lock_file = lock_data_dir(&settings)?;
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("centaur"));
    let runtimes = Runtimes::new(settings.clone(), exe)
        .connect()
        .await
        .map_err(ServeError::Backend)?;
    if !runtimes.on_kubernetes()
        && let Err(e) = sandbox::local::preflight()
    {
        tracing::warn!(
            "sandboxes cannot start on this machine ({e}): executions will fail with sandbox_start_failed"
        );
    }
    let slack = start_slack(&settings).await?;
    let (shutdown, _) = watch::channel(false);
    let tools = start_tools(&settings);
    let app = Arc::new(App {
        settings: settings.clone(),
        store: OnceLock::new(),
        worker_id: format!("w_{:016x}", rand::random::<u64>()),
        kick: Notify::new(),
        metrics: Metrics::default(),
        runtimes,
        running: Mutex::new(HashMap::new()),
        shutdown,
        clock: Arc::new(SystemClock),
        slack,
        tools,
        workflows: OnceLock::new(),
    });
    let listener = TcpListener::bind(&settings.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: settings.listen.clone(),
            source,
        })?;
    if let Ok(a) = listener.local_addr() {
        app.runtimes.set_api(a);
        on_listen(a);
    }
    let router = router(app.clone());
    let stop = app.shutdown.clone();
    let http = tokio::spawn(async move {
        let mut rx = stop.subscribe();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
    });
    let store = open_store(&settings, &app).await?;
    background(&app, store.clone(), settings.database_url.is_none()).await;
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
    if let Some(t) = &app.tools {
        t.shut_down().await;
    }
    store.close().await;
    drop(lock_file);
    Ok(())
}

/// The control plane's own gateway and, through it, Slack (when configured).
async fn start_slack(settings: &Settings) -> Result<Option<Arc<slack::state::Slack>>, ServeError> {
    if settings.slack.is_none() && settings.egress_policy.is_none() {
        return Ok(None);
    }
    let policy = egress::policy(settings.egress_policy.as_deref(), settings.slack.as_ref())
        .map_err(ServeError::Egress)?;
    let egress = egress::start(policy, &settings.data_dir)
        .await
        .map_err(ServeError::Egress)?;
    tracing::info!(
        "egress: the control plane's calls leave through its gateway (audit: {})",
        egress.audit.display()
    );
    Ok(settings.slack.clone().map(|s| slack::new(s, egress)))
}

/// The tool host, discovering and reloading in the background. Sandboxes a killed
/// predecessor left (tool workers die with their server) are removed first.
fn start_tools(settings: &Settings) -> Option<Arc<ToolHost>> {
    let t = settings.tools.clone()?;
    let host = match ToolHost::new(t, &settings.data_dir, settings.uid, settings.gid) {
        Ok(h) => Arc::new(h),
        Err(e) => {
            tracing::error!("tools: {e}; no tool is served");
            return None;
        }
    };
    let run = host.clone();
    tokio::spawn(async move {
        match tokio::task::spawn_blocking(sandbox::local::gc).await {
            Ok(Ok(removed)) => {
                for (id, _) in removed {
                    tracing::info!("removed sandbox {id}: its owner is gone");
                }
            }
            Ok(Err(e)) => tracing::warn!("tools: sandboxes cannot run here: {e}"),
            Err(_) => {}
        }
        run.run().await;
    });
    Some(host)
}

/// The workflow engine: its worker starts in its sandbox, then due runs are claimed.
fn start_workflows(app: &Arc<App>, store: &Store, sole: bool) {
    let Some(w) = app.settings.workflows.clone() else {
        return;
    };
    let settings = app.settings.clone();
    let start: crate::workflows::executor::StartWorker = Box::new(move || {
        let settings = settings.clone();
        let w = w.clone();
        Box::pin(async move {
            let sdk = crate::tools::spec::write_sdk(&settings.data_dir)?;
            let cx = crate::workflows::worker::Place {
                data_dir: &settings.data_dir,
                sdk: &sdk,
                uid: settings.uid,
                gid: settings.gid,
            };
            let policy = crate::workflows::worker::policy(w.policy.as_deref())?;
            let secrets = crate::workflows::worker::secrets(&w)?;
            let spec = crate::workflows::worker::spec(&w, policy, secrets, &cx)?;
            crate::workflows::worker::Worker::start(spec, &w.dirs).await
        })
    });
    let concurrency = app.settings.workflows.as_ref().map_or(8, |w| w.concurrency);
    let secrets_from = app
        .settings
        .workflows
        .as_ref()
        .and_then(|w| w.secrets_from.clone());
    let lease = app
        .settings
        .workflows
        .as_ref()
        .map_or(std::time::Duration::from_secs(30), |w| w.lease);
    let dirs = app
        .settings
        .workflows
        .as_ref()
        .map(|w| w.dirs.clone())
        .unwrap_or_default();
    let engine = Arc::new(
        crate::workflows::executor::Engine::new(
            store.clone(),
            app.clock.clone(),
            app.worker_id.clone(),
            concurrency,
            start,
            crate::workflows::facts::Agents {
                default_harness: app.settings.default_harness.clone(),
                kick: {
                    let app = Arc::downgrade(app);
                    Arc::new(move || {
                        if let Some(app) = app.upgrade() {
                            app.kick.notify_one();
                        }
                    })
                },
            },
        )
        .with_webhook_secrets(Arc::new(move |name| {
            webhook_secret(secrets_from.as_deref(), name)
        }))
        .with_lease(lease)
        .with_reload(dirs),
    );
    let _ = app.workflows.set(engine.clone());
    let shutdown = app.shutdown.subscribe();
    let store = store.clone();
    tokio::spawn(async move {
        // The only server on this SQLite file: runs a killed predecessor held resume now
        // rather than after their lease.
        if sole {
            match store.release_orphaned_runs().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("workflows: {n} run(s) a previous server held resume"),
                Err(e) => tracing::warn!("workflows: releasing a previous server's runs: {e}"),
            }
        }
        engine.run(shutdown).await;
    });
}

/// A webhook's secret: from `workflows.secrets_from` (read at each request, so a rotated
/// value takes effect at once), else the server's environment.
fn webhook_secret(file: Option<&std::path::Path>, name: &str) -> Option<String> {
    let from_file = file
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|t| crate::runner::gateway_config::parse_dotenv(&t).ok())
        .and_then(|m| {
            m.get(name)
                .map(|v| String::from_utf8_lossy(v.expose()).into_owned())
        });
    from_file
        .or_else(|| std::env::var(name).ok())
        .filter(|v| !v.is_empty())
}

/// Makes the data directory (reachable by the sandbox user, listing nothing) and, on
/// SQLite, takes its lock: one server per store file.
fn lock_data_dir(settings: &Settings) -> Result<std::fs::File, ServeError> {
    private_dir(&settings.data_dir, 0o711).map_err(ServeError::DataDir)?;
    reachable(&settings.data_dir).map_err(ServeError::DataDir)?;
    let lock_path = settings.data_dir.join("server.lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| ServeError::DataDir(format!("{}: {e}", lock_path.display())))?;
    if settings.database_url.is_none() && lock_file.try_lock().is_err() {
        return Err(ServeError::DataDir(format!(
            "another centaur server uses {} (it holds {})",
            settings.data_dir.display(),
            lock_path.display()
        )));
    }
    Ok(lock_file)
}

/// Opens and migrates the store (the SQLite files readable by root only), then marks the
/// server ready.
async fn open_store(settings: &Settings, app: &App) -> Result<Store, ServeError> {
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
    Ok(store)
}

/// PostgreSQL notifications, the executions a previous process left (all of them with
/// `sole`: the only server on a SQLite file), the worker and the reaper.
async fn background(app: &Arc<App>, store: Store, sole: bool) {
    let pool = app.clone();
    tokio::spawn(async move { pool.runtimes.keep_pool(pool.store()).await });
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
    worker::recover(app, sole).await;
    tokio::spawn(worker::run(app.clone()));
    start_workflows(app, &app.store(), sole);
    slack::spawn(app, sole).await;
    let app = app.clone();
    // The reaper, and idle suspension at a quarter of the idle timeout (at most 30 s).
    let every = app
        .settings
        .idle_timeout
        .map_or(Duration::from_secs(30), |t| {
            (t / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
        });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let mut reaped: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            if reaped.is_none_or(|r| r.elapsed() >= Duration::from_secs(30)) {
                reaped = Some(tokio::time::Instant::now());
                for id in app.runtimes.reap(&app.store()).await {
                    tracing::info!("reaped sandbox {id}: no active assignment owns it");
                }
            }
            for id in app.runtimes.suspend_idle(&app.store()).await {
                tracing::info!("suspended sandbox {id}: idle for sandbox.idle_timeout");
            }
        }
    });
}

/// Every route.
fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"ok": true})) }),
        )
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/agent/spawn", post(api::spawn))
        .route("/agent/message", post(api::message))
        .route("/agent/execute", post(api::execute))
        .route("/agent/messages", get(api::messages))
        .route("/agent/executions/{id}", get(api::execution))
        .route("/agent/executions/{id}/cancel", post(api::cancel))
        .route("/agent/executions/{id}/steer", post(api::steer))
        .route("/agent/threads", get(api::threads))
        .route("/agent/pool", get(api::pool))
        .route(
            "/agent/threads/{thread_key}/executions",
            get(api::thread_executions),
        )
        .route("/agent/threads/{thread_key}/events", get(sse::events))
        .route("/agent/threads/{thread_key}/release", post(api::release))
        .route("/agent/slack/deliveries", get(slack::routes::deliveries))
        .route("/api/slack/events", post(slack::routes::events))
        .route("/api/webhooks/slack", post(slack::routes::events))
        .route(
            "/api/webhooks/{slug}",
            axum::routing::any(webhooks::receive),
        )
        .route(
            "/mcp",
            post(mcp::post)
                .get(mcp::not_offered)
                .delete(mcp::not_offered),
        )
        .route("/workflows", get(workflows::list))
        .route(
            "/workflows/runs",
            post(workflows::create).get(workflows::runs),
        )
        .route("/workflows/runs/{id}", get(workflows::show))
        .route("/workflows/runs/{id}/cancel", post(workflows::cancel))
        .route("/workflows/events", post(workflows::event))
        .route("/tools", get(tools::list))
        .route("/tools/{tool}", get(tools::describe))
        .route("/tools/{tool}/{method}", post(tools::call))
        .fallback(|| async { ApiError::new(Code::NotFound, "no such route") })
        .with_state(app)
}
