//! The sandbox runner: a command in a sandbox whose only way out is a gateway of its own.
//!
//! A [`SandboxSpec`] says what to run; a [`SandboxBackend`] creates the sandbox and its
//! gateway and starts the command, and hands back a [`Running`] sandbox: its progress arrives
//! as [`SandboxEvent`]s on a channel (the CLI prints them; the server will store them), its
//! stdin and stdout can be attached, and it can be asked for its status and stopped. The
//! local backend ([`local::LocalBackend`]) is the first implementation.

pub mod gateway_config;
pub mod internal;
pub mod local;
pub mod pod;
pub mod spec;

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use spec::{SandboxSpec, SpecError, Stdio};

/// A place sandboxes run.
pub trait SandboxBackend {
    /// Creates the sandbox and its gateway and starts the spec's command. Returns once the
    /// command is running (or failed to start); everything created is removed when the
    /// command ends, whatever the path out.
    fn start(&self, spec: SandboxSpec) -> impl Future<Output = Result<Running, RunError>> + Send;
}

/// What happens to a sandbox, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxEvent {
    /// Something the user should know (a policy setting the runner replaced, a variable with
    /// no value).
    Warning(String),
    /// The sandbox and its gateway are up and the command has started.
    Started {
        /// The run's id.
        id: String,
        /// The sandbox's address.
        sandbox: Ipv4Addr,
        /// Its gateway's address (DNS :53, HTTP :80, HTTPS :443, tunnel :1080).
        gateway: Ipv4Addr,
        /// Where the policy came from.
        policy: String,
        /// The audit log.
        audit: PathBuf,
    },
    /// The command ended.
    Exited {
        /// The run's id.
        id: String,
        /// Its exit status (128 + signal when killed by one).
        code: u8,
        /// The audit log's tally, in words.
        audit: String,
    },
    /// The sandbox, its gateway and everything they used were removed.
    Removed {
        /// The run's id.
        id: String,
        /// What was removed.
        removed: Vec<String>,
    },
}

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The command runs.
    Running,
    /// Asked to stop; waiting for the command to end.
    Stopping,
    /// The command ended with this status and everything was removed.
    Exited(u8),
}

/// A sandbox could not run its command.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The sandbox could not be created (not root, no bubblewrap, nftables or cgroups…).
    #[error(transparent)]
    Create(#[from] sandbox::local::Error),
    /// Its certificate authority could not be made.
    #[error("the sandbox's CA could not be created: {0}")]
    Ca(#[from] gateway::ca::CaError),
    /// Its gateway could not start.
    #[error("the sandbox's gateway could not start: {0}")]
    Gateway(#[from] gateway::StartError),
    /// The command could not be started.
    #[error("cannot start the sandboxed command: {0}")]
    Spawn(#[source] std::io::Error),
    /// A file of the run (resolver, audit directory) could not be written.
    #[error("{what}: {source}")]
    Io {
        /// Which file.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The runner's own task failed (a panic in it: a bug).
    #[error("the sandbox runner failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A started sandbox.
#[derive(Debug)]
pub struct Running {
    /// The run's id.
    pub id: String,
    /// Progress, in order; the channel closes after [`SandboxEvent::Removed`].
    pub events: mpsc::UnboundedReceiver<SandboxEvent>,
    /// The command's stdin, with [`Stdio::Piped`].
    pub stdin: Option<ChildStdin>,
    /// The command's stdout, with [`Stdio::Piped`].
    pub stdout: Option<ChildStdout>,
    stop: Stopper,
    status: watch::Receiver<Status>,
    done: JoinHandle<Result<u8, RunError>>,
}

/// Asks a running sandbox to stop; cheap to clone.
#[derive(Debug, Clone)]
pub struct Stopper(mpsc::Sender<Duration>);

impl Stopper {
    /// Asks the command to stop: it gets `grace` to end on its own, then every process in
    /// the sandbox gets SIGTERM, and whatever still runs five seconds later is killed. Only
    /// the first request counts.
    pub fn stop(&self, grace: Duration) {
        let _ = self.0.try_send(grace);
    }
}

impl Running {
    /// Where the sandbox is in its life.
    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// A handle that stops this sandbox (see [`Stopper::stop`]).
    pub fn stopper(&self) -> Stopper {
        self.stop.clone()
    }

    /// Waits until the command has ended and everything is removed; returns its exit status.
    pub async fn wait(self) -> Result<u8, RunError> {
        self.done.await?
    }
}

/// Waits for a sandbox's command. A stop request gives it `grace` to finish on its own; then
/// `signal(false)` (TERM), and whatever still runs five seconds later gets `signal(true)`
/// (KILL).
async fn wait_or_stop(
    child: &mut tokio::process::Child,
    mut stop: mpsc::Receiver<Duration>,
    status: &watch::Sender<Status>,
    signal: impl Fn(bool),
) -> std::io::Result<std::process::ExitStatus> {
    let grace = tokio::select! {
        exit = child.wait() => return exit,
        grace = stop.recv() => match grace {
            Some(g) => g,
            None => return child.wait().await,
        },
    };
    status.send_replace(Status::Stopping);
    if let Ok(exit) = tokio::time::timeout(grace, child.wait()).await {
        return exit;
    }
    signal(false);
    if let Ok(exit) = tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        return exit;
    }
    signal(true);
    child.wait().await
}
