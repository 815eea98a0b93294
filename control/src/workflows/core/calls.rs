//! How each kind of call is decided.

use serde_json::{Value, json};

use super::types::{
    Answer, Attempts, Checkpoint, Decision, Effect, Found, Kind, Outcome, Run, Target,
};

pub(super) fn step(
    run: &Run,
    seq: i64,
    name: &str,
    outcome: Option<&Outcome>,
    recorded: Option<&Checkpoint>,
    now: i64,
) -> Decision {
    if let Some(r) = recorded {
        return Decision::answer(recorded_step(&r.value));
    }
    let failed = run
        .attempts
        .filter(|a| a.seq == seq)
        .map_or(0, |a| a.failed);
    match outcome {
        None => Decision::answer(Answer::Run {
            attempt: failed + 1,
        }),
        Some(Outcome::Returned(v)) => Decision::with(
            Answer::Value(v.clone()),
            vec![Effect::Record(Checkpoint {
                seq,
                name: name.into(),
                kind: Kind::Step,
                done: true,
                value: json!({"result": v}),
            })],
        ),
        Some(Outcome::Raised {
            message,
            retryable,
            retry,
        }) => {
            let failed = failed + 1;
            if *retryable && failed < retry.limit {
                return Decision::with(
                    Answer::Stop,
                    vec![Effect::RetryAt {
                        attempts: Attempts { seq, failed },
                        at: now.saturating_add(retry.delay(failed)),
                        message: message.clone(),
                    }],
                );
            }
            let message = if failed > 1 {
                format!("step {name:?} failed after {failed} attempts: {message}")
            } else {
                format!("step {name:?} failed: {message}")
            };
            Decision::with(
                Answer::Raise {
                    kind: "step_failed".into(),
                    message: message.clone(),
                },
                vec![Effect::Record(Checkpoint {
                    seq,
                    name: name.into(),
                    kind: Kind::Step,
                    done: true,
                    value: json!({"error": message}),
                })],
            )
        }
    }
}

/// A recorded step's answer: its result, or its error raised again.
pub fn recorded_step(value: &Value) -> Answer {
    match value.get("error") {
        Some(e) => Answer::Raise {
            kind: value["kind"].as_str().unwrap_or("step_failed").into(),
            message: e.as_str().unwrap_or_default().to_string(),
        },
        None => Answer::Value(value.get("result").cloned().unwrap_or(Value::Null)),
    }
}

pub(super) fn sleep(
    seq: i64,
    name: &str,
    until: i64,
    recorded: Option<&Checkpoint>,
    now: i64,
) -> Decision {
    let until = match recorded {
        Some(r) if r.done => return Decision::answer(Answer::Value(Value::Null)),
        // The recorded wake time wins: a replay must not move it.
        Some(r) => r.value["until"].as_i64().unwrap_or(until),
        None => until,
    };
    let checkpoint = |done| Checkpoint {
        seq,
        name: name.into(),
        kind: Kind::Sleep,
        done,
        value: json!({"until": until}),
    };
    if until <= now {
        return Decision::with(
            Answer::Value(Value::Null),
            vec![Effect::Record(checkpoint(true))],
        );
    }
    let mut effects = Vec::new();
    if recorded.is_none() {
        effects.push(Effect::Record(checkpoint(false)));
    }
    effects.push(Effect::Suspend {
        wait_key: None,
        until,
        waiting_on: json!({"type": "sleep", "name": name, "until": until}),
    });
    Decision::with(Answer::Stop, effects)
}

/// A wait, with what the executor found.
pub(super) struct WaitCall<'a> {
    pub seq: i64,
    pub name: &'a str,
    pub target: &'a Target,
    pub deadline: i64,
    pub found: Option<&'a Found>,
}

pub(super) fn wait(w: &WaitCall<'_>, recorded: Option<&Checkpoint>, now: i64) -> Decision {
    if let Some(r) = recorded.filter(|r| r.done) {
        return Decision::answer(recorded_wait(w.name, &r.value));
    }
    // The recorded deadline wins: a replay must not extend it.
    let deadline = recorded
        .and_then(|r| r.value["deadline"].as_i64())
        .unwrap_or(w.deadline);
    let done = |value: Value| {
        let answer = recorded_wait(w.name, &value);
        Decision::with(
            answer,
            vec![Effect::Record(Checkpoint {
                seq: w.seq,
                name: w.name.into(),
                kind: w.target.kind(),
                done: true,
                value,
            })],
        )
    };
    match w.found {
        Some(Ok(v)) => return done(json!({"payload": v})),
        Some(Err((kind, message))) => return done(json!({"error": message, "kind": kind})),
        None => {}
    }
    if deadline <= now {
        return done(json!({"timeout": true}));
    }
    let mut effects = Vec::new();
    if recorded.is_none() {
        effects.push(Effect::Record(Checkpoint {
            seq: w.seq,
            name: w.name.into(),
            kind: w.target.kind(),
            done: false,
            value: json!({"wait_key": w.target.key(), "deadline": deadline}),
        }));
    }
    effects.push(Effect::Suspend {
        wait_key: Some(w.target.key()),
        until: deadline,
        waiting_on: w.target.waiting_on(w.name, deadline),
    });
    Decision::with(Answer::Stop, effects)
}

/// A finished wait's answer: what it found, or its error or timeout raised again.
pub fn recorded_wait(name: &str, value: &Value) -> Answer {
    if value["timeout"] == true {
        return Answer::Raise {
            kind: "timeout".into(),
            message: format!("wait {name:?}: nothing came before its deadline"),
        };
    }
    if let Some(e) = value.get("error") {
        return Answer::Raise {
            kind: value["kind"].as_str().unwrap_or("failed").into(),
            message: e.as_str().unwrap_or_default().into(),
        };
    }
    Answer::Value(value.get("payload").cloned().unwrap_or(Value::Null))
}

/// A child run or agent turn the executor started: its id is recorded (a replay gets the
/// same id; the start itself is idempotent on ids derived from the run and the call).
pub(super) fn start(
    seq: i64,
    name: &str,
    kind: Kind,
    started: &Result<String, String>,
    recorded: Option<&Checkpoint>,
) -> Decision {
    if let Some(r) = recorded {
        return Decision::answer(recorded_step(&r.value));
    }
    let (answer, value) = match started {
        Ok(id) => (Answer::Value(json!(id)), json!({"result": id})),
        Err(e) => (
            Answer::Raise {
                kind: "start_failed".into(),
                message: e.clone(),
            },
            json!({"error": e, "kind": "start_failed"}),
        ),
    };
    Decision::with(
        answer,
        vec![Effect::Record(Checkpoint {
            seq,
            name: name.into(),
            kind,
            done: true,
            value,
        })],
    )
}
