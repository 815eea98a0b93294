//! The life of one `centaur sandbox run`: create → start the gateway → run the command →
//! stop the gateway → remove everything. Removal happens on every path out, errors included.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use gateway::Gateway;
use sandbox::local::bwrap::{CA_INSIDE, CA_VARS, HOME, SYSTEM_BUNDLES};
use sandbox::local::{Layout, Sandbox, Signal};
use tokio::process::Child;
use tokio::signal::unix::{SignalKind, signal};

use crate::sandbox_cmd::{Prepared, ca, gateway_config};

/// A line on stderr that never panics: the terminal may be gone (a closed pipe, a hung-up
/// session) and teardown must still run.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Where audit logs go by default; hidden from every sandbox.
const LOG_DIR: &str = "/var/log/centaur";

/// Runs `p` in a new sandbox; returns the command's exit status.
pub async fn run(p: Prepared) -> anyhow::Result<u8> {
    gateway::install_crypto();
    let limits = p.limits;
    let sb =
        tokio::task::spawn_blocking(move || Sandbox::create(&limits, netpol::Ports::default()))
            .await??;
    let result = serve(&p, &sb).await;
    let id = sb.id.clone();
    let removed = tokio::task::spawn_blocking(move || sb.remove()).await?;
    if !p.quiet && result.is_err() {
        note!("centaur: sandbox {id}: removed {}", removed.join(", "));
    }
    result
}

async fn serve(p: &Prepared, sb: &Sandbox) -> anyhow::Result<u8> {
    ca(&sb.dir)?;
    let g = sb.addrs.gateway;
    std::fs::write(sb.dir.join("resolv.conf"), format!("nameserver {g}\n"))?;
    let audit = match &p.audit {
        Some(a) => a.clone(),
        None => {
            std::fs::create_dir_all(LOG_DIR).with_context(|| LOG_DIR.to_string())?;
            Path::new(LOG_DIR).join(format!("sandbox-{}.jsonl", sb.id))
        }
    };
    let config = gateway_config(p, sb, &audit);
    let audit = config
        .audit
        .file
        .as_ref()
        .map_or(audit, |f| PathBuf::from(&f.path));
    if !p.quiet {
        for w in &p.warnings {
            note!("centaur: warning: {w}");
        }
        for v in &p.unset {
            note!(
                "centaur: warning: {v} has no value (not in --secrets-from, not in the environment): requests that need it are refused"
            );
        }
    }
    let gw = Gateway::start_with_env(config, None, p.secrets.clone())
        .await
        .context("the sandbox's gateway could not start")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(gw.run(
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(2),
    ));
    if !p.quiet {
        note!(
            "centaur: sandbox {} ({}) -> gateway {g} [dns :53, http :80, https :443, tunnel :1080]; policy {}; audit {}",
            sb.id,
            sb.addrs.sandbox,
            p.policy_name,
            audit.display()
        );
    }
    let command = sb.command(layout(p, sb), &p.command);
    let status = match tokio::process::Command::from(command).spawn() {
        Ok(mut child) => wait(&mut child, sb).await,
        Err(e) => Err(e),
    };
    let _ = stop.send(());
    gateway.await?;
    let status = status.context("cannot start the sandboxed command")?;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    if !p.quiet {
        note!(
            "centaur: sandbox {} exited with {code}; {}",
            sb.id,
            summary(&audit)
        );
    }
    Ok(u8::try_from(code).unwrap_or(1))
}

/// The command's environment: a plain base, the CA trust variables, the gateway's address,
/// the placeholders and `--env`. Nothing else of this process's environment.
fn environment(p: &Prepared, sb: &Sandbox) -> Vec<(String, String)> {
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
    env.extend(crate::sandbox_config::placeholders(&p.config));
    env.extend(p.env.iter().cloned());
    env
}

fn layout(p: &Prepared, sb: &Sandbox) -> Layout {
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

/// Waits for the command. SIGINT (the terminal sent it to the command too) gives the command
/// two seconds to finish on its own; SIGTERM and SIGHUP are passed on at once. Whatever still
/// runs five seconds later is killed.
async fn wait(child: &mut Child, sb: &Sandbox) -> std::io::Result<ExitStatus> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let outer = child.id();
    let grace = tokio::select! {
        status = child.wait() => return status,
        _ = int.recv() => Duration::from_secs(2),
        _ = term.recv() => Duration::ZERO,
        _ = hup.recv() => Duration::ZERO,
    };
    if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
        return status;
    }
    sb.signal(Signal::TERM, outer);
    if let Ok(status) = tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        return status;
    }
    sb.signal(Signal::KILL, None);
    child.wait().await
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
