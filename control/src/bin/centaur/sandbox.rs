//! `centaur sandbox run|gc|ls`: a command in a local sandbox behind a gateway of its own.
//!
//! `run` turns its flags into a [`SandboxSpec`] and hands it to the local backend
//! (`control::runner`), which creates the sandbox, its CA and its gateway, runs the command as
//! an unprivileged user with only placeholders in its environment, and removes everything
//! when the command ends or when `centaur` is told to stop. This file prints the run's events
//! and passes the exit status through.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use control::runner::local::LocalBackend;
use control::runner::{self, SandboxBackend, SandboxEvent, SandboxSpec, Stdio};
use sandbox::local::{self, Limits};
use tokio::signal::unix::{SignalKind, signal};

/// Local sandboxes.
#[derive(Debug, Subcommand)]
pub enum SandboxCmd {
    /// Run a command in a new sandbox whose only way out is a gateway of its own.
    ///
    /// The sandbox has its own network namespace (its only route and resolver are its
    /// gateway; nftables drops everything else), its own user, mount, PID, IPC and UTS
    /// namespaces (a read-only view of the system, a writable workdir and /tmp, no
    /// capabilities, no_new_privs), cgroup limits, and only placeholder credentials in its
    /// environment. The gateway enforces the policy, swaps placeholders for real values from
    /// --secrets-from or this process's environment, and writes an audit record per request.
    /// Needs root.
    ///
    /// Example:
    ///   sudo centaur sandbox run --policy policy.yaml --secrets-from .env -- claude -p "fix the tests"
    Run(Box<RunArgs>),
    /// Remove what crashed or killed runs left behind (namespaces, veths, nftables tables,
    /// cgroups, run directories). Runs whose `centaur` is alive are left alone.
    Gc,
    /// List the runs on this machine and whether their `centaur` is alive.
    Ls,
    /// Run one sandbox for the server under a supervisor of its own (started by
    /// `centaur server`; not for people).
    #[command(hide = true)]
    Supervise {
        /// The runtime's directory (spec.json, spool, socket).
        dir: PathBuf,
        /// Inside a Kubernetes sandbox pod (the sandbox pod's command): no sandbox to
        /// create, the harness arrives with a `launch`.
        #[arg(long)]
        pod: bool,
    },
    /// Copy stdin to a supervisor's Unix socket and its answers to stdout: how the server
    /// reaches the supervisor in a Kubernetes sandbox pod, through the pod's exec API
    /// (started by `centaur server`; not for people).
    #[command(hide = true)]
    Relay {
        /// The supervisor's socket.
        socket: PathBuf,
    },
    /// Run Codex as a thread's harness, one `codex exec` per turn (started by `centaur
    /// server` inside the sandbox; not for people).
    #[command(hide = true)]
    CodexBridge {
        /// The thread id to resume at the first turn.
        #[arg(long)]
        resume: Option<String>,
        /// `codex exec` and its flags.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

/// `centaur sandbox run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The gateway policy (the `centaur-gateway` format). Listener, DNS, CA, management and
    /// metrics settings in it are replaced by the runner, with a warning. Without it every
    /// request is denied.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// A .env file (NAME=VALUE lines) with real values for the policy's `{type: env}`
    /// sources; they stay in the gateway, the sandbox sees placeholders. Variables not in the
    /// file are read from this process's environment.
    #[arg(long, value_name = "FILE")]
    pub secrets_from: Option<PathBuf>,
    /// The writable working directory, mounted at the same path.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub workdir: PathBuf,
    /// Who the command runs as. Default: the user who ran sudo (SUDO_UID/SUDO_GID), else
    /// nobody (65534). Never root.
    #[arg(long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// An extra read-only bind mount (repeatable).
    #[arg(long = "ro", value_name = "SRC[:DEST]")]
    pub ro: Vec<String>,
    /// An extra writable bind mount (repeatable).
    #[arg(long = "rw", value_name = "SRC[:DEST]")]
    pub rw: Vec<String>,
    /// An extra environment variable for the command (repeatable). Not for secrets.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Memory limit (`none` for no limit).
    #[arg(long, value_name = "SIZE", default_value = "4GiB")]
    pub memory: String,
    /// Process and thread limit.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub pids: u64,
    /// CPU limit, in CPUs (1.5 = one and a half cores). Default: none.
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// The audit log, unless the policy names a file. Default:
    /// /var/log/centaur/sandbox-RUN_ID.jsonl (hidden from every sandbox).
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,
    /// An identity label written into every audit record (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Print nothing of our own on stderr (the command's output is untouched).
    #[arg(short, long)]
    pub quiet: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// Runs a `centaur sandbox` subcommand; returns the process exit status.
pub fn run(cmd: SandboxCmd) -> anyhow::Result<u8> {
    match cmd {
        SandboxCmd::Run(args) => {
            let spec = spec(&args)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(run_sandbox(spec, args.quiet))
        }
        SandboxCmd::Supervise { dir, pod } => {
            use control::supervisor::process::Mode;
            let rt = tokio::runtime::Runtime::new()?;
            let mode = if pod { Mode::Pod } else { Mode::Local };
            rt.block_on(control::supervisor::process::run(dir, mode))
        }
        SandboxCmd::Relay { socket } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(control::supervisor::relay(&socket))?;
            Ok(0)
        }
        SandboxCmd::CodexBridge { resume, argv } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(control::harness::bridge::run(resume, argv))
        }
        SandboxCmd::Gc => {
            let cleaned = local::gc()?;
            if cleaned.is_empty() {
                println!("nothing to remove");
            }
            for (id, removed) in cleaned {
                println!("{id}: removed {}", removed.join(", "));
            }
            Ok(0)
        }
        SandboxCmd::Ls => {
            println!("{:<10} owner", "id");
            for r in local::runs() {
                let state = if r.alive {
                    "running"
                } else {
                    "gone (run `centaur sandbox gc`)"
                };
                println!("{:<10} {state}", r.id);
            }
            Ok(0)
        }
    }
}

/// A line on stderr that never panics: the terminal may be gone (a closed pipe, a hung-up
/// session) and the run must still end and clean up.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Runs `spec` in a local sandbox, printing its progress (unless `quiet`); returns the
/// command's exit status. SIGINT (the terminal sent it to the command too) gives the command
/// two seconds to finish on its own; SIGTERM and SIGHUP stop it at once.
pub async fn run_sandbox(spec: SandboxSpec, quiet: bool) -> anyhow::Result<u8> {
    let mut running = LocalBackend.start(spec).await?;
    let stopper = running.stopper();
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut removed = None;
    loop {
        tokio::select! {
            event = running.events.recv() => match event {
                Some(SandboxEvent::Removed { id, removed: what }) => removed = Some((id, what)),
                Some(e) if !quiet => print_event(&e),
                Some(_) => {}
                None => break,
            },
            _ = int.recv() => stopper.stop(Duration::from_secs(2)),
            _ = term.recv() => stopper.stop(Duration::ZERO),
            _ = hup.recv() => stopper.stop(Duration::ZERO),
        }
    }
    let result = running.wait().await;
    if let (Err(_), Some((id, what)), false) = (&result, removed, quiet) {
        note!("centaur: sandbox {id}: removed {}", what.join(", "));
    }
    Ok(result?)
}

fn print_event(e: &SandboxEvent) {
    match e {
        SandboxEvent::Warning(w) => note!("centaur: warning: {w}"),
        SandboxEvent::Started {
            id,
            sandbox,
            gateway,
            policy,
            audit,
        } => note!(
            "centaur: sandbox {id} ({sandbox}) -> gateway {gateway} [dns :53, http :80, https :443, tunnel :1080]; policy {policy}; audit {}",
            audit.display()
        ),
        SandboxEvent::Exited { id, code, audit } => {
            note!("centaur: sandbox {id} exited with {code}; {audit}")
        }
        SandboxEvent::Removed { .. } => {}
    }
}

/// Reads and checks everything a run needs (policy, secrets file, user, workdir, mounts,
/// limits) before anything is created; every problem is a usage error.
fn spec(a: &RunArgs) -> anyhow::Result<SandboxSpec> {
    let (policy, policy_name) = runner::spec::load_policy(a.policy.as_deref())?;
    let secrets = runner::spec::load_secrets(a.secrets_from.as_deref())?;
    let (uid, gid) = user(a.user.as_deref())?;
    let workdir = std::fs::canonicalize(&a.workdir)
        .with_context(|| format!("--workdir {}", a.workdir.display()))?;
    if !workdir.is_dir() {
        bail!("--workdir {} is not a directory", workdir.display());
    }
    let mut mounts = Vec::new();
    for (spec, rw) in
        a.ro.iter()
            .map(|s| (s, false))
            .chain(a.rw.iter().map(|s| (s, true)))
    {
        mounts.push(mount(spec, rw)?);
    }
    Ok(SandboxSpec {
        command: a.command.clone(),
        policy,
        policy_name,
        secrets,
        uid,
        gid,
        workdir,
        mounts,
        env: a
            .env
            .iter()
            .map(|e| pair(e, "--env"))
            .collect::<Result<_, _>>()?,
        limits: Limits {
            memory: match a.memory.as_str() {
                "none" => None,
                m => Some(policy::parse_size(m).map_err(|e| anyhow::anyhow!("--memory: {e}"))?),
            },
            pids: Some(a.pids),
            cpus: a.cpus,
        },
        audit: a.audit.clone(),
        labels: a
            .labels
            .iter()
            .map(|l| pair(l, "--label"))
            .collect::<Result<_, _>>()?,
        stdio: Stdio::Inherit,
    })
}

fn pair(s: &str, flag: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("{flag} {s:?}: expected NAME=VALUE"),
    }
}

/// `--user`, or the sudo caller, or nobody. Root is refused: the sandbox never runs as root.
pub fn user(spec: Option<&str>) -> anyhow::Result<(u32, u32)> {
    let parse = |s: &str, what: &str| -> anyhow::Result<u32> {
        s.parse()
            .map_err(|_| anyhow::anyhow!("--user: {what} {s:?} is not a number"))
    };
    let (uid, gid) = match spec {
        Some(s) => {
            let (u, g) = s.split_once(':').unwrap_or((s, s));
            (parse(u, "uid")?, parse(g, "gid")?)
        }
        None => match (std::env::var("SUDO_UID"), std::env::var("SUDO_GID")) {
            (Ok(u), Ok(g)) => (parse(&u, "SUDO_UID")?, parse(&g, "SUDO_GID")?),
            _ => (65534, 65534),
        },
    };
    if uid == 0 || gid == 0 {
        bail!("--user: the sandbox never runs as root (uid or gid 0); pick an unprivileged user");
    }
    Ok((uid, gid))
}

fn mount(spec: &str, rw: bool) -> anyhow::Result<local::Mount> {
    let flag = if rw { "--rw" } else { "--ro" };
    let (src, dest) = spec.split_once(':').unwrap_or((spec, spec));
    let src = std::fs::canonicalize(src).with_context(|| format!("{flag} {spec}"))?;
    let dest = PathBuf::from(dest);
    if !local::bwrap::plain_absolute(&dest) {
        bail!("{flag} {spec}: the destination must be an absolute path without '..'");
    }
    Ok(local::Mount { src, dest, rw })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_defaults_and_refuses_root() {
        assert_eq!(user(Some("1000:1001")).unwrap(), (1000, 1001));
        assert_eq!(user(Some("1000")).unwrap(), (1000, 1000));
        let e = user(Some("0")).unwrap_err().to_string();
        assert!(e.contains("never runs as root"), "{e}");
        assert!(user(Some("abc")).is_err());
    }
}
