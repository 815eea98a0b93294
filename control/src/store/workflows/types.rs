//! A workflow run as the store keeps it, and the row readers both files share.

use serde_json::{Value, json};

use crate::workflows::core::{Attempts, Checkpoint};

/// A run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Waiting to be claimed.
    Queued,
    /// A worker drives its handler.
    Running,
    /// Suspended until a time.
    Sleeping,
    /// Suspended until an event (or its deadline).
    Waiting,
    /// The handler returned.
    Completed,
    /// The handler raised, or the run could not go on.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl RunStatus {
    /// Its name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Sleeping => "sleeping",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// The status named `s`.
    pub fn parse(s: &str) -> Option<RunStatus> {
        [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Sleeping,
            RunStatus::Waiting,
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// Whether the run has ended.
    pub fn terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// The workflow.
    pub workflow_name: String,
    /// Its version (a hash of its source).
    pub workflow_version: String,
    /// The handler's input.
    pub input: Value,
    /// Runs are idempotent on (workflow, trigger key).
    pub trigger_key: Option<String>,
    /// What a reused trigger key must match (default: the input). A webhook's run matches on
    /// the body alone: a redelivery's headers differ.
    pub idempotency: Option<Value>,
}

/// A run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// `wfr_<16 hex>`.
    pub run_id: String,
    /// The workflow.
    pub workflow_name: String,
    /// Its version when the run was created.
    pub workflow_version: String,
    /// The run that started it.
    pub parent_run_id: Option<String>,
    /// The first run of its family (itself when it has no parent).
    pub root_run_id: String,
    /// Where it is.
    pub status: RunStatus,
    /// The handler's input.
    pub input: Value,
    /// The handler's return value.
    pub output: Option<Value>,
    /// Why it failed: a stable code.
    pub error_code: Option<String>,
    /// Why it failed (or the last error of a step being retried).
    pub error_text: Option<String>,
    /// Its trigger key.
    pub trigger_key: Option<String>,
    /// What it waits on while sleeping or waiting.
    pub waiting_on: Option<Value>,
    /// Whether a cancel was asked for while it ran.
    pub cancel_requested: bool,
    /// Epoch ms.
    pub created_at: i64,
    /// When a worker first claimed it.
    pub started_at: Option<i64>,
    /// When it ended.
    pub completed_at: Option<i64>,
}

impl RunRecord {
    /// The API's view; `idempotent` says the create found an existing run.
    pub fn to_json(&self, idempotent: bool) -> Value {
        json!({
            "run_id": self.run_id,
            "workflow_name": self.workflow_name,
            "workflow_version": self.workflow_version,
            "parent_run_id": self.parent_run_id,
            "root_run_id": self.root_run_id,
            "status": self.status.as_str(),
            "input": self.input,
            "output": self.output,
            "error_code": self.error_code,
            "error_text": self.error_text,
            "trigger_key": self.trigger_key,
            "waiting_on": self.waiting_on,
            "cancel_requested": self.cancel_requested,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "idempotent": idempotent,
        })
    }
}

/// A claimed run: what its handler's replay needs.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    /// The run.
    pub run: RunRecord,
    /// Its checkpoints, by seq.
    pub checkpoints: Vec<Checkpoint>,
    /// The step being retried.
    pub attempts: Option<Attempts>,
}

/// How a run ends.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// The handler returned this.
    Completed(Value),
    /// It was cancelled while it ran.
    Cancelled,
}

macro_rules! run_columns {
    () => {
        "run_id, workflow_name, workflow_version, parent_run_id, root_run_id, status, input_json, output_json, error_code, error_text, trigger_key, waiting_on, cancel_requested, created_at, started_at, completed_at"
    };
}

macro_rules! run_row {
    ($r:expr) => {{
        let r = $r;
        let status: String = r.try_get("status")?;
        let input: String = r.try_get("input_json")?;
        let output: Option<String> = r.try_get("output_json")?;
        let waiting: Option<String> = r.try_get("waiting_on")?;
        let cancel: i64 = r.try_get("cancel_requested")?;
        RunRecord {
            run_id: r.try_get("run_id")?,
            workflow_name: r.try_get("workflow_name")?,
            workflow_version: r.try_get("workflow_version")?,
            parent_run_id: r.try_get("parent_run_id")?,
            root_run_id: r.try_get("root_run_id")?,
            status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
            input: serde_json::from_str(&input).unwrap_or(Value::Null),
            output: output.and_then(|o| serde_json::from_str(&o).ok()),
            error_code: r.try_get("error_code")?,
            error_text: r.try_get("error_text")?,
            trigger_key: r.try_get("trigger_key")?,
            waiting_on: waiting.and_then(|w| serde_json::from_str(&w).ok()),
            cancel_requested: cancel != 0,
            created_at: r.try_get("created_at")?,
            started_at: r.try_get("started_at")?,
            completed_at: r.try_get("completed_at")?,
        }
    }};
}

macro_rules! checkpoint_row {
    ($r:expr) => {{
        let r = $r;
        let kind: String = r.try_get("kind")?;
        let value: String = r.try_get("value_json")?;
        let done: i64 = r.try_get("done")?;
        Checkpoint {
            seq: r.try_get("seq")?,
            name: r.try_get("name")?,
            kind: Kind::parse(&kind).unwrap_or(Kind::Step),
            done: done != 0,
            value: serde_json::from_str(&value).unwrap_or(Value::Null),
        }
    }};
}
