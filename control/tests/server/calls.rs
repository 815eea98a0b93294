//! The API as the server tests drive it: `curl` calls, a turn sent and waited for, a
//! thread's events replayed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::harness::Server;

/// `curl` against the API; the JSON answer.
pub async fn call(
    server: &Server,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "-X",
        method,
        "-H",
        &format!("Authorization: Bearer {key}"),
    ]);
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "-d", &b.to_string()]);
    }
    let out = c
        .arg(format!("{}{path}", server.base))
        .output()
        .await
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{path}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Queues a message as a turn of the thread (`POST /agent/execute`); the execution id.
pub async fn execute(server: &Server, key: &str, body: Value) -> String {
    let v = call(server, key, "POST", "/agent/execute", Some(body)).await;
    v["execution_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

/// Waits for an execution of the thread to end; the execution.
pub async fn wait_end(server: &Server, key: &str, thread: &str, id: &str) -> Value {
    let mut e = Value::Null;
    for _ in 0..1200 {
        e = call(server, key, "GET", &format!("/agent/executions/{id}"), None).await;
        if matches!(
            e["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = events(server, key, thread, None).await;
    let raw: Vec<&String> = all.iter().map(|(_, _, r)| r).collect();
    panic!("{id} did not end: {e}\n{raw:#?}\n{}", server.log());
}

/// Sends a message as a turn of the thread and waits for its end; the execution.
pub async fn turn(server: &Server, key: &str, thread: &str, harness: &str, text: &str) -> Value {
    let body = json!({"thread_key": thread, "harness": harness, "message": text});
    let id = execute(server, key, body).await;
    wait_end(server, key, thread, &id).await
}

/// The thread's events (all of them, or one execution's), replayed.
pub async fn events(
    server: &Server,
    key: &str,
    thread: &str,
    execution: Option<&str>,
) -> Vec<(String, Value, String)> {
    let filter = execution.map_or(String::new(), |e| format!("&execution_id={e}"));
    let out = Command::new("curl")
        .args([
            "-sSN",
            "--max-time",
            "20",
            "-H",
            &format!("Authorization: Bearer {key}"),
        ])
        .arg(format!(
            "{}/agent/threads/{thread}/events?follow=false{filter}",
            server.base
        ))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut list = Vec::new();
    for frame in text.split("\n\n") {
        let kind = frame.lines().find_map(|l| l.strip_prefix("event: "));
        let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
        if let (Some(k), Some(d)) = (kind, data) {
            let v: Value = serde_json::from_str(d).unwrap_or(Value::Null);
            list.push((k.to_string(), v, d.to_string()));
        }
    }
    list
}

/// The canonical (`agent`) events.
pub fn agent_events(all: &[(String, Value, String)]) -> Vec<Value> {
    all.iter()
        .filter(|(k, _, _)| k == "agent")
        .map(|(_, v, _)| v.clone())
        .collect()
}
