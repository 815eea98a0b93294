//! Workflow runs in the store, on both engines: idempotent creation, one claimer per run,
//! writes fenced by the lease, events that wake waiters and are never lost.

use std::time::Duration;

use control::store::{Code, DueSchedule, NewRun, RunEnd, RunStatus, StoreError};
use control::workflows::core::{Checkpoint, Effect, Kind, Target};
use serde_json::json;

use super::Db;

async fn sqlite() -> Db {
    super::sqlite().await
}

async fn postgres(name: &str) -> Option<Db> {
    super::postgres(name).await
}

conformance!(
    runs_are_idempotent_on_their_trigger_key,
    one_claimer_per_run_and_writes_are_fenced_by_the_lease,
    a_sleeping_run_is_due_at_its_time_and_an_expired_lease_is_taken_over,
    an_event_wakes_its_waiter_and_one_posted_first_is_not_lost,
    cancel_stops_a_suspended_run_at_once_and_a_running_one_at_its_next_write,
    a_schedule_slot_is_fired_by_one_replica_and_survives_a_resync,
);

fn new(name: &str, input: serde_json::Value, trigger: Option<&str>) -> NewRun {
    NewRun {
        workflow_name: name.into(),
        workflow_version: "v1".into(),
        input,
        trigger_key: trigger.map(Into::into),
        idempotency: None,
    }
}

fn record(seq: i64, name: &str, value: serde_json::Value) -> Effect {
    Effect::Record(Checkpoint {
        seq,
        name: name.into(),
        kind: Kind::Step,
        done: true,
        value,
    })
}

async fn runs_are_idempotent_on_their_trigger_key(db: Db) {
    let s = &db.store;
    let (a, found) = s
        .create_run(&new("digest", json!({"id": 1}), Some("k1")))
        .await
        .unwrap();
    assert!(!found);
    assert!(a.run_id.starts_with("wfr_") && a.run_id.len() == 20);
    assert_eq!(a.root_run_id, a.run_id);
    assert_eq!(a.status, RunStatus::Queued);
    let (b, found) = s
        .create_run(&new("digest", json!({"id": 1}), Some("k1")))
        .await
        .unwrap();
    assert!(found);
    assert_eq!(b.run_id, a.run_id);
    let err = s
        .create_run(&new("digest", json!({"id": 2}), Some("k1")))
        .await
        .unwrap_err();
    let StoreError::Rejected(r) = err else {
        panic!("{err:?}")
    };
    assert_eq!(r.code, Code::IdempotencyPayloadMismatch);
    // The same key on another workflow, or no key, is a new run.
    let (c, _) = s
        .create_run(&new("other", json!({"id": 2}), Some("k1")))
        .await
        .unwrap();
    let (d, _) = s
        .create_run(&new("digest", json!({"id": 1}), None))
        .await
        .unwrap();
    assert!(c.run_id != a.run_id && d.run_id != a.run_id);
    assert_eq!(
        s.list_runs(Some("digest"), None, 10).await.unwrap().len(),
        2
    );
}

async fn one_claimer_per_run_and_writes_are_fenced_by_the_lease(db: Db) {
    let s = &db.store;
    let (run, _) = s.create_run(&new("w", json!({}), None)).await.unwrap();
    let (a, b) = tokio::join!(s.claim_run("wa", 30_000), s.claim_run("wb", 30_000));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(
        a.is_some() != b.is_some(),
        "exactly one claimer wins: {a:?} {b:?}"
    );
    let (winner, loser) = if a.is_some() {
        ("wa", "wb")
    } else {
        ("wb", "wa")
    };
    let c = a.or(b).unwrap();
    assert_eq!(c.run.run_id, run.run_id);
    assert!(c.checkpoints.is_empty());
    assert!(
        !s.commit_run(
            &run.run_id,
            loser,
            &[record(0, "x", json!({"result": 1}))],
            30_000
        )
        .await
        .unwrap(),
        "a worker that does not hold the run records nothing"
    );
    assert!(
        s.commit_run(
            &run.run_id,
            winner,
            &[record(0, "x", json!({"result": 1}))],
            30_000
        )
        .await
        .unwrap()
    );
    assert!(
        !s.end_run(&run.run_id, loser, &RunEnd::Completed(json!(0)))
            .await
            .unwrap()
    );
    assert!(
        s.end_run(&run.run_id, winner, &RunEnd::Completed(json!({"ok": true})))
            .await
            .unwrap()
    );
    let (r, cps) = s.get_run(&run.run_id).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    assert_eq!(r.output, Some(json!({"ok": true})));
    assert_eq!(cps.len(), 1);
    assert_eq!(cps[0].value, json!({"result": 1}));
    // Ended: nobody can write to it any more.
    assert!(
        !s.commit_run(&run.run_id, winner, &[record(1, "y", json!(2))], 30_000)
            .await
            .unwrap()
    );
}

async fn a_sleeping_run_is_due_at_its_time_and_an_expired_lease_is_taken_over(db: Db) {
    let s = &db.store;
    let (run, _) = s.create_run(&new("w", json!({}), None)).await.unwrap();
    s.claim_run("wa", 30_000).await.unwrap().unwrap();
    let until = i64::try_from(super::T0).unwrap() + 60_000;
    let suspend = Effect::Suspend {
        wait_key: None,
        until,
        waiting_on: json!({"type": "sleep", "until": until}),
    };
    assert!(
        s.commit_run(&run.run_id, "wa", &[suspend], 30_000)
            .await
            .unwrap()
    );
    let (r, _) = s.get_run(&run.run_id).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Sleeping);
    assert_eq!(r.waiting_on.unwrap()["type"], "sleep");
    assert!(s.claim_run("wb", 30_000).await.unwrap().is_none());
    db.clock.advance(Duration::from_secs(60));
    let c = s.claim_run("wb", 30_000).await.unwrap().unwrap();
    assert_eq!(c.run.run_id, run.run_id);
    assert_eq!(c.run.waiting_on, None);
    // wb dies; once its lease expires another worker takes the run over.
    assert!(s.claim_run("wc", 30_000).await.unwrap().is_none());
    db.clock.advance(Duration::from_secs(31));
    assert!(!s.renew_run(&run.run_id, "wc", 30_000).await.unwrap());
    let c = s.claim_run("wc", 30_000).await.unwrap().unwrap();
    assert_eq!(c.run.run_id, run.run_id);
    assert!(!s.renew_run(&run.run_id, "wb", 30_000).await.unwrap());
    assert!(s.renew_run(&run.run_id, "wc", 30_000).await.unwrap());
}

async fn an_event_wakes_its_waiter_and_one_posted_first_is_not_lost(db: Db) {
    let s = &db.store;
    let wait = |t: &str| Effect::Suspend {
        wait_key: Some(
            Target::Event {
                event_type: "approval".into(),
                correlation_id: t.into(),
            }
            .key(),
        ),
        until: i64::MAX / 4,
        waiting_on: json!({"type": "event"}),
    };
    let (run, _) = s.create_run(&new("w", json!({}), None)).await.unwrap();
    s.claim_run("wa", 30_000).await.unwrap().unwrap();
    assert!(
        s.commit_run(&run.run_id, "wa", &[wait("42")], 30_000)
            .await
            .unwrap()
    );
    assert!(s.claim_run("wa", 30_000).await.unwrap().is_none());
    // Another key wakes nobody.
    let (_, woken) = s
        .post_workflow_event("approval", "41", &json!(1))
        .await
        .unwrap();
    assert_eq!(woken, 0);
    let (_, woken) = s
        .post_workflow_event("approval", "42", &json!({"ok": true}))
        .await
        .unwrap();
    assert_eq!(woken, 1);
    assert_eq!(
        s.find_workflow_event("approval", "42").await.unwrap(),
        Some(json!({"ok": true}))
    );
    let c = s.claim_run("wa", 30_000).await.unwrap().unwrap();
    assert_eq!(c.run.run_id, run.run_id);
    // An event posted before a run waits for it: the suspend finds it and the run is due.
    let (run2, _) = s.create_run(&new("w", json!({}), None)).await.unwrap();
    s.post_workflow_event("approval", "43", &json!(3))
        .await
        .unwrap();
    let c = s.claim_run("wb", 30_000).await.unwrap().unwrap();
    assert_eq!(c.run.run_id, run2.run_id);
    assert!(
        s.commit_run(&run2.run_id, "wb", &[wait("43")], 30_000)
            .await
            .unwrap()
    );
    let c = s.claim_run("wb", 30_000).await.unwrap().unwrap();
    assert_eq!(c.run.run_id, run2.run_id);
}

async fn cancel_stops_a_suspended_run_at_once_and_a_running_one_at_its_next_write(db: Db) {
    let s = &db.store;
    let (a, _) = s.create_run(&new("w", json!({}), None)).await.unwrap();
    let r = s.cancel_run(&a.run_id).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Cancelled);
    assert!(r.completed_at.is_some());
    // Idempotent on an ended run; unknown runs are None.
    assert_eq!(
        s.cancel_run(&a.run_id).await.unwrap().unwrap().status,
        RunStatus::Cancelled
    );
    assert!(
        s.cancel_run("wfr_0000000000000000")
            .await
            .unwrap()
            .is_none()
    );
    let (b, _) = s.create_run(&new("w", json!({}), None)).await.unwrap();
    s.claim_run("wa", 30_000).await.unwrap().unwrap();
    let r = s.cancel_run(&b.run_id).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Running);
    assert!(r.cancel_requested);
    assert!(!s.renew_run(&b.run_id, "wa", 30_000).await.unwrap());
    assert!(
        !s.commit_run(&b.run_id, "wa", &[record(0, "x", json!(1))], 30_000)
            .await
            .unwrap()
    );
    assert!(
        !s.end_run(&b.run_id, "wa", &RunEnd::Completed(json!(1)))
            .await
            .unwrap()
    );
    assert!(
        s.end_run(&b.run_id, "wa", &RunEnd::Cancelled)
            .await
            .unwrap()
    );
    let (r, cps) = s.get_run(&b.run_id).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Cancelled);
    assert!(cps.is_empty());
}

async fn a_schedule_slot_is_fired_by_one_replica_and_survives_a_resync(db: Db) {
    let s = &db.store;
    let t0 = i64::try_from(super::T0).unwrap();
    s.sync_schedules(&[("tick".into(), "h1".into(), t0 + 1_000)])
        .await
        .unwrap();
    assert!(s.due_schedules().await.unwrap().is_empty());
    db.clock.advance(Duration::from_secs(1));
    let due = s.due_schedules().await.unwrap();
    assert_eq!(
        due,
        [DueSchedule {
            workflow_name: "tick".into(),
            spec_hash: "h1".into(),
            due: t0 + 1_000
        }]
    );
    // Two replicas fire the same slot: one creates the run.
    let fire = || Some((t0 + 1_000, new("tick", json!({}), None)));
    let (a, b) = tokio::join!(
        s.advance_schedule(&due[0], Some(t0 + 2_000), fire()),
        s.advance_schedule(&due[0], Some(t0 + 2_000), fire())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.is_some() != b.is_some(), "{a:?} {b:?}");
    let runs = s.list_runs(Some("tick"), None, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0].trigger_key.as_deref(),
        Some(format!("schedule:tick:{}", t0 + 1_000).as_str())
    );
    // A restart syncs the same schedule: its next slot is kept; a changed one starts over;
    // a removed one stops.
    s.sync_schedules(&[("tick".into(), "h1".into(), t0 + 9_000)])
        .await
        .unwrap();
    db.clock.advance(Duration::from_secs(1));
    assert_eq!(s.due_schedules().await.unwrap()[0].due, t0 + 2_000);
    s.sync_schedules(&[("tick".into(), "h2".into(), t0 + 9_000)])
        .await
        .unwrap();
    assert!(s.due_schedules().await.unwrap().is_empty());
    s.sync_schedules(&[]).await.unwrap();
    db.clock.advance(Duration::from_secs(60));
    assert!(s.due_schedules().await.unwrap().is_empty());
    // An old replica's version of the schedule does not move it.
    let stale = DueSchedule {
        workflow_name: "tick".into(),
        spec_hash: "h1".into(),
        due: t0 + 9_000,
    };
    assert_eq!(s.advance_schedule(&stale, None, None).await.unwrap(), None);
}
