//! The per-sandbox supervisor: a small process of its own (`centaur sandbox supervise DIR`)
//! that runs one sandbox and its harness, so a server restart does not kill an agent turn.
//!
//! It spools every harness stdout line to `DIR/spool` (sequence number = line number, from
//! 1), records each turn it writes to the harness in `DIR/turns` (fsynced before the write,
//! so a repeated turn id is never written twice), and answers on the Unix socket `DIR/sock`,
//! one JSON request per line:
//!
//! * `{"op":"status"}` → `{"state":"starting"|"warm"|"running"|"exited"|"failed", "lines":N, "code"?, "error"?}`
//! * `{"op":"turn","id":ID,"line":LINE}` → `{"ok":true,"from":SEQ,"new":BOOL}`: the turn's
//!   output starts at spool line `from`; `new` is false when the turn was written before.
//! * `{"op":"attach","from":SEQ}` → a stream of `{"seq":N,"line":"…"}` from `from` on, live,
//!   then `{"exit":CODE}` when the harness has ended and every line was sent.
//! * `{"op":"launch","spec":SPEC}` → `{"ok":true}` once the harness runs: claims a warm
//!   pool member (started from a spec without a command, state `warm`: its sandbox and
//!   gateway up with a neutral policy); the gateway takes SPEC's policy, secrets and audit
//!   labels, and SPEC's command starts.
//! * `{"op":"put","name":NAME,"data":BASE64}` → `{"ok":true}`: writes an attachment into
//!   the harness's workspace (`attachments/NAME`); with `"to":"home"`, writes a home file
//!   (NAME a relative path under `$HOME`, before the launch). A pod's supervisor only: its
//!   files are not on the server's machine.
//! * `{"op":"session","id":ID}` → `{"ok":true,"exists":BOOL}`: whether a CLI session is in
//!   the pod's home (a pod's supervisor only).
//! * `{"op":"stop"}` → stops the sandbox (namespace, nftables table, cgroup, run dir gone),
//!   answers `{"ok":true}` and exits.
//!
//! In a Kubernetes sandbox pod the same supervisor is the pod's command (`--pod`, see
//! [`process::Mode::Pod`]), and the server reaches its socket through the pod's exec API
//! ([`pod::PodDialer`], one `centaur sandbox relay` per call).
//!
//! It writes its pid to `DIR/pid`. The server ([`Client`]) reattaches after a restart from the last line it committed; if the
//! supervisor is gone, the spool file is still there to read ([`read_spool`]).

pub mod pod;
pub mod process;
mod serve;

use std::io::{BufRead as _, Seek as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf,
};
use tokio::net::UnixStream;

/// What the supervisor runs, written by the server to `DIR/spec.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSpec {
    /// The harness command.
    pub command: Vec<String>,
    /// The sandbox's gateway policy file.
    pub policy: Option<PathBuf>,
    /// The `.env` file with real values for the policy.
    pub secrets_from: Option<PathBuf>,
    /// Who the harness runs as.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// Extra environment (placeholders only).
    pub env: Vec<(String, String)>,
    /// Read-only bind mounts (`SRC`, `DEST`).
    pub mounts: Vec<(PathBuf, PathBuf)>,
    /// Identity labels for the audit records.
    pub labels: Vec<(String, String)>,
    /// The audit log.
    pub audit: PathBuf,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// The harness's working directory (the thread's workspace); default `DIR/work`.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// Mounted writable as the sandbox's `$HOME` (the thread's home, where CLIs keep their
    /// sessions); default a fresh one on the sandbox's private `/tmp`.
    #[serde(default)]
    pub home: Option<PathBuf>,
    /// The route to the control plane at `centaur.internal`, and the token the gateway
    /// injects there.
    #[serde(default)]
    pub internal: Option<Internal>,
}

/// The control plane's API as the sandbox's gateway reaches it.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Internal {
    /// The API's listener.
    pub api: std::net::SocketAddr,
    /// The thread's sandbox token (kept by the gateway; never in the sandbox).
    pub token: String,
}

impl std::fmt::Debug for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Internal")
            .field("api", &self.api)
            .field("token", &"(hidden)")
            .finish()
    }
}

/// The longest harness output line kept whole; longer lines are cut here (and marked).
pub const MAX_LINE: usize = 4 << 20;

/// Files of a supervisor's directory.
pub fn socket(dir: &Path) -> PathBuf {
    dir.join("sock")
}

/// The spool: one harness stdout line per line.
pub fn spool(dir: &Path) -> PathBuf {
    dir.join("spool")
}

/// The harness's working directory.
pub fn workdir(dir: &Path) -> PathBuf {
    dir.join("work")
}

/// A message of an attach stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Spool line `seq`.
    Line(i64, String),
    /// The harness ended with this status; no more lines.
    Exit(i32),
}

/// Talking to a supervisor failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// Its socket does not answer: the supervisor is gone.
    #[error("the sandbox supervisor in {dir} is gone: {source}")]
    Gone {
        /// Its directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It answered with an error.
    #[error("the sandbox supervisor refused: {0}")]
    Refused(String),
    /// It could not start.
    #[error("the sandbox could not start: {0}")]
    Start(String),
}

/// A byte stream to a supervisor's socket.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// What [`Dialer::dial`] returns.
pub type Dialing<'a> =
    Pin<Box<dyn std::future::Future<Output = std::io::Result<Box<dyn Duplex>>> + Send + 'a>>;

/// Opens streams to a supervisor that is not on this machine: a Kubernetes sandbox pod's,
/// through the pod's exec API ([`pod::PodDialer`]).
pub trait Dialer: Send + Sync + std::fmt::Debug {
    /// A new stream to the supervisor's socket, one request per stream.
    fn dial(&self) -> Dialing<'_>;
}

/// How the server reaches a supervisor.
#[derive(Debug, Clone)]
enum Link {
    /// Its socket in its directory, on this machine.
    Unix,
    /// Elsewhere.
    Remote(Arc<dyn Dialer>),
}

/// The server's handle on one supervisor (by its directory).
#[derive(Debug, Clone)]
pub struct Client {
    dir: PathBuf,
    link: Link,
}

impl Client {
    /// The supervisor that owns `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Client {
            dir: dir.into(),
            link: Link::Unix,
        }
    }

    /// A supervisor reached through `dialer`. `dir` names it in errors; its files are not on
    /// this machine, so a spool read after the supervisor is gone ([`read_spool`]) finds
    /// nothing.
    pub fn remote(dir: impl Into<PathBuf>, dialer: Arc<dyn Dialer>) -> Self {
        Client {
            dir: dir.into(),
            link: Link::Remote(dialer),
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `spec`, starts `exe sandbox supervise DIR` in a process group of its own
    /// (a signal to the server's group does not reach it; the server's death does not end
    /// it) and waits until the harness runs, or, for a spec without a command (a warm pool
    /// member), until the sandbox is ready for [`Client::launch`].
    pub async fn start(&self, exe: &Path, spec: &SupervisorSpec) -> Result<(), SupervisorError> {
        use std::os::unix::fs::PermissionsExt;
        let fail = |e: String| SupervisorError::Start(e);
        // The directory lists nothing to the sandbox user, its files are root's alone, and
        // the workdir is the sandbox user's alone.
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m))
                .map_err(|e| fail(format!("{}: {e}", p.display())))
        };
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| fail(format!("{}: {e}", self.dir.display())))?;
        mode(&self.dir, 0o711)?;
        if spec.workdir.is_none() {
            let work = workdir(&self.dir);
            std::fs::create_dir_all(&work).map_err(|e| fail(format!("{}: {e}", work.display())))?;
            mode(&work, 0o700)?;
            std::os::unix::fs::chown(&work, Some(spec.uid), Some(spec.gid))
                .map_err(|e| fail(format!("chown {}: {e}", work.display())))?;
        }
        let text = serde_json::to_string_pretty(spec).map_err(|e| fail(e.to_string()))?;
        let spec_file = self.dir.join("spec.json");
        std::fs::write(&spec_file, text).map_err(|e| fail(format!("spec.json: {e}")))?;
        mode(&spec_file, 0o600)?;
        let log = private_file(&self.dir.join("supervisor.log"), false)
            .map_err(|e| fail(format!("supervisor.log: {e}")))?;
        let mut child = tokio::process::Command::new(exe)
            .args(["sandbox", "supervise"])
            .arg(&self.dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| fail(format!("cannot start {}: {e}", exe.display())))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Err(fail(format!(
                    "the supervisor exited with {st}: {}",
                    self.log_tail()
                )));
            }
            if let Ok(s) = self.status().await {
                match s["state"].as_str() {
                    Some("running") => break,
                    Some("warm") if spec.command.is_empty() => break,
                    Some("failed") => {
                        return Err(fail(
                            s["error"].as_str().unwrap_or("unknown error").to_string(),
                        ));
                    }
                    Some("exited") => {
                        return Err(fail(format!(
                            "the harness exited at once with {}: {}",
                            s["code"],
                            self.log_tail()
                        )));
                    }
                    _ => {}
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(fail("the sandbox did not start within 30 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The supervisor outlives this handle; tokio reaps it if it ends while we run.
        drop(child);
        Ok(())
    }

    /// The last lines of the supervisor's log (the harness's stderr goes there too).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("supervisor.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    async fn connect(&self) -> Result<Box<dyn Duplex>, SupervisorError> {
        let stream = match &self.link {
            Link::Unix => UnixStream::connect(socket(&self.dir))
                .await
                .map(|s| Box::new(s) as Box<dyn Duplex>),
            Link::Remote(d) => d.dial().await,
        };
        stream.map_err(|source| SupervisorError::Gone {
            dir: self.dir.clone(),
            source,
        })
    }

    async fn call(&self, req: Value) -> Result<Value, SupervisorError> {
        let gone = |source| SupervisorError::Gone {
            dir: self.dir.clone(),
            source,
        };
        let s = self.connect().await?;
        let (r, mut w) = tokio::io::split(s);
        w.write_all(format!("{req}\n").as_bytes())
            .await
            .map_err(gone)?;
        w.flush().await.map_err(gone)?;
        let mut line = String::new();
        let n = BufReader::new(r).read_line(&mut line).await.map_err(gone)?;
        if n == 0 {
            return Err(gone(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed without an answer",
            )));
        }
        serde_json::from_str(&line).map_err(|e| SupervisorError::Refused(e.to_string()))
    }

    /// Its state.
    pub async fn status(&self) -> Result<Value, SupervisorError> {
        self.call(json!({"op": "status"})).await
    }

    /// Writes a turn to the harness unless turn `id` was written before; returns the spool
    /// line its output starts at.
    pub async fn turn(&self, id: &str, line: &str) -> Result<i64, SupervisorError> {
        let v = self
            .call(json!({"op": "turn", "id": id, "line": line}))
            .await?;
        if matches!(self.link, Link::Remote(_)) {
            // The spool and turns are the pod's; the marker here records the last use (idle
            // suspension reads it).
            let _ = std::fs::File::create(self.dir.join("turns"));
        }
        match (v["ok"].as_bool(), v["from"].as_i64()) {
            (Some(true), Some(from)) => Ok(from),
            _ => Err(SupervisorError::Refused(
                v["error"].as_str().unwrap_or("no answer").to_string(),
            )),
        }
    }

    /// Writes attachment `name` into the harness's workspace, through a pod's supervisor.
    pub async fn put(&self, name: &str, bytes: &[u8]) -> Result<(), SupervisorError> {
        self.put_to("workspace", name, bytes).await
    }

    /// Writes `path` (relative) under the pod's home, through its supervisor, before the
    /// launch: a harness's `home_files`.
    pub async fn put_home(&self, path: &str, bytes: &[u8]) -> Result<(), SupervisorError> {
        self.put_to("home", path, bytes).await
    }

    /// Whether CLI session `id` is in the pod's home, through its supervisor.
    pub async fn session(&self, id: &str) -> Result<bool, SupervisorError> {
        let v = self.call(json!({"op": "session", "id": id})).await?;
        match (v["ok"].as_bool(), v["exists"].as_bool()) {
            (Some(true), Some(exists)) => Ok(exists),
            _ => Err(SupervisorError::Refused(
                v["error"].as_str().unwrap_or("no answer").to_string(),
            )),
        }
    }

    async fn put_to(&self, to: &str, name: &str, bytes: &[u8]) -> Result<(), SupervisorError> {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
        let v = self
            .call(json!({"op": "put", "to": to, "name": name, "data": data}))
            .await?;
        match v["ok"].as_bool() {
            Some(true) => Ok(()),
            _ => Err(SupervisorError::Refused(
                v["error"].as_str().unwrap_or("no answer").to_string(),
            )),
        }
    }

    /// Claims a warm member: its harness runs `spec` from now on (see the module).
    pub async fn launch(&self, spec: &SupervisorSpec) -> Result<(), SupervisorError> {
        let v = self.call(json!({"op": "launch", "spec": spec})).await?;
        match v["ok"].as_bool() {
            Some(true) => Ok(()),
            _ => Err(SupervisorError::Start(
                v["error"].as_str().unwrap_or("no answer").to_string(),
            )),
        }
    }

    /// SIGTERM to the supervisor (by the pid it recorded): it stops its sandbox and exits.
    /// For a supervisor that does not answer on its socket.
    pub fn terminate(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", pid.trim()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    /// Stops the sandbox; the supervisor exits.
    pub async fn stop(&self) -> Result<(), SupervisorError> {
        self.call(json!({"op": "stop"})).await.map(|_| ())
    }

    /// Follows the spool from line `from`.
    pub async fn attach(&self, from: i64) -> Result<Attached, SupervisorError> {
        let s = self.connect().await?;
        let (r, mut w) = tokio::io::split(s);
        w.write_all(format!("{}\n", json!({"op": "attach", "from": from})).as_bytes())
            .await
            .map_err(|source| SupervisorError::Gone {
                dir: self.dir.clone(),
                source,
            })?;
        w.flush().await.map_err(|source| SupervisorError::Gone {
            dir: self.dir.clone(),
            source,
        })?;
        Ok(Attached {
            lines: BufReader::with_capacity(64 << 10, r),
            partial: Vec::new(),
            _w: w,
        })
    }
}

/// A live attach stream.
pub struct Attached {
    lines: BufReader<ReadHalf<Box<dyn Duplex>>>,
    /// A line read in part: kept here so [`Attached::next`] is cancel-safe (the worker
    /// selects on it beside timers).
    partial: Vec<u8>,
    /// Held open: a remote stream's end of input ends it.
    _w: WriteHalf<Box<dyn Duplex>>,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached")
            .field("partial", &self.partial.len())
            .finish_non_exhaustive()
    }
}

impl Attached {
    /// The next message; `None` when the supervisor went away mid-stream. Cancel-safe: a
    /// line read in part is finished by the next call.
    pub async fn next(&mut self) -> Option<Output> {
        match self.lines.read_until(b'\n', &mut self.partial).await {
            Ok(_) if self.partial.last() == Some(&b'\n') => {
                let line = std::mem::take(&mut self.partial);
                parse_output(&String::from_utf8_lossy(&line))
            }
            // EOF (or an error) before a whole line: the supervisor is gone.
            _ => None,
        }
    }

    /// Whether another message is already buffered (to batch commits).
    pub fn buffered(&self) -> bool {
        self.lines.buffer().contains(&b'\n')
    }
}

fn parse_output(line: &str) -> Option<Output> {
    let v: Value = serde_json::from_str(line).ok()?;
    if let Some(code) = v["exit"].as_i64() {
        return Some(Output::Exit(i32::try_from(code).unwrap_or(-1)));
    }
    Some(Output::Line(
        v["seq"].as_i64()?,
        v["line"].as_str()?.to_string(),
    ))
}

/// `centaur sandbox relay SOCKET`: copies stdin to the supervisor's socket and the socket to
/// stdout, until either side ends (the end of stdin is the caller hanging up: a relay never
/// outlives its exec stream).
pub async fn relay(socket: &Path) -> std::io::Result<()> {
    let conn = UnixStream::connect(socket).await?;
    let (mut from_sock, mut to_sock) = conn.into_split();
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let up = tokio::io::copy(&mut stdin, &mut to_sock);
    let down = async {
        tokio::io::copy(&mut from_sock, &mut stdout).await?;
        stdout.flush().await
    };
    tokio::select! {
        r = up => r.map(|_| ()),
        r = down => r,
    }
}

/// Opens (creating, mode 0600) a file of a supervisor's directory, for appending or anew.
pub fn private_file(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .mode(0o600)
        .open(path)
}

/// Reads the spool file directly from line `from` (the supervisor may be gone): every
/// complete line, with its sequence number.
pub fn read_spool(dir: &Path, from: i64) -> std::io::Result<Vec<(i64, String)>> {
    let f = match std::fs::File::open(spool(dir)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut r = std::io::BufReader::new(f);
    r.rewind()?;
    let mut out = Vec::new();
    let mut seq = 0i64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            break;
        }
        seq += 1;
        if seq >= from {
            buf.pop();
            out.push((seq, String::from_utf8_lossy(&buf).into_owned()));
        }
    }
    Ok(out)
}

/// The turns a supervisor recorded: `(turn id, first spool line)`.
pub fn read_turns(dir: &Path) -> Vec<(String, i64)> {
    std::fs::read_to_string(dir.join("turns"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (id, from) = l.split_once(' ')?;
            Some((id.to_string(), from.parse().ok()?))
        })
        .collect()
}
