//! One tool's worker: `python -m centaur_sdk.worker` in a sandbox of its own behind a
//! gateway of its own, serving calls over JSON lines (the protocol is in the SDK's
//! `worker.py`). Calls run concurrently and are matched to answers by id; a call is bounded
//! by the tool's timeout; when the worker's stdout closes (it crashed or was stopped) every
//! waiting call gets an error and the worker is dead — the host starts a new one for the
//! next call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::oneshot;

use crate::runner::local::LocalBackend;
use crate::runner::{SandboxBackend, SandboxEvent, SandboxSpec, Stopper};

/// The longest line a worker may send (a call's result included).
pub const MAX_LINE: usize = 8 << 20;

/// How long a worker has to import its tool and describe it.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What a tool offers, as its worker described it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Description {
    /// The tool's own summary (its class docstring).
    #[serde(default)]
    pub description: String,
    /// Its methods, sorted by name: `{name, description, parameters}`.
    pub methods: Vec<Method>,
}

/// One endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq, serde::Serialize)]
pub struct Method {
    /// Its name.
    pub name: String,
    /// Its docstring's summary.
    #[serde(default)]
    pub description: String,
    /// Parameter name → `{type, required | default, nullable?, description?}`.
    #[serde(default)]
    pub parameters: serde_json::Map<String, Value>,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The method returned this.
    Result(Value),
    /// It did not: `kind` is `arguments`, `tool`, `timeout` or `crashed`.
    Error {
        /// What failed.
        kind: &'static str,
        /// Why.
        message: String,
    },
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// A started worker.
#[derive(Debug)]
pub struct Worker {
    /// What it serves.
    pub description: Description,
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Pending,
    next: AtomicU64,
    alive: Arc<AtomicBool>,
    stopper: Stopper,
    removed: tokio::sync::watch::Receiver<bool>,
}

impl Worker {
    /// Starts the worker's sandbox and waits for it to describe its tool. Errors carry the
    /// worker's own words (an import error's traceback, a missing class).
    pub async fn start(name: &str, spec: SandboxSpec) -> Result<Worker, String> {
        let mut running = LocalBackend
            .start(spec)
            .await
            .map_err(|e| format!("the sandbox of tool {name} could not start: {e}"))?;
        let stopper = running.stopper();
        let (Some(stdin), Some(stdout)) = (running.stdin.take(), running.stdout.take()) else {
            stopper.stop(Duration::ZERO);
            return Err(format!("the worker of tool {name} did not start"));
        };
        let mut events = std::mem::replace(
            &mut running.events,
            tokio::sync::mpsc::unbounded_channel().1,
        );
        let tool = name.to_string();
        let (gone, removed) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                match e {
                    SandboxEvent::Warning(w) => tracing::warn!("tool {tool}: {w}"),
                    SandboxEvent::Exited { code, .. } => {
                        tracing::info!("tool {tool}: its worker exited with status {code}")
                    }
                    _ => {}
                }
            }
            let _ = running.wait().await;
            gone.send_replace(true);
        });
        let mut out = BufReader::new(stdout);
        let first = tokio::time::timeout(START_TIMEOUT, next_line(&mut out)).await;
        let description = match first {
            Ok(Ok(Some(line))) => described(name, &line),
            Ok(Ok(None)) => Err(format!(
                "the worker of tool {name} exited before describing the tool (the server log has its stderr)"
            )),
            Ok(Err(e)) => Err(format!("the worker of tool {name}: {e}")),
            Err(_) => Err(format!(
                "the worker of tool {name} did not describe the tool within {}s",
                START_TIMEOUT.as_secs()
            )),
        };
        let description = match description {
            Ok(d) => d,
            Err(e) => {
                stopper.stop(Duration::ZERO);
                return Err(e);
            }
        };
        let pending: Pending = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        tokio::spawn(read_answers(
            name.to_string(),
            out,
            pending.clone(),
            alive.clone(),
            stopper.clone(),
        ));
        Ok(Worker {
            description,
            stdin: tokio::sync::Mutex::new(stdin),
            pending,
            next: AtomicU64::new(1),
            alive,
            stopper,
            removed,
        })
    }

    /// Whether it still serves calls.
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Stops it: calls waiting get an error.
    pub fn stop(&self) {
        self.alive.store(false, Ordering::Release);
        self.stopper.stop(Duration::from_secs(1));
    }

    /// Stops it and waits (at most `limit`) until its sandbox is removed.
    pub async fn shut_down(&self, limit: Duration) {
        self.stop();
        let mut removed = self.removed.clone();
        let _ = tokio::time::timeout(limit, removed.wait_for(|r| *r)).await;
    }

    /// Calls `method` with `args`, waiting at most `timeout`. A call that times out stops
    /// the worker (its thread cannot be taken back otherwise); the next call starts a new one.
    pub async fn call(
        &self,
        method: &str,
        args: &serde_json::Map<String, Value>,
        thread_key: Option<&str>,
        timeout: Option<Duration>,
    ) -> Reply {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let line = json!({"id": id, "method": method, "args": args, "context": {"thread_key": thread_key}});
        // One deadline for writing the call and for its answer: a worker that stops reading
        // its stdin (frozen) cannot hold a caller past its timeout either.
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let write = async {
            let mut stdin = self.stdin.lock().await;
            let mut bytes = line.to_string().into_bytes();
            bytes.push(b'\n');
            stdin.write_all(&bytes).await
        };
        let sent = match deadline {
            Some(d) => tokio::time::timeout_at(d, write).await,
            None => Ok(write.await),
        };
        let answer = match sent {
            Ok(Ok(())) if self.alive() => match deadline {
                Some(d) => tokio::time::timeout_at(d, rx).await,
                None => Ok(rx.await),
            },
            Ok(_) => {
                lock(&self.pending).remove(&id);
                return crashed();
            }
            Err(elapsed) => Err(elapsed),
        };
        match answer {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => crashed(),
            Err(_) => {
                lock(&self.pending).remove(&id);
                self.stop();
                Reply::Error {
                    kind: "timeout",
                    message: format!(
                        "{method} did not answer within {}s (the tool's timeout_s); its worker was restarted",
                        timeout.unwrap_or_default().as_secs()
                    ),
                }
            }
        }
    }
}

fn crashed() -> Reply {
    Reply::Error {
        kind: "crashed",
        message: "the tool's worker exited during the call (the server log has its stderr); it is restarted for the next call".into(),
    }
}

fn described(name: &str, line: &[u8]) -> Result<Description, String> {
    let v: Value = serde_json::from_slice(line)
        .map_err(|e| format!("the worker of tool {name} said something that is not JSON: {e}"))?;
    match v["type"].as_str() {
        Some("describe") => serde_json::from_value(v)
            .map_err(|e| format!("the worker of tool {name} described it wrongly: {e}")),
        Some("fatal") => Err(format!(
            "tool {name} failed to load:\n{}",
            v["error"].as_str().unwrap_or("(no detail)").trim_end()
        )),
        _ => Err(format!(
            "the worker of tool {name} did not describe the tool first"
        )),
    }
}

/// Hands each answer to its waiting call; when stdout ends, fails every waiting call.
async fn read_answers(
    name: String,
    mut out: BufReader<ChildStdout>,
    pending: Pending,
    alive: Arc<AtomicBool>,
    stopper: Stopper,
) {
    loop {
        let line = match next_line(&mut out).await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("tool {name}: {e}; stopping its worker");
                stopper.stop(Duration::ZERO);
                break;
            }
        };
        let Ok(v) = serde_json::from_slice::<Value>(&line) else {
            tracing::warn!("tool {name}: its worker wrote a line that is not JSON; ignored");
            continue;
        };
        let Some(id) = v["id"].as_u64() else {
            continue;
        };
        let Some(tx) = lock(&pending).remove(&id) else {
            continue;
        };
        let reply = match v.get("error") {
            Some(e) => Reply::Error {
                kind: if v["kind"] == "arguments" {
                    "arguments"
                } else {
                    "tool"
                },
                message: e.as_str().map_or_else(|| e.to_string(), str::to_string),
            },
            None => Reply::Result(v.get("result").cloned().unwrap_or(Value::Null)),
        };
        let _ = tx.send(reply);
    }
    alive.store(false, Ordering::Release);
    lock(&pending).clear();
}

/// One line of at most [`MAX_LINE`] bytes, without its newline; `None` at the end.
pub(crate) async fn next_line(
    out: &mut BufReader<ChildStdout>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buf = out.fill_buf().await?;
        if buf.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        out.consume(take);
        if line.len() > MAX_LINE {
            return Err(std::io::Error::other(format!(
                "a line longer than {MAX_LINE} bytes"
            )));
        }
        if done {
            line.pop();
            return Ok(Some(line));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
