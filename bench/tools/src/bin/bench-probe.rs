//! What `bench/run` measures that a load tool cannot: server-sent event latency, WebSocket
//! round trips, many idle keep-alive connections, and cold start. Every measurement prints
//! one JSON object on stdout.
//!
//! A connection dials `--connect` (the origin, a transparent listener, or with `--tunnel` a
//! CONNECT proxy), then speaks TLS with the URL's host as SNI, trusting `--ca` files.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use bench::{Route, percentile};
use clap::{Args, Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(about = "Latency, idle-connection and cold-start probes for bench/run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Target {
    /// TCP address to dial: the origin, a transparent listener, or (with --tunnel) a proxy.
    #[arg(long)]
    connect: String,
    /// Ask --connect for a CONNECT tunnel to the URL's host and port first.
    #[arg(long)]
    tunnel: bool,
    /// The https URL requested (its host is the SNI and Host).
    #[arg(long)]
    url: String,
    /// PEM files to trust (repeat: the origin CA and the MITM CA).
    #[arg(long, required = true)]
    ca: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Server-sent events: latency from the origin's send time to this probe's receipt.
    Sse {
        #[command(flatten)]
        target: Target,
        /// Events to receive (the URL asks the origin for them: /sse?n=N&ms=M).
        #[arg(long, default_value_t = 200)]
        events: usize,
    },
    /// WebSocket echo: round-trip time of small messages, one at a time.
    Ws {
        #[command(flatten)]
        target: Target,
        /// Round trips to time.
        #[arg(long, default_value_t = 2000)]
        count: usize,
    },
    /// Opens N keep-alive connections, one request on each, then holds them until stdin closes.
    Idle {
        #[command(flatten)]
        target: Target,
        /// Connections to open.
        #[arg(long)]
        conns: usize,
    },
    /// Starts COMMAND and times spawn to the first successful response through it.
    Cold {
        #[command(flatten)]
        target: Target,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// The contender's command line.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let out = match cli.command {
        Command::Sse { target, events } => sse(route(&target)?, events).await?,
        Command::Ws { target, count } => ws(route(&target)?, count).await?,
        Command::Idle { target, conns } => idle(route(&target)?, conns).await?,
        Command::Cold {
            target,
            timeout,
            command,
        } => cold(route(&target)?, Duration::from_secs(timeout), &command).await?,
    };
    println!("{out}");
    Ok(())
}

fn route(t: &Target) -> anyhow::Result<(Route, String)> {
    Route::new(
        t.connect.clone(),
        t.tunnel,
        &t.url,
        bench::client_config(&t.ca)?,
    )
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn summary(mut samples_us: Vec<f64>) -> serde_json::Value {
    samples_us.sort_by(f64::total_cmp);
    json!({
        "n": samples_us.len(),
        "p50_us": percentile(&samples_us, 50.0),
        "p99_us": percentile(&samples_us, 99.0),
        "max_us": percentile(&samples_us, 100.0),
    })
}

async fn sse((route, path): (Route, String), events: usize) -> anyhow::Result<serde_json::Value> {
    let mut stream = route.open().await?;
    let head = route.request(&path, "Accept: text/event-stream");
    stream.write_all(head.as_bytes()).await?;
    let mut reader = BufReader::new(stream);
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            bail!("connection closed in the response head");
        }
        let lower = line.to_ascii_lowercase();
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
        if line == "\r\n" {
            break;
        }
    }
    // The body, de-chunked, is scanned for `data: <ns>\n`; each event is stamped when the
    // bytes that complete it have arrived.
    let mut samples = Vec::with_capacity(events);
    let mut body = Vec::new();
    while samples.len() < events {
        let before = body.len();
        if chunked {
            let mut line = String::new();
            reader.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .with_context(|| format!("bad chunk size line: {line:?}"))?;
            if size == 0 {
                bail!("stream ended after {} of {events} events", samples.len());
            }
            body.resize(before + size, 0);
            reader.read_exact(&mut body[before..]).await?;
            let mut crlf = [0; 2];
            reader.read_exact(&mut crlf).await?;
        } else {
            let got = reader.fill_buf().await?;
            if got.is_empty() {
                bail!("stream ended after {} of {events} events", samples.len());
            }
            body.extend_from_slice(got);
            let n = got.len();
            reader.consume(n);
        }
        let at = now_ns();
        while let Some(start) = find(&body, b"data: ") {
            let Some(end) = body[start..].iter().position(|&b| b == b'\n') else {
                break;
            };
            let sent: u128 = std::str::from_utf8(&body[start + 6..start + end])?
                .trim()
                .parse()
                .context("event without a timestamp")?;
            samples.push(at.saturating_sub(sent) as f64 / 1000.0);
            body.drain(..start + end);
        }
    }
    Ok(summary(samples))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn ws((route, path): (Route, String), count: usize) -> anyhow::Result<serde_json::Value> {
    let stream = route.open().await?;
    let url = format!("wss://{}:{}{path}", route.host, route.port);
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .context("WebSocket handshake")?;
    let mut samples = Vec::with_capacity(count);
    let payload = "x".repeat(64);
    for _ in 0..count {
        let start = Instant::now();
        ws.send(Message::text(payload.clone())).await?;
        match ws.next().await {
            Some(Ok(Message::Text(echo))) if echo.as_str() == payload => {}
            other => bail!("expected the echo, got {other:?}"),
        }
        samples.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(summary(samples))
}

async fn idle((route, path): (Route, String), conns: usize) -> anyhow::Result<serde_json::Value> {
    // Open in waves of 100 so that the handshakes do not all time out together.
    let mut open = Vec::with_capacity(conns);
    for wave in (0..conns).collect::<Vec<_>>().chunks(100) {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in wave {
            let (route, path) = (route.clone(), path.clone());
            tasks.spawn(async move {
                let mut stream = route.open().await?;
                let (status, _) = route.get(&mut stream, &path).await?;
                if status != 200 {
                    bail!("status {status}");
                }
                Ok(stream)
            });
        }
        while let Some(done) = tasks.join_next().await {
            open.push(done??);
        }
    }
    println!("{}", json!({ "open": open.len() }));
    // Hold every connection until the caller closes stdin.
    let mut stdin = tokio::io::stdin();
    let mut sink = [0; 64];
    while stdin.read(&mut sink).await? > 0 {}
    Ok(json!({ "closed": open.len() }))
}

async fn cold(
    (route, path): (Route, String),
    timeout: Duration,
    command: &[String],
) -> anyhow::Result<serde_json::Value> {
    let (program, args) = command.split_first().context("no command")?;
    let start = Instant::now();
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let mut last = String::new();
    let served = loop {
        if start.elapsed() > timeout {
            bail!("no response within {timeout:?}; last error: {last}");
        }
        if let Some(status) = child.try_wait()? {
            bail!("{program} exited with {status} before serving");
        }
        let attempt = async {
            let mut stream = route.open().await?;
            route.get(&mut stream, &path).await
        };
        match attempt.await {
            Ok((200, _)) => break start.elapsed(),
            Ok((status, _)) => last = format!("status {status}"),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    child.kill().await?;
    Ok(json!({ "ms": served.as_secs_f64() * 1000.0 }))
}
