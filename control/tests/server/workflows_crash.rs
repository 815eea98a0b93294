//! The crash matrix: one workflow through every kind of boundary — before its first step,
//! after a step's side effect but before its checkpoint, during a sleep, a wait, a child run
//! and an agent turn — with the server killed with `kill -9` at each (on SQLite and on
//! PostgreSQL), and then with the worker killed at each. Every run completes with the output
//! of the crash-free run; every step's side effect ran once, except the step killed inside
//! its documented window (it may run twice); no recorded result is recorded again.
//! Protects invariant 7 (durable before acknowledged).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{self, Server, Setup};

const MATRIX: &str = r#"
import time

WORKFLOW_NAME = "matrix"


def effect(name):
    with open("effects.log", "a") as f:
        f.write(name + "\n")
    return name


def slow(name):
    effect(name + ":start")
    time.sleep(1.5)
    return effect(name)


async def handler(inp, ctx):
    tag = inp["tag"]
    a = await ctx.step("a", lambda: effect(f"{tag}:a"))
    s = await ctx.step("slow", lambda: slow(f"{tag}:slow"))
    await ctx.sleep("nap", seconds=1.5)
    ev = await ctx.wait_for_event("go", correlation_id=tag, timeout=600)
    child = await ctx.run_workflow("matrix_child", {"tag": tag}, name="child")
    answer = await ctx.run_agent("ask", text=f"steps=4 pause=0.5 {tag}", thread_key=f"api:matrix-{tag}")
    b = await ctx.step("b", lambda: effect(f"{tag}:b"))
    return {"a": a, "slow": s, "event": ev, "child": child, "answer": answer, "b": b}
"#;

const CHILD: &str = r#"
WORKFLOW_NAME = "matrix_child"


def effect(name):
    with open("effects.log", "a") as f:
        f.write(name + "\n")
    return name


async def handler(inp, ctx):
    await ctx.sleep("pause", seconds=1.5)
    return await ctx.step("c", lambda: effect(inp["tag"] + ":child"))
"#;

/// Where a run is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Boundary {
    BeforeFirstStep,
    InsideStep,
    Sleep,
    Wait,
    Child,
    AgentTurn,
}

const ALL: [Boundary; 6] = [
    Boundary::BeforeFirstStep,
    Boundary::InsideStep,
    Boundary::Sleep,
    Boundary::Wait,
    Boundary::Child,
    Boundary::AgentTurn,
];

async fn api(method: &str, url: &str, key: &str, body: Option<Value>) -> Value {
    crate::workflows::call(method, url, key, body).await.1
}

fn effects(work: &Path) -> Vec<String> {
    std::fs::read_to_string(work.join("effects.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Polls until `done` holds for the run (and the effects so far).
async fn until(
    server: &Server,
    key: &str,
    id: &str,
    work: &Path,
    what: &str,
    done: impl Fn(&Value, &[String]) -> bool,
) -> Value {
    for _ in 0..1200 {
        let r = api(
            "GET",
            &format!("{}/workflows/runs/{id}", server.base),
            key,
            None,
        )
        .await;
        assert_ne!(r["status"], "failed", "{r}");
        if done(&r, &effects(work)) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("run {id} never reached: {what}");
}

fn step_done(r: &Value, name: &str) -> bool {
    r["steps"]
        .as_array()
        .is_some_and(|s| s.iter().any(|s| s["name"] == name && s["done"] == true))
}

/// Brings the run to `b` and returns when it is there.
async fn reach(server: &Server, key: &str, id: &str, tag: &str, work: &Path, b: Boundary) {
    let waits = |t: &'static str| move |r: &Value, _: &[String]| r["waiting_on"]["type"] == t;
    match b {
        Boundary::BeforeFirstStep => {}
        Boundary::InsideStep => {
            let started = format!("{tag}:slow:start");
            until(server, key, id, work, "inside the slow step", |r, e| {
                e.contains(&started) && !step_done(r, "slow")
            })
            .await;
        }
        Boundary::Sleep => {
            until(server, key, id, work, "sleeping", |r, _| {
                r["status"] == "sleeping" && r["waiting_on"]["name"] == "nap"
            })
            .await;
        }
        Boundary::Wait => {
            until(
                server,
                key,
                id,
                work,
                "waiting for the event",
                waits("event"),
            )
            .await;
        }
        Boundary::Child => {
            until(
                server,
                key,
                id,
                work,
                "waiting for the child",
                waits("workflow"),
            )
            .await;
        }
        Boundary::AgentTurn => {
            until(
                server,
                key,
                id,
                work,
                "waiting for the agent turn",
                waits("execution"),
            )
            .await;
        }
    }
}

/// The parent of `pid`, from /proc.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Kills, with `kill -9`, the workflow worker under this test's server (not another test's),
/// waiting for one: after the previous kill the engine starts a new worker when it next
/// needs one.
async fn kill_worker(server: u32) {
    for _ in 0..400 {
        let workers: Vec<u32> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.windows(20).any(|w| w == b"centaur_sdk.workflow"))
            })
            .filter(|pid| {
                let mut p = *pid;
                for _ in 0..64 {
                    match parent(p) {
                        Some(q) if q == server => return true,
                        Some(q) if q > 1 => p = q,
                        _ => return false,
                    }
                }
                false
            })
            .collect();
        if !workers.is_empty() {
            for w in workers {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &w.to_string()])
                    .status();
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no workflow worker under server {server} to kill");
}

/// The effects of `tag` whose step had not recorded its result at this moment: a kill now
/// falls in their step's window, and they may run again.
/// The effects of `tag` whose step was not recorded done in `r`: read *after* the kill, with
/// `r` read before it, so an effect that ran in between counts as caught in its window.
/// Reading both before the kill missed one under load: a step the server had handed to the
/// worker just before it was killed ran in the worker (which dies a moment after its
/// server) and ran again after the restart, a legitimate second run the test counted as a
/// failure. So the worker's process tree gets half a second to be gone first.
async fn in_window(r: &Value, tag: &str, work: &Path) -> Vec<String> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    effects(work)
        .into_iter()
        .filter_map(|e| e.strip_prefix(&format!("{tag}:")).map(str::to_string))
        .filter(|e| {
            let step = match e.as_str() {
                "slow:start" => "slow",
                "child" => "child.wait",
                other => other,
            };
            !step_done(r, step)
        })
        .collect()
}

/// Runs `tag` through the matrix, killing at each boundary (the server, or with
/// `Some(true)` the worker); returns its output and the effects a kill caught in their
/// step's window.
async fn run(setup: &Setup, key: &str, tag: &str, kill: Option<bool>) -> (Value, Vec<String>) {
    let mut windows = Vec::new();
    let work = setup.data().join("workflows/work");
    let mut server = setup.start().await;
    let run = api(
        "POST",
        &format!("{}/workflows/runs", server.base),
        key,
        Some(json!({"workflow_name": "matrix", "input": {"tag": tag}})),
    )
    .await;
    let id = run["run_id"].as_str().unwrap().to_string();
    for b in ALL {
        reach(&server, key, &id, tag, &work, b).await;
        let before = match kill {
            Some(_) => Some(
                api(
                    "GET",
                    &format!("{}/workflows/runs/{id}", server.base),
                    key,
                    None,
                )
                .await,
            ),
            None => None,
        };
        match (kill, &before) {
            (Some(false), Some(r)) => {
                eprintln!("{tag}: kill -9 the server at {b:?}");
                server.kill9().await;
                windows.extend(in_window(r, tag, &work).await);
                server = setup.start().await;
            }
            (Some(true), Some(r)) => {
                eprintln!("{tag}: kill -9 the worker at {b:?}");
                kill_worker(server.child.id().unwrap()).await;
                windows.extend(in_window(r, tag, &work).await);
            }
            _ => {}
        }
        if b == Boundary::Wait {
            api(
                "POST",
                &format!("{}/workflows/events", server.base),
                key,
                Some(json!({"event_type": "go", "correlation_id": tag, "payload": {"go": tag}})),
            )
            .await;
        }
    }
    let done = until(&server, key, &id, &work, "completed", |r, _| {
        r["status"] == "completed"
    })
    .await;
    server.stop().await;
    // The steps recorded once each, in order.
    let names: Vec<&str> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "a",
            "slow",
            "nap",
            "go",
            "child",
            "child.wait",
            "ask",
            "ask.wait",
            "b"
        ]
    );
    (done["output"].clone(), windows)
}

async fn matrix(database_url: Option<String>) {
    let mut setup = Setup::new(
        &[(
            "counting",
            "[python3, /run/centaur/test-agents/counting.py]",
        )],
        "workflows:\n  dirs: [flows]\n  lease: 3s\nlimits:\n  lease: 3s\n",
    );
    setup.database_url = database_url;
    let flows = setup.dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(flows.join("matrix.py"), MATRIX).unwrap();
    std::fs::write(flows.join("matrix_child.py"), CHILD).unwrap();
    harness::chmod(&flows, 0o755);
    let key = setup.key("matrix", "agent");
    let expected = |tag: &str| {
        json!({
            "a": format!("{tag}:a"), "slow": format!("{tag}:slow"), "event": {"go": tag},
            "child": format!("{tag}:child"), "answer": format!("steps=4 pause=0.5 {tag}"),
            "b": format!("{tag}:b"),
        })
    };
    let mut windows = Vec::new();
    for (tag, kill) in [
        ("clean", None),
        ("server", Some(false)),
        ("worker", Some(true)),
    ] {
        let (output, caught) = run(&setup, &key, tag, kill).await;
        assert_eq!(output, expected(tag), "{tag}");
        windows.push((tag, caught));
    }
    let log = effects(&setup.data().join("workflows/work"));
    for (tag, caught) in windows {
        let count = |e: &str| log.iter().filter(|l| **l == format!("{tag}:{e}")).count();
        for e in ["a", "slow:start", "slow", "child", "b"] {
            // A side effect runs once; a kill between it and its step's checkpoint (the
            // documented window) may make it run once more, never more than that.
            let most = if caught.iter().any(|c| c == e) { 2 } else { 1 };
            assert!(
                (1..=most).contains(&count(e)),
                "{tag}:{e} ran {} times (caught in its window: {caught:?}): {log:?}",
                count(e)
            );
        }
    }
    if std::env::var_os("CI").is_none() {
        eprintln!("effects: {log:?}");
    }
    harness::stop_sandboxes(&setup.data()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_matrix_on_sqlite() {
    if !harness::root_or_skip("crash_matrix_on_sqlite") {
        return;
    }
    matrix(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_matrix_on_postgresql() {
    if !harness::root_or_skip("crash_matrix_on_postgresql") {
        return;
    }
    if let Some(url) = testkit::postgres_db("workflow_crash_matrix") {
        matrix(Some(url)).await;
    }
}
