//! `centaur demo`: the platform in half a minute, offline. `centaur server` on a temporary
//! SQLite store, a key, a question through the API to the built-in scripted agent (there is
//! no model API here), which runs a command in its sandbox and calls an API whose key only
//! its gateway holds; the events streamed live; the server killed with `kill -9` mid-turn
//! and restarted, the stream resumed with `Last-Event-ID`: nothing lost, nothing repeated;
//! then the gateway's audit records.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use testkit::Origin;
use tokio::process::{Child, Command};

use crate::client::{Api, SseEvent, encode};
use crate::demo::{PLACEHOLDER, policy_yaml, print_audit};

/// The demo's files and its server.
struct Demo {
    dir: tempfile::TempDir,
    data: PathBuf,
    config: PathBuf,
    exe: PathBuf,
    server: Child,
}

/// Runs the demo, printing what happens.
pub async fn run() -> anyhow::Result<()> {
    sandbox::local::preflight()
        .context("the demo runs real sandboxes (or try `centaur demo --gateway`)")?;
    gateway::install_crypto();
    let dir = tempfile::Builder::new().prefix("centaur-demo-").tempdir()?;
    let d = dir.path().to_path_buf();
    set_mode(&d, 0o711)?;
    let real_key = format!("sk-live-{:032x}", rand::random::<u128>());
    let bearer = format!("Bearer {real_key}");
    let origin =
        Origin::https_requiring(&["api.demo.test"], true, Some(("authorization", &bearer))).await?;
    std::fs::write(d.join("origin-ca.pem"), &origin.ca_pem)?;
    std::fs::write(d.join("policy.yaml"), policy_yaml(&d, &origin))?;
    std::fs::write(d.join("secrets.env"), format!("DEMO_API_KEY={real_key}\n"))?;
    let data = d.join("data");
    let config = d.join("server.yaml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    std::fs::write(&config, server_yaml(&data, port)?)?;
    let exe = std::env::current_exe()?;
    println!(
        "== Centaur demo: the platform. Every thread in its own sandbox, behind its own gateway ==\n"
    );
    println!("(1) centaur server --config {}", config.display());
    indent(&std::fs::read_to_string(&config)?);
    let server = start(&exe, &config, &data).await?;
    let base = format!("http://127.0.0.1:{port}");
    println!(
        "    -> listening on {base}; store: SQLite {}",
        data.join("centaur.db").display()
    );
    let mut demo = Demo {
        dir,
        data,
        config,
        exe,
        server,
    };
    let api = Api::new(&base, &demo.key()?)?;
    let thread = format!("demo:{:08x}", rand::random::<u32>());
    let question = "sleep: 3 run: id; ls /run/centaur";
    let body = json!({"thread_key": thread, "execute_id": "demo-1", "message": question});
    let queued = api.call("POST", "/agent/execute", Some(&body)).await?;
    let exe_id = queued["execution_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!(
        "\n(3) POST /agent/execute {body}\n    -> 202 {} {}",
        exe_id, queued["status"]
    );
    let seen = demo.follow(&api, &thread, &exe_id).await?;
    check_replay(&api, &thread, &exe_id, &seen).await?;
    if !origin
        .seen()
        .iter()
        .any(|r| r["headers"]["authorization"] == bearer.as_str())
    {
        bail!("the API never received the real key");
    }
    println!(
        "\n(7) the API received `Authorization: Bearer sk-live-…` (the real key); the sandbox only ever held {PLACEHOLDER:?}\n    (the API's echo in the answer shows the placeholder: the gateway scrubs real values out of responses)"
    );
    print_audit(&audit_file(&demo.data)?, "(8)")?;
    demo.finish(&api, &thread).await
}

impl Demo {
    /// `centaur keys create`, as a person would run it.
    fn key(&self) -> anyhow::Result<String> {
        let out = std::process::Command::new(&self.exe)
            .args([
                "keys",
                "create",
                "--name",
                "demo",
                "--scopes",
                "agent",
                "--data-dir",
            ])
            .arg(&self.data)
            .output()?;
        if !out.status.success() {
            bail!(
                "centaur keys create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let key = String::from_utf8(out.stdout)?.trim().to_string();
        println!(
            "\n(2) centaur keys create --name demo --scopes agent  -> {}… (printed once; the store keeps its SHA-256)",
            key.get(..12).unwrap_or("")
        );
        Ok(key)
    }

    /// Follows the execution live; `kill -9`s the server at the agent's first heartbeat and
    /// resumes with `Last-Event-ID`. Returns the ids seen.
    async fn follow(&mut self, api: &Api, thread: &str, exe_id: &str) -> anyhow::Result<Vec<i64>> {
        println!(
            "\n(4) GET /agent/threads/{thread}/events?execution_id={exe_id}   (server-sent events, live)"
        );
        let query = format!("execution_id={}", encode(exe_id));
        let mut seen: Vec<i64> = Vec::new();
        let mut killed = false;
        loop {
            let mut stream = api.events(thread, &query, seen.last().copied()).await?;
            while let Some(e) = stream.next().await {
                seen.extend(e.id);
                println!(
                    "    [{:>2}] {:<16} {}",
                    e.id.unwrap_or(0),
                    e.event,
                    summary(&e)
                );
                if e.event == "execution_state" {
                    let v: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
                    match v["status"].as_str() {
                        Some("completed") => {
                            let answer = v["result_text"].as_str().unwrap_or("");
                            println!("\n    answer: {}", answer.replace('\n', " / "));
                            return Ok(seen);
                        }
                        Some(s @ ("failed" | "cancelled")) => {
                            bail!("the turn ended {s}: {}", v["error_text"])
                        }
                        _ => {}
                    }
                }
                if !killed && e.data.contains("\"heartbeat\"") {
                    killed = true;
                    self.kill_and_restart(seen.last().copied()).await?;
                    break;
                }
            }
        }
    }

    async fn kill_and_restart(&mut self, last: Option<i64>) -> anyhow::Result<()> {
        let pid = self.server.id().unwrap_or_default();
        println!("\n(5) kill -9 {pid}   (the server, in the middle of the agent's turn)");
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        let _ = self.server.wait().await;
        let t = Instant::now();
        self.server = start(&self.exe, &self.config, &self.data).await?;
        println!(
            "    restarted in {} ms (pid {}); the sandbox kept running under its supervisor",
            t.elapsed().as_millis(),
            self.server.id().unwrap_or_default()
        );
        println!("    reconnecting with Last-Event-ID: {}", last.unwrap_or(0));
        Ok(())
    }

    /// Releases the thread (its sandbox is removed), stops the server, keeps the files.
    async fn finish(mut self, api: &Api, thread: &str) -> anyhow::Result<()> {
        let released = api
            .call(
                "POST",
                &format!("/agent/threads/{}/release", encode(thread)),
                Some(&json!({})),
            )
            .await?;
        println!(
            "\n(9) POST /agent/threads/{thread}/release -> released {}; sandbox {} stopped (namespace, nftables table, cgroups, run dir removed)",
            released["released"], released["runtime_id"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.server.id().unwrap_or_default().to_string()])
            .status();
        let _ = self.server.wait().await;
        println!("\n    (files kept in {})", self.dir.keep().display());
        Ok(())
    }
}

/// The live stream saw every stored event of the execution once, in order.
async fn check_replay(api: &Api, thread: &str, exe: &str, seen: &[i64]) -> anyhow::Result<()> {
    let replay = replay(api, thread, exe).await?;
    let unique: BTreeSet<i64> = seen.iter().copied().collect();
    if unique.len() != seen.len() || seen != replay {
        bail!("the live stream {seen:?} differs from the stored events {replay:?}");
    }
    println!(
        "\n(6) nothing lost, nothing repeated: the live stream showed {} events once each, across the kill -9, the same ids as a fresh replay ({:?}…{:?})",
        seen.len(),
        replay.first().unwrap_or(&0),
        replay.last().unwrap_or(&0)
    );
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

fn indent(text: &str) {
    for l in text.lines() {
        println!("    {l}");
    }
}

fn server_yaml(data: &Path, port: u16) -> anyhow::Result<String> {
    let agents = data.join("agents");
    std::fs::create_dir_all(&agents)?;
    set_mode(data, 0o711)?;
    set_mode(&agents, 0o755)?;
    std::fs::write(
        agents.join("scripted.py"),
        control::server::config::SCRIPTED_AGENT,
    )?;
    Ok(format!(
        "listen: 127.0.0.1:{port}
sandbox:
  policy: policy.yaml          # every sandbox's gateway policy (the gateway's own format)
  secrets_from: secrets.env    # real values stay in the gateways
  mounts: ['{agents}:/run/centaur/agents']
  env:                         # placeholders only
    CENTAUR_DEMO_API: https://api.demo.test/v1/whoami
    CENTAUR_DEMO_KEY: {PLACEHOLDER}
harnesses:
  scripted:
    command: [python3, /run/centaur/agents/scripted.py]
default_harness: scripted
",
        agents = agents.display()
    ))
}

/// Starts `centaur server` (its log in the data directory) and waits until it is ready.
async fn start(exe: &Path, config: &Path, data: &Path) -> anyhow::Result<Child> {
    std::fs::create_dir_all(data)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("server.log"))?;
    let mut child = Command::new(exe)
        .args(["server", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(false)
        .spawn()?;
    let text = std::fs::read_to_string(config)?;
    let listen = text
        .lines()
        .find_map(|l| l.strip_prefix("listen: "))
        .unwrap_or("127.0.0.1:8700")
        .to_string();
    let probe = Api::new(&format!("http://{listen}"), "")?;
    for _ in 0..500 {
        if let Ok(v) = probe.call("GET", "/readyz", None).await
            && v["ready"] == true
        {
            return Ok(child);
        }
        if let Ok(Some(st)) = child.try_wait() {
            bail!(
                "the server exited with {st}; see {}",
                data.join("server.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!(
        "the server did not become ready; see {}",
        data.join("server.log").display()
    )
}

/// A line about an event for a person.
fn summary(e: &SseEvent) -> String {
    let v: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
    let text = match e.event.as_str() {
        "execution_state" => {
            let mut s = v["status"].as_str().unwrap_or("").to_string();
            if let Some(r) = v["terminal_reason"].as_str() {
                s.push_str(&format!(" ({r})"));
            }
            s
        }
        "message" => format!(
            "{}: {}",
            v["role"].as_str().unwrap_or(""),
            v["parts"][0]["text"]
        ),
        _ => e.data.clone(),
    };
    let short: String = text.chars().take(110).collect();
    if short.len() < text.len() {
        format!("{short}…")
    } else {
        short
    }
}

/// The execution's event ids, as stored (a fresh replay from the start).
async fn replay(api: &Api, thread: &str, exe: &str) -> anyhow::Result<Vec<i64>> {
    let q = format!("after_event_id=0&execution_id={}&follow=false", encode(exe));
    let mut s = api.events(thread, &q, None).await?;
    let mut ids = Vec::new();
    while let Some(e) = s.next().await {
        ids.extend(e.id);
    }
    Ok(ids)
}

fn audit_file(data: &Path) -> anyhow::Result<PathBuf> {
    std::fs::read_dir(data.join("audit"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .context("no audit log was written")
}
