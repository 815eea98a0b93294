//! The supervisor process itself (`centaur sandbox supervise DIR`): see the module above.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gateway::credential::store::{SecretEnv, SecretValue};
use sandbox::local::{Limits, Mount};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::{Mutex, watch};

use super::{MAX_LINE, SupervisorSpec, socket, spool, workdir};
use crate::runner::local::LocalBackend;
use crate::runner::{SandboxBackend, SandboxSpec, Stdio, Stopper, internal, spec};

/// Where the harness is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Starting,
    /// A warm pool member: the sandbox and its gateway are up, no harness yet.
    Warm,
    Running,
    Exited(i32),
    Failed(String),
}

struct State {
    dir: PathBuf,
    /// How many lines the spool holds.
    lines: watch::Sender<i64>,
    phase: watch::Sender<Phase>,
    stdin: Mutex<Option<ChildStdin>>,
    turns: Mutex<HashMap<String, i64>>,
    stopper: std::sync::Mutex<Option<Stopper>>,
    /// A warm member's claim: the spec it runs from now on.
    claim: tokio::sync::mpsc::Sender<SupervisorSpec>,
}

/// Runs the supervisor in `dir` until it is told to stop (or, after the harness ended,
/// until nobody has asked for anything for ten minutes).
pub async fn run(dir: PathBuf) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(dir.join("spec.json"))?;
    let s: SupervisorSpec = serde_json::from_str(&text)?;
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
        claim: claim_tx,
    });
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(serve(listener, state.clone(), stop_tx.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;

    let running = match sandbox_spec(&s, &dir) {
        Ok(spec) if s.command.is_empty() => {
            let stop = async {
                tokio::select! {
                    _ = stop_rx.recv() => {}
                    _ = term.recv() => {}
                }
            };
            warm(spec, &dir, &state, &mut claim_rx, stop).await
        }
        Ok(spec) => LocalBackend
            .start(spec)
            .await
            .map(Some)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
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
    let recorded = serde_json::to_string_pretty(&next)
        .map_err(std::io::Error::other)
        .and_then(|text| {
            let mut f = super::private_file(&dir.join("spec.json"), false)?;
            f.write_all(text.as_bytes())
        });
    let spec = recorded
        .map_err(|e| format!("spec.json: {e}"))
        .and_then(|()| sandbox_spec(&next, dir));
    match spec {
        Ok(spec) => Ok(Some(warm.launch(spec, true))),
        Err(e) => {
            warm.remove().await;
            Err(e)
        }
    }
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
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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

async fn serve(listener: UnixListener, state: Arc<State>, stop: tokio::sync::mpsc::Sender<()>) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(handle(conn, state.clone(), stop.clone()));
    }
}

async fn handle(conn: UnixStream, state: Arc<State>, stop: tokio::sync::mpsc::Sender<()>) {
    let (r, mut w) = conn.into_split();
    let mut line = String::new();
    let mut r = BufReader::new(r.take(1 << 26));
    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
        return;
    }
    let req: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
    let reply = match req["op"].as_str() {
        Some("status") => status(&state),
        Some("turn") => turn(&state, &req).await,
        Some("launch") => launch(&state, &req).await,
        Some("attach") => {
            attach(&state, req["from"].as_i64().unwrap_or(1), &mut w).await;
            return;
        }
        Some("stop") => {
            let _ = stop.send(()).await;
            // Answer once the sandbox is gone.
            let mut phase = state.phase.subscribe();
            let _ = tokio::time::timeout(
                Duration::from_secs(20),
                phase.wait_for(|p| matches!(p, Phase::Exited(_) | Phase::Failed(_))),
            )
            .await;
            json!({"ok": true})
        }
        _ => json!({"ok": false, "error": "unknown op"}),
    };
    let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
}

/// A warm member's claim: answers once the harness runs (or could not start).
async fn launch(state: &State, req: &Value) -> Value {
    let spec: SupervisorSpec = match serde_json::from_value(req["spec"].clone()) {
        Ok(s) => s,
        Err(e) => return json!({"ok": false, "error": format!("launch: the spec: {e}")}),
    };
    if spec.command.is_empty() {
        return json!({"ok": false, "error": "launch: the spec has no command"});
    }
    if *state.phase.borrow() != Phase::Warm || state.claim.try_send(spec).is_err() {
        return json!({"ok": false, "error": "launch: this sandbox is not a warm one waiting for a claim"});
    }
    let mut phase = state.phase.subscribe();
    let settled = phase
        .wait_for(|p| !matches!(p, Phase::Warm | Phase::Starting))
        .await
        .map(|p| p.clone());
    match settled {
        Ok(Phase::Running) => json!({"ok": true}),
        Ok(Phase::Failed(e)) => json!({"ok": false, "error": e}),
        Ok(p) => json!({"ok": false, "error": format!("the harness did not start: {p:?}")}),
        Err(_) => json!({"ok": false, "error": "the supervisor is stopping"}),
    }
}

fn status(state: &State) -> Value {
    let lines = *state.lines.borrow();
    match &*state.phase.borrow() {
        Phase::Starting => json!({"state": "starting", "lines": lines}),
        Phase::Warm => json!({"state": "warm", "lines": lines}),
        Phase::Running => json!({"state": "running", "lines": lines}),
        Phase::Exited(c) => json!({"state": "exited", "lines": lines, "code": c}),
        Phase::Failed(e) => json!({"state": "failed", "lines": lines, "error": e}),
    }
}

/// Writes a turn unless its id was written before: the id and the spool position are
/// fsynced to `turns` before the first byte reaches the harness.
async fn turn(state: &State, req: &Value) -> Value {
    let (Some(id), Some(line)) = (req["id"].as_str(), req["line"].as_str()) else {
        return json!({"ok": false, "error": "turn needs id and line"});
    };
    if id.contains([' ', '\n']) || line.contains('\n') {
        return json!({"ok": false, "error": "a turn id has no spaces and a turn is one line"});
    }
    let mut turns = state.turns.lock().await;
    if turns.is_empty() {
        turns.extend(super::read_turns(&state.dir));
    }
    if let Some(from) = turns.get(id) {
        return json!({"ok": true, "from": from, "new": false});
    }
    if *state.phase.borrow() != Phase::Running {
        return json!({"ok": false, "error": "the harness is not running"});
    }
    let from = *state.lines.borrow() + 1;
    let record = super::private_file(&state.dir.join("turns"), true).and_then(|mut f| {
        f.write_all(format!("{id} {from}\n").as_bytes())?;
        f.sync_data()
    });
    if let Err(e) = record {
        return json!({"ok": false, "error": format!("cannot record the turn: {e}")});
    }
    turns.insert(id.to_string(), from);
    let mut stdin = state.stdin.lock().await;
    let Some(w) = stdin.as_mut() else {
        return json!({"ok": false, "error": "the harness has no stdin"});
    };
    let mut bytes = line.as_bytes().to_vec();
    bytes.push(b'\n');
    if let Err(e) = async {
        w.write_all(&bytes).await?;
        w.flush().await
    }
    .await
    {
        return json!({"ok": false, "error": format!("the harness's stdin is closed: {e}")});
    }
    json!({"ok": true, "from": from, "new": true})
}

/// Streams spool lines from `from`, live, then the exit status once the harness ended.
async fn attach(state: &State, from: i64, w: &mut tokio::net::unix::OwnedWriteHalf) {
    let mut lines = state.lines.subscribe();
    let mut phase = state.phase.subscribe();
    let file = tokio::fs::File::open(spool(&state.dir)).await.ok();
    let mut reader = file.map(|f| BufReader::with_capacity(64 << 10, f));
    let mut next = 1i64;
    let mut buf = Vec::new();
    let mut out = Vec::with_capacity(64 << 10);
    loop {
        let count = *lines.borrow_and_update();
        if reader.is_none() && count > 0 {
            reader = tokio::fs::File::open(spool(&state.dir))
                .await
                .ok()
                .map(|f| BufReader::with_capacity(64 << 10, f));
        }
        if let Some(r) = reader.as_mut() {
            while next <= count {
                buf.clear();
                match r.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                if next >= from {
                    let text = String::from_utf8_lossy(&buf);
                    out.extend_from_slice(
                        json!({"seq": next, "line": text}).to_string().as_bytes(),
                    );
                    out.push(b'\n');
                    if out.len() > 32 << 10 && w.write_all(&out).await.is_err() {
                        return;
                    }
                    if out.len() > 32 << 10 {
                        out.clear();
                    }
                }
                next += 1;
            }
        }
        if !out.is_empty() {
            if w.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        let ended = match &*phase.borrow_and_update() {
            Phase::Exited(c) => Some(*c),
            Phase::Failed(_) => Some(125),
            _ => None,
        };
        if let Some(code) = ended {
            if next > *lines.borrow() {
                let _ = w
                    .write_all(format!("{}\n", json!({"exit": code})).as_bytes())
                    .await;
                return;
            }
            continue;
        }
        tokio::select! {
            r = lines.changed() => if r.is_err() { return },
            r = phase.changed() => if r.is_err() { return },
        }
    }
}
