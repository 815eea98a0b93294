//! The local backend: Linux namespaces, nftables and cgroups from the `sandbox` crate, and
//! the sandbox's gateway in this process on the sandbox's link. The life of one run:
//! create → CA → start the gateway → run the command → stop the gateway → remove
//! everything. Removal happens on every path out, errors included.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use gateway::Gateway;
use gateway::ca::{CaAlgorithm, CaInit};
use sandbox::local::bwrap::{CA_INSIDE, CA_VARS, HOME, SYSTEM_BUNDLES};
use sandbox::local::{Layout, Sandbox, Signal};
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::runner::gateway_config::{self, Placement};
use crate::runner::spec::{SandboxSpec, Stdio};
use crate::runner::{RunError, Running, SandboxBackend, SandboxEvent, Status, Stopper};

/// Where audit logs go by default; hidden from every sandbox.
pub const LOG_DIR: &str = "/var/log/centaur";

/// Sandboxes on this machine (needs root).
#[derive(Debug, Clone, Default)]
pub struct LocalBackend;

type Events = mpsc::UnboundedSender<SandboxEvent>;

impl SandboxBackend for LocalBackend {
    async fn start(&self, spec: SandboxSpec) -> Result<Running, RunError> {
        let warm = LocalBackend::prepare(&spec, false).await?;
        Ok(warm.launch(spec, false))
    }
}

impl LocalBackend {
    /// Creates the sandbox, its CA and its gateway for `spec`, but runs no command yet (a
    /// warm pool member). With `neutral`, the gateway starts with an empty policy (every
    /// request denied) and the spec's configuration otherwise: its limits, timeouts, audit
    /// and pinned upstreams. Without `neutral`, only the sandbox's creation fails here; a
    /// gateway that could not start is reported by [`Warm::launch`]'s run, after everything
    /// was removed.
    pub async fn prepare(spec: &SandboxSpec, neutral: bool) -> Result<Warm, RunError> {
        gateway::install_crypto();
        let (events, rx) = mpsc::unbounded_channel();
        for w in spec.warnings() {
            let _ = events.send(SandboxEvent::Warning(w));
        }
        let limits = spec.limits;
        let sb =
            tokio::task::spawn_blocking(move || Sandbox::create(&limits, netpol::Ports::default()))
                .await??;
        let gateway = serve(spec, &sb, neutral).await;
        if neutral && let Err(e) = gateway {
            // A warm member with no gateway is of no use to anyone.
            let _ = tokio::task::spawn_blocking(move || sb.remove()).await;
            return Err(e);
        }
        Ok(Warm {
            sb,
            gateway,
            events,
            rx,
        })
    }
}

/// A sandbox with its gateway serving and no command (see [`LocalBackend::prepare`]).
#[derive(Debug)]
pub struct Warm {
    sb: Sandbox,
    gateway: Result<Serving, RunError>,
    events: Events,
    rx: mpsc::UnboundedReceiver<SandboxEvent>,
}

/// A sandbox's gateway, serving.
#[derive(Debug)]
struct Serving {
    task: JoinHandle<()>,
    stop: oneshot::Sender<()>,
    shared: std::sync::Arc<gateway::shared::Shared>,
    audit: PathBuf,
}

impl Serving {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

impl Warm {
    /// The sandbox's id.
    pub fn id(&self) -> &str {
        &self.sb.id
    }

    /// Runs `spec`'s command in the sandbox. With `claim`, the gateway first takes the spec's
    /// policy, its secret values and its audit labels (the sandbox was prepared for another
    /// spec, or neutral); the listeners, CA, limits and audit file stay those it started with.
    pub fn launch(self, spec: SandboxSpec, claim: bool) -> Running {
        let Warm {
            sb,
            gateway,
            events,
            rx,
        } = self;
        let mut launched = gateway.map_err(|e| (e, None)).and_then(|g| {
            if claim {
                let config = placed(spec.policy.clone(), &spec, &sb);
                gateway::admin::install_policy(&g.shared, config.policy, spec.secrets.clone());
                g.shared.audit.relabel(config.audit.sandbox);
            }
            spawn(&spec, &sb, &events, g).map_err(|(e, g)| (e, Some(g)))
        });
        let (stdin, stdout) = match &mut launched {
            Ok(l) => (l.child.stdin.take(), l.child.stdout.take()),
            Err(_) => (None, None),
        };
        let (stop, stop_rx) = mpsc::channel(1);
        let (status_tx, status) = watch::channel(Status::Running);
        let id = sb.id.clone();
        let done = tokio::spawn(supervise(sb, launched, stop_rx, status_tx, events));
        Running {
            id,
            events: rx,
            stdin,
            stdout,
            stop: Stopper(stop),
            status,
            done,
        }
    }

    /// Stops the gateway and removes the sandbox; returns what was removed.
    pub async fn remove(self) -> Vec<String> {
        if let Ok(g) = self.gateway {
            g.stop().await;
        }
        let sb = self.sb;
        tokio::task::spawn_blocking(move || sb.remove())
            .await
            .unwrap_or_default()
    }
}

/// A command running in its sandbox, its gateway serving beside it.
struct Launched {
    child: Child,
    gateway: Serving,
}

/// The gateway's configuration for `policy` in this sandbox.
fn placed(policy: policy::Config, spec: &SandboxSpec, sb: &Sandbox) -> policy::Config {
    let default_audit = Path::new(LOG_DIR).join(format!("sandbox-{}.jsonl", sb.id));
    gateway_config::shape(
        policy,
        &Placement {
            id: &sb.id,
            gateway: sb.addrs.gateway,
            ports: sb.model().ports,
            ca: (&sb.dir.join("ca.crt"), &sb.dir.join("ca.key")),
            audit: spec.audit.as_deref().unwrap_or(&default_audit),
            labels: &spec.labels,
        },
    )
}

/// CA, resolver, gateway.
async fn serve(spec: &SandboxSpec, sb: &Sandbox, neutral: bool) -> Result<Serving, RunError> {
    ca(&sb.dir)?;
    name_files(sb)?;
    if spec.audit.is_none() {
        std::fs::create_dir_all(LOG_DIR).map_err(|source| RunError::Io {
            what: LOG_DIR.to_string(),
            source,
        })?;
    }
    let mut config = placed(spec.policy.clone(), spec, sb);
    if neutral {
        config.policy = policy::Policy::default();
    }
    let audit = config
        .audit
        .file
        .as_ref()
        .map_or_else(|| sb.dir.join("audit.jsonl"), |f| PathBuf::from(&f.path));
    let gw = Gateway::start_with_env(config, None, spec.secrets.clone()).await?;
    let shared = gw.shared();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(gw.run(
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(2),
    ));
    Ok(Serving {
        task,
        stop,
        shared,
        audit,
    })
}

/// A command that did not start, and the gateway to stop.
type Failed = (RunError, Option<Serving>);

/// Starts the command; if it cannot start, the gateway comes back with the error.
fn spawn(
    spec: &SandboxSpec,
    sb: &Sandbox,
    events: &Events,
    gateway: Serving,
) -> Result<Launched, (RunError, Serving)> {
    let mut command = tokio::process::Command::from(sb.command(layout(spec, sb), &spec.command));
    if spec.stdio == Stdio::Piped {
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
    }
    match command.spawn() {
        Ok(child) => {
            let _ = events.send(SandboxEvent::Started {
                id: sb.id.clone(),
                sandbox: sb.addrs.sandbox,
                gateway: sb.addrs.gateway,
                policy: spec.policy_name.clone(),
                audit: gateway.audit.clone(),
            });
            Ok(Launched { child, gateway })
        }
        Err(e) => Err((RunError::Spawn(e), gateway)),
    }
}

/// Waits for the command (or a stop request), stops the gateway, removes the sandbox.
async fn supervise(
    sb: Sandbox,
    launched: Result<Launched, Failed>,
    stop: mpsc::Receiver<Duration>,
    status: watch::Sender<Status>,
    events: Events,
) -> Result<u8, RunError> {
    let result = match launched {
        Ok(l) => finish(l, &sb, stop, &status, &events).await,
        Err((e, gateway)) => {
            if let Some(g) = gateway {
                g.stop().await;
            }
            Err(e)
        }
    };
    let id = sb.id.clone();
    let removed = tokio::task::spawn_blocking(move || sb.remove()).await?;
    let _ = events.send(SandboxEvent::Removed { id, removed });
    status.send_replace(Status::Exited(*result.as_ref().unwrap_or(&1)));
    result
}

async fn finish(
    mut l: Launched,
    sb: &Sandbox,
    stop: mpsc::Receiver<Duration>,
    status: &watch::Sender<Status>,
    events: &Events,
) -> Result<u8, RunError> {
    let exit = wait(&mut l.child, sb, stop, status).await;
    let audit = l.gateway.audit.clone();
    l.gateway.stop().await;
    let exit = exit.map_err(RunError::Spawn)?;
    let code = exit
        .code()
        .or_else(|| exit.signal().map(|s| 128 + s))
        .unwrap_or(1);
    let code = u8::try_from(code).unwrap_or(1);
    let _ = events.send(SandboxEvent::Exited {
        id: sb.id.clone(),
        code,
        audit: summary(&audit),
    });
    Ok(code)
}

/// Waits for the command (see [`super::wait_or_stop`]); a stop's TERM goes to every process
/// in the sandbox but the outermost, its KILL to all of them.
async fn wait(
    child: &mut Child,
    sb: &Sandbox,
    stop: mpsc::Receiver<Duration>,
    status: &watch::Sender<Status>,
) -> std::io::Result<ExitStatus> {
    let outer = child.id();
    super::wait_or_stop(child, stop, status, |kill| {
        if kill {
            sb.signal(Signal::KILL, None);
        } else {
            sb.signal(Signal::TERM, outer);
        }
    })
    .await
}

/// The command's environment: a plain base, the CA trust variables, the gateway's address,
/// the placeholders and `--env`. Nothing else of this process's environment.
fn environment(p: &SandboxSpec, sb: &Sandbox) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PATH".to_string(),
            std::env::var("PATH")
                .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into()),
        ),
        ("HOME".into(), HOME.into()),
        ("USER".into(), "sandbox".into()),
        ("LOGNAME".into(), "sandbox".into()),
    ];
    for pass in ["TERM", "LANG", "LC_ALL", "TZ", "COLORTERM", "NO_COLOR"] {
        if let Ok(v) = std::env::var(pass) {
            env.push((pass.into(), v));
        }
    }
    env.extend(
        CA_VARS
            .iter()
            .map(|v| (v.to_string(), CA_INSIDE.to_string())),
    );
    let g = sb.addrs.gateway;
    env.push(("CENTAUR_SANDBOX".into(), sb.id.clone()));
    env.push(("CENTAUR_GATEWAY".into(), g.to_string()));
    env.push(("CENTAUR_PROXY".into(), format!("http://{g}:1080")));
    env.extend(gateway_config::placeholders(&p.policy));
    env.extend(p.env.iter().cloned());
    env
}

fn layout(p: &SandboxSpec, sb: &Sandbox) -> Layout {
    let existing = |paths: &[&str]| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = paths
            .iter()
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect();
        v.dedup();
        v
    };
    Layout {
        id: String::new(),
        cgroup_procs: Vec::new(),
        seccomp: None,
        uid: p.uid,
        gid: p.gid,
        workdir: p.workdir.clone(),
        mounts: p.mounts.clone(),
        ca_file: sb.dir.join("ca.crt"),
        ca_bundles: existing(&SYSTEM_BUNDLES),
        resolv: (
            sb.dir.join("resolv.conf"),
            std::fs::canonicalize("/etc/resolv.conf").unwrap_or_else(|_| "/etc/resolv.conf".into()),
        ),
        hosts: (
            sb.dir.join("hosts"),
            std::fs::canonicalize("/etc/hosts").unwrap_or_else(|_| "/etc/hosts".into()),
        ),
        hidden: existing(&[
            "/home",
            "/root",
            "/run/centaur",
            "/run/netns",
            LOG_DIR,
            "/var/tmp",
        ]),
        env: environment(p, sb),
    }
}

/// The sandbox's resolver (its gateway) and its own hosts file: only its own names, so
/// nothing the host lists in /etc/hosts resolves around the gateway's DNS.
fn name_files(sb: &Sandbox) -> Result<(), RunError> {
    let write = |name: &str, text: String| {
        let path = sb.dir.join(name);
        std::fs::write(&path, text).map_err(|source| RunError::Io {
            what: path.display().to_string(),
            source,
        })
    };
    write("resolv.conf", format!("nameserver {}\n", sb.addrs.gateway))?;
    write(
        "hosts",
        format!(
            "127.0.0.1 localhost sandbox-{}\n::1 localhost ip6-localhost ip6-loopback\n",
            sb.id
        ),
    )
}

/// Creates the sandbox's CA in its private directory: one CA per sandbox, so nothing one
/// sandbox learns helps against another.
fn ca(dir: &Path) -> Result<(), RunError> {
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

/// "N records (A allowed, D denied)" from the audit file.
fn summary(audit: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(audit) else {
        return format!("audit log {} unreadable", audit.display());
    };
    let (mut allowed, mut denied, mut other) = (0, 0, 0);
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match v["action"].as_str() {
            Some("allow") => allowed += 1,
            Some("reject") => denied += 1,
            Some(_) => other += 1,
            None => {}
        }
    }
    format!(
        "audit log {}: {} records ({allowed} allowed, {denied} denied, {other} other)",
        audit.display(),
        allowed + denied + other
    )
}
