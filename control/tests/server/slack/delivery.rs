//! Slack out: history and long answers, retries and dead letters, and `kill -9` between
//! Slack's ok and our commit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::harness;

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
