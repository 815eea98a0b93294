//! Inside a Kubernetes sandbox pod. The pod is the sandbox: its own network namespace, whose
//! only way out its NetworkPolicy makes its gateway pod, its limits, its non-root user with no
//! capabilities. The gateway is a pod of its own. So starting the harness here is starting a
//! child process, in a process group of its own so that a stop reaches what it started.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::process::Child;
use tokio::sync::{mpsc, watch};

use crate::runner::{RunError, Running, SandboxEvent, Status, Stopper};

/// A command to run in this pod.
#[derive(Debug, Clone)]
pub struct PodCommand {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Added to the pod's own environment (which holds placeholders, the gateway's address
    /// and the CA trust variables only).
    pub env: Vec<(String, String)>,
    /// The working directory.
    pub workdir: PathBuf,
}

/// Starts `cmd` with piped stdin and stdout (stderr is the caller's, which the pod's log
/// keeps). The returned run's stopper gives the command its grace, then SIGTERM to its
/// process group, then SIGKILL five seconds later.
pub fn start(cmd: &PodCommand) -> Result<Running, RunError> {
    let Some((program, args)) = cmd.command.split_first() else {
        return Err(RunError::Spawn(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an empty command",
        )));
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&cmd.workdir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(RunError::Spawn)?;
    let (events, rx) = mpsc::unbounded_channel();
    let id = std::env::var("CENTAUR_SANDBOX").unwrap_or_else(|_| "pod".into());
    let (stop, stop_rx) = mpsc::channel(1);
    let (status_tx, status) = watch::channel(Status::Running);
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let done = tokio::spawn(async move {
        let exit = wait(&mut child, stop_rx, &status_tx).await;
        let code = match exit {
            Ok(exit) => exit.code().or_else(|| exit.signal().map(|s| 128 + s)),
            Err(_) => None,
        }
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(1);
        let _ = events.send(SandboxEvent::Exited {
            id,
            code,
            audit: "the audit is the gateway pod's".into(),
        });
        status_tx.send_replace(Status::Exited(code));
        Ok(code)
    });
    Ok(Running {
        id: std::env::var("CENTAUR_SANDBOX").unwrap_or_else(|_| "pod".into()),
        events: rx,
        stdin,
        stdout,
        stop: Stopper(stop),
        status,
        done,
    })
}

async fn wait(
    child: &mut Child,
    stop: mpsc::Receiver<Duration>,
    status: &watch::Sender<Status>,
) -> std::io::Result<std::process::ExitStatus> {
    let group = child.id().and_then(|id| Pid::from_raw(id.cast_signed()));
    super::wait_or_stop(child, stop, status, |kill| {
        if let Some(g) = group {
            let _ = kill_process_group(g, if kill { Signal::KILL } else { Signal::TERM });
        }
    })
    .await
}
