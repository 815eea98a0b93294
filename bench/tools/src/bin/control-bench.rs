//! Load for the control plane's API (`bench/control` drives it against SQLite and
//! PostgreSQL): message appends per second from many clients, append → SSE delivery latency
//! with many followers, and `execute` → first harness output on a cold sandbox. Prints one
//! JSON object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// The server, http://HOST:PORT.
    #[arg(long)]
    server: String,
    /// An API key with the agent scope.
    #[arg(long)]
    key: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// `clients` clients append messages (each on its own thread) for `seconds`.
    Appends {
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// `followers` SSE streams on one thread while one client appends `rate` messages/s.
    Delivery {
        #[arg(long, default_value_t = 100)]
        followers: usize,
        #[arg(long, default_value_t = 50)]
        rate: u64,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// `runs` times: a new thread, `execute`, time to its first `output` event. With
    /// `--warm`, each run first waits (untimed) until the server's warm pool is full
    /// (`GET /agent/pool`; an admin key), so each new thread claims a warm sandbox.
    Cold {
        #[arg(long, default_value_t = 10)]
        runs: usize,
        #[arg(long)]
        warm: bool,
    },
    /// One turn whose harness prints `lines` lines as fast as it can: harness output lines
    /// committed (each with its canonical event) and streamed per second.
    Output {
        #[arg(long, default_value_t = 20_000)]
        lines: usize,
    },
}

type Http = Client<HttpConnector, Full<Bytes>>;

struct Api {
    base: String,
    key: String,
    http: Http,
}

impl Api {
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let req = hyper::Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        self.send(path, req).await
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let req =
            hyper::Request::get(format!("{}{path}", self.base)).body(Full::new(Bytes::new()))?;
        self.send(path, req).await
    }

    async fn send(
        &self,
        path: &str,
        mut req: hyper::Request<Full<Bytes>>,
    ) -> anyhow::Result<Value> {
        req.headers_mut()
            .insert("authorization", format!("Bearer {}", self.key).parse()?);
        let resp = self.http.request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{path}: {status} {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Opens an SSE stream; calls `on(event_kind, data)` per event until it returns false.
    async fn follow(
        &self,
        thread: &str,
        query: &str,
        mut on: impl FnMut(&str, &str) -> bool,
    ) -> anyhow::Result<()> {
        let req = hyper::Request::get(format!(
            "{}/agent/threads/{thread}/events?{query}",
            self.base
        ))
        .header("authorization", format!("Bearer {}", self.key))
        .body(Full::new(Bytes::new()))?;
        let mut body = self.http.request(req).await?.into_body();
        let mut buf = Vec::new();
        let (mut kind, mut data) = (String::new(), String::new());
        while let Some(frame) = body.frame().await {
            let Ok(d) = frame?.into_data() else { continue };
            buf.extend_from_slice(&d);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                if line.is_empty() {
                    if !kind.is_empty() && !on(&kind, &data) {
                        return Ok(());
                    }
                    kind.clear();
                    data.clear();
                } else if let Some(k) = line.strip_prefix("event: ") {
                    kind = k.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
        }
        Ok(())
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(|a, b| a.total_cmp(b));
    json!({
        "count": ms.len(),
        "p50_ms": percentile(&ms, 0.5),
        "p99_ms": percentile(&ms, 0.99),
        "max_ms": ms.last().copied().unwrap_or(f64::NAN),
        "min_ms": ms.first().copied().unwrap_or(f64::NAN),
    })
}

async fn spawn(api: &Api, thread: &str) -> anyhow::Result<i64> {
    let v = api
        .post("/agent/spawn", &json!({"thread_key": thread}))
        .await?;
    v["assignment_generation"].as_i64().context("no generation")
}

async fn appends(api: Arc<Api>, clients: usize, seconds: u64) -> anyhow::Result<Value> {
    let run = format!("{:08x}", std::process::id());
    let mut tasks = Vec::new();
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs(seconds);
    for c in 0..clients {
        let api = api.clone();
        let thread = format!("bench:{run}-{c}");
        tasks.push(tokio::spawn(async move {
            let generation = spawn(&api, &thread).await?;
            tokio::time::sleep_until(start.into()).await;
            let mut lat = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                api.post(
                    "/agent/message",
                    &json!({"thread_key": thread, "assignment_generation": generation,
                            "parts": [{"type": "text", "text": "a message of about sixty bytes, give or take"}]}),
                )
                .await?;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let n = all.len();
    Ok(json!({"clients": clients, "seconds": seconds, "appends": n,
              "appends_per_s": n as f64 / seconds as f64, "latency": summary(all)}))
}

async fn delivery(
    api: Arc<Api>,
    followers: usize,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Value> {
    let thread = format!("bench:deliver-{:08x}", std::process::id());
    let generation = spawn(&api, &thread).await?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let total = (rate * seconds) as usize;
    let mut tasks = Vec::new();
    let ready = Arc::new(tokio::sync::Barrier::new(followers + 1));
    for _ in 0..followers {
        let (api, thread, sent, ready) = (api.clone(), thread.clone(), sent.clone(), ready.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let follow = api.follow(&thread, "after_event_id=0", |kind, data| {
                if kind != "message" {
                    return true;
                }
                let now = Instant::now();
                let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                let id = v["message_id"].as_str().unwrap_or("");
                if id == "warmup" {
                    return true;
                }
                if let Some(t) = sent.lock().map(|m| m.get(id).copied()).ok().flatten() {
                    lat.push(now.duration_since(t).as_secs_f64() * 1e3);
                }
                lat.len() < total
            });
            ready.wait().await;
            tokio::time::timeout(Duration::from_secs(seconds + 30), follow)
                .await
                .ok();
            lat
        }));
    }
    // The followers connect (their replay is empty but for the warm-up message).
    api.post(
        "/agent/message",
        &json!({"thread_key": thread, "assignment_generation": generation,
        "message_id": "warmup", "parts": [{"type": "text", "text": "warm up"}]}),
    )
    .await?;
    ready.wait().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gap = Duration::from_micros(1_000_000 / rate.max(1));
    let mut tick = tokio::time::interval(gap);
    for i in 0..total {
        tick.tick().await;
        let id = format!("m{i}");
        sent.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(id.clone(), Instant::now());
        api.post(
            "/agent/message",
            &json!({"thread_key": thread, "assignment_generation": generation,
            "message_id": id, "parts": [{"type": "text", "text": "delivered to every follower"}]}),
        )
        .await?;
    }
    let mut all = Vec::new();
    let mut short = 0;
    for t in tasks {
        let lat = t.await?;
        if lat.len() < total {
            short += 1;
        }
        all.extend(lat);
    }
    Ok(
        json!({"followers": followers, "rate": rate, "messages": total,
              "followers_missing_events": short, "latency": summary(all)}),
    )
}

async fn cold(api: Arc<Api>, runs: usize, warm: bool) -> anyhow::Result<Value> {
    let mut ms = Vec::new();
    for i in 0..runs {
        if warm {
            pool_full(&api).await?;
        }
        let thread = format!("bench:cold-{:08x}-{i}", std::process::id());
        let t = Instant::now();
        let v = api
            .post(
                "/agent/execute",
                &json!({"thread_key": thread, "message": "run: true"}),
            )
            .await?;
        let exe = v["execution_id"]
            .as_str()
            .context("no execution id")?
            .to_string();
        let mut first = None;
        api.follow(&thread, &format!("execution_id={exe}"), |kind, _| {
            if kind == "output" && first.is_none() {
                first = Some(t.elapsed());
            }
            first.is_none()
        })
        .await?;
        ms.push(first.context("no output")?.as_secs_f64() * 1e3);
        api.post(&format!("/agent/threads/{thread}/release"), &json!({}))
            .await?;
    }
    Ok(json!({"runs": runs, "first_output": summary(ms)}))
}

/// Waits until the warm pool holds its target (at most a minute).
async fn pool_full(api: &Api) -> anyhow::Result<()> {
    for _ in 0..600 {
        let v = api.get("/agent/pool").await?;
        if v["target"].as_u64().is_some_and(|t| t > 0) && v["ready"] == v["target"] {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bail!("the warm pool did not fill within a minute")
}

async fn output(api: Arc<Api>, lines: usize) -> anyhow::Result<Value> {
    let thread = format!("bench:output-{:08x}", std::process::id());
    // A warm sandbox first, so the measure is the output path alone.
    let warm = api
        .post(
            "/agent/execute",
            &json!({"thread_key": thread, "message": "run: true"}),
        )
        .await?;
    let exe = warm["execution_id"].as_str().context("no execution id")?;
    api.follow(&thread, &format!("execution_id={exe}"), |kind, data| {
        !(kind == "execution_state" && data.contains("\"completed\""))
    })
    .await?;
    let v = api
        .post(
            "/agent/execute",
            &json!({"thread_key": thread, "message": format!("lines: {lines} run: true")}),
        )
        .await?;
    let exe = v["execution_id"]
        .as_str()
        .context("no execution id")?
        .to_string();
    let (mut first, mut outputs, mut agents) = (None, 0usize, 0usize);
    let mut last = Instant::now();
    api.follow(&thread, &format!("execution_id={exe}"), |kind, data| {
        match kind {
            "output" => {
                first.get_or_insert_with(Instant::now);
                outputs += 1;
            }
            "agent" => agents += 1,
            _ => {}
        }
        last = Instant::now();
        !(kind == "execution_state" && data.contains("\"completed\""))
    })
    .await?;
    let secs = last
        .duration_since(first.context("no output")?)
        .as_secs_f64();
    api.post(&format!("/agent/threads/{thread}/release"), &json!({}))
        .await?;
    Ok(
        json!({"lines": outputs, "agent_events": agents, "seconds": secs,
              "lines_per_s": outputs as f64 / secs}),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    let http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(c);
    let api = Arc::new(Api {
        base: a.server.trim_end_matches('/').to_string(),
        key: a.key,
        http,
    });
    let out = match a.cmd {
        Cmd::Appends { clients, seconds } => appends(api, clients, seconds).await?,
        Cmd::Delivery {
            followers,
            rate,
            seconds,
        } => delivery(api, followers, rate, seconds).await?,
        Cmd::Cold { runs, warm } => cold(api, runs, warm).await?,
        Cmd::Output { lines } => output(api, lines).await?,
    };
    println!("{out}");
    Ok(())
}
