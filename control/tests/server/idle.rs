//! Idle sandboxes: a thread's sandbox unused for `sandbox.idle_timeout` is stopped (its
//! thread and workspace stay; the next turn starts a new one), never under a running turn;
//! `sandbox.max_running` stops the least recently used idle sandbox before a cold start, and
//! waits while every running one is busy. Real servers, real sandboxes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::calls::{execute, turn, wait_end};
use crate::harness::{self, Setup};

/// A setup with the counting agent and `sandbox` (YAML lines) added to its sandbox section.
pub fn setup(sandbox: &str) -> Setup {
    let s = Setup::new(
        &[(
            "counting",
            "[python3, /run/centaur/test-agents/counting.py]",
        )],
        "",
    );
    let yaml = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        yaml.replacen("sandbox:\n", &format!("sandbox:\n{sandbox}"), 1),
    )
    .unwrap();
    s
}

/// The runtimes whose sandboxes run (their supervisor directories).
pub fn running(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("sandboxes"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("rt_"))
    });
    v.sort();
    v
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

fn pid_alive(dir: &Path) -> Option<String> {
    let pid = std::fs::read_to_string(dir.join("pid")).ok()?;
    let pid = pid.trim().to_string();
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_sandbox_is_suspended_and_the_thread_goes_on() {
    if !harness::root_or_skip("an_idle_sandbox_is_suspended_and_the_thread_goes_on") {
        return;
    }
    let setup = setup("  idle_timeout: 2s\n");
    let key = setup.key("tester", "agent");
    let server = setup.start().await;
    let data = setup.data();

    // A turn longer than the idle timeout is never cut: its thread is busy.
    let e = turn(
        &server,
        &key,
        "api:idle",
        "counting",
        "first steps=1 pause=4",
    )
    .await;
    assert_eq!(e["status"], "completed", "{e}");
    assert_eq!(e["result_text"], "first steps=1 pause=4");
    let first = running(&data);
    assert_eq!(first.len(), 1, "{first:?}");
    let supervisor = pid_alive(&first[0]).expect("the supervisor runs");

    // Unused for 2 s: stopped, its supervisor gone, its directory removed.
    until("the idle sandbox is stopped", || running(&data).is_empty()).await;
    until("its supervisor exits", || {
        !Path::new(&format!("/proc/{supervisor}")).exists()
    })
    .await;
    assert!(
        server.log().contains("suspended sandbox"),
        "{}",
        server.log()
    );

    // The thread goes on in a new sandbox, with the same workspace.
    let e = turn(&server, &key, "api:idle", "counting", "second").await;
    assert_eq!(e["status"], "completed", "{e}");
    let now = running(&data);
    assert_eq!(now.len(), 1);
    assert_ne!(now, first, "a new runtime");
    let mut turns = None;
    for d in std::fs::read_dir(data.join("threads")).unwrap().flatten() {
        turns = std::fs::read_to_string(d.path().join("work/turns.log")).ok();
    }
    let turns = turns.expect("the thread's workspace kept its log");
    assert_eq!(turns.lines().count(), 2, "{turns}");
    server.stop().await;
    harness::stop_sandboxes(&data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_running_stops_the_least_recently_used_idle_sandbox() {
    if !harness::root_or_skip("max_running_stops_the_least_recently_used_idle_sandbox") {
        return;
    }
    let setup = setup("  idle_timeout: none\n  max_running: 1\n");
    let key = setup.key("tester", "agent");
    let server = setup.start().await;
    let data = setup.data();

    let a = turn(&server, &key, "api:a", "counting", "a1").await;
    assert_eq!(a["status"], "completed", "{a}");
    let a_dirs = running(&data);
    assert_eq!(a_dirs.len(), 1);
    let b = turn(&server, &key, "api:b", "counting", "b1").await;
    assert_eq!(b["status"], "completed", "{b}");
    let b_dirs = running(&data);
    assert_eq!(b_dirs.len(), 1, "one sandbox at a time: {b_dirs:?}");
    assert_ne!(a_dirs, b_dirs, "a's idle sandbox made room for b's");

    // Every running sandbox busy: b's next cold start waits for a's turn to end, then
    // stops a's sandbox (now idle) and runs.
    let long = execute(
        &server,
        &key,
        json!({"thread_key": "api:a", "message": "a2 steps=3 pause=1"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quick = execute(
        &server,
        &key,
        json!({"thread_key": "api:c", "message": "c1"}),
    )
    .await;
    let a2 = wait_end(&server, &key, "api:a", &long).await;
    let c1 = wait_end(&server, &key, "api:c", &quick).await;
    assert_eq!(a2["status"], "completed", "{a2}");
    assert_eq!(c1["status"], "completed", "{c1}");
    // c's turn takes a fraction of a second; a's three. c ending after a means it waited.
    assert!(
        c1["completed_at"].as_i64().unwrap() >= a2["completed_at"].as_i64().unwrap(),
        "c waited for a's turn: {a2}\n{c1}"
    );
    assert_eq!(running(&data).len(), 1);
    server.stop().await;
    harness::stop_sandboxes(&data).await;
}
