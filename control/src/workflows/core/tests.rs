use serde_json::{Value, json};

use super::*;

fn step(name: &str, outcome: Option<Outcome>) -> Call {
    Call::Step {
        name: name.into(),
        outcome,
    }
}

fn returned(v: Value) -> Option<Outcome> {
    Some(Outcome::Returned(v))
}

/// Applies a decision's records to the run, as the executor does after committing them.
fn apply(run: &mut Run, d: &Decision) {
    for e in &d.effects {
        match e {
            Effect::Record(c) => {
                let i = usize::try_from(c.seq).unwrap();
                if i < run.checkpoints.len() {
                    run.checkpoints[i] = c.clone();
                } else {
                    run.checkpoints.push(c.clone());
                }
                run.attempts = None;
            }
            Effect::RetryAt { attempts, .. } => run.attempts = Some(*attempts),
            Effect::Suspend { .. } | Effect::Fail { .. } => {}
        }
    }
}

#[test]
fn a_new_step_runs_then_is_recorded_and_a_replay_answers_from_the_record() {
    let mut run = Run::default();
    let d = decide(&run, 0, &step("collect", None), 0);
    assert_eq!(d.answer, Answer::Run { attempt: 1 });
    assert!(d.effects.is_empty());
    let d = decide(&run, 0, &step("collect", returned(json!({"n": 3}))), 0);
    assert_eq!(d.answer, Answer::Value(json!({"n": 3})));
    apply(&mut run, &d);
    assert_eq!(run.checkpoints[0].value, json!({"result": {"n": 3}}));
    // A replay (a resumed run) gets the recorded value, even if it "ran" again.
    let d = decide(&run, 0, &step("collect", None), 99);
    assert_eq!(d.answer, Answer::Value(json!({"n": 3})));
    assert!(d.effects.is_empty());
}

#[test]
fn a_replay_that_makes_other_calls_fails_as_non_deterministic() {
    let mut run = Run::default();
    let d = decide(&run, 0, &step("a", returned(json!(1))), 0);
    apply(&mut run, &d);
    for (seq, call) in [
        (0, step("b", None)),
        (
            0,
            Call::Sleep {
                name: "a".into(),
                until: None,
                ms: 5,
            },
        ),
        (2, step("c", None)),
    ] {
        let d = decide(&run, seq, &call, 0);
        assert_eq!(d.answer, Answer::Stop);
        let [Effect::Fail { code, message }] = d.effects.as_slice() else {
            panic!("{d:?}")
        };
        assert_eq!(*code, NON_DETERMINISTIC);
        assert!(message.contains("#"), "{message}");
    }
}

#[test]
fn a_failing_step_is_retried_with_backoff_then_its_error_is_recorded() {
    let retry = Retry {
        limit: 3,
        delay_ms: 1_000,
        exponential: true,
        max_delay_ms: 60_000,
    };
    let raised = || {
        Some(Outcome::Raised {
            message: "503".into(),
            retryable: true,
            retry,
        })
    };
    let mut run = Run::default();
    let d = decide(&run, 0, &step("call", raised()), 10_000);
    assert_eq!(d.answer, Answer::Stop);
    assert_eq!(
        d.effects,
        vec![Effect::RetryAt {
            attempts: Attempts { seq: 0, failed: 1 },
            at: 11_000,
            message: "503".into()
        }]
    );
    apply(&mut run, &d);
    assert_eq!(
        decide(&run, 0, &step("call", None), 11_000).answer,
        Answer::Run { attempt: 2 }
    );
    let d = decide(&run, 0, &step("call", raised()), 11_000);
    assert!(matches!(d.effects[0], Effect::RetryAt { at: 13_000, .. }));
    apply(&mut run, &d);
    let d = decide(&run, 0, &step("call", raised()), 13_000);
    let Answer::Raise { kind, message } = &d.answer else {
        panic!("{d:?}")
    };
    assert_eq!(kind, "step_failed");
    assert!(message.contains("after 3 attempts"), "{message}");
    apply(&mut run, &d);
    // The failure is recorded: a replay raises it again without running the step.
    assert_eq!(decide(&run, 0, &step("call", None), 0).answer, d.answer);
}

#[test]
fn a_non_retryable_error_is_not_retried() {
    let d = decide(
        &Run::default(),
        0,
        &step(
            "x",
            Some(Outcome::Raised {
                message: "bad".into(),
                retryable: false,
                retry: Retry {
                    limit: 5,
                    ..Retry::NONE
                },
            }),
        ),
        0,
    );
    assert!(matches!(d.answer, Answer::Raise { .. }));
}

#[test]
fn backoff_is_capped() {
    let r = Retry {
        limit: 50,
        delay_ms: 1_000,
        exponential: true,
        max_delay_ms: 5_000,
    };
    assert_eq!(
        (1..=5).map(|a| r.delay(a)).collect::<Vec<_>>(),
        [1_000, 2_000, 4_000, 5_000, 5_000]
    );
    assert_eq!(r.delay(40), 5_000);
}

#[test]
fn a_sleep_suspends_until_its_recorded_time_and_a_replay_does_not_move_it() {
    let mut run = Run::default();
    let sleep = |ms| Call::Sleep {
        name: "cool".into(),
        until: None,
        ms,
    };
    let d = decide(&run, 0, &sleep(60_000), 1_000);
    assert_eq!(d.answer, Answer::Stop);
    assert!(matches!(
        d.effects.last(),
        Some(Effect::Suspend {
            wait_key: None,
            until: 61_000,
            ..
        })
    ));
    apply(&mut run, &d);
    // Resumed early (a restart): it suspends again until the same time.
    let d = decide(&run, 0, &sleep(60_000), 30_000);
    assert!(matches!(
        d.effects.as_slice(),
        [Effect::Suspend { until: 61_000, .. }]
    ));
    // On time: it is done, recorded as done, and the handler goes on.
    let d = decide(&run, 0, &sleep(60_000), 61_000);
    assert_eq!(d.answer, Answer::Value(Value::Null));
    apply(&mut run, &d);
    assert!(run.checkpoints[0].done);
    assert_eq!(
        decide(&run, 0, &sleep(60_000), 0).answer,
        Answer::Value(Value::Null)
    );
}

#[test]
fn a_wait_takes_an_event_posted_before_or_after_it_and_times_out_at_its_recorded_deadline() {
    let wait = |event: Option<Value>| Call::Wait {
        name: "approval".into(),
        target: Target::Event {
            event_type: "approval".into(),
            correlation_id: "42".into(),
        },
        timeout_ms: Some(10_000),
        found: event.map(Ok),
    };
    // Posted before the wait: taken at once.
    let d = decide(&Run::default(), 0, &wait(Some(json!({"ok": true}))), 0);
    assert_eq!(d.answer, Answer::Value(json!({"ok": true})));
    // No event yet: a pending marker and a suspend until the deadline.
    let mut run = Run::default();
    let d = decide(&run, 0, &wait(None), 1_000);
    assert_eq!(d.answer, Answer::Stop);
    assert!(matches!(
        d.effects.as_slice(),
        [Effect::Record(Checkpoint { done: false, .. }), Effect::Suspend { wait_key: Some(k), until: 11_000, .. }] if k == "event\napproval\n42"
    ));
    apply(&mut run, &d);
    // Woken by the event.
    let d = decide(&run, 0, &wait(Some(json!(7))), 5_000);
    assert_eq!(d.answer, Answer::Value(json!(7)));
    // Or, with none, timed out at the recorded deadline (not 10 s after the replay).
    let d = decide(&run, 0, &wait(None), 11_000);
    assert!(matches!(&d.answer, Answer::Raise { kind, .. } if kind == "timeout"));
    apply(&mut run, &d);
    assert!(matches!(
        decide(&run, 0, &wait(Some(json!(7))), 12_000).answer,
        Answer::Raise { kind, .. } if kind == "timeout"
    ));
}

#[test]
fn a_start_records_the_started_id_and_a_replay_gets_it_without_starting_again() {
    let start = |started: Result<String, String>| Call::Start {
        name: "notify".into(),
        kind: Kind::StartWorkflow,
        started,
    };
    let mut run = Run::default();
    let d = decide(&run, 0, &start(Ok("wfr_1".into())), 0);
    assert_eq!(d.answer, Answer::Value(json!("wfr_1")));
    apply(&mut run, &d);
    // The executor starts nothing for a recorded call; the record answers.
    assert_eq!(
        decide(&run, 0, &start(Ok(String::new())), 0).answer,
        Answer::Value(json!("wfr_1"))
    );
    // A start that failed raises, and raises again on replay.
    let mut run = Run::default();
    let d = decide(&run, 0, &start(Err("no workflow named \"x\"".into())), 0);
    assert!(matches!(&d.answer, Answer::Raise { kind, .. } if kind == "start_failed"));
    apply(&mut run, &d);
    assert_eq!(
        decide(&run, 0, &start(Ok(String::new())), 0).answer,
        d.answer
    );
    // A start recorded as a workflow is not an agent turn on replay.
    let agent = Call::Start {
        name: "notify".into(),
        kind: Kind::StartAgent,
        started: Ok("exe_1".into()),
    };
    assert!(matches!(
        decide(&run, 0, &agent, 0).effects.as_slice(),
        [Effect::Fail {
            code: NON_DETERMINISTIC,
            ..
        }]
    ));
}

#[test]
fn a_child_or_agent_wait_ends_with_its_result_or_raises_its_failure() {
    let wait = |target: Target, found: Option<Found>| Call::Wait {
        name: "child".into(),
        target,
        timeout_ms: None,
        found,
    };
    let child = || Target::Workflow("wfr_1".into());
    // Not ended: a pending marker, suspended with no deadline, woken by its key.
    let d = decide(&Run::default(), 0, &wait(child(), None), 0);
    assert!(matches!(
        d.effects.as_slice(),
        [Effect::Record(Checkpoint { done: false, kind: Kind::WaitWorkflow, .. }), Effect::Suspend { wait_key: Some(k), until: NEVER, waiting_on }]
            if k == "workflow\nwfr_1" && waiting_on["type"] == "workflow" && waiting_on["deadline"].is_null()
    ));
    let d = decide(
        &Run::default(),
        0,
        &wait(child(), Some(Ok(json!({"n": 1})))),
        0,
    );
    assert_eq!(d.answer, Answer::Value(json!({"n": 1})));
    let failed = Some(Err(("workflow_failed".into(), "boom".into())));
    let mut run = Run::default();
    let d = decide(&run, 0, &wait(child(), failed), 0);
    assert_eq!(
        d.answer,
        Answer::Raise {
            kind: "workflow_failed".into(),
            message: "boom".into()
        }
    );
    apply(&mut run, &d);
    assert_eq!(decide(&run, 0, &wait(child(), None), 0).answer, d.answer);
    let turn = Target::Execution("exe_1".into());
    assert_eq!(turn.key(), "execution\nexe_1");
    let d = decide(&Run::default(), 0, &wait(turn, None), 0);
    assert!(matches!(
        d.effects[0],
        Effect::Record(Checkpoint {
            kind: Kind::WaitAgent,
            ..
        })
    ));
}
