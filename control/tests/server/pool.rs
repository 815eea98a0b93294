//! The warm pool (`sandbox.warm_pool`), with real servers and real sandboxes: a member is
//! ready with a neutral policy; a thread's first turn claims it (its gateway then takes the
//! thread's policy, token and audit labels) and the pool refills; a restart of the same
//! deploy keeps the member; a new deploy evicts and deletes it, leaving nothing behind
//! (supervisor, namespace, nftables table, cgroup, run directory); the reaper keeps
//! members; `GET /agent/pool` is for admins; a member half made when the server was killed
//! (`kill -9`) is deleted at the next start rather than holding a place it can never serve.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::calls::{call, turn};
use crate::harness::{self, Server, Setup, free_port};
use crate::idle::{self, running};

fn setup(policy: &Path, extra: &str) -> Setup {
    idle::setup(&format!(
        "  warm_pool: 1\n  idle_timeout: none\n  policy: {}\n{extra}",
        policy.display()
    ))
}

async fn pool(server: &Server, admin: &str) -> Value {
    call(server, admin, "GET", "/agent/pool", None).await
}

/// The pool once it holds `n` ready members of the server's deploy (at most 30 s).
async fn ready(server: &Server, admin: &str, n: u64) -> Value {
    for _ in 0..300 {
        let v = pool(server, admin).await;
        if v["ready"] == n {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the pool never held {n} ready: {}",
        pool(server, admin).await
    );
}

fn member_ids(v: &Value) -> Vec<String> {
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["runtime_id"].as_str().unwrap().to_string())
        .collect()
}

/// The sandbox id of a runtime, from its audit file's header.
fn sandbox_of(data: &Path, runtime: &str) -> String {
    let text = std::fs::read_to_string(data.join(format!("audit/{runtime}.jsonl"))).unwrap();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    header["sandbox"]["sandbox_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn alive(data: &Path, runtime: &str) -> Option<String> {
    let pid = std::fs::read_to_string(data.join(format!("sandboxes/{runtime}/pid"))).ok()?;
    let pid = pid.trim().to_string();
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_sandbox_is_claimed_refilled_kept_and_deleted_by_a_new_deploy() {
    if !harness::root_or_skip("a_warm_sandbox_is_claimed_refilled_kept_and_deleted_by_a_new_deploy")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "transforms:\n  - name: allowlist\n    config: {domains: [v1.example.test]}\n",
    )
    .unwrap();
    let setup = setup(&policy, "");
    let key = setup.key("tester", "agent");
    let admin = setup.key("operator", "admin");
    let data = setup.data();
    let listen = format!("127.0.0.1:{}", free_port());
    let server = setup.start_on(&listen).await;

    // Admins only.
    let refused = pool(&server, &key).await;
    assert_eq!(refused["code"], "FORBIDDEN", "{refused}");
    let v = ready(&server, &admin, 1).await;
    assert_eq!(v["target"], 1);
    let warm = member_ids(&v);
    assert_eq!(warm.len(), 1, "{v}");
    let status = control::supervisor::Client::new(data.join("sandboxes").join(&warm[0]))
        .status()
        .await
        .unwrap();
    assert_eq!(status["state"], "warm", "no harness runs in a warm member");

    // The first turn of a thread claims the member. Inside it, centaur.internal answers
    // with the thread's token injected: the gateway took the thread's policy (invariant 1:
    // the neutral one denies everything) and the token of the claimed runtime, which the
    // API accepts only while that runtime is the thread's (invariant 3: the sandbox never
    // holds it).
    let e = turn(
        &server,
        &key,
        "api:warm",
        "counting",
        "hello fetch=/agent/threads",
    )
    .await;
    assert_eq!(e["status"], "completed", "{e}");
    let text = e["result_text"].as_str().unwrap();
    assert!(
        text.starts_with("hello fetch=/agent/threads -> 403") && text.contains("lacks the Agent"),
        "the sandbox token was injected and accepted: {text}"
    );
    assert!(
        server
            .log()
            .contains(&format!("thread api:warm claimed warm sandbox {}", warm[0])),
        "{}",
        server.log()
    );
    let spec =
        std::fs::read_to_string(data.join(format!("sandboxes/{}/spec.json", warm[0]))).unwrap();
    assert!(
        spec.contains("api:warm") && spec.contains("counting.py"),
        "{spec}"
    );
    // The request was audited under the thread's labels.
    let audit = std::fs::read_to_string(data.join(format!("audit/{}.jsonl", warm[0]))).unwrap();
    let record: Value = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["host"] == "centaur.internal")
        .expect("an audit record of the request");
    assert_eq!(record["sandbox"]["thread_key"], "api:warm", "{record}");
    assert_eq!(record["sandbox"]["runtime_id"], warm[0].as_str());

    // The pool refills with a new member; the claimed one is the thread's now.
    let v = ready(&server, &admin, 1).await;
    let second = member_ids(&v);
    assert_eq!(second.len(), 1);
    assert_ne!(second, warm);

    // The same deploy, restarted: the member is kept, none is made.
    server.stop().await;
    let server = setup.start_on(&listen).await;
    let v = ready(&server, &admin, 1).await;
    assert_eq!(member_ids(&v), second, "kept across a restart: {v}");
    let kept_sandbox = sandbox_of(&data, &second[0]);
    let kept_pid = alive(&data, &second[0]).expect("the member's supervisor runs");

    // A new deploy (another policy): the old member is evicted and deleted, a new one made.
    server.stop().await;
    std::fs::write(
        &policy,
        "transforms:\n  - name: allowlist\n    config: {domains: [v2.example.test]}\n",
    )
    .unwrap();
    let server = setup.start_on(&listen).await;
    let v = ready(&server, &admin, 1).await;
    let third = member_ids(&v);
    assert_eq!(third.len(), 1, "only the new deploy's member: {v}");
    assert_ne!(third, second);
    assert_ne!(v["deploy_hash"], Value::Null);
    // It answered its stop once its sandbox was gone; the process ends just after.
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{kept_pid}")).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !Path::new(&format!("/proc/{kept_pid}")).exists(),
        "the old member's supervisor exited"
    );
    assert!(!data.join("sandboxes").join(&second[0]).exists());
    let left: Vec<_> = sandbox::local::runs()
        .into_iter()
        .filter(|r| r.id == kept_sandbox)
        .collect();
    assert!(left.is_empty(), "the old member left {left:?}");
    assert!(
        server
            .log()
            .contains(&format!("deleted warm sandbox {}", second[0])),
        "{}",
        server.log()
    );

    // The claimed thread goes on in its sandbox.
    let e = turn(&server, &key, "api:warm", "counting", "again").await;
    assert_eq!(e["status"], "completed", "{e}");
    server.stop().await;
    harness::stop_sandboxes(&data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_members_count_toward_max_running_and_make_room_first() {
    if !harness::root_or_skip("warm_members_count_toward_max_running_and_make_room_first") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "transforms: []\n").unwrap();
    let setup = setup(&policy, "  max_running: 2\n");
    let key = setup.key("tester", "agent");
    let admin = setup.key("operator", "admin");
    let data = setup.data();
    let server = setup.start().await;

    // A member whose supervisor dies is replaced (within the refiller's 10 s round).
    let dead = member_ids(&ready(&server, &admin, 1).await);
    let pid = alive(&data, &dead[0]).unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    let mut w1 = dead.clone();
    for _ in 0..300 {
        w1 = member_ids(&pool(&server, &admin).await);
        if w1.len() == 1 && w1 != dead && pool(&server, &admin).await["ready"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(w1.len() == 1 && w1 != dead, "replaced: {w1:?}");
    assert!(!data.join("sandboxes").join(&dead[0]).exists());
    let a = turn(&server, &key, "api:a", "counting", "a1").await;
    assert_eq!(a["status"], "completed", "{a}");
    // a's sandbox and a new member: two of two.
    let w2 = member_ids(&ready(&server, &admin, 1).await);
    assert_ne!(w1, w2);
    let b = turn(&server, &key, "api:b", "counting", "b1").await;
    assert_eq!(b["status"], "completed", "{b}");
    assert!(
        server
            .log()
            .contains(&format!("thread api:b claimed warm sandbox {}", w2[0])),
        "{}",
        server.log()
    );
    // Two thread sandboxes run: no room for a member.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let v = pool(&server, &admin).await;
    assert_eq!(v["ready"], 0, "{v}");
    assert_eq!(running(&data).len(), 2);
    // A third thread starts cold, after the least recently used idle sandbox (a's) stops.
    let c = turn(&server, &key, "api:c", "counting", "c1").await;
    assert_eq!(c["status"], "completed", "{c}");
    let now = running(&data);
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(
        !now.iter().any(|p| p.ends_with(&w1[0])),
        "a's sandbox stopped: {now:?}"
    );
    server.stop().await;
    harness::stop_sandboxes(&data).await;
}

/// A pool row's state, read from the store while no server runs.
async fn row_state(data: &Path, runtime: &str) -> Option<String> {
    let location = control::store::Location::Sqlite(data.join("centaur.db"));
    let store = control::store::Store::open(&location, Arc::new(control::clock::SystemClock))
        .await
        .unwrap();
    let members = store.pool_members(None).await.unwrap();
    members
        .into_iter()
        .find(|m| m.runtime_id == runtime)
        .map(|m| m.state)
}

/// The id of a member the pool shows as `starting`, polled as fast as the API answers (for
/// at most 3 s).
async fn catch_starting(server: &Server, admin: &str) -> Option<String> {
    let end = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < end {
        let v = pool(server, admin).await;
        let starting = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["state"] == "starting");
        if let Some(m) = starting {
            return Some(m["runtime_id"].as_str().unwrap().to_string());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_half_made_when_the_server_was_killed_is_deleted_at_the_next_start() {
    if !harness::root_or_skip(
        "a_member_half_made_when_the_server_was_killed_is_deleted_at_the_next_start",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "transforms: []\n").unwrap();
    let setup = setup(&policy, "");
    let key = setup.key("tester", "agent");
    let admin = setup.key("operator", "admin");
    let data = setup.data();
    let listen = format!("127.0.0.1:{}", free_port());

    // kill -9 while a member is being made: its row says `starting`, its supervisor goes on
    // and comes up warm with nobody left to mark it ready. The kill can come a moment too
    // late (the row says `ready` by then: such a member is rightly kept); then again.
    let mut half = None;
    for n in 0..5 {
        let server = setup.start_on(&listen).await;
        let mut seen = catch_starting(&server, &admin).await;
        if seen.is_none() {
            // Missed at start-up: a claim makes the pool refill.
            ready(&server, &admin, 1).await;
            let e = turn(&server, &key, &format!("api:t{n}"), "counting", "hi").await;
            assert_eq!(e["status"], "completed", "{e}");
            seen = catch_starting(&server, &admin).await;
        }
        server.kill9().await;
        if let Some(id) = seen
            && row_state(&data, &id).await.as_deref() == Some("starting")
        {
            half = Some(id);
            break;
        }
    }
    let half = half.expect("the server was killed while a member was starting");
    let client = control::supervisor::Client::new(data.join("sandboxes").join(&half));
    let mut state = Value::Null;
    for _ in 0..100 {
        state = client
            .status()
            .await
            .map_or(Value::Null, |s| s["state"].clone());
        if state == "warm" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "warm", "the half-made member came up after the kill");
    let sandbox = sandbox_of(&data, &half);

    // The next start deletes it and makes a member that can be claimed.
    let server = setup.start_on(&listen).await;
    let v = ready(&server, &admin, 1).await;
    let now = member_ids(&v);
    assert_eq!(now.len(), 1, "{v}");
    assert_ne!(now[0], half, "{v}");
    assert!(!data.join("sandboxes").join(&half).exists());
    assert!(
        sandbox::local::runs().iter().all(|r| r.id != sandbox),
        "the half-made member's sandbox is gone"
    );
    let e = turn(&server, &key, "api:after", "counting", "hi").await;
    assert_eq!(e["status"], "completed", "{e}");
    assert!(
        server
            .log()
            .contains(&format!("thread api:after claimed warm sandbox {}", now[0])),
        "{}",
        server.log()
    );
    server.stop().await;
    harness::stop_sandboxes(&data).await;
}
