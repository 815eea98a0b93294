//! `kill -9` of the server at random moments while a client queues turns on 20 threads.
//! Protects invariant 7 (durable before acknowledged): after the restarts every acknowledged
//! message, execution and event is there exactly once, an event stream replays the same bytes
//! from any id before and after a restart, running turns complete (their sandboxes live on
//! under their supervisors), and no turn reached a harness twice (the harness counts).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use control::clock::SystemClock;
use control::store::{Location, Status, Store};
use rand::{Rng, SeedableRng};

use crate::harness::{self, Setup, free_port};

const THREADS: usize = 20;
const TURNS: usize = 3;

async fn replay(base: &str, key: &str, thread: &str, after: i64) -> String {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sSN",
            "--max-time",
            "30",
            "-H",
            &format!("Authorization: Bearer {key}"),
        ])
        .arg(format!(
            "{base}/agent/threads/{thread}/events?after_event_id={after}&follow=false"
        ))
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_repeats_nothing() {
    if !harness::root_or_skip("kill_9_at_random_moments_loses_and_repeats_nothing") {
        return;
    }
    crash(None).await;
}

/// The same on PostgreSQL, where a restarted server takes over expired leases (it cannot
/// know that no other replica runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_on_postgresql_loses_and_repeats_nothing() {
    if !harness::root_or_skip("kill_9_on_postgresql_loses_and_repeats_nothing") {
        return;
    }
    if let Some(url) = testkit::postgres_db("kill_9_on_postgresql") {
        crash(Some(url)).await;
    }
}

async fn crash(database_url: Option<String>) {
    let port = free_port();
    let mut setup = Setup::new(
        &[(
            "counting",
            "[python3, /run/centaur/test-agents/counting.py]",
        )],
        &format!("listen: 127.0.0.1:{port}\nlimits:\n  concurrency: {THREADS}\n  lease: 3s\n"),
    );
    setup.database_url = database_url.clone();
    let key = setup.key("crash", "agent");
    let seed: u64 = rand::random();
    eprintln!("crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut server = setup.start_on(&format!("127.0.0.1:{port}")).await;
    let out_file = setup.dir.path().join("acks.json");
    let mut client = tokio::process::Command::new(harness::python())
        .arg(harness::repo().join("control/tests/server/crash_client.py"))
        .args([&server.base, &key, &THREADS.to_string(), &TURNS.to_string()])
        .arg(&out_file)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        eprintln!("kill -9 #{round}");
        server.kill9().await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
        server = setup.start_on(&format!("127.0.0.1:{port}")).await;
    }
    let status = tokio::time::timeout(Duration::from_secs(400), client.wait())
        .await
        .expect("the client finished")
        .unwrap();
    assert!(
        status.success(),
        "the client failed; server log:\n{}",
        server.log()
    );

    // Every acknowledged execution ended once, completed, with its own turn's answer.
    let acks: BTreeMap<String, (String, String, String)> =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(acks.len(), THREADS * TURNS);
    for (eid, (exe, status, text)) in &acks {
        let (t, turn) = eid.trim_start_matches('t').split_once('-').unwrap();
        assert_eq!(status, "completed", "{eid} {exe}: {text}\n{}", server.log());
        assert_eq!(text, &format!("crash t{t} turn {turn} steps=6 pause=0.3"));
    }

    let location = match &database_url {
        Some(u) => Location::Postgres(u.clone()),
        None => Location::Sqlite(setup.data().join("centaur.db")),
    };
    let store = Store::open(&location, Arc::new(SystemClock)).await.unwrap();
    for t in 0..THREADS {
        let thread = format!("crash:{t}");
        let exes = store.thread_executions(&thread, 100).await.unwrap();
        assert_eq!(
            exes.len(),
            TURNS,
            "{thread}: each acknowledged execution once"
        );
        assert!(exes.iter().all(|e| e.status == Status::Completed));
        let (msgs, _) = store.messages(&thread, None, 100).await.unwrap();
        assert_eq!(msgs.len(), TURNS, "{thread}: each message once");
        let delivered: HashSet<_> = msgs
            .iter()
            .map(|m| m.delivered_execution_id.clone().unwrap())
            .collect();
        assert_eq!(delivered.len(), TURNS, "{thread}: each message in one turn");
        let events = store.events_after(&thread, 0, None, 100_000).await.unwrap();
        let ids: Vec<i64> = events.iter().map(|e| e.event_id).collect();
        assert_eq!(
            ids,
            (1..=ids.len() as i64).collect::<Vec<_>>(),
            "{thread}: ids without gaps"
        );
        for e in &exes {
            let mine: Vec<_> = events
                .iter()
                .filter(|x| x.execution_id.as_deref() == Some(&e.execution_id))
                .collect();
            let outputs: Vec<&str> = mine
                .iter()
                .filter(|x| x.kind == "output")
                .map(|x| x.data.as_str())
                .collect();
            let distinct: HashSet<&&str> = outputs.iter().collect();
            assert_eq!(
                distinct.len(),
                outputs.len(),
                "{}: an output line stored twice",
                e.execution_id
            );
            // The harness's start-up line lands in its first turn when it starts late.
            let turn_lines = outputs
                .iter()
                .filter(|o| !o.contains("\"type\": \"system\""))
                .count();
            assert_eq!(
                turn_lines, 7,
                "{}: 6 steps and the result: {outputs:?}",
                e.execution_id
            );
            let states: Vec<String> = mine
                .iter()
                .filter(|x| x.kind == "execution_state")
                .map(|x| {
                    serde_json::from_str::<serde_json::Value>(&x.data).unwrap()["status"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect();
            assert_eq!(
                states,
                vec!["queued", "running", "completed"],
                "{}",
                e.execution_id
            );
        }
    }

    // Replays from random ids are byte-identical across a kill -9 and restart.
    let mut before = Vec::new();
    for t in [0, 7, 19] {
        let thread = format!("crash:{t}");
        let last = store.last_event_id(&thread).await.unwrap();
        let after = rng.random_range(0..last);
        before.push((
            thread.clone(),
            after,
            replay(&server.base, &key, &thread, after).await,
        ));
    }
    server.kill9().await;
    let server = setup.start_on(&format!("127.0.0.1:{port}")).await;
    for (thread, after, text) in &before {
        assert!(text.matches("\nevent: ").count() > 0 || text.starts_with("id: "));
        assert_eq!(
            &replay(&server.base, &key, thread, *after).await,
            text,
            "{thread} after {after}"
        );
    }

    // No turn reached a harness twice: the harnesses' own count.
    let mut turns = Vec::new();
    for e in std::fs::read_dir(setup.data().join("threads"))
        .unwrap()
        .flatten()
    {
        if let Ok(log) = std::fs::read_to_string(e.path().join("work/turns.log")) {
            turns.extend(log.lines().map(str::to_string));
        }
    }
    let distinct: HashSet<&String> = turns.iter().collect();
    assert_eq!(
        distinct.len(),
        turns.len(),
        "a turn reached a harness twice"
    );
    assert_eq!(
        turns.len(),
        THREADS * TURNS,
        "every turn reached its harness"
    );
    store.close().await;
    let _ = server.stop().await;
    harness::stop_sandboxes(&setup.data()).await;
}
