//! A harness that misbehaves (`agents/misbehaving.py`): it hangs, chatters past the hard
//! deadline, crashes, exits mid-turn or prints garbage. Each execution ends with the right
//! terminal reason and the thread takes its next turn. And a running turn is steered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;

use crate::calls::{agent_events, call, events, execute, turn, wait_end};
use crate::harness::{self, Setup};

fn misbehaving() -> Setup {
    Setup::new(
        &[(
            "bad",
            "[\"python3\", \"/run/centaur/test-agents/misbehaving.py\"]",
        )],
        "limits: {silence_timeout: 4s, hard_timeout: 9s}\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_harness_that_hangs_crashes_or_exits_mid_turn_ends_its_turn_and_the_thread_goes_on() {
    if !harness::root_or_skip("a_harness_that_hangs_crashes_or_exits_mid_turn") {
        return;
    }
    let setup = misbehaving();
    let key = setup.key("tester", "agent");
    let server = setup.start().await;
    let cases = [
        ("hang", "silence_deadline_exceeded"),
        ("chatter", "hard_deadline_exceeded"),
        ("crash", "harness_exited"),
        ("exit", "harness_exited"),
    ];
    let runs = cases.iter().map(|(text, reason)| {
        let (server, key) = (&server, &key);
        async move {
            let thread = format!("bad:{text}");
            let e = turn(server, key, &thread, "bad", text).await;
            assert_eq!(
                (e["status"].as_str(), e["terminal_reason"].as_str()),
                (Some("failed"), Some(*reason)),
                "{text}: {e}"
            );
            assert!(
                e["error_text"].as_str().is_some_and(|t| !t.is_empty()),
                "{e}"
            );
            // The next turn runs (in a fresh sandbox where the last one was stopped).
            let next = turn(server, key, &thread, "bad", "hello").await;
            assert_eq!(next["status"], "completed", "{text}, next turn: {next}");
            assert_eq!(next["result_text"], "ok: hello");
        }
    });
    futures_util::future::join_all(runs).await;

    // Garbage is kept verbatim, shown as raw output, and does not end the turn.
    let e = turn(&server, &key, "bad:garbage", "bad", "garbage").await;
    assert_eq!(e["result_text"], "survived garbage", "{e}");
    let all = events(&server, &key, "bad:garbage", e["execution_id"].as_str()).await;
    assert!(
        all.iter()
            .any(|(k, _, raw)| k == "output" && raw == "this is not json")
    );
    let agent = agent_events(&all);
    assert!(
        agent
            .iter()
            .any(|a| a["subtype"] == "raw_stdout" && a["text"] == "this is not json")
    );
    assert!(agent.iter().any(|a| a["type"] == "mystery_event"));
    assert!(server.log().contains("stdout_unknown_event_type"), "logged");
    harness::stop_sandboxes(&setup.data()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_turn_is_steered() {
    if !harness::root_or_skip("a_running_turn_is_steered") {
        return;
    }
    let setup = misbehaving();
    let key = setup.key("tester", "agent");
    let server = setup.start().await;
    let body = json!({"thread_key": "steer:1", "message": "steer"});
    let id = execute(&server, &key, body).await;
    // Wait until the harness is in its turn.
    let mut waiting = false;
    for _ in 0..300 {
        let all = events(&server, &key, "steer:1", None).await;
        if all
            .iter()
            .any(|(_, _, raw)| raw.contains("waiting for a steer"))
        {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waiting, "{}", server.log());
    let path = format!("/agent/executions/{id}/steer");
    let r = call(
        &server,
        &key,
        "POST",
        &path,
        Some(json!({"message": "go left"})),
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    let e = wait_end(&server, &key, "steer:1", &id).await;
    assert_eq!(e["result_text"], "steered: go left", "{e}");
    let all = events(&server, &key, "steer:1", Some(&id)).await;
    assert!(
        all.iter()
            .any(|(k, v, _)| k == "steer" && v["content"][0]["text"] == "go left")
    );
    // An ended execution is not steered.
    let r = call(
        &server,
        &key,
        "POST",
        &path,
        Some(json!({"message": "too late"})),
    )
    .await;
    assert_eq!(r["code"], "EXECUTION_NOT_RUNNING", "{r}");
    let r = call(
        &server,
        &key,
        "POST",
        "/agent/executions/exe_nope/steer",
        Some(json!({"message": "x"})),
    )
    .await;
    assert_eq!(r["code"], "NOT_FOUND", "{r}");
    harness::stop_sandboxes(&setup.data()).await;
}
