//! Slack in: signatures (slack_sdk), one turn per message, follow-ups, Socket Mode; and the
//! bot token nowhere but on the wire.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use super::*;
use crate::calls::call;
use crate::harness::{self, Server, python, repo};

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
