//! `centaur ask`, `centaur threads`, `centaur events`: a person's client for the API.

use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use serde_json::{Value, json};

use crate::client::{Api, ApiFailure, SseEvent, encode};

/// Where the server is and the key to use.
#[derive(Debug, Args)]
pub struct Conn {
    /// The server's URL.
    #[arg(long, env = "CENTAUR_SERVER", default_value = "http://127.0.0.1:8700")]
    pub server: String,
    /// An API key with the `agent` scope (`centaur keys create`).
    #[arg(long, env = "CENTAUR_API_KEY", hide_env_values = true)]
    pub key: String,
}

/// `centaur ask`.
#[derive(Debug, Args)]
pub struct AskArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The thread to continue (default: a new one, `cli:<random>`).
    #[arg(long, value_name = "THREAD_KEY")]
    pub thread: Option<String>,
    /// The harness for a new thread (default: the server's).
    #[arg(long)]
    pub harness: Option<String>,
    /// Print no progress on stderr, only the answer.
    #[arg(short, long)]
    pub quiet: bool,
    /// The question.
    #[arg(required = true, value_name = "MESSAGE")]
    pub message: Vec<String>,
}

/// `centaur events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The thread.
    pub thread: String,
    /// Start after this event id (exclusive).
    #[arg(long, default_value_t = 0)]
    pub after: i64,
    /// Keep following new events (default: print what is stored, then stop).
    #[arg(short, long)]
    pub follow: bool,
    /// Only this execution's events (ends after its terminal state).
    #[arg(long)]
    pub execution: Option<String>,
}

/// Progress on stderr: a status line rewritten in place on a terminal, plain lines elsewhere.
struct Progress {
    tty: bool,
    quiet: bool,
    started: Instant,
    spinner: usize,
    last: String,
}

impl Progress {
    fn status(&mut self, s: &str) {
        if self.quiet {
            return;
        }
        let mut e = std::io::stderr();
        if self.tty {
            const FRAMES: [&str; 4] = ["|", "/", "-", "\\"];
            self.spinner += 1;
            let _ = write!(
                e,
                "\r\x1b[2K{} {s} ({:.1}s)",
                FRAMES[self.spinner % 4],
                self.started.elapsed().as_secs_f64()
            );
        } else if self.last != s {
            let _ = writeln!(e, "centaur: {s}");
        }
        self.last = s.to_string();
    }

    fn line(&mut self, s: &str) {
        if self.quiet {
            return;
        }
        let mut e = std::io::stderr();
        if self.tty {
            let _ = write!(e, "\r\x1b[2K");
        }
        let _ = writeln!(e, "{s}");
    }

    fn clear(&mut self) {
        if self.tty && !self.quiet {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

/// What an event means to a person (`control::harness::describe`), indented.
fn describe(e: &SseEvent) -> Option<String> {
    if e.event != "agent" {
        return None;
    }
    let v: Value = serde_json::from_str(&e.data).ok()?;
    let lines = control::harness::describe::describe(&v);
    (!lines.is_empty()).then(|| {
        lines
            .iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Asks and waits; returns the exit status (0 answered, 1 failed, 130 cancelled).
pub async fn ask(a: AskArgs) -> anyhow::Result<u8> {
    let api = Api::new(&a.conn.server, &a.conn.key)?;
    let thread = a
        .thread
        .clone()
        .unwrap_or_else(|| format!("cli:{:012x}", rand::random::<u64>() >> 16));
    let execute_id = format!("ask_{:016x}", rand::random::<u64>());
    let mut p = Progress {
        tty: std::io::stderr().is_terminal(),
        quiet: a.quiet,
        started: Instant::now(),
        spinner: 0,
        last: String::new(),
    };
    let body = json!({
        "thread_key": thread,
        "execute_id": execute_id,
        "message": a.message.join(" "),
        "harness": a.harness,
    });
    // The same execute_id on a retry: a lost answer does not queue the question twice.
    let queued = retry(&mut p, || api.call("POST", "/agent/execute", Some(&body))).await?;
    let id = queued["execution_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    p.line(&format!("centaur: thread {thread}, execution {id}"));
    let query = format!("execution_id={}", encode(&id));
    let mut last: Option<i64> = None;
    let mut broken_since: Option<Instant> = None;
    loop {
        let mut stream = match api.events(&thread, &query, last).await {
            Ok(s) => {
                if broken_since.take().is_some() {
                    p.line(&format!(
                        "centaur: reconnected; resuming after event {}",
                        last.unwrap_or(0)
                    ));
                }
                s
            }
            Err(e) if e.downcast_ref::<ApiFailure>().is_some() => return Err(e),
            Err(e) => {
                let since = *broken_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(120) {
                    bail!("lost the server for 2 minutes: {e:#}");
                }
                p.status("the server is away; reconnecting");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        p.status("working");
        while let Some(e) = stream.next().await {
            if let Some(i) = e.id {
                last = Some(i);
            }
            if let Some(d) = describe(&e) {
                p.line(&d);
            }
            if let Some(code) = on_event(&mut p, &e) {
                return Ok(code);
            }
        }
        // The stream broke (a server restart): resume after the last event seen.
        broken_since.get_or_insert_with(Instant::now);
        p.line(&format!(
            "centaur: the event stream broke after event {}; reconnecting",
            last.unwrap_or(0)
        ));
    }
}

/// Shows an event; the exit status once the execution ended.
fn on_event(p: &mut Progress, e: &SseEvent) -> Option<u8> {
    if e.event != "execution_state" {
        p.status("working");
        return None;
    }
    let v: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
    match v["status"].as_str().unwrap_or("") {
        "completed" => {
            p.clear();
            println!("{}", v["result_text"].as_str().unwrap_or(""));
            Some(0)
        }
        "failed" => {
            p.clear();
            eprintln!(
                "centaur: the turn failed ({}): {}",
                v["terminal_reason"].as_str().unwrap_or("?"),
                v["error_text"].as_str().unwrap_or("")
            );
            Some(1)
        }
        "cancelled" => {
            p.clear();
            eprintln!("centaur: the turn was cancelled");
            Some(130)
        }
        s => {
            p.status(s);
            None
        }
    }
}

async fn retry<F, Fut>(p: &mut Progress, mut f: F) -> anyhow::Result<Value>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let retryable = e
                    .downcast_ref::<ApiFailure>()
                    .is_none_or(|f| f.status == 503);
                if !retryable || start.elapsed() > Duration::from_secs(60) {
                    return Err(e);
                }
                p.status("waiting for the server");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// `centaur threads`.
pub async fn threads(c: Conn) -> anyhow::Result<u8> {
    let api = Api::new(&c.server, &c.key)?;
    let v = api.call("GET", "/agent/threads", None).await?;
    println!("{:<40} {:>10} {:>8}  harness", "thread", "events", "turns");
    for t in v["threads"].as_array().into_iter().flatten() {
        println!(
            "{:<40} {:>10} {:>8}  {}",
            t["thread_key"].as_str().unwrap_or(""),
            t["last_event_id"],
            t["executions"],
            t["harness"].as_str().unwrap_or("-")
        );
    }
    Ok(0)
}

/// `centaur events`.
pub async fn events(a: EventsArgs) -> anyhow::Result<u8> {
    let api = Api::new(&a.conn.server, &a.conn.key)?;
    let mut query = format!("after_event_id={}", a.after);
    if let Some(e) = &a.execution {
        query.push_str(&format!("&execution_id={}", encode(e)));
    }
    if !a.follow {
        query.push_str("&follow=false");
    }
    let mut s = api.events(&a.thread, &query, None).await?;
    let mut out = std::io::stdout().lock();
    while let Some(e) = s.next().await {
        if writeln!(out, "{}\t{}\t{}", e.id.unwrap_or(0), e.event, e.data).is_err() {
            break;
        }
        let _ = out.flush();
    }
    Ok(0)
}
