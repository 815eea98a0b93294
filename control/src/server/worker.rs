//! Executions, from claim to terminal state: make sure the thread's sandbox runs, write the
//! turn (recorded durably first, at most once), commit the harness's output lines as they
//! are spooled, and end the execution on the harness's `result` line — or on cancel, a
//! deadline, the harness's exit or the loss of its supervisor.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::server::app::App;
use crate::store::{Claimed, Finish, Line, Status};
use crate::supervisor::{self, Attached, Client, Output};

/// Lines committed per transaction at most.
const BATCH: usize = 256;

/// Claims queued executions and runs them, at most `concurrency` at once, until the
/// process ends. Woken by `App::kick` (an enqueue here) or once a second (another replica's).
pub async fn run(app: Arc<App>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(app.settings.concurrency));
    let mut recover_tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let store = app.store();
        match store.claim(&app.worker_id, app.lease_ms()).await {
            Ok(Some(c)) => {
                let app = app.clone();
                tokio::spawn(async move {
                    execute(app, c).await;
                    drop(permit);
                });
                continue;
            }
            Ok(None) => drop(permit),
            Err(e) => {
                tracing::error!("claiming an execution: {e}");
                drop(permit);
            }
        }
        tokio::select! {
            _ = app.kick.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = recover_tick.tick() => recover(&app, false).await,
        }
    }
}

/// Takes over running executions whose worker is gone (`all`: every one; at the start of
/// the only server on a SQLite file) and resumes them.
pub async fn recover(app: &Arc<App>, all: bool) {
    match app
        .store()
        .recover(&app.worker_id, app.lease_ms(), all)
        .await
    {
        Ok(list) => {
            for c in list {
                tracing::info!(
                    "resuming execution {} of {}",
                    c.execution.execution_id,
                    c.execution.thread_key
                );
                tokio::spawn(execute(app.clone(), c));
            }
        }
        Err(e) => tracing::error!("recovering executions: {e}"),
    }
}

fn fail(reason: &str, error: impl Into<String>) -> Finish {
    Finish {
        status: Status::Failed,
        reason: reason.into(),
        result_text: None,
        error_text: Some(error.into()),
        agent_thread_id: None,
    }
}

/// Runs one claimed execution to its end; a store failure leaves it to lease recovery.
async fn execute(app: Arc<App>, c: Claimed) {
    let id = c.execution.execution_id.clone();
    let thread = c.execution.thread_key.clone();
    let wake = app.watch_execution(&id);
    // The lease is renewed for as long as the execution runs here, sandbox start included.
    let keeper = {
        let (app, id, wake) = (app.clone(), id.clone(), wake.clone());
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(app.settings.lease / 3);
            loop {
                beat.tick().await;
                match app
                    .store()
                    .heartbeat(&id, &app.worker_id, app.lease_ms())
                    .await
                {
                    Ok(Some(Status::Running)) | Err(_) => {}
                    Ok(_) => wake.notify_one(),
                }
            }
        })
    };
    let outcome = drive(&app, c, &wake).await;
    keeper.abort();
    app.unwatch_execution(&id);
    match outcome {
        Ok(()) => {}
        Err(Stop::Finish(f)) => {
            if let Err(e) = app.store().finish(&thread, &id, &f).await {
                tracing::error!("finishing {id}: {e}");
            }
        }
        Err(Stop::Lost) => {}
        Err(Stop::Store(e)) => tracing::error!("execution {id}: store: {e}"),
    }
}

enum Stop {
    Finish(Finish),
    Lost,
    Store(crate::store::StoreError),
}

impl From<crate::store::StoreError> for Stop {
    fn from(e: crate::store::StoreError) -> Self {
        Stop::Store(e)
    }
}

async fn drive(app: &Arc<App>, c: Claimed, wake: &tokio::sync::Notify) -> Result<(), Stop> {
    let store = app.store();
    let e = c.execution;
    let mut a = c.assignment;
    if e.status == Status::CancelRequested {
        app.runtimes.stop(&a.runtime_id).await;
        return Err(Stop::Finish(cancelled()));
    }
    let mut client = app.runtimes.client(&a.runtime_id);
    let state = client
        .status()
        .await
        .ok()
        .and_then(|s| s["state"].as_str().map(str::to_string));
    if e.turn_input.is_some() {
        // The turn may have reached the harness: it is never sent anywhere else.
        if state.is_none() {
            return finish_from_spool(app, &e.execution_id, &a, client.dir()).await;
        }
    } else if state.as_deref() != Some("running") {
        // Nothing was delivered yet: a fresh sandbox is safe.
        (client, a) = app
            .runtimes
            .start(&store, a)
            .await
            .map_err(|err| Stop::Finish(fail("sandbox_start_failed", err)))?;
    }
    let turn = store.prepare_turn(&e.execution_id).await?;
    let from = match client.turn(&e.execution_id, &turn).await {
        Ok(from) => from,
        Err(supervisor::SupervisorError::Gone { .. }) => {
            return finish_from_spool(app, &e.execution_id, &a, client.dir()).await;
        }
        Err(err) => return Err(Stop::Finish(fail("harness_exited", err.to_string()))),
    };
    follow(app, &e, &mut a, &client, from, wake).await
}

/// Commits the turn's output as the supervisor spools it, until the turn ends, the harness
/// exits, the supervisor goes, a deadline passes or a cancel arrives.
async fn follow(
    app: &Arc<App>,
    e: &crate::store::Execution,
    a: &mut crate::store::Assignment,
    client: &Client,
    from: i64,
    wake: &tokio::sync::Notify,
) -> Result<(), Stop> {
    let mut att = match client.attach(a.spool_seq + 1).await {
        Ok(att) => att,
        Err(_) => return finish_from_spool(app, &e.execution_id, a, client.dir()).await,
    };
    let started = Instant::now()
        - Duration::from_millis(
            u64::try_from(app.clock_ms() - e.started_at.unwrap_or(app.clock_ms())).unwrap_or(0),
        );
    let hard = started + app.settings.hard;
    let mut silence = Instant::now() + app.settings.silence;
    let mut beat = tokio::time::interval(app.settings.lease / 3);
    beat.tick().await;
    loop {
        tokio::select! {
            first = att.next() => {
                let Some(first) = first else {
                    return finish_from_spool(app, &e.execution_id, a, client.dir()).await;
                };
                let (lines, exit) = batch(first, &mut att).await;
                if !lines.is_empty() {
                    silence = Instant::now() + app.settings.silence;
                    if commit(app, &e.execution_id, a, from, &lines).await? {
                        return Ok(());
                    }
                }
                if let Some(code) = exit {
                    let tail = client.log_tail();
                    app.runtimes.stop(&a.runtime_id).await;
                    return Err(Stop::Finish(fail(
                        "harness_exited",
                        format!("the harness exited with status {code} before ending its turn; its last words: {tail}"),
                    )));
                }
            }
            _ = beat.tick() => check(app, &e.execution_id, client).await?,
            _ = wake.notified() => check(app, &e.execution_id, client).await?,
            _ = tokio::time::sleep_until(silence) => {
                app.runtimes.stop(&a.runtime_id).await;
                return Err(Stop::Finish(fail(
                    "silence_deadline_exceeded",
                    format!("the harness printed nothing for {:?}", app.settings.silence),
                )));
            }
            _ = tokio::time::sleep_until(hard) => {
                app.runtimes.stop(&a.runtime_id).await;
                return Err(Stop::Finish(fail(
                    "hard_deadline_exceeded",
                    format!("the turn ran longer than {:?}", app.settings.hard),
                )));
            }
        }
    }
}

fn cancelled() -> Finish {
    Finish {
        status: Status::Cancelled,
        reason: "cancelled".into(),
        result_text: None,
        error_text: None,
        agent_thread_id: None,
    }
}

/// Renews the lease and acts on a cancel.
async fn check(app: &Arc<App>, id: &str, client: &Client) -> Result<(), Stop> {
    match app
        .store()
        .heartbeat(id, &app.worker_id, app.lease_ms())
        .await?
    {
        Some(Status::CancelRequested) => {
            let _ = client.stop().await;
            let _ = std::fs::remove_dir_all(client.dir());
            Err(Stop::Finish(cancelled()))
        }
        Some(_) => Ok(()),
        // Ended elsewhere (released, cancelled) or taken over: not ours any more.
        None => Err(Stop::Lost),
    }
}

/// The first message and whatever else is already buffered (up to [`BATCH`] lines).
async fn batch(first: Output, att: &mut Attached) -> (Vec<Line>, Option<i32>) {
    let mut lines = Vec::new();
    let mut next = Some(first);
    while let Some(m) = next.take() {
        match m {
            Output::Line(seq, text) => lines.push(Line { seq, text }),
            Output::Exit(code) => return (lines, Some(code)),
        }
        if lines.len() < BATCH && att.buffered() {
            next = att.next().await;
        }
    }
    (lines, None)
}

/// Commits lines (those before `from` belong to no execution); returns whether the turn
/// ended.
async fn commit(
    app: &Arc<App>,
    id: &str,
    a: &mut crate::store::Assignment,
    from: i64,
    lines: &[Line],
) -> Result<bool, Stop> {
    let store = app.store();
    let key = (a.thread_key.as_str(), a.generation);
    let split = lines
        .iter()
        .position(|l| l.seq >= from)
        .unwrap_or(lines.len());
    if split > 0 {
        store.commit_lines(key, None, &lines[..split], None).await?;
    }
    let mine = &lines[split..];
    let end = mine.iter().position(|l| turn_end(&l.text).is_some());
    let (mine, finish) = match end {
        Some(i) => (&mine[..=i], turn_end(&mine[i].text)),
        None => (mine, None),
    };
    if !mine.is_empty() || finish.is_some() {
        store
            .commit_lines(key, Some(id), mine, finish.as_ref())
            .await?;
    }
    if let Some(l) = lines.last() {
        a.spool_seq = a.spool_seq.max(l.seq);
    }
    Ok(finish.is_some())
}

/// The supervisor is gone: commit what its spool holds, and end the execution — normally if
/// the harness ended its turn in there, else with `sandbox_lost` (the turn is not re-sent).
async fn finish_from_spool(
    app: &Arc<App>,
    id: &str,
    a: &crate::store::Assignment,
    dir: &std::path::Path,
) -> Result<(), Stop> {
    let rest = supervisor::read_spool(dir, a.spool_seq + 1).unwrap_or_default();
    let from = supervisor::read_turns(dir)
        .into_iter()
        .find(|(t, _)| t == id)
        .map_or(i64::MAX, |(_, f)| f);
    let lines: Vec<Line> = rest
        .into_iter()
        .map(|(seq, text)| Line { seq, text })
        .collect();
    let mut a = a.clone();
    if commit(app, id, &mut a, from, &lines).await? {
        return Ok(());
    }
    Err(Stop::Finish(fail(
        "sandbox_lost",
        "the sandbox's supervisor is gone before the harness ended its turn; the turn was not re-sent",
    )))
}

/// Whether a stream-json line ends the turn, and how.
pub fn turn_end(line: &str) -> Option<Finish> {
    if !line.contains("\"type\"") {
        return None;
    }
    let v: Value = serde_json::from_str(line).ok()?;
    let text = |k: &str| v[k].as_str().map(str::to_string);
    match v["type"].as_str()? {
        "result" => {
            let is_error = v["is_error"].as_bool().unwrap_or(false)
                || v["subtype"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("error"));
            Some(Finish {
                status: if is_error {
                    Status::Failed
                } else {
                    Status::Completed
                },
                reason: if is_error {
                    "harness_error"
                } else {
                    "completed"
                }
                .into(),
                result_text: if is_error { None } else { text("result") },
                error_text: if is_error {
                    Some(
                        text("result")
                            .or_else(|| text("error"))
                            .unwrap_or_else(|| "the harness reported an error".into()),
                    )
                } else {
                    None
                },
                agent_thread_id: text("session_id"),
            })
        }
        "error" => Some(fail(
            "harness_error",
            text("message")
                .or_else(|| text("error"))
                .unwrap_or_else(|| "the harness reported an error".into()),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_line_ends_the_turn() {
        let f = turn_end(r#"{"type":"result","subtype":"success","is_error":false,"result":"42","session_id":"s1"}"#).unwrap();
        assert_eq!(f.status, Status::Completed);
        assert_eq!(f.result_text.as_deref(), Some("42"));
        assert_eq!(f.agent_thread_id.as_deref(), Some("s1"));
        let f = turn_end(r#"{"type":"result","is_error":true,"result":"boom"}"#).unwrap();
        assert_eq!(
            (f.status, f.reason.as_str()),
            (Status::Failed, "harness_error")
        );
        assert_eq!(f.error_text.as_deref(), Some("boom"));
        assert!(turn_end(r#"{"type":"assistant","message":{}}"#).is_none());
        assert!(turn_end("not json \"type\"").is_none());
        assert!(turn_end(r#"{"type":"error","message":"bad key"}"#).is_some());
    }
}
