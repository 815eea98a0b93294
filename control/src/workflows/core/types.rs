//! The core's vocabulary: calls, checkpoints, answers, effects.

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
    /// `ctx.start_workflow`: creates a child run.
    StartWorkflow,
    /// `ctx.wait_for_workflow`.
    WaitWorkflow,
    /// `ctx.start_agent`: queues an agent turn on a thread.
    StartAgent,
    /// `ctx.wait_for_agent`.
    WaitAgent,
}

impl Kind {
    /// Its name in the store and the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Step => "step",
            Kind::Sleep => "sleep",
            Kind::Event => "event",
            Kind::StartWorkflow => "start_workflow",
            Kind::WaitWorkflow => "wait_workflow",
            Kind::StartAgent => "start_agent",
            Kind::WaitAgent => "wait_agent",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "step" => Some(Kind::Step),
            "sleep" => Some(Kind::Sleep),
            "event" => Some(Kind::Event),
            "start_workflow" => Some(Kind::StartWorkflow),
            "wait_workflow" => Some(Kind::WaitWorkflow),
            "start_agent" => Some(Kind::StartAgent),
            "wait_agent" => Some(Kind::WaitAgent),
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

/// What a wait waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `POST /workflows/events` with this type and correlation id.
    Event {
        /// The event's type.
        event_type: String,
        /// Its correlation id.
        correlation_id: String,
    },
    /// A run (a child) to end.
    Workflow(String),
    /// An agent execution to end.
    Execution(String),
}

impl Target {
    /// The run's `wait_key` while it waits: what wakes it.
    pub fn key(&self) -> String {
        match self {
            Target::Event {
                event_type,
                correlation_id,
            } => format!("event\n{event_type}\n{correlation_id}"),
            Target::Workflow(id) => format!("workflow\n{id}"),
            Target::Execution(id) => format!("execution\n{id}"),
        }
    }

    pub(super) fn kind(&self) -> Kind {
        match self {
            Target::Event { .. } => Kind::Event,
            Target::Workflow(_) => Kind::WaitWorkflow,
            Target::Execution(_) => Kind::WaitAgent,
        }
    }

    pub(super) fn waiting_on(&self, name: &str, deadline: i64) -> Value {
        let deadline = (deadline < NEVER).then_some(deadline);
        match self {
            Target::Event {
                event_type,
                correlation_id,
            } => {
                json!({"type": "event", "name": name, "event_type": event_type, "correlation_id": correlation_id, "deadline": deadline})
            }
            Target::Workflow(id) => {
                json!({"type": "workflow", "name": name, "run_id": id, "deadline": deadline})
            }
            Target::Execution(id) => {
                json!({"type": "execution", "name": name, "execution_id": id, "deadline": deadline})
            }
        }
    }
}

/// What a wait found: the event's payload or the run's or execution's result (`Ok`), or why
/// the child or the agent turn did not succeed (`Err(kind, message)`).
pub type Found = Result<Value, (String, String)>;

/// One `ctx` call from the handler, with the facts the executor looked up for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// A step the handler ran (a recorded step never reaches the engine as `Ran`: the SDK
    /// answers it from the checkpoints it was given).
    Step {
        /// Its name.
        name: String,
        /// How it ended (`None`: the handler asks whether to run it).
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
    /// A wait.
    Wait {
        /// Its name.
        name: String,
        /// For what.
        target: Target,
        /// How long to wait, in ms (`None`: for ever).
        timeout_ms: Option<i64>,
        /// What the executor found, if it is there yet.
        found: Option<Found>,
    },
    /// A child run or an agent turn, started by the executor before asking (idempotently:
    /// its ids derive from the run and the call): `Ok(id)`, or why it could not start.
    Start {
        /// Its name.
        name: String,
        /// `StartWorkflow` or `StartAgent`.
        kind: Kind,
        /// The child's run id or the execution's id.
        started: Result<String, String>,
    },
}

impl Call {
    pub(super) fn kind(&self) -> Kind {
        match self {
            Call::Step { .. } => Kind::Step,
            Call::Sleep { .. } => Kind::Sleep,
            Call::Wait { target, .. } => target.kind(),
            Call::Start { kind, .. } => *kind,
        }
    }

    pub(super) fn name(&self) -> &str {
        match self {
            Call::Step { name, .. }
            | Call::Sleep { name, .. }
            | Call::Wait { name, .. }
            | Call::Start { name, .. } => name,
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
        /// Which error: `step_failed`, `timeout`, `workflow_failed`, `workflow_cancelled`,
        /// `agent_failed`, `not_found` or `start_failed`.
        kind: String,
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
    /// Suspend the run until `until` (or until what it waits for).
    Suspend {
        /// What wakes it early (`Target::key`); none for a sleep.
        wait_key: Option<String>,
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
    pub(super) fn answer(answer: Answer) -> Self {
        Decision {
            answer,
            effects: Vec::new(),
        }
    }

    pub(super) fn with(answer: Answer, effects: Vec<Effect>) -> Self {
        Decision { answer, effects }
    }

    pub(super) fn fail(code: &'static str, message: String) -> Self {
        Decision::with(Answer::Stop, vec![Effect::Fail { code, message }])
    }
}
