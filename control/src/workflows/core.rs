//! The deterministic core of the workflow engine: given a run's recorded checkpoints, the
//! time, and one command from the handler (with the facts the executor looked up for it),
//! decide the answer to the handler and the effects to commit — as data. No I/O, no clock of
//! its own: the executor performs the effects (fenced by the run's lease) and tests drive the
//! core with any time they like.
//!
//! The handler is the workflow: every resume runs it from the top. Its `ctx` calls are
//! numbered in the order it makes them (`seq`); call `seq` must be the one recorded at `seq`
//! (same kind, same name) or the run fails with `NON_DETERMINISTIC_REPLAY`. A recorded,
//! finished call answers with its recorded value; a new one is decided here and recorded
//! before the handler continues.

use serde_json::{Value, json};

/// How far in the future "no deadline" is (a waiting run is only woken by its event).
pub const NEVER: i64 = i64::MAX / 4;

/// The error code of a replay whose calls differ from the recorded ones.
pub const NON_DETERMINISTIC: &str = "NON_DETERMINISTIC_REPLAY";

/// What a `ctx` call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `ctx.step(name, fn)`: runs `fn` once, records its result.
    Step,
    /// `ctx.sleep` / `ctx.sleep_until`.
    Sleep,
    /// `ctx.wait_for_event`.
    Event,
}

impl Kind {
    /// Its name in the store and the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Step => "step",
            Kind::Sleep => "sleep",
            Kind::Event => "event",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "step" => Some(Kind::Step),
            "sleep" => Some(Kind::Sleep),
            "event" => Some(Kind::Event),
            _ => None,
        }
    }
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Its position in the handler's calls.
    pub seq: i64,
    /// Its de-duplicated name (`name`, `name#2`, …).
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// False while a sleep or wait is pending.
    pub done: bool,
    /// Step: `{result}` or `{error}`; sleep: `{until}`; wait: `{event_type, correlation_id,
    /// deadline}` while pending, then `{payload}` or `{timeout: true}`.
    pub value: Value,
}

/// A step's retry policy (the SDK's `RetryPolicy`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub limit: u32,
    /// Delay before the second attempt, in ms.
    pub delay_ms: i64,
    /// Double the delay after each attempt.
    pub exponential: bool,
    /// The longest delay, in ms.
    pub max_delay_ms: i64,
}

impl Retry {
    /// No retry: one attempt.
    pub const NONE: Retry = Retry {
        limit: 1,
        delay_ms: 0,
        exponential: false,
        max_delay_ms: 0,
    };

    /// The delay after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> i64 {
        let d = if self.exponential {
            let shift = attempt.saturating_sub(1).min(30);
            self.delay_ms.saturating_mul(1 << shift)
        } else {
            self.delay_ms
        };
        d.min(self.max_delay_ms.max(self.delay_ms)).max(0)
    }
}

/// The failed attempts so far of the step the run is retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    /// The step.
    pub seq: i64,
    /// Failed attempts.
    pub failed: u32,
}

/// A step's function ran: how it ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It returned this (JSON).
    Returned(Value),
    /// It raised.
    Raised {
        /// The error's text.
        message: String,
        /// False for `NonRetryableError` (and results that are not JSON).
        retryable: bool,
        /// The step's policy.
        retry: Retry,
    },
}

/// One `ctx` call from the handler, with the facts the executor looked up for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// A step the handler ran (a recorded step never reaches the engine as `Ran`: the SDK
    /// answers it from the checkpoints it was given).
    Step {
        /// Its name.
        name: String,
        /// How it ended (`None`: the handler asks whether it is recorded).
        outcome: Option<Outcome>,
    },
    /// A sleep for `ms`, or until `until` (epoch ms).
    Sleep {
        /// Its name.
        name: String,
        /// When it ends, if the handler said (`sleep_until`).
        until: Option<i64>,
        /// How long, if the handler said (`sleep`).
        ms: i64,
    },
    /// A wait for an event.
    Wait {
        /// Its name.
        name: String,
        /// The event's type.
        event_type: String,
        /// Its correlation id.
        correlation_id: String,
        /// How long to wait, in ms (`None`: for ever).
        timeout_ms: Option<i64>,
        /// The first matching event's payload, if one was posted.
        event: Option<Value>,
    },
}

impl Call {
    fn kind(&self) -> Kind {
        match self {
            Call::Step { .. } => Kind::Step,
            Call::Sleep { .. } => Kind::Sleep,
            Call::Wait { .. } => Kind::Event,
        }
    }

    fn name(&self) -> &str {
        match self {
            Call::Step { name, .. } | Call::Sleep { name, .. } | Call::Wait { name, .. } => name,
        }
    }
}

/// What the handler is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The call's value: go on.
    Value(Value),
    /// The call raises in the handler: `kind` is `step_failed` or `timeout`.
    Raise {
        /// Which error.
        kind: &'static str,
        /// Its text.
        message: String,
    },
    /// Run the step's function now (it is not recorded).
    Run {
        /// The attempt about to be made (1-based).
        attempt: u32,
    },
    /// Stop: the run is suspended or ended; the handler must not go on.
    Stop,
}

/// Why a run waits.
#[derive(Debug, Clone, PartialEq)]
pub enum Wait {
    /// Until a time.
    Sleep,
    /// For an event with this key (type, correlation id).
    Event(String, String),
}

/// What to commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Insert, or replace, the checkpoint at its `seq` (clears the retry counter).
    Record(Checkpoint),
    /// Count a failed attempt of step `seq` and retry it at `at`.
    RetryAt {
        /// The counter after this failure.
        attempts: Attempts,
        /// When the run is claimed again.
        at: i64,
        /// The error, shown while the run waits.
        message: String,
    },
    /// Suspend the run until `until` (or its event).
    Suspend {
        /// Why.
        wait: Wait,
        /// When it is claimed again at the latest.
        until: i64,
        /// `waiting_on`, as the API shows it.
        waiting_on: Value,
    },
    /// The run failed.
    Fail {
        /// A stable code.
        code: &'static str,
        /// What happened.
        message: String,
    },
}

/// The run as the core sees it.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Its checkpoints, by `seq` from 0.
    pub checkpoints: Vec<Checkpoint>,
    /// The step being retried.
    pub attempts: Option<Attempts>,
}

/// The answer to one call and what to commit first.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Tell the handler this (after the effects committed).
    pub answer: Answer,
    /// Commit these, in order.
    pub effects: Vec<Effect>,
}

impl Decision {
    fn answer(answer: Answer) -> Self {
        Decision {
            answer,
            effects: Vec::new(),
        }
    }

    fn with(answer: Answer, effects: Vec<Effect>) -> Self {
        Decision { answer, effects }
    }

    fn fail(code: &'static str, message: String) -> Self {
        Decision::with(Answer::Stop, vec![Effect::Fail { code, message }])
    }
}

/// Decides call `seq` at time `now` (epoch ms).
pub fn decide(run: &Run, seq: i64, call: &Call, now: i64) -> Decision {
    let recorded = usize::try_from(seq)
        .ok()
        .and_then(|i| run.checkpoints.get(i));
    let next = i64::try_from(run.checkpoints.len()).unwrap_or(i64::MAX);
    if recorded.is_none() && seq != next {
        return Decision::fail(
            NON_DETERMINISTIC,
            format!(
                "the handler's call #{seq} ({} {:?}) skips ahead: {next} calls are recorded",
                call.kind().as_str(),
                call.name()
            ),
        );
    }
    if let Some(r) = recorded
        && (r.kind != call.kind() || r.name != call.name())
    {
        return Decision::fail(
            NON_DETERMINISTIC,
            format!(
                "call #{seq} was recorded as {} {:?} but the handler now makes {} {:?}: the handler must make the same calls in the same order on every replay (name steps by what they do, not by time or randomness)",
                r.kind.as_str(),
                r.name,
                call.kind().as_str(),
                call.name()
            ),
        );
    }
    match call {
        Call::Step { name, outcome } => step(run, seq, name, outcome.as_ref(), recorded, now),
        Call::Sleep { name, until, ms } => sleep(
            seq,
            name,
            until.unwrap_or(now.saturating_add(*ms)),
            recorded,
            now,
        ),
        Call::Wait {
            name,
            event_type,
            correlation_id,
            timeout_ms,
            event,
        } => {
            let deadline = timeout_ms.map_or(NEVER, |t| now.saturating_add(t.max(0)));
            let w = WaitCall {
                seq,
                name,
                event_type,
                correlation_id,
                deadline,
                event: event.as_ref(),
            };
            wait(&w, recorded, now)
        }
    }
}

fn step(
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
                    kind: "step_failed",
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
            kind: "step_failed",
            message: e.as_str().unwrap_or_default().to_string(),
        },
        None => Answer::Value(value.get("result").cloned().unwrap_or(Value::Null)),
    }
}

fn sleep(seq: i64, name: &str, until: i64, recorded: Option<&Checkpoint>, now: i64) -> Decision {
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
        wait: Wait::Sleep,
        until,
        waiting_on: json!({"type": "sleep", "name": name, "until": until}),
    });
    Decision::with(Answer::Stop, effects)
}

struct WaitCall<'a> {
    seq: i64,
    name: &'a str,
    event_type: &'a str,
    correlation_id: &'a str,
    deadline: i64,
    event: Option<&'a Value>,
}

fn wait(w: &WaitCall<'_>, recorded: Option<&Checkpoint>, now: i64) -> Decision {
    if let Some(r) = recorded.filter(|r| r.done) {
        return Decision::answer(recorded_wait(w.name, &r.value));
    }
    // The recorded deadline wins: a replay must not extend it.
    let deadline = recorded
        .and_then(|r| r.value["deadline"].as_i64())
        .unwrap_or(w.deadline);
    let done = |value| {
        Effect::Record(Checkpoint {
            seq: w.seq,
            name: w.name.into(),
            kind: Kind::Event,
            done: true,
            value,
        })
    };
    if let Some(payload) = w.event {
        return Decision::with(
            Answer::Value(payload.clone()),
            vec![done(json!({"payload": payload}))],
        );
    }
    if deadline <= now {
        let value = json!({"timeout": true});
        return Decision::with(recorded_wait(w.name, &value), vec![done(value)]);
    }
    let mut effects = Vec::new();
    if recorded.is_none() {
        effects.push(Effect::Record(Checkpoint {
            seq: w.seq,
            name: w.name.into(),
            kind: Kind::Event,
            done: false,
            value: json!({"event_type": w.event_type, "correlation_id": w.correlation_id, "deadline": deadline}),
        }));
    }
    effects.push(Effect::Suspend {
        wait: Wait::Event(w.event_type.into(), w.correlation_id.into()),
        until: deadline,
        waiting_on: json!({
            "type": "event",
            "name": w.name,
            "event_type": w.event_type,
            "correlation_id": w.correlation_id,
            "deadline": (deadline < NEVER).then_some(deadline),
        }),
    });
    Decision::with(Answer::Stop, effects)
}

/// A finished wait's answer: the event's payload, or a timeout raised again.
pub fn recorded_wait(name: &str, value: &Value) -> Answer {
    if value["timeout"] == true {
        Answer::Raise {
            kind: "timeout",
            message: format!("wait {name:?}: no event before its deadline"),
        }
    } else {
        Answer::Value(value.get("payload").cloned().unwrap_or(Value::Null))
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
