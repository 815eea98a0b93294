//! `centaur sandbox run|gc|ls`: a command in a local sandbox behind a gateway of its own.
//!
//! `run` creates the sandbox (namespace, link, nftables table, cgroup), a CA of its own, and
//! starts the sandbox's gateway in this process on the sandbox's link; then it runs the
//! command as an unprivileged user with only placeholders in its environment, passes its
//! stdio and exit status through, and removes everything when the command ends or when
//! `centaur` is told to stop.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use gateway::ca::{CaAlgorithm, CaInit};
use gateway::credential::store::SecretEnv;
use policy::Config;
use sandbox::local::{self, Limits, Sandbox};

use crate::sandbox_config::{self as shape, Placement};
use crate::sandbox_run;

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
    /// /var/log/centaur/sandbox-<id>.jsonl (hidden from every sandbox).
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
            let prepared = prepare(&args)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(sandbox_run::run(prepared))
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

/// Everything checked and read before anything is created.
#[derive(Debug)]
pub struct Prepared {
    /// The policy as written.
    pub config: Config,
    /// Where it came from, for messages.
    pub policy_name: String,
    /// Values from `--secrets-from`.
    pub secrets: SecretEnv,
    /// Variables the policy reads that have no value anywhere.
    pub unset: Vec<String>,
    /// Warnings to print.
    pub warnings: Vec<String>,
    /// Sandbox user.
    pub uid: u32,
    /// Sandbox group.
    pub gid: u32,
    /// Canonical workdir.
    pub workdir: PathBuf,
    /// Extra mounts.
    pub mounts: Vec<local::Mount>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Limits.
    pub limits: Limits,
    /// `--audit`.
    pub audit: Option<PathBuf>,
    /// `--label`s.
    pub labels: BTreeMap<String, String>,
    /// `--quiet`.
    pub quiet: bool,
    /// The command.
    pub command: Vec<OsString>,
}

/// Reads and checks everything `run` needs (policy, secrets file, user, workdir, mounts,
/// limits) before anything is created; every problem is a usage error.
pub fn prepare(a: &RunArgs) -> anyhow::Result<Prepared> {
    let (config, policy_name) = match &a.policy {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the policy {}", p.display()))?;
            let c = Config::parse_placed(&text)
                .map_err(|e| anyhow::anyhow!("the policy {} is invalid:\n{e}", p.display()))?;
            (c, p.display().to_string())
        }
        None => (
            Config::parse_placed("{}").map_err(|e| anyhow::anyhow!("{e}"))?,
            "none (every request is denied)".to_string(),
        ),
    };
    let vars = match &a.secrets_from {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the secrets file {}", p.display()))?;
            shape::parse_dotenv(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        None => Default::default(),
    };
    let unset = shape::env_vars(&config)
        .into_iter()
        .filter(|v| {
            vars.get(v).is_none_or(|s| s.expose().is_empty())
                && std::env::var_os(v).is_none_or(|s| s.is_empty())
        })
        .collect();
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
    let mut warnings = shape::overridden(&config);
    if !writable_by(&workdir, uid, gid) {
        warnings.push(format!(
            "the workdir {} is not writable by uid {uid}: pass --user, or --workdir a directory it owns",
            workdir.display()
        ));
    }
    Ok(Prepared {
        warnings,
        config,
        policy_name,
        secrets: SecretEnv::new(vars),
        unset,
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
        quiet: a.quiet,
        command: a.command.clone(),
    })
}

/// Whether the mode bits let `uid`/`gid` write `dir` (ACLs aside).
fn writable_by(dir: &Path, uid: u32, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).is_ok_and(|m| {
        let mode = m.mode();
        (m.uid() == uid && mode & 0o200 != 0)
            || (m.gid() == gid && mode & 0o020 != 0)
            || mode & 0o002 != 0
    })
}

fn pair(s: &str, flag: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("{flag} {s:?}: expected NAME=VALUE"),
    }
}

/// `--user`, or the sudo caller, or nobody. Root is refused: the sandbox never runs as root.
fn user(spec: Option<&str>) -> anyhow::Result<(u32, u32)> {
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

/// Creates the sandbox's CA in its private directory: one CA per sandbox, so nothing one
/// sandbox learns helps against another.
pub fn ca(dir: &Path) -> anyhow::Result<()> {
    gateway::ca::init(
        dir,
        &CaInit {
            name: "Centaur sandbox CA".into(),
            algorithm: CaAlgorithm::EcdsaP256,
            validity: Duration::from_secs(7 * 86400),
            permitted: vec![],
        },
    )?;
    Ok(())
}

/// The gateway configuration for `sb`.
pub fn gateway_config(p: &Prepared, sb: &Sandbox, audit: &Path) -> Config {
    shape::shape(
        p.config.clone(),
        &Placement {
            id: &sb.id,
            gateway: sb.addrs.gateway,
            ports: sb.model().ports,
            ca: (&sb.dir.join("ca.crt"), &sb.dir.join("ca.key")),
            audit,
            labels: &p.labels,
        },
    )
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

    #[test]
    fn writable_by_follows_the_mode_bits() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let meta = std::fs::metadata(d.path()).unwrap();
        let (uid, gid) = (meta.uid(), meta.gid());
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(writable_by(d.path(), uid, gid));
        assert!(!writable_by(d.path(), uid + 1, gid + 1));
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(writable_by(d.path(), uid + 1, gid + 1));
    }
}
