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

mod client;
pub mod pod;
pub mod process;
mod serve;

pub use client::{Attached, Client, Dialer, Dialing, Duplex};

use std::io::{BufRead as _, Seek as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
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

/// A std mutex's guard, a poisoned one included (its holder panicked; the data is still
/// what it left).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
