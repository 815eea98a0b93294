//! The server's side of a supervisor: [`Client`], over its Unix socket or, for a
//! Kubernetes sandbox pod, a [`Dialer`] (the pod's exec API), and the attach stream.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf,
};
use tokio::net::UnixStream;

use super::{Output, SupervisorError, SupervisorSpec, private_file, socket, workdir};

/// A byte stream to a supervisor's socket.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// What [`Dialer::dial`] returns.
pub type Dialing<'a> =
    Pin<Box<dyn std::future::Future<Output = std::io::Result<Box<dyn Duplex>>> + Send + 'a>>;

/// Opens streams to a supervisor that is not on this machine: a Kubernetes sandbox pod's,
/// through the pod's exec API ([`super::pod::PodDialer`]).
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
    /// this machine, so a spool read after the supervisor is gone ([`super::read_spool`]) finds
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
