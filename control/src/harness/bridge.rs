//! The Codex bridge (`centaur sandbox codex-bridge [--resume ID] -- CODEX EXEC ARGS…`), run
//! inside the sandbox as the thread's harness process. It reads one JSON command per stdin
//! line and runs one `codex exec … [resume ID] -` per turn (the prompt on its stdin), its
//! JSONL output passed through verbatim:
//!
//! * `{"type":"turn","prompt":…}`: a turn, queued behind the running one;
//! * `{"type":"steer","prompt":…}`: stops the running turn's process and continues the
//!   same thread with this prompt, as the same turn;
//! * `{"type":"interrupt"}`: stops the running turn, which ends with `turn.failed`.
//!
//! A process that exits without `turn.completed` or `turn.failed` gets a `turn.failed` of
//! the bridge's, saying why, so every turn ends.

use std::collections::VecDeque;
use std::io::Write as _;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Why a running turn's process was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopped {
    Steered,
    Interrupted,
}

struct Run {
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
    /// Whether it printed its turn's last line.
    ended: bool,
    /// Whether it named its thread.
    started: bool,
    resumed: Option<String>,
    stopped: Option<Stopped>,
}

/// Runs the bridge until stdin closes and the last turn ended.
pub async fn run(resume: Option<String>, argv: Vec<String>) -> anyhow::Result<u8> {
    anyhow::ensure!(!argv.is_empty(), "codex-bridge: no codex command after --");
    let mut thread = resume;
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let mut open = true;
    let mut queue: VecDeque<String> = VecDeque::new();
    let mut running: Option<Run> = None;
    loop {
        if running.is_none()
            && let Some(prompt) = queue.pop_front()
        {
            running = Some(start(&argv, thread.as_deref(), &prompt).await?);
        }
        if running.is_none() && !open {
            return Ok(0);
        }
        tokio::select! {
            line = input.next_line(), if open => match line {
                Ok(Some(l)) => command(&l, &mut queue, running.as_mut()),
                _ => open = false,
            },
            line = next(running.as_mut()) => match line {
                Some(l) => {
                    let v: Value = serde_json::from_str(&l).unwrap_or(Value::Null);
                    if let Some(r) = running.as_mut() {
                        match v["type"].as_str() {
                            Some("thread.started") => {
                                r.started = true;
                                thread = v["thread_id"].as_str().map(str::to_string).or(thread);
                            }
                            Some("turn.completed" | "turn.failed") => r.ended = true,
                            _ => {}
                        }
                    }
                    emit(&l);
                }
                None => {
                    if let Some(r) = running.take() {
                        finish(r).await;
                    }
                }
            },
        }
    }
}

async fn next(run: Option<&mut Run>) -> Option<String> {
    match run {
        Some(r) => r.out.next_line().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn command(line: &str, queue: &mut VecDeque<String>, running: Option<&mut Run>) {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            emit(
                &json!({"type": "error", "message": format!("codex-bridge: not a command: {e}")})
                    .to_string(),
            );
            return;
        }
    };
    let prompt = v["prompt"].as_str().unwrap_or("continue").to_string();
    match (v["type"].as_str(), running) {
        (Some("turn"), _) => queue.push_back(prompt),
        (Some("steer"), Some(r)) if !r.ended => {
            r.stopped = Some(Stopped::Steered);
            kill_group(&r.child);
            queue.push_front(prompt);
        }
        (Some("steer"), _) => queue.push_back(prompt),
        (Some("interrupt"), Some(r)) => {
            r.stopped = Some(Stopped::Interrupted);
            kill_group(&r.child);
        }
        (Some("interrupt"), None) => {}
        (t, _) => emit(
            &json!({"type": "error", "message": format!("codex-bridge: unknown command {t:?}")})
                .to_string(),
        ),
    }
}

/// Kills the turn's process group: `codex` is a Node wrapper around the native binary, and
/// both hold the output pipe.
fn kill_group(child: &Child) {
    if let Some(pid) = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

async fn start(argv: &[String], thread: Option<&str>, prompt: &str) -> anyhow::Result<Run> {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    if let Some(id) = thread {
        c.args(["resume", id]);
    }
    c.arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = c
        .spawn()
        .map_err(|e| anyhow::anyhow!("codex-bridge: cannot run {}: {e}", argv[0]))?;
    if let Some(mut w) = child.stdin.take() {
        w.write_all(prompt.as_bytes()).await?;
        w.shutdown().await?;
    }
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("codex-bridge: no stdout"))?;
    let out = BufReader::new(stdout).lines();
    Ok(Run {
        child,
        out,
        ended: false,
        started: false,
        resumed: thread.map(str::to_string),
        stopped: None,
    })
}

/// The turn's process ended: a turn it left open is ended here.
async fn finish(mut r: Run) {
    let status = r.child.wait().await;
    if r.ended || r.stopped == Some(Stopped::Steered) {
        return;
    }
    let code = status.map_or_else(|e| e.to_string(), |s| s.to_string());
    let message = match (r.stopped, &r.resumed, r.started) {
        (Some(_), _, _) => "interrupted".to_string(),
        (None, Some(id), false) => format!("codex could not resume thread {id} ({code})"),
        _ => format!("codex ended before its turn did ({code})"),
    };
    emit(&json!({"type": "error", "message": message}).to_string());
    emit(&json!({"type": "turn.failed", "error": {"message": message}}).to_string());
}
