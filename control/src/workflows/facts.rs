//! What the executor does before the core decides a call: read the worker's line, look up
//! what a wait waits for (the event, the child's end, the agent turn's end), and perform a
//! start idempotently (a child run or an agent turn whose ids derive from the run and the
//! call, so a replay after a crash finds the same one instead of starting another).

use serde_json::{Value, json};

use crate::store::{EnqueueRequest, NewMessage, RunRecord, RunStatus, Status, Store, StoreError};
use crate::workflows::core::{Call, Found, Kind, Outcome, Retry, Target};

/// What an agent turn needs from the server.
#[derive(Clone)]
pub struct Agents {
    /// The harness a turn runs when the handler names none.
    pub default_harness: String,
    /// Wakes the execution worker (a turn was queued).
    pub kick: std::sync::Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agents")
            .field("default_harness", &self.default_harness)
            .finish_non_exhaustive()
    }
}

/// The id of the child run started by call `seq` of `run_id`.
pub fn child_id(run_id: &str, seq: i64) -> String {
    let h = crate::store::request_hash(&json!(["child", run_id, seq]));
    format!("wfr_{}", &h[..16])
}

/// Reads a worker's call and completes it with the facts it needs. `recorded`: the call
/// is already recorded (a replay), so nothing is started again.
pub async fn gather(
    store: &Store,
    agents: &Agents,
    run: &RunRecord,
    workflows: &std::collections::BTreeMap<String, crate::workflows::worker::Found>,
    m: &Value,
    recorded: bool,
) -> Result<Result<Call, String>, StoreError> {
    let call = match parse(m) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let seq = m["seq"].as_i64().unwrap_or(-1);
    Ok(Ok(match call {
        Parsed::Ready(c) => c,
        Parsed::Wait {
            name,
            target,
            timeout_ms,
        } => {
            let found = if recorded {
                None
            } else {
                find(store, &target).await?
            };
            Call::Wait {
                name,
                target,
                timeout_ms,
                found,
            }
        }
        Parsed::StartWorkflow {
            name,
            workflow,
            input,
        } => {
            let started = if recorded {
                Ok(String::new())
            } else {
                match workflows.get(&workflow) {
                    None => Err(format!("no workflow named {workflow:?} is loaded")),
                    Some(wf) => {
                        let id = child_id(&run.run_id, seq);
                        store
                            .create_child_run(run, &id, (&workflow, &wf.version), &input)
                            .await?;
                        Ok(id)
                    }
                }
            };
            Call::Start {
                name,
                kind: Kind::StartWorkflow,
                started,
            }
        }
        Parsed::StartAgent { name, request } => {
            let started = if recorded {
                Ok(String::new())
            } else {
                start_agent(store, agents, run, seq, &request).await?
            };
            Call::Start {
                name,
                kind: Kind::StartAgent,
                started,
            }
        }
    }))
}

/// Queues the agent turn of call `seq` (idempotent on `wf:<run>:<seq>`).
async fn start_agent(
    store: &Store,
    agents: &Agents,
    run: &RunRecord,
    seq: i64,
    request: &Value,
) -> Result<Result<String, String>, StoreError> {
    let Some(text) = request["text"].as_str().filter(|t| !t.is_empty()) else {
        return Ok(Err("run_agent needs text".into()));
    };
    let thread_key = request["thread_key"]
        .as_str()
        .map_or_else(|| format!("workflow:{}", run.run_id), str::to_string);
    let execute_id = format!("wf:{}:{seq}", run.run_id);
    let out = store
        .enqueue(&EnqueueRequest {
            thread_key,
            generation: None,
            execute_id: Some(execute_id.clone()),
            message: Some(NewMessage {
                message_id: Some(format!("{execute_id}:message")),
                role: "user".into(),
                parts: json!([{"type": "text", "text": text}]),
            }),
            harness: request["harness"].as_str().map(str::to_string),
            default_harness: agents.default_harness.clone(),
        })
        .await;
    match out {
        Ok(o) => {
            (agents.kick)();
            Ok(o.body["execution_id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| "the agent turn was queued without an id".to_string()))
        }
        Err(StoreError::Rejected(r)) => Ok(Err(format!("{}: {}", r.code.as_str(), r.message))),
        Err(e) => Err(e),
    }
}

/// What a wait finds now: `None` while it must wait on.
async fn find(store: &Store, target: &Target) -> Result<Option<Found>, StoreError> {
    Ok(match target {
        Target::Event {
            event_type,
            correlation_id,
        } => store
            .find_workflow_event(event_type, correlation_id)
            .await?
            .map(Ok),
        Target::Workflow(id) => match store.get_run(id).await? {
            None => Some(Err(("not_found".into(), format!("no workflow run {id}")))),
            Some((r, _)) => match r.status {
                RunStatus::Completed => Some(Ok(r.output.unwrap_or(Value::Null))),
                RunStatus::Failed => Some(Err((
                    "workflow_failed".into(),
                    format!(
                        "workflow run {id} ({}) failed: {}",
                        r.workflow_name,
                        r.error_text.unwrap_or_default()
                    ),
                ))),
                RunStatus::Cancelled => Some(Err((
                    "workflow_cancelled".into(),
                    format!("workflow run {id} ({}) was cancelled", r.workflow_name),
                ))),
                _ => None,
            },
        },
        Target::Execution(id) => match store.execution(id).await? {
            None => Some(Err(("not_found".into(), format!("no execution {id}")))),
            Some(e) => match e.status {
                Status::Completed => Some(Ok(json!({
                    "execution_id": e.execution_id,
                    "thread_key": e.thread_key,
                    "result_text": e.result_text,
                }))),
                Status::Failed | Status::Cancelled => Some(Err((
                    "agent_failed".into(),
                    format!(
                        "agent turn {id} {}: {}",
                        e.status.as_str(),
                        e.error_text.or(e.terminal_reason).unwrap_or_default()
                    ),
                ))),
                _ => None,
            },
        },
    })
}

enum Parsed {
    Ready(Call),
    Wait {
        name: String,
        target: Target,
        timeout_ms: Option<i64>,
    },
    StartWorkflow {
        name: String,
        workflow: String,
        input: Value,
    },
    StartAgent {
        name: String,
        request: Value,
    },
}

fn parse(m: &Value) -> Result<Parsed, String> {
    let name = m["name"].as_str().ok_or("no name")?.to_string();
    let text = |k: &str| {
        m[k].as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("no {k}"))
    };
    let timeout_ms = m["timeout"].as_i64();
    Ok(match m["kind"].as_str() {
        Some("step") => Parsed::Ready(Call::Step {
            name,
            outcome: outcome(m),
        }),
        Some("sleep") => Parsed::Ready(Call::Sleep {
            name,
            until: m["until"].as_i64(),
            ms: m["ms"].as_i64().unwrap_or(0),
        }),
        Some("event") => Parsed::Wait {
            name,
            target: Target::Event {
                event_type: text("event_type")?,
                correlation_id: text("correlation_id")?,
            },
            timeout_ms,
        },
        Some("wait_workflow") => Parsed::Wait {
            name,
            target: Target::Workflow(text("run_id")?),
            timeout_ms,
        },
        Some("wait_agent") => Parsed::Wait {
            name,
            target: Target::Execution(text("execution_id")?),
            timeout_ms,
        },
        Some("start_workflow") => Parsed::StartWorkflow {
            name,
            workflow: text("workflow")?,
            input: m.get("input").cloned().unwrap_or(Value::Null),
        },
        Some("start_agent") => Parsed::StartAgent {
            name,
            request: m.clone(),
        },
        other => return Err(format!("unknown kind {other:?}")),
    })
}

fn outcome(m: &Value) -> Option<Outcome> {
    let o = m.get("outcome").filter(|o| !o.is_null())?;
    Some(match o.get("result") {
        Some(r) => Outcome::Returned(r.clone()),
        None => Outcome::Raised {
            message: o["error"].as_str().unwrap_or("the step failed").into(),
            retryable: o["retryable"].as_bool().unwrap_or(false),
            retry: retry(&o["retry"]),
        },
    })
}

fn retry(v: &Value) -> Retry {
    let ms = |k: &str, d: f64| {
        let s = v[k].as_f64().unwrap_or(d).clamp(0.0, 86_400.0 * 30.0);
        // Whole milliseconds of a bounded, non-negative number of seconds.
        (s * 1000.0).round() as i64
    };
    Retry {
        limit: v["limit"]
            .as_u64()
            .and_then(|l| u32::try_from(l).ok())
            .unwrap_or(1)
            .clamp(1, 100),
        delay_ms: ms("delay", 1.0),
        exponential: v["backoff"] != "fixed",
        max_delay_ms: ms("max_delay", 300.0),
    }
}
