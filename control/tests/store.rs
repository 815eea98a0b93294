//! The store conformance suite: every case runs against embedded SQLite and against a real
//! PostgreSQL (`scripts/postgres`; without one, outside CI, the PostgreSQL half says SKIPPED).
//! Protects "durable before acknowledged" (DESIGN.md invariant 7): ids that a resuming reader
//! can trust, idempotent writes, one active execution per thread, leases that expire.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use control::clock::ManualClock;
use control::store::{
    Code, EnqueueRequest, Finish, InboxEnd, Line, Location, NewDelivery, NewMessage, SpawnRequest,
    Status, Store, StoreError,
};
use serde_json::json;

const T0: u64 = 1_800_000_000_000;

struct Db {
    store: Store,
    clock: Arc<ManualClock>,
    location: Location,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::Sqlite(dir.path().join("centaur.db"));
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::open(&location, clock.clone()).await.unwrap();
    Db {
        store,
        clock,
        location,
        _dir: Some(dir),
    }
}

async fn postgres(name: &str) -> Option<Db> {
    let url = testkit::postgres_db(name)?;
    let location = Location::Postgres(url);
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::open(&location, clock.clone()).await.unwrap();
    Some(Db {
        store,
        clock,
        location,
        _dir: None,
    })
}

/// Runs a case on both engines.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    if let Some(db) = super::postgres(stringify!($case)).await {
                        super::$case(db).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    keys_are_stored_hashed_and_revocable,
    spawn_is_idempotent_and_generations_advance,
    messages_check_the_generation_and_their_key,
    event_ids_never_let_a_resuming_reader_miss_a_commit,
    one_execution_runs_per_thread_in_order,
    an_expired_lease_is_taken_over,
    a_turn_is_prepared_once,
    output_lines_are_committed_once_and_a_turn_ends_once,
    cancel_and_release,
    the_failure_loop_breaker_opens_and_closes,
    a_newer_database_is_refused,
    commits_are_announced,
    the_slack_inbox_takes_a_message_once_and_the_outbox_is_leased,
    a_warm_member_is_claimed_once_and_the_reaper_keeps_members,
);

#[path = "store/workflows.rs"]
mod workflows;

fn spawn_req(thread: &str, spawn_id: Option<&str>, harness: Option<&str>) -> SpawnRequest {
    SpawnRequest {
        thread_key: thread.into(),
        spawn_id: spawn_id.map(Into::into),
        harness: harness.map(Into::into),
        default_harness: "scripted".into(),
        persona_id: None,
    }
}

fn text(id: Option<&str>, t: &str) -> NewMessage {
    NewMessage {
        message_id: id.map(Into::into),
        role: "user".into(),
        parts: json!([{"type": "text", "text": t}]),
    }
}

fn auto(thread: &str, execute_id: Option<&str>, t: &str) -> EnqueueRequest {
    EnqueueRequest {
        thread_key: thread.into(),
        generation: None,
        execute_id: execute_id.map(Into::into),
        message: Some(text(None, t)),
        harness: None,
        default_harness: "scripted".into(),
    }
}

fn code(e: StoreError) -> Code {
    match e {
        StoreError::Rejected(r) => r.code,
        other => panic!("expected a rejection, got {other}"),
    }
}

fn done(reason: &str) -> Finish {
    Finish {
        status: Status::Completed,
        reason: reason.into(),
        result_text: Some("ok".into()),
        error_text: None,
        agent_thread_id: Some("s1".into()),
    }
}

fn failed() -> Finish {
    Finish {
        status: Status::Failed,
        reason: "harness_error".into(),
        result_text: None,
        error_text: Some("boom".into()),
        agent_thread_id: None,
    }
}

async fn keys_are_stored_hashed_and_revocable(db: Db) {
    let s = db.store;
    let (secret, key) = s.create_key("me", &["agent".into()]).await.unwrap();
    assert!(secret.starts_with("ctr_") && secret.len() > 40);
    assert!(secret.starts_with(&key.prefix));
    assert_eq!(
        s.find_key(&secret).await.unwrap().unwrap().key_id,
        key.key_id
    );
    assert!(s.find_key("ctr_nope").await.unwrap().is_none());
    let listed = s.list_keys().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].scopes, vec!["agent".to_string()]);
    assert_eq!(s.revoke_key("me").await.unwrap(), 1);
    assert!(s.find_key(&secret).await.unwrap().is_none());
    assert_eq!(s.revoke_key("me").await.unwrap(), 0);
}

async fn spawn_is_idempotent_and_generations_advance(db: Db) {
    let s = db.store;
    let a = s.spawn(&spawn_req("t:1", Some("sp1"), None)).await.unwrap();
    assert!(!a.idempotent);
    assert_eq!(a.body["assignment_generation"], 1);
    let again = s.spawn(&spawn_req("t:1", Some("sp1"), None)).await.unwrap();
    assert!(again.idempotent);
    assert_eq!(again.body, a.body);
    let e = s
        .spawn(&spawn_req("t:1", Some("sp1"), Some("other")))
        .await
        .unwrap_err();
    assert_eq!(code(e), Code::IdempotencyPayloadMismatch);
    let e = s
        .spawn(&spawn_req("t:1", None, Some("other")))
        .await
        .unwrap_err();
    assert_eq!(code(e), Code::ActiveAssignmentMismatch);
    let attached = s.spawn(&spawn_req("t:1", None, None)).await.unwrap();
    assert_eq!(attached.body["runtime_id"], a.body["runtime_id"]);
    let (rel, runtime) = s
        .release("t:1", Some(&"r1".to_string()), false)
        .await
        .unwrap();
    assert_eq!(rel.body["released"], true);
    assert_eq!(runtime.as_deref(), a.body["runtime_id"].as_str());
    let (rel2, _) = s
        .release("t:1", Some(&"r1".to_string()), false)
        .await
        .unwrap();
    assert!(rel2.idempotent);
    let b = s
        .spawn(&spawn_req("t:1", None, Some("other")))
        .await
        .unwrap();
    assert_eq!(b.body["assignment_generation"], 2);
    assert_eq!(b.body["harness"], "other");
    assert_eq!(
        code(
            s.spawn(&spawn_req("nocolon", None, None))
                .await
                .unwrap_err()
        ),
        Code::InvalidThreadKey
    );
}

async fn messages_check_the_generation_and_their_key(db: Db) {
    let s = db.store;
    let e = s
        .append_message("t:m", 1, &text(None, "hi"))
        .await
        .unwrap_err();
    assert_eq!(code(e), Code::NoActiveAssignment);
    s.spawn(&spawn_req("t:m", None, None)).await.unwrap();
    let e = s
        .append_message("t:m", 2, &text(None, "hi"))
        .await
        .unwrap_err();
    assert_eq!(code(e), Code::AssignmentGenerationStale);
    let m = s
        .append_message("t:m", 1, &text(Some("m1"), "hi"))
        .await
        .unwrap();
    assert_eq!(m.body["message_id"], "m1");
    let again = s
        .append_message("t:m", 1, &text(Some("m1"), "hi"))
        .await
        .unwrap();
    assert!(again.idempotent);
    assert_eq!(again.body, m.body);
    let e = s
        .append_message("t:m", 1, &text(Some("m1"), "bye"))
        .await
        .unwrap_err();
    assert_eq!(code(e), Code::IdempotencyPayloadMismatch);
    let (list, more) = s.messages("t:m", None, 10).await.unwrap();
    assert_eq!(list.len(), 1, "a replayed message is stored once");
    assert!(!more);
    assert_eq!(list[0].parts[0]["text"], "hi");
}

async fn event_ids_never_let_a_resuming_reader_miss_a_commit(db: Db) {
    let s = db.store;
    s.spawn(&spawn_req("t:e", None, None)).await.unwrap();
    s.spawn(&spawn_req("t:other", None, None)).await.unwrap();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let thread = if i % 5 == 0 { "t:other" } else { "t:e" };
                    s.append_message(thread, 1, &text(Some(&format!("w{w}-{i}")), "x"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    // A reader that resumes from the last id it saw, while the writers commit.
    let reader = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut cursor = 0;
            let want = 8 * 20;
            for _ in 0..100_000 {
                for e in s.events_after("t:e", cursor, None, 7).await.unwrap() {
                    seen.push(e.event_id);
                    cursor = e.event_id;
                }
                if seen.len() >= want {
                    break;
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    let seen = reader.await.unwrap();
    let all: Vec<i64> = s
        .events_after("t:e", 0, None, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(
        all,
        (1..=160).collect::<Vec<i64>>(),
        "per-thread ids with no gaps"
    );
    assert_eq!(
        seen, all,
        "the resuming reader saw every committed event exactly once"
    );
    assert_eq!(s.last_event_id("t:e").await.unwrap(), 160);
    assert_eq!(s.last_event_id("t:other").await.unwrap(), 40);
}

async fn one_execution_runs_per_thread_in_order(db: Db) {
    let s = db.store;
    let a = s.enqueue(&auto("t:x", Some("e1"), "one")).await.unwrap();
    let b = s.enqueue(&auto("t:x", Some("e2"), "two")).await.unwrap();
    let c = s.enqueue(&auto("t:y", None, "three")).await.unwrap();
    assert_eq!(a.body["status"], "queued");
    let replay = s.enqueue(&auto("t:x", Some("e1"), "one")).await.unwrap();
    assert!(replay.idempotent);
    assert_eq!(replay.body["execution_id"], a.body["execution_id"]);
    assert_eq!(
        code(
            s.enqueue(&auto("t:x", Some("e1"), "changed"))
                .await
                .unwrap_err()
        ),
        Code::IdempotencyPayloadMismatch
    );
    // t:x's first and t:y's run (in either order); t:x's second waits for its first.
    let one = s.claim("w1", 30_000).await.unwrap().unwrap();
    let two = s.claim("w1", 30_000).await.unwrap().unwrap();
    let mut got = vec![
        one.execution.execution_id.clone(),
        two.execution.execution_id.clone(),
    ];
    got.sort();
    let mut want = vec![
        a.body["execution_id"].as_str().unwrap().to_string(),
        c.body["execution_id"].as_str().unwrap().to_string(),
    ];
    want.sort();
    assert_eq!(got, want);
    let first = if one.execution.thread_key == "t:x" {
        one
    } else {
        two
    };
    assert!(s.claim("w2", 30_000).await.unwrap().is_none());
    s.finish("t:x", &first.execution.execution_id, &done("completed"))
        .await
        .unwrap();
    let third = s.claim("w2", 30_000).await.unwrap().unwrap();
    assert_eq!(
        third.execution.execution_id,
        b.body["execution_id"].as_str().unwrap()
    );
    let missing = s
        .enqueue(&EnqueueRequest {
            message: None,
            ..auto("t:x", None, "")
        })
        .await
        .unwrap_err();
    assert_eq!(code(missing), Code::MissingField);
}

async fn an_expired_lease_is_taken_over(db: Db) {
    let s = db.store;
    s.enqueue(&auto("t:l", None, "go")).await.unwrap();
    let c = s.claim("w1", 1_000).await.unwrap().unwrap();
    let id = c.execution.execution_id;
    assert!(
        s.recover("w2", 1_000, false).await.unwrap().is_empty(),
        "a live lease is kept"
    );
    db.clock.advance(Duration::from_millis(1_500));
    let taken = s.recover("w2", 10_000, false).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].execution.execution_id, id);
    assert_eq!(
        s.heartbeat(&id, "w1", 1_000).await.unwrap(),
        None,
        "the old worker lost it"
    );
    assert_eq!(
        s.heartbeat(&id, "w2", 1_000).await.unwrap(),
        Some(Status::Running)
    );
    // A restarted only server takes every running execution at once.
    assert_eq!(s.recover("w3", 1_000, true).await.unwrap().len(), 1);
}

async fn a_turn_is_prepared_once(db: Db) {
    let s = db.store;
    s.spawn(&spawn_req("t:p", None, None)).await.unwrap();
    let generation = s.assignment("t:p").await.unwrap().unwrap().generation;
    s.append_message("t:p", generation, &text(None, "first"))
        .await
        .unwrap();
    s.enqueue(&auto("t:p", None, "second")).await.unwrap();
    // Queued behind it: the next execution's own message is not this turn's.
    s.enqueue(&auto("t:p", None, "next turn")).await.unwrap();
    let c = s.claim("w", 30_000).await.unwrap().unwrap();
    let turn = s.prepare_turn(&c.execution.execution_id).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&turn).unwrap();
    assert_eq!(v["type"], "user");
    assert_eq!(v["message"]["content"][0]["text"], "first");
    assert_eq!(v["message"]["content"][1]["text"], "second");
    s.append_message("t:p", generation, &text(None, "later"))
        .await
        .unwrap();
    assert_eq!(
        s.prepare_turn(&c.execution.execution_id).await.unwrap(),
        turn,
        "made once"
    );
    let (msgs, _) = s.messages("t:p", None, 10).await.unwrap();
    let delivered: Vec<bool> = msgs
        .iter()
        .map(|m| m.delivered_execution_id.is_some())
        .collect();
    assert_eq!(delivered, vec![true, true, false, false]);
}

async fn output_lines_are_committed_once_and_a_turn_ends_once(db: Db) {
    let s = db.store;
    s.enqueue(&auto("t:o", None, "go")).await.unwrap();
    let c = s.claim("w", 30_000).await.unwrap().unwrap();
    let id = c.execution.execution_id.as_str();
    let key = ("t:o", c.assignment.generation);
    let lines: Vec<Line> = (1..=3)
        .map(|i| Line {
            seq: i,
            text: format!("{{\"n\": {i}}}  verbatim "),
            agent: vec![format!("{{\"type\":\"system\",\"n\":{i}}}")],
        })
        .collect();
    s.commit_lines(key, Some(id), &lines[..2], None)
        .await
        .unwrap();
    // A replayed spool (a restart) re-sends lines 1-3: only 3 is new.
    s.commit_lines(key, Some(id), &lines, Some(&done("completed")))
        .await
        .unwrap();
    s.commit_lines(key, Some(id), &lines, Some(&failed()))
        .await
        .unwrap();
    let events = s.events_after("t:o", 0, Some(id), 100).await.unwrap();
    let outputs: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "output")
        .map(|e| e.data.as_str())
        .collect();
    assert_eq!(
        outputs,
        vec![
            "{\"n\": 1}  verbatim ",
            "{\"n\": 2}  verbatim ",
            "{\"n\": 3}  verbatim "
        ]
    );
    // Each line's canonical events follow it, once.
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.kind != "execution_state")
        .map(|e| (e.kind.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(kinds[1], ("agent", "{\"type\":\"system\",\"n\":1}"));
    assert_eq!(kinds.len(), 6);
    let states: Vec<String> = events
        .iter()
        .filter(|e| e.kind == "execution_state")
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.data).unwrap()["status"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        states,
        vec!["queued", "running", "completed"],
        "one terminal event"
    );
    let e = s.execution(id).await.unwrap().unwrap();
    assert_eq!(e.status, Status::Completed);
    assert_eq!(e.result_text.as_deref(), Some("ok"));
    assert_eq!(e.agent_thread_id.as_deref(), Some("s1"));
    assert_eq!(s.assignment("t:o").await.unwrap().unwrap().spool_seq, 3);
}

async fn cancel_and_release(db: Db) {
    let s = db.store;
    let a = s.enqueue(&auto("t:c", None, "one")).await.unwrap();
    let b = s.enqueue(&auto("t:c", None, "two")).await.unwrap();
    let a_id = a.body["execution_id"].as_str().unwrap();
    let b_id = b.body["execution_id"].as_str().unwrap();
    s.claim("w", 30_000).await.unwrap().unwrap();
    assert_eq!(s.cancel(b_id).await.unwrap().body["status"], "cancelled");
    assert!(s.cancel(b_id).await.unwrap().idempotent);
    assert_eq!(
        s.cancel(a_id).await.unwrap().body["status"],
        "cancel_requested"
    );
    assert_eq!(
        s.heartbeat(a_id, "w", 1000).await.unwrap(),
        Some(Status::CancelRequested)
    );
    assert_eq!(
        code(s.cancel("exe_nope").await.unwrap_err()),
        Code::NotFound
    );
    let q = s.enqueue(&auto("t:c", None, "three")).await.unwrap();
    let (out, rt) = s.release("t:c", None, true).await.unwrap();
    assert!(rt.is_some());
    assert_eq!(out.body["released"], true);
    for id in [a_id, q.body["execution_id"].as_str().unwrap()] {
        let e = s.execution(id).await.unwrap().unwrap();
        assert_eq!(
            (e.status, e.terminal_reason.as_deref()),
            (Status::Cancelled, Some("released"))
        );
    }
    let (out, rt) = s.release("t:c", None, true).await.unwrap();
    assert_eq!((out.body["released"].as_bool(), rt), (Some(false), None));
}

async fn the_failure_loop_breaker_opens_and_closes(db: Db) {
    let s = db.store;
    for i in 0..3 {
        let e = s
            .enqueue(&auto("t:f", None, &format!("try {i}")))
            .await
            .unwrap();
        let c = s.claim("w", 30_000).await.unwrap().unwrap();
        assert_eq!(
            c.execution.execution_id,
            e.body["execution_id"].as_str().unwrap()
        );
        s.finish("t:f", &c.execution.execution_id, &failed())
            .await
            .unwrap();
    }
    let e = s.enqueue(&auto("t:f", None, "again")).await.unwrap_err();
    assert_eq!(code(e), Code::ThreadFailureLoop);
    assert!(s.enqueue(&auto("t:g", None, "other thread")).await.is_ok());
    db.clock.advance(Duration::from_secs(301));
    assert!(s.enqueue(&auto("t:f", None, "later")).await.is_ok());
}

async fn a_newer_database_is_refused(db: Db) {
    db.store.enqueue(&auto("t:n", None, "x")).await.unwrap();
    db.store.close().await;
    // What a newer centaur would leave: a migration this version does not know.
    let sql = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'from the future', true, X'00', 1)";
    match &db.location {
        Location::Sqlite(p) => {
            let out = std::process::Command::new("python3")
                .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()"])
                .arg(p)
                .arg(sql)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Location::Postgres(u) => {
            let out = std::process::Command::new("psql")
                .arg(u)
                .args([
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    &sql.replace("X'00'", "'\\x00'"),
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let e = Store::open(&db.location, db.clock.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("newer centaur") && e.contains("9999"), "{e}");
}

async fn commits_are_announced(db: Db) {
    let s = db.store;
    let mut sub = s.subscribe();
    s.enqueue(&auto("t:a", None, "x")).await.unwrap();
    let a = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&*a.thread_key, "t:a");
    assert_eq!(a.event_id, s.last_event_id("t:a").await.unwrap());
    // The announcement carries the committed events (the message and the queued state).
    let stored = s.events_after("t:a", 0, None, 10).await.unwrap();
    assert_eq!(&*a.events, &stored[..]);
    if let Location::Postgres(_) = &db.location {
        // Another replica on the same database hears it through LISTEN/NOTIFY.
        let other = Store::open(&db.location, db.clock.clone()).await.unwrap();
        let mut theirs = other.subscribe();
        let listening = {
            let other = other.clone();
            tokio::spawn(async move { other.listen().await })
        };
        // The listener subscribes in the background: commit until it hears one (a
        // notification sent before it listened is not delivered, as PostgreSQL documents).
        let heard = tokio::time::timeout(Duration::from_secs(20), async {
            let mut i = 0;
            loop {
                i += 1;
                let thread = format!("t:b{i}");
                s.enqueue(&auto(&thread, None, "y")).await.unwrap();
                let wait = tokio::time::timeout(Duration::from_millis(500), theirs.recv());
                if let Ok(Ok(a)) = wait.await {
                    return a;
                }
            }
        })
        .await;
        let a = heard.expect("the other store heard a commit within 20 s");
        // This store's own commits on t:b1, t:b2, … (a late one may arrive in a later round).
        assert!(a.thread_key.starts_with("t:b"), "{}", a.thread_key);
        assert!(
            a.events.is_empty(),
            "another replica's events are read from the store"
        );
        listening.abort();
    }
}

/// Slack: a message key is stored once, a claimed row is held, the outbox is leased to one
/// worker at a time, progress needs the lease, and a dead letter keeps its reason.
async fn the_slack_inbox_takes_a_message_once_and_the_outbox_is_leased(db: Db) {
    let s = db.store;
    assert!(s.slack_inbox_insert("T:C:1.1", "Ev1", "{}").await.unwrap());
    assert!(
        !s.slack_inbox_insert("T:C:1.1", "Ev2", "{}").await.unwrap(),
        "a duplicate"
    );
    let rows = s.slack_inbox_claim(10, 5_000).await.unwrap();
    assert_eq!((rows.len(), rows[0].attempts), (1, 1));
    assert!(
        s.slack_inbox_claim(10, 5_000).await.unwrap().is_empty(),
        "held"
    );
    s.slack_inbox_context("T:C:1.1", "earlier").await.unwrap();
    db.clock.advance(Duration::from_millis(6_000));
    let again = s.slack_inbox_claim(10, 5_000).await.unwrap();
    assert_eq!(
        again[0].context.as_deref(),
        Some("earlier"),
        "a crash re-offers it, context kept"
    );
    s.slack_inbox_end("T:C:1.1", InboxEnd::Done, "exe_1")
        .await
        .unwrap();
    db.clock.advance(Duration::from_millis(6_000));
    assert!(
        s.slack_inbox_claim(10, 5_000).await.unwrap().is_empty(),
        "done"
    );
    assert!(s.slack_inbox_insert("T:C:2.2", "Ev3", "{}").await.unwrap());
    let cutoff = i64::try_from(T0).unwrap() + 20_000;
    assert_eq!(
        s.slack_inbox_prune(cutoff).await.unwrap(),
        1,
        "only the finished row"
    );
    assert!(
        !s.slack_inbox_insert("T:C:2.2", "Ev3", "{}").await.unwrap(),
        "pending kept"
    );

    let new = NewDelivery {
        source: "exe_1".into(),
        execution_id: Some("exe_1".into()),
        notice: None,
        thread_key: "slack:T:C:1.1".into(),
        channel: "C".into(),
        thread_ts: "1.1".into(),
    };
    s.slack_delivery_create(&new).await.unwrap();
    s.slack_delivery_create(&new).await.unwrap();
    let d = s.slack_delivery_claim("w1", 1_000, 10).await.unwrap();
    assert_eq!((d.len(), d[0].attempts), (1, 1), "one row per source");
    let id = d[0].delivery_id.clone();
    assert!(
        s.slack_delivery_claim("w2", 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    assert!(
        s.slack_delivery_progress(&id, "w1", 1_000, Some("9.9"), Some(1))
            .await
            .unwrap()
    );
    db.clock.advance(Duration::from_millis(1_500));
    let taken = s.slack_delivery_claim("w2", 1_000, 10).await.unwrap();
    assert_eq!(taken[0].attempts, 2, "an expired lease is taken over");
    assert_eq!(
        (taken[0].status_ts.as_deref(), taken[0].parts_posted),
        (Some("9.9"), 1)
    );
    assert!(
        !s.slack_delivery_progress(&id, "w1", 1_000, None, Some(2))
            .await
            .unwrap(),
        "w1 lost it"
    );
    s.slack_delivery_settle(
        &id,
        "w2",
        "dead",
        0,
        Some("chat.postMessage: channel_not_found"),
    )
    .await
    .unwrap();
    let dead = s.slack_deliveries(Some("dead"), 10).await.unwrap();
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("chat.postMessage: channel_not_found")
    );
    assert_eq!(
        s.slack_delivery_counts().await.unwrap(),
        vec![("dead".to_string(), 1)]
    );
    assert!(
        s.slack_deliveries(Some("active"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    db.clock.advance(Duration::from_millis(5_000));
    assert!(
        s.slack_delivery_claim("w3", 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "dead stays dead"
    );
    assert_eq!(s.slack_release_leases().await.unwrap(), 0);
}

async fn a_warm_member_is_claimed_once_and_the_reaper_keeps_members(db: Db) {
    let s = db.store;
    for t in ["t:a", "t:b", "t:c"] {
        s.spawn(&spawn_req(t, None, None)).await.unwrap();
    }
    s.pool_add("rt_w1", "host:/d", "h1").await.unwrap();
    db.clock.advance(Duration::from_millis(1));
    s.pool_add("rt_w2", "host:/d", "h1").await.unwrap();
    s.pool_add("rt_old", "host:/d", "h0").await.unwrap();
    s.pool_add("rt_else", "other:/d", "h1").await.unwrap();
    // Starting members are not claimed; the reaper keeps every member.
    assert_eq!(s.pool_claim("host:/d", "h1", "t:a", 1).await.unwrap(), None);
    let keep = s.active_runtimes().await.unwrap();
    for id in ["rt_w1", "rt_w2", "rt_old", "rt_else"] {
        assert!(keep.contains(&id.to_string()), "{keep:?}");
    }
    for id in ["rt_w1", "rt_w2", "rt_old", "rt_else"] {
        assert!(s.pool_ready(id).await.unwrap());
    }
    assert!(!s.pool_ready("rt_w1").await.unwrap(), "ready once");
    // Three threads claim at once: two get a member each, oldest first, none the same; the
    // other deploy's and the other machine's members are never claimed.
    let claims = ["t:a", "t:b", "t:c"].map(|t| {
        let s = s.clone();
        tokio::spawn(async move { (t, s.pool_claim("host:/d", "h1", t, 1).await.unwrap()) })
    });
    let mut got = Vec::new();
    for c in claims {
        let (t, id) = c.await.unwrap();
        if let Some(id) = id {
            let a = s.assignment(t).await.unwrap().unwrap();
            assert_eq!(a.runtime_id, id, "the member is the thread's runtime now");
            got.push(id);
        }
    }
    got.sort();
    assert_eq!(got, ["rt_w1", "rt_w2"]);
    let left: Vec<_> = s
        .pool_members(None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.runtime_id)
        .collect();
    assert_eq!(left, ["rt_else", "rt_old"]);
    assert_eq!(s.pool_members(Some("other:/d")).await.unwrap().len(), 1);
    assert!(s.pool_remove("rt_old").await.unwrap());
    assert!(!s.pool_remove("rt_old").await.unwrap());
}
