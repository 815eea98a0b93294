//! The supervisor process itself (`centaur sandbox supervise DIR`): see the module above.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gateway::credential::store::{SecretEnv, SecretValue};
use sandbox::local::{Limits, Mount};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixListener;
use tokio::process::ChildStdout;
use tokio::sync::{Mutex, watch};

use super::serve::{Phase, State};
use super::{MAX_LINE, SupervisorSpec, lock, socket, spool, workdir};
use crate::runner::local::LocalBackend;
use crate::runner::{SandboxBackend, SandboxSpec, Stdio, internal, spec};

/// Where the supervisor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On the server's machine: it creates the sandbox (namespaces, nftables, cgroup) and
    /// the sandbox's gateway from `DIR/spec.json`.
    Local,
    /// Inside a Kubernetes sandbox pod (the pod is the sandbox; its gateway is a pod of its
    /// own): it starts as a warm member, and a `launch` brings the harness's command,
    /// environment and working directory (the spec's other fields are the gateway pod's
    /// business). The server reaches its socket through the pod's exec API
    /// (`centaur sandbox relay`).
    Pod,
}

/// Runs the supervisor in `dir` until it is told to stop (or, after the harness ended,
/// until nobody has asked for anything for ten minutes).
pub async fn run(dir: PathBuf, mode: Mode) -> anyhow::Result<u8> {
    let s: Option<SupervisorSpec> = match mode {
        Mode::Local => {
            let text = std::fs::read_to_string(dir.join("spec.json"))?;
            Some(serde_json::from_str(&text)?)
        }
        Mode::Pod => {
            std::fs::create_dir_all(&dir)?;
            None
        }
    };
    std::fs::write(dir.join("pid"), format!("{}\n", std::process::id()))?;
    let sock = socket(&dir);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock)?;
    let (claim_tx, mut claim_rx) = tokio::sync::mpsc::channel(1);
    let state = Arc::new(State {
        dir: dir.clone(),
        lines: watch::channel(0).0,
        phase: watch::channel(Phase::Starting).0,
        stdin: Mutex::new(None),
        turns: Mutex::new(HashMap::new()),
        stopper: std::sync::Mutex::new(None),
        workdir: std::sync::Mutex::new(None),
        home: (mode == Mode::Pod)
            .then(|| std::env::var_os("HOME").map(PathBuf::from))
            .flatten(),
        claim: claim_tx,
    });
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(super::serve::serve(
        listener,
        state.clone(),
        stop_tx.clone(),
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;

    let running = {
        let stop = async {
            tokio::select! {
                _ = stop_rx.recv() => {}
                _ = term.recv() => {}
            }
        };
        start(s.as_ref(), &dir, &state, &mut claim_rx, stop).await
    };
    let mut running = match running {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(0),
        Err(e) => {
            eprintln!("centaur supervisor: {e}");
            state.phase.send_replace(Phase::Failed(e));
            // Long enough for the server to read the error.
            tokio::time::sleep(Duration::from_secs(5)).await;
            return Ok(1);
        }
    };
    *state.stdin.lock().await = running.stdin.take();
    *lock(&state.stopper) = Some(running.stopper());
    let stdout = running.stdout.take();
    state.phase.send_replace(Phase::Running);
    let mut events = std::mem::replace(
        &mut running.events,
        tokio::sync::mpsc::unbounded_channel().1,
    );
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            eprintln!("centaur supervisor: {e:?}");
        }
    });
    let reader = tokio::spawn(spool_lines(stdout, state.clone()));
    let waiter = tokio::spawn(async move {
        let _ = reader.await;
        running.wait().await
    });
    until_stopped(&dir, &state, waiter, &mut stop_rx, &mut term).await;
    Ok(0)
}

/// Starts the harness: at once for a local spec with a command, after a claim for a warm
/// one (`s` without a command) and in a pod (`s` is `None`); `None` when told to stop first.
async fn start(
    s: Option<&SupervisorSpec>,
    dir: &Path,
    state: &State,
    claims: &mut tokio::sync::mpsc::Receiver<SupervisorSpec>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Option<crate::runner::Running>, String> {
    let Some(s) = s else {
        return pod_warm(dir, state, claims, stop).await;
    };
    let spec = sandbox_spec(s, dir)?;
    if s.command.is_empty() {
        return warm(spec, dir, state, claims, stop).await;
    }
    LocalBackend
        .start(spec)
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}

/// A warm pool member (a spec without a command): the sandbox and its gateway, with a
/// neutral policy, wait for a claim, which brings the harness's spec (recorded as
/// `spec.json`) and its gateway policy; `None` when told to stop first.
async fn warm(
    spec: SandboxSpec,
    dir: &Path,
    state: &State,
    claims: &mut tokio::sync::mpsc::Receiver<SupervisorSpec>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Option<crate::runner::Running>, String> {
    let warm = LocalBackend::prepare(&spec, true)
        .await
        .map_err(|e| e.to_string())?;
    state.phase.send_replace(Phase::Warm);
    let claim = tokio::select! {
        c = claims.recv() => c,
        () = stop => None,
    };
    let Some(next) = claim else {
        warm.remove().await;
        state.phase.send_replace(Phase::Exited(0));
        // Let a `stop` caller read its answer.
        tokio::time::sleep(Duration::from_millis(50)).await;
        return Ok(None);
    };
    let spec = record_spec(dir, &next).and_then(|()| sandbox_spec(&next, dir));
    match spec {
        Ok(spec) => Ok(Some(warm.launch(spec, true))),
        Err(e) => {
            warm.remove().await;
            Err(e)
        }
    }
}

/// A pod's supervisor before its `launch`: nothing to prepare (the pod and its gateway pod
/// are up), so it waits for the claim, records its spec and starts the command.
async fn pod_warm(
    dir: &Path,
    state: &State,
    claims: &mut tokio::sync::mpsc::Receiver<SupervisorSpec>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Option<crate::runner::Running>, String> {
    state.phase.send_replace(Phase::Warm);
    let claim = tokio::select! {
        c = claims.recv() => c,
        () = stop => None,
    };
    let Some(next) = claim else {
        state.phase.send_replace(Phase::Exited(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
        return Ok(None);
    };
    record_spec(dir, &next)?;
    let workdir = match next.workdir {
        Some(w) => w,
        None => std::env::current_dir().map_err(|e| format!("the working directory: {e}"))?,
    };
    *lock(&state.workdir) = Some(workdir.clone());
    let cmd = crate::runner::pod::PodCommand {
        command: next.command,
        env: next.env,
        workdir,
    };
    crate::runner::pod::start(&cmd)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn record_spec(dir: &Path, spec: &SupervisorSpec) -> Result<(), String> {
    serde_json::to_string_pretty(spec)
        .map_err(std::io::Error::other)
        .and_then(|text| {
            let mut f = super::private_file(&dir.join("spec.json"), false)?;
            f.write_all(text.as_bytes())
        })
        .map_err(|e| format!("spec.json: {e}"))
}

/// Serves until told to stop (or, once the harness ended, ten idle minutes), recording the
/// harness's exit; then stops the sandbox.
async fn until_stopped(
    dir: &Path,
    state: &State,
    waiter: tokio::task::JoinHandle<Result<u8, crate::runner::RunError>>,
    stop_rx: &mut tokio::sync::mpsc::Receiver<()>,
    term: &mut tokio::signal::unix::Signal,
) {
    tokio::pin!(waiter);
    let mut exited = false;
    loop {
        tokio::select! {
            r = &mut waiter, if !exited => {
                let code = match r {
                    Ok(Ok(c)) => i32::from(c),
                    Ok(Err(e)) => { eprintln!("centaur supervisor: {e}"); 125 }
                    Err(e) => { eprintln!("centaur supervisor: {e}"); 125 }
                };
                let _ = std::fs::write(dir.join("exit"), format!("{code}\n"));
                state.phase.send_replace(Phase::Exited(code));
                exited = true;
            }
            _ = stop_rx.recv() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_secs(600)), if exited => break,
        }
    }
    // Stop: the harness gets a second, then the sandbox is removed.
    if let Some(s) = lock(&state.stopper).take() {
        s.stop(Duration::from_secs(1));
    }
    if !exited {
        let code = match tokio::time::timeout(Duration::from_secs(15), &mut waiter).await {
            Ok(Ok(Ok(c))) => i32::from(c),
            _ => 137,
        };
        let _ = std::fs::write(dir.join("exit"), format!("{code}\n"));
        state.phase.send_replace(Phase::Exited(code));
    }
    // Let a `stop` caller read its answer.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn sandbox_spec(s: &SupervisorSpec, dir: &Path) -> Result<SandboxSpec, String> {
    let (mut policy, policy_name) =
        spec::load_policy(s.policy.as_deref()).map_err(|e| e.to_string())?;
    let mut secrets =
        spec::load_secret_map(s.secrets_from.as_deref()).map_err(|e| e.to_string())?;
    if let Some(i) = &s.internal {
        let text = match &s.policy {
            Some(p) => {
                Some(std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?)
            }
            None => None,
        };
        policy = internal::route(text.as_deref(), i.api)?;
        secrets.insert(
            internal::TOKEN_VAR.to_string(),
            SecretValue::new(i.token.as_bytes()),
        );
    }
    let secrets = SecretEnv::new(secrets);
    Ok(SandboxSpec {
        command: s.command.iter().map(Into::into).collect(),
        policy,
        policy_name,
        secrets,
        uid: s.uid,
        gid: s.gid,
        workdir: s.workdir.clone().unwrap_or_else(|| workdir(dir)),
        mounts: s
            .mounts
            .iter()
            .map(|(src, dest)| Mount {
                src: src.clone(),
                dest: dest.clone(),
                rw: false,
            })
            .chain(s.home.iter().map(|home| Mount {
                src: home.clone(),
                dest: sandbox::local::bwrap::HOME.into(),
                rw: true,
            }))
            .collect(),
        env: s.env.clone(),
        limits: Limits {
            memory: s.memory,
            pids: Some(4096),
            cpus: None,
        },
        audit: Some(s.audit.clone()),
        labels: s.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        stdio: Stdio::Piped,
    })
}

/// Appends each stdout line to the spool (a trailing CR dropped, cut at [`MAX_LINE`]), then
/// announces the new count.
async fn spool_lines(stdout: Option<ChildStdout>, state: Arc<State>) {
    let Some(stdout) = stdout else { return };
    let mut file = match super::private_file(&spool(&state.dir), true) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("centaur supervisor: cannot open the spool: {e}");
            return;
        }
    };
    let mut r = BufReader::with_capacity(64 << 10, stdout);
    let mut line = Vec::new();
    let mut count = 0i64;
    loop {
        line.clear();
        let (n, cut) = match read_bounded(&mut r, &mut line).await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("centaur supervisor: reading the harness: {e}");
                break;
            }
        };
        if n == 0 {
            break;
        }
        if cut {
            eprintln!("centaur supervisor: a harness line longer than {MAX_LINE} bytes was cut");
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let text = String::from_utf8_lossy(&line);
        let mut record = Vec::with_capacity(text.len() + 1);
        record.extend_from_slice(text.as_bytes());
        record.push(b'\n');
        if let Err(e) = file.write_all(&record) {
            eprintln!("centaur supervisor: cannot write the spool: {e}");
            break;
        }
        count += 1;
        state.lines.send_replace(count);
    }
}

/// Reads one line (without its newline) into `out`, keeping at most [`MAX_LINE`] bytes;
/// returns the bytes consumed and whether the line was cut.
async fn read_bounded<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
) -> std::io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut cut = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok((consumed, cut));
        }
        let (take, done) = match memchr(buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let data = &buf[..if done { take - 1 } else { take }];
        let room = MAX_LINE.saturating_sub(out.len());
        if data.len() > room {
            cut = true;
        }
        out.extend_from_slice(&data[..data.len().min(room)]);
        r.consume(take);
        consumed += take;
        if done {
            return Ok((consumed, cut));
        }
    }
}

fn memchr(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}
