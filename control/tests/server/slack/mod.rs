//! Slack end to end: requests signed by Slack's own SDK into a real `centaur server`, turns
//! in real sandboxes (the counting harness), and a local fake of the Slack Web API over
//! HTTPS (control/tests/fakes/slack.py) that records what reached "Slack". Guards invariant
//! 1 (no real credential outside the gateway): the server, its logs and its store never hold
//! the bot token; only the control plane's gateway puts it on the wire.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod delivery;
mod ingress;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::calls::call;
use crate::harness::{Server, Setup, python, repo};

pub(super) const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub(super) const BOT_TOKEN: &str = "xoxb-1111-2222-REALBOTTOKEN";
pub(super) const APP_TOKEN: &str = "xapp-1-A1-REALAPPTOKEN";

/// The fake Slack, running.
pub(super) struct FakeSlack {
    _child: Child,
    pub(super) port: u16,
    dir: tempfile::TempDir,
}

impl FakeSlack {
    pub(super) async fn start() -> FakeSlack {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(python())
            .arg(repo().join("control/tests/fakes/slack.py"))
            .args(["--host", "slack.test", "--bot-token", BOT_TOKEN])
            .args(["--app-token", APP_TOKEN, "--dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), out.next_line())
            .await
            .expect("the fake Slack did not start")
            .unwrap()
            .unwrap();
        let port = line.strip_prefix("PORT=").unwrap().parse().unwrap();
        let fake = FakeSlack {
            _child: child,
            port,
            dir,
        };
        fake.control("channel", json!({"channel": "C1"})).await;
        fake
    }

    pub(super) fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub(super) async fn curl(&self, args: &[&str]) -> Value {
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(self.ca())
            .args(args)
            .output()
            .await
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)))
    }

    pub(super) async fn control(&self, what: &str, body: Value) -> Value {
        let url = format!("https://127.0.0.1:{}/_fake/{what}", self.port);
        self.curl(&["-X", "POST", "-d", &body.to_string(), &url])
            .await
    }

    /// Slack has the user's message before it sends the event: put it in the channel.
    pub(super) async fn user_posts(&self, body: &Value) {
        let e = &body["event"];
        let mut m = json!({"type": "message", "ts": e["ts"], "user": e["user"], "text": e["text"]});
        if e["thread_ts"].is_string() {
            m["thread_ts"] = e["thread_ts"].clone();
        }
        let seed = json!({"channel": e["channel"], "messages": [m]});
        self.control("seed", seed).await;
    }

    pub(super) async fn log(&self) -> Value {
        let url = format!("https://127.0.0.1:{}/_fake/log", self.port);
        self.curl(&[&url]).await
    }

    /// Our messages in a thread of C1 (status and answers), in order.
    pub(super) async fn ours(&self, channel: &str, thread_ts: &str) -> Vec<Value> {
        let log = self.log().await;
        let all = log["messages"][channel]
            .as_array()
            .cloned()
            .unwrap_or_default();
        all.into_iter()
            .filter(|m| m["bot_id"] == "BFAKE" && m["thread_ts"] == thread_ts)
            .collect()
    }

    /// Waits until `done` holds for the log.
    pub(super) async fn wait(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut log = Value::Null;
        for _ in 0..600 {
            log = self.log().await;
            if done(&log) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: never happened; the fake saw {log:#}");
    }
}

/// A server with Slack configured against the fake (and Socket Mode with `socket`).
pub(super) fn setup(fake: &FakeSlack, socket: bool, extra: &str) -> Setup {
    let app = if socket {
        "  app_token: {type: env, var: SLACK_APP_TOKEN}\n"
    } else {
        ""
    };
    let yaml = format!(
        "slack:\n  signing_secret: {{type: env, var: SLACK_SIGNING_SECRET}}\n  bot_token: {{type: env, var: SLACK_BOT_TOKEN}}\n{app}  api_url: https://slack.test/api\negress:\n  policy: egress.yaml\n{extra}"
    );
    let mut s = Setup::new(
        &[(
            "counting",
            "[python3, /run/centaur/test-agents/counting.py]",
        )],
        &yaml,
    );
    let egress = format!(
        "proxy:\n  upstream_allow_cidrs: [127.0.0.1/32]\nupstream:\n  hosts: {{slack.test: '127.0.0.1:{}'}}\n  ca_files: ['{}']\n",
        fake.port,
        fake.ca().display()
    );
    std::fs::write(s.dir.path().join("egress.yaml"), egress).unwrap();
    s.env = vec![
        ("SLACK_SIGNING_SECRET".into(), SECRET.into()),
        ("SLACK_BOT_TOKEN".into(), BOT_TOKEN.into()),
        ("SLACK_APP_TOKEN".into(), APP_TOKEN.into()),
    ];
    s
}

/// An `event_callback` envelope as Slack sends it.
pub(super) fn envelope(event_id: &str, event: Value) -> Value {
    json!({"token": "verification-token-unused", "team_id": "T1", "api_app_id": "A1",
           "type": "event_callback", "event_id": event_id, "event_time": 1_700_000_000,
           "authorizations": [{"enterprise_id": null, "team_id": "T1", "user_id": "UBOT", "is_bot": true}],
           "event": event})
}

pub(super) fn mention(event_id: &str, ts: &str, thread_ts: Option<&str>, text: &str) -> Value {
    let mut e = json!({"type": "app_mention", "user": "U1", "text": format!("<@UBOT> {text}"),
                       "ts": ts, "channel": "C1", "team": "T1", "event_ts": ts});
    if let Some(t) = thread_ts {
        e["thread_ts"] = json!(t);
    }
    envelope(event_id, e)
}

/// Sends a body with `slack_send.py` (signed by slack_sdk) plus `flags`.
pub(super) async fn send(server: &Server, path: &str, body: &Value, flags: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(repo().join("control/tests/server/slack_send.py"))
        .arg(format!("{}{path}", server.base))
        .args([SECRET, &body.to_string()])
        .args(flags)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls `GET /agent/slack/deliveries{query}` until `done` holds (or 30 s pass); the last answer.
pub(super) async fn deliveries(
    server: &Server,
    key: &str,
    query: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("/agent/slack/deliveries{query}");
    let mut d = Value::Null;
    for _ in 0..300 {
        d = call(server, key, "GET", &path, None).await;
        if done(&d) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d
}

pub(super) async fn metric(server: &Server, name: &str) -> f64 {
    let out = Command::new("curl")
        .args(["-sS", &format!("{}/metrics", server.base)])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {text}"))
}

/// Every file under the data directory, and the server's log, free of both tokens.
pub(super) fn no_token_anywhere(setup: &Setup, server_log: &str) {
    assert!(!server_log.contains(BOT_TOKEN) && !server_log.contains(APP_TOKEN));
    let mut stack = vec![setup.data()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                stack.push(p);
            } else if kind.is_file() {
                let bytes = std::fs::read(&p).unwrap_or_default();
                let has = |t: &str| bytes.windows(t.len()).any(|w| w == t.as_bytes());
                assert!(
                    !has(BOT_TOKEN) && !has(APP_TOKEN),
                    "{} holds a token",
                    p.display()
                );
            }
        }
    }
}
