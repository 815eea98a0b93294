//! The host side of a local sandbox: the tools it drives (`ip`, `nft`, `bwrap`) run with their
//! errors, and where runs live.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where runs keep their state (on tmpfs: a reboot clears it with the namespaces).
pub const RUNS: &str = "/run/centaur/sandbox";

/// Why a sandbox could not be made, run or removed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not privileged enough.
    #[error(
        "local sandboxes need root (or the capabilities CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SETUID, CAP_SETGID and CAP_DAC_OVERRIDE) to create network namespaces, nftables rules and cgroups: run it with sudo"
    )]
    NotRoot,
    /// A program the backend drives is missing.
    #[error("`{tool}` is not installed: apt-get install -y {package}")]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// A program failed.
    #[error("`{command}` failed: {stderr}")]
    Tool {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Every address slot is taken.
    #[error("all {0} address slots of 10.77.0.0/16 are taken: run `centaur sandbox gc`")]
    NoFreeSlot(u32),
    /// The run's rules could not be rendered.
    #[error("network rules: {0}")]
    Model(#[from] netpol::ModelError),
    /// No cgroup hierarchy to put limits in.
    #[error(
        "no cgroup hierarchy at /sys/fs/cgroup (neither v2 nor v1 pids): limits cannot be enforced"
    )]
    NoCgroups,
}

impl Error {
    pub(super) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub(super) fn find(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Runs `tool args` with optional stdin; an error carries its stderr.
pub(super) fn tool(tool: &str, args: &[&str], stdin: Option<&str>) -> Result<(), Error> {
    run(tool, args, stdin).map(|_| ())
}

/// Runs `tool args` and returns its stdout.
pub(super) fn output(tool: &str, args: &[&str]) -> Result<String, Error> {
    run(tool, args, None)
}

pub(super) fn run(name: &str, args: &[&str], stdin: Option<&str>) -> Result<String, Error> {
    let command = format!("{name} {}", args.join(" "));
    let failed = |stderr: String| Error::Tool {
        command: command.clone(),
        stderr,
    };
    let mut child = Command::new(find(name).unwrap_or_else(|| name.into()))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
