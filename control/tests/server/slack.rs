//! Slack end to end: requests signed by Slack's own SDK into a real `centaur server`, turns
//! in real sandboxes (the counting harness), and a local fake of the Slack Web API over
//! HTTPS (control/tests/fakes/slack.py) that records what reached "Slack". Guards invariant
//! 1 (no real credential outside the gateway): the server, its logs and its store never hold
//! the bot token; only the control plane's gateway puts it on the wire.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::calls::call;
use crate::harness::{self, Server, Setup, python, repo};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const BOT_TOKEN: &str = "xoxb-1111-2222-REALBOTTOKEN";
const APP_TOKEN: &str = "xapp-1-A1-REALAPPTOKEN";

/// The fake Slack, running.
struct FakeSlack {
    _child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl FakeSlack {
    async fn start() -> FakeSlack {
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

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    async fn curl(&self, args: &[&str]) -> Value {
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

    async fn control(&self, what: &str, body: Value) -> Value {
        let url = format!("https://127.0.0.1:{}/_fake/{what}", self.port);
        self.curl(&["-X", "POST", "-d", &body.to_string(), &url])
            .await
    }

    /// Slack has the user's message before it sends the event: put it in the channel.
    async fn user_posts(&self, body: &Value) {
        let e = &body["event"];
        let mut m = json!({"type": "message", "ts": e["ts"], "user": e["user"], "text": e["text"]});
        if e["thread_ts"].is_string() {
            m["thread_ts"] = e["thread_ts"].clone();
        }
        let seed = json!({"channel": e["channel"], "messages": [m]});
        self.control("seed", seed).await;
    }

    async fn log(&self) -> Value {
        let url = format!("https://127.0.0.1:{}/_fake/log", self.port);
        self.curl(&[&url]).await
    }

    /// Our messages in a thread of C1 (status and answers), in order.
    async fn ours(&self, channel: &str, thread_ts: &str) -> Vec<Value> {
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
    async fn wait(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
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
fn setup(fake: &FakeSlack, socket: bool, extra: &str) -> Setup {
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
fn envelope(event_id: &str, event: Value) -> Value {
    json!({"token": "verification-token-unused", "team_id": "T1", "api_app_id": "A1",
           "type": "event_callback", "event_id": event_id, "event_time": 1_700_000_000,
           "authorizations": [{"enterprise_id": null, "team_id": "T1", "user_id": "UBOT", "is_bot": true}],
           "event": event})
}

fn mention(event_id: &str, ts: &str, thread_ts: Option<&str>, text: &str) -> Value {
    let mut e = json!({"type": "app_mention", "user": "U1", "text": format!("<@UBOT> {text}"),
                       "ts": ts, "channel": "C1", "team": "T1", "event_ts": ts});
    if let Some(t) = thread_ts {
        e["thread_ts"] = json!(t);
    }
    envelope(event_id, e)
}

/// Sends a body with `slack_send.py` (signed by slack_sdk) plus `flags`.
async fn send(server: &Server, path: &str, body: &Value, flags: &[&str]) -> Value {
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
async fn deliveries(
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

async fn metric(server: &Server, name: &str) -> f64 {
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
fn no_token_anywhere(setup: &Setup, server_log: &str) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_sdk_signatures_are_accepted_and_forgeries_refused_before_anything_is_stored() {
    let fake = FakeSlack::start().await;
    let s = setup(&fake, false, "");
    let server = s.start().await;
    let challenge = json!({"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"});
    let r = send(&server, "/api/slack/events", &challenge, &[]).await;
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["body"]["challenge"], challenge["challenge"]);
    let r = send(&server, "/api/webhooks/slack", &challenge, &[]).await;
    assert_eq!(
        r["body"]["challenge"], challenge["challenge"],
        "the seed's path too"
    );
    let m = mention("Ev1", "1700000000.000100", None, "hello");
    for (flags, reason) in [
        (&["--age", "400"][..], "stale_timestamp"),
        (&["--tamper"][..], "invalid_signature"),
        (&["--unsigned"][..], "missing_signature_headers"),
    ] {
        let r = send(&server, "/api/slack/events", &m, flags).await;
        assert_eq!(r["status"], 401, "{flags:?}: {r}");
        assert_eq!(r["body"], json!({"ok": false, "error": reason}));
    }
    let out = Command::new(python())
        .arg(repo().join("control/tests/server/slack_send.py"))
        .arg(format!("{}/api/slack/events", server.base))
        .args(["another-secret", &m.to_string()])
        .output()
        .await
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["status"], 401);
    assert_eq!(r["body"]["error"], "invalid_signature");
    let r = send(&server, "/api/slack/events", &json!("not an envelope"), &[]).await;
    assert_eq!(r["status"], 400, "signed but unreadable: {r}");
    assert_eq!(
        metric(&server, "centaur_slack_events_total{outcome=\"refused\"}").await,
        5.0
    );
    assert_eq!(
        metric(&server, "centaur_slack_events_total{outcome=\"accepted\"}").await,
        0.0
    );
    let key = s.key("admin", "admin");
    let threads = call(&server, &key, "GET", "/agent/threads", None).await;
    assert_eq!(threads["threads"], json!([]), "nothing stored");
    assert!(fake.log().await["calls"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_is_one_turn_with_progress_and_one_answer_in_its_thread() {
    if !harness::root_or_skip("a_mention_is_one_turn_with_progress_and_one_answer_in_its_thread") {
        return;
    }
    let fake = FakeSlack::start().await;
    let s = setup(&fake, false, "");
    let server = s.start().await;
    let root = "1700000000.000100";
    let m = mention("Ev1", root, None, "steps=3 pause=1 **first** question");
    fake.user_posts(&m).await;
    let first = send(&server, "/api/slack/events", &m, &[]).await;
    assert_eq!(first["body"], json!({"ok": true}), "{first}");
    // Slack's contract: acknowledged within 3 s (the turn runs after the answer).
    assert!(first["seconds"].as_f64().unwrap() < 3.0, "{first}");
    // Slack's retries and the `message` event of the same post start nothing more.
    let again = send(&server, "/api/slack/events", &m, &["--retry", "1"]).await;
    assert_eq!(again["body"]["duplicate"], true, "{again}");
    let mut as_message = m.clone();
    as_message["event"]["type"] = json!("message");
    as_message["event_id"] = json!("Ev2");
    let top = send(&server, "/api/slack/events", &as_message, &[]).await;
    assert!(
        top["body"]["ignored"].is_string(),
        "the app_mention covers it: {top}"
    );
    let answered = |n: usize| {
        move |log: &Value| {
            let all = log["messages"]["C1"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            all.iter()
                .filter(|m| m["metadata"]["event_payload"]["kind"] == "answer")
                .count()
                >= n
        }
    };
    let log = fake.wait("the first answer", answered(1)).await;
    let ours = fake.ours("C1", root).await;
    assert_eq!(
        ours.len(),
        2,
        "one progress message and one answer: {ours:#?}"
    );
    assert!(
        ours[0]["text"]
            .as_str()
            .unwrap()
            .contains(":white_check_mark: Done"),
        "{ours:#?}"
    );
    assert!(
        ours[0]["edits"].as_i64().unwrap_or(0) >= 2,
        "progress was updated: {ours:#?}"
    );
    assert_eq!(
        ours[1]["text"], "steps=3 pause=1 *first* question",
        "mrkdwn"
    );
    let updates: Vec<&Value> = log["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["method"] == "chat.update")
        .collect();
    assert!(
        updates
            .iter()
            .any(|c| c["args"]["text"].as_str().unwrap().contains("Step")),
        "{updates:#?}"
    );
    for c in log["calls"].as_array().unwrap() {
        assert_eq!(
            c["authorization"],
            format!("Bearer {BOT_TOKEN}"),
            "the real token on the wire: {c}"
        );
    }
    follow_up_and_strangers(&server, &fake, root).await;
    let key = s.key("admin", "admin");
    let execs = call(
        &server,
        &key,
        "GET",
        &format!("/agent/threads/slack:T1:C1:{root}/executions"),
        None,
    )
    .await;
    assert_eq!(execs["executions"].as_array().unwrap().len(), 2, "{execs}");
    let dl = call(
        &server,
        &key,
        "GET",
        "/agent/slack/deliveries?state=delivered",
        None,
    )
    .await;
    assert_eq!(dl["deliveries"].as_array().unwrap().len(), 2, "{dl}");
    let audit = std::fs::read_to_string(s.data().join("egress/audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("chat.postMessage") && l.contains("\"allow\"")),
        "{audit}"
    );
    no_token_anywhere(&s, &server.log());
}

/// A reply in the joined thread is the next turn; a reply in a thread never joined is not.
async fn follow_up_and_strangers(server: &Server, fake: &FakeSlack, root: &str) {
    let reply = envelope(
        "Ev3",
        json!({"type": "message", "user": "U2", "text": "and a follow-up",
        "ts": "1700000050.000100", "thread_ts": root, "channel": "C1", "team": "T1"}),
    );
    assert_eq!(
        send(server, "/api/slack/events", &reply, &[]).await["body"],
        json!({"ok": true})
    );
    // The same post as an app_mention (a reply that also mentions the agent) is one turn.
    let mut as_mention = reply.clone();
    as_mention["event"]["type"] = json!("app_mention");
    as_mention["event_id"] = json!("Ev3b");
    let dup = send(server, "/api/slack/events", &as_mention, &[]).await;
    assert_eq!(dup["body"]["duplicate"], true, "{dup}");
    let stranger = envelope(
        "Ev4",
        json!({"type": "message", "user": "U2", "text": "unrelated",
        "ts": "1700000060.000100", "thread_ts": "1600000000.000001", "channel": "C1", "team": "T1"}),
    );
    send(server, "/api/slack/events", &stranger, &[]).await;
    let bot = envelope(
        "Ev5",
        json!({"type": "message", "subtype": "bot_message", "bot_id": "BFAKE",
        "text": "our own", "ts": "1700000070.000100", "thread_ts": root, "channel": "C1"}),
    );
    let r = send(server, "/api/slack/events", &bot, &[]).await;
    assert!(r["body"]["ignored"].is_string(), "{r}");
    fake.wait("the follow-up's answer", |log| {
        log["messages"]["C1"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["text"] == "and a follow-up" && m["bot_id"] == "BFAKE")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ours = fake.ours("C1", root).await;
    assert_eq!(
        ours.len(),
        4,
        "two turns, each a progress message and an answer: {ours:#?}"
    );
    assert!(fake.ours("C1", "1600000000.000001").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_turn_in_an_old_thread_brings_its_history_and_a_long_answer_is_split() {
    if !harness::root_or_skip(
        "a_first_turn_in_an_old_thread_brings_its_history_and_a_long_answer_is_split",
    ) {
        return;
    }
    let fake = FakeSlack::start().await;
    let root = "1690000000.000100";
    let earlier = json!({"channel": "C1", "messages": [
        {"type": "message", "ts": root, "user": "U7", "text": "the build is red since Tuesday"},
        {"type": "message", "ts": "1690000001.000100", "thread_ts": root, "user": "U8", "text": "only on arm64"},
    ]});
    fake.control("seed", earlier).await;
    let s = setup(&fake, false, "");
    let server = s.start().await;
    let long: String = (0..1500).map(|i| format!("w{i} ")).collect();
    let m = mention(
        "Ev9",
        "1690000002.000100",
        Some(root),
        &format!("steps=1 why? {long}"),
    );
    assert_eq!(
        send(&server, "/api/slack/events", &m, &[]).await["body"],
        json!({"ok": true})
    );
    let log = fake
        .wait("every part of the answer", |log| {
            let all = log["messages"]["C1"].as_array().unwrap();
            let parts: Vec<&Value> = all
                .iter()
                .filter(|m| m["metadata"]["event_payload"]["kind"] == "answer")
                .collect();
            parts.first().is_some_and(|p| {
                p["metadata"]["event_payload"]["parts"].as_u64() == Some(parts.len() as u64)
            })
        })
        .await;
    let answers: Vec<String> = log["messages"]["C1"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["metadata"]["event_payload"]["kind"] == "answer")
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    assert!(answers.len() >= 3, "{} parts", answers.len());
    assert!(answers.iter().all(|a| a.chars().count() <= 3900));
    let whole = answers.join(" ");
    assert!(
        whole.contains("<@U7>: the build is red since Tuesday"),
        "{}",
        &whole[..300]
    );
    assert!(whole.contains("<@U8>: only on arm64"));
    assert!(
        whole.contains("w0 ") && whole.contains("w1499"),
        "nothing cut off"
    );
    let words: Vec<&str> = whole
        .split_whitespace()
        .filter(|w| w.starts_with('w'))
        .collect();
    assert_eq!(
        words.iter().filter(|w| w.starts_with("w7")).count(),
        111,
        "no word twice"
    );
    let replies: Vec<&Value> = log["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["method"] == "conversations.replies")
        .collect();
    assert_eq!(replies.len(), 1, "history is fetched once: {replies:#?}");
    // A harness that does not exist: the thread is told, nothing runs.
    let wrong = mention("EvH", "1690000100.000100", None, "--harness nope hello");
    fake.user_posts(&wrong).await;
    send(&server, "/api/slack/events", &wrong, &[]).await;
    let log = fake
        .wait("the notice", |log| {
            let all = log["messages"]["C1"].as_array().unwrap();
            all.iter()
                .any(|m| m["bot_id"] == "BFAKE" && m["thread_ts"] == "1690000100.000100")
        })
        .await;
    let notice = log["messages"]["C1"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["thread_ts"] == "1690000100.000100" && m["bot_id"] == "BFAKE")
        .unwrap()
        .clone();
    assert_eq!(
        notice["text"],
        ":warning: I cannot start: there is no harness \"nope\" (one of: counting)."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_5xx_are_retried_and_permanent_errors_dead_lettered_at_once() {
    if !harness::root_or_skip(
        "rate_limits_and_5xx_are_retried_and_permanent_errors_dead_lettered_at_once",
    ) {
        return;
    }
    let fake = FakeSlack::start().await;
    let s = setup(&fake, false, "");
    let server = s.start().await;
    let key = s.key("admin", "admin");
    let mut gone = mention("EvB", "1700000101.000100", None, "steps=1 lost");
    gone["event"]["channel"] = json!("CGONE");
    send(&server, "/api/slack/events", &gone, &[]).await;
    let dead = deliveries(&server, &key, "?state=dead", |d| {
        !d["deliveries"].as_array().unwrap().is_empty()
    })
    .await;
    let d = &dead["deliveries"][0];
    assert_eq!(d["channel"], "CGONE", "{dead}");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("chat.postMessage: channel_not_found"),
        "{d}"
    );
    assert_eq!(d["attempts"], 1, "a permanent error is not retried: {d}");
    let faults = json!({"chat.postMessage": ["429", "500", "ok", "500", "429"]});
    fake.control("faults", faults).await;
    let root = "1700000100.000100";
    let m = mention("EvA", root, None, "steps=1 retried");
    fake.user_posts(&m).await;
    send(&server, "/api/slack/events", &m, &[]).await;
    fake.wait("the answer after the faults", |log| {
        log["messages"]["C1"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["text"] == "steps=1 retried")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ours = fake.ours("C1", root).await;
    assert_eq!(
        ours.len(),
        2,
        "nothing twice under 429s and 500s: {ours:#?}"
    );
    let log = fake.log().await;
    let posts = log["calls"].as_array().unwrap().iter();
    let to_gone = posts.filter(|c| c["args"]["channel"] == "CGONE").count();
    assert_eq!(to_gone, 1, "dead-lettered at once");
    assert!(metric(&server, "centaur_slack_delivery_total{outcome=\"retried\"}").await >= 3.0);
    assert_eq!(
        metric(&server, "centaur_slack_deliveries{state=\"dead\"}").await,
        1.0
    );
    assert_eq!(
        metric(&server, "centaur_slack_deliveries{state=\"delivered\"}").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_slacks_ok_and_our_commit_posts_nothing_twice() {
    if harness::root_or_skip("kill_9_between_slacks_ok_and_our_commit_posts_nothing_twice") {
        kill_between_post_and_commit(None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_slacks_ok_and_our_commit_on_postgresql() {
    if harness::root_or_skip("kill_9_between_slacks_ok_and_our_commit_on_postgresql")
        && let Some(url) = testkit::postgres_db("slack_kill_9")
    {
        kill_between_post_and_commit(Some(url)).await;
    }
}

/// The answer's post reaches Slack, Slack's answer never reaches us (the server is killed
/// while the fake holds it), and Slack retries the event across the restart: one turn, one
/// answer.
async fn kill_between_post_and_commit(database_url: Option<String>) {
    let fake = FakeSlack::start().await;
    let hang = json!({"chat.postMessage": ["ok", "post_then_hang:60"]});
    fake.control("faults", hang).await;
    let mut s = setup(&fake, false, "limits:\n  lease: 3s\n");
    s.database_url = database_url;
    let server = s.start().await;
    let root = "1700000200.000100";
    let m = mention("EvK", root, None, "steps=2 survive");
    fake.user_posts(&m).await;
    assert_eq!(
        send(&server, "/api/slack/events", &m, &[]).await["body"],
        json!({"ok": true})
    );
    fake.wait("the answer reaching Slack", |log| {
        log["messages"]["C1"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["text"] == "steps=2 survive")
    })
    .await;
    server.kill9().await;
    let server = s.start().await;
    let again = send(&server, "/api/slack/events", &m, &["--retry", "2"]).await;
    assert_eq!(again["body"]["duplicate"], true, "durable dedupe: {again}");
    let key = s.key("admin", "admin");
    let d = deliveries(&server, &key, "", |d| {
        d["deliveries"][0]["state"] == "delivered"
    })
    .await;
    assert_eq!(d["deliveries"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(
        d["deliveries"][0]["state"],
        "delivered",
        "{d}\n{}",
        server.log()
    );
    let ours = fake.ours("C1", root).await;
    assert_eq!(ours.len(), 2, "one progress message, one answer: {ours:#?}");
    assert!(
        ours[0]["text"].as_str().unwrap().contains("Done"),
        "{ours:#?}"
    );
    assert_eq!(
        metric(
            &server,
            "centaur_slack_delivery_total{outcome=\"recovered\"}"
        )
        .await,
        1.0
    );
    let mut turns = 0;
    for t in std::fs::read_dir(s.data().join("threads"))
        .unwrap()
        .flatten()
    {
        let log = std::fs::read_to_string(t.path().join("work/turns.log")).unwrap_or_default();
        turns += log.lines().count();
    }
    assert_eq!(turns, 1, "the harness saw the turn once");
    harness::stop_sandboxes(&s.data()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_envelopes_are_stored_acknowledged_and_followed_across_a_disconnect() {
    if !harness::root_or_skip(
        "socket_mode_envelopes_are_stored_acknowledged_and_followed_across_a_disconnect",
    ) {
        return;
    }
    let fake = FakeSlack::start().await;
    let s = setup(&fake, true, "");
    let server = s.start().await;
    fake.wait("a socket", |log| log["connections"] == 1).await;
    let first = mention("EvS1", "1700000300.000100", None, "steps=1 over the socket");
    fake.user_posts(&first).await;
    let pushed = fake.control("socket/push", json!({"payload": first})).await;
    let id = pushed["envelope"]["envelope_id"].clone();
    fake.wait("the ack", |log| {
        log["acks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["envelope_id"] == id)
    })
    .await;
    // Slack redelivers an envelope it thinks was not acknowledged: still one turn.
    fake.control("socket/push", json!({"payload": first})).await;
    fake.control("socket/disconnect", json!({})).await;
    fake.wait("a new socket", |log| log["connections"] == 2)
        .await;
    let second = mention(
        "EvS2",
        "1700000301.000100",
        None,
        "steps=1 after the reconnect",
    );
    fake.user_posts(&second).await;
    fake.control("socket/push", json!({"payload": second}))
        .await;
    let log = fake
        .wait("both answers", |log| {
            let all = log["messages"]["C1"].as_array().unwrap();
            let answered = |t: &str| all.iter().any(|m| m["text"] == t && m["bot_id"] == "BFAKE");
            answered("steps=1 over the socket") && answered("steps=1 after the reconnect")
        })
        .await;
    assert_eq!(log["acks"].as_array().unwrap().len(), 3, "{log:#}");
    let opens: Vec<&Value> = log["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["method"] == "apps.connections.open")
        .collect();
    assert_eq!(opens.len(), 2);
    assert!(
        opens
            .iter()
            .all(|c| c["authorization"] == format!("Bearer {APP_TOKEN}"))
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        fake.ours("C1", "1700000300.000100").await.len(),
        2,
        "one turn"
    );
    assert_eq!(
        metric(&server, "centaur_slack_events_total{outcome=\"duplicate\"}").await,
        1.0
    );
    no_token_anywhere(&s, &server.log());
}
