//! The supervisor's socket: one JSON request per connection (see the module above), served
//! from the state [`super::process`] keeps.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::ChildStdin;
use tokio::sync::{Mutex, watch};

use super::spool;
use super::{SupervisorSpec, lock};
use crate::runner::Stopper;

/// Where the harness is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    Starting,
    /// A warm pool member: the sandbox and its gateway are up, no harness yet.
    Warm,
    Running,
    Exited(i32),
    Failed(String),
}

/// What the supervisor knows, shared by its socket's handlers.
pub(super) struct State {
    pub(super) dir: PathBuf,
    /// How many lines the spool holds.
    pub(super) lines: watch::Sender<i64>,
    pub(super) phase: watch::Sender<Phase>,
    pub(super) stdin: Mutex<Option<ChildStdin>>,
    pub(super) turns: Mutex<HashMap<String, i64>>,
    pub(super) stopper: std::sync::Mutex<Option<Stopper>>,
    /// A pod's harness's workspace, once it runs (where `put` writes attachments).
    pub(super) workdir: std::sync::Mutex<Option<PathBuf>>,
    /// A pod's home (where `put` writes home files).
    pub(super) home: Option<PathBuf>,
    /// A warm member's claim: the spec it runs from now on.
    pub(super) claim: tokio::sync::mpsc::Sender<SupervisorSpec>,
}

/// Accepts connections until the process ends.
pub(super) async fn serve(
    listener: UnixListener,
    state: Arc<State>,
    stop: tokio::sync::mpsc::Sender<()>,
) {
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
        Some("put") => put(&state, &req),
        Some("session") => session(&state, &req),
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

/// Writes an attachment into the workspace of a pod's harness, as the supervisor's own user
/// (the pod's, the harness's).
fn put(state: &State, req: &Value) -> Value {
    use base64::Engine as _;
    let (Some(name), Some(data)) = (req["name"].as_str(), req["data"].as_str()) else {
        return json!({"ok": false, "error": "put needs name and data"});
    };
    let bytes = match base64::engine::general_purpose::STANDARD.decode(data) {
        Ok(b) => b,
        Err(e) => return json!({"ok": false, "error": format!("put: data is not base64: {e}")}),
    };
    let (uid, gid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let written = if req["to"] == "home" {
        // A harness's home file, before its launch (the pod's HOME).
        let Some(home) = state.home.clone() else {
            return json!({"ok": false, "error": "put: only a pod's supervisor takes home files"});
        };
        crate::workspace::write_under(&home, name, &bytes, uid, gid)
    } else {
        let Some(work) = lock(&state.workdir).clone() else {
            return json!({"ok": false, "error": "put: only a pod's supervisor, once its harness runs, takes files"});
        };
        crate::workspace::write_attachment(&work, name, &bytes, uid, gid)
    };
    match written {
        Ok(()) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "error": format!("put {name}: {e}")}),
    }
}

/// Whether a CLI session is in a pod's home (a thread's claim keeps it across pods).
fn session(state: &State, req: &Value) -> Value {
    let (Some(home), Some(id)) = (&state.home, req["id"].as_str()) else {
        return json!({"ok": false, "error": "session needs an id, and a pod's home"});
    };
    let inside = home.to_string_lossy();
    json!({"ok": true, "exists": crate::harness::session_in(home, &inside, id)})
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
