//! Executions, from claim to terminal state: make sure the thread's sandbox runs, write the
//! turn (recorded durably first, at most once), commit the harness's output lines as they
//! are spooled, and end the execution on the harness's `result` line — or on cancel, a
//! deadline, the harness's exit or the loss of its supervisor.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::harness::{Harness, Turn};
use crate::server::app::App;
use crate::server::commit::{
    Committed, Hold, Stop, Tracker, batch, cancelled, commit, fail, finish_from_spool,
};
use crate::store::{Claimed, Status};
use crate::supervisor::{self, Client};

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
        Err(Stop::AuthFailed(msg)) => {
            let f = fail("harness_auth_failed", msg);
            if let Err(e) = app.store().finish(&thread, &id, &f).await {
                tracing::error!("finishing {id}: {e}");
            }
        }
        Err(Stop::Lost) => {}
        Err(Stop::Store(e)) => tracing::error!("execution {id}: store: {e}"),
    }
}

async fn drive(app: &Arc<App>, c: Claimed, wake: &tokio::sync::Notify) -> Result<(), Stop> {
    let store = app.store();
    let e = c.execution;
    let mut a = c.assignment;
    let _hold = app.runtimes.hold(&e.thread_key).await;
    if e.status == Status::CancelRequested {
        app.runtimes.stop(&a.runtime_id).await;
        return Err(Stop::Finish(cancelled()));
    }
    let h = app.runtimes.adapter(&a);
    let mut client = app.runtimes.client(&a.runtime_id);
    let state = client
        .status()
        .await
        .ok()
        .and_then(|s| s["state"].as_str().map(str::to_string));
    let mut preamble = None;
    if e.turn_input.is_some() {
        // The turn may have reached the harness: it is never sent anywhere else.
        if state.is_none() {
            return finish_from_spool(app, h, &e.execution_id, &a, client.dir()).await;
        }
    } else if state.as_deref() != Some("running") {
        // Nothing was delivered yet: a fresh sandbox is safe.
        (client, a, preamble) = fresh(app, a, &e.execution_id).await?;
    }
    let stored = store.prepare_turn(&e.execution_id).await?;
    if preamble.is_none() && h.platform_message() && is_first(app, &e).await? {
        preamble = Some(platform_message(&e.thread_key));
    }
    let mut retried = false;
    loop {
        let mut turn = Turn::parse(&stored, preamble.take());
        deliver_attachments(app, &client, &a, &mut turn.content)
            .await
            .map_err(|err| Stop::Finish(fail("attachment_failed", err)))?;
        let line = h.turn_line(&turn);
        let from = match client.turn(&e.execution_id, &line).await {
            Ok(from) => from,
            Err(supervisor::SupervisorError::Gone { .. }) => {
                return finish_from_spool(app, h, &e.execution_id, &a, client.dir()).await;
            }
            Err(err) => return Err(Stop::Finish(fail("harness_exited", err.to_string()))),
        };
        match follow(app, h, &e, &mut a, &client, from, wake, !retried).await {
            // The model API refused the key: once more on a fresh sandbox (whose gateway
            // reads the secrets again).
            Err(Stop::AuthFailed(msg)) => {
                tracing::warn!(
                    "execution {}: {msg}; retrying once on a fresh sandbox",
                    e.execution_id
                );
                retried = true;
                app.runtimes.stop(&a.runtime_id).await;
                (client, a, preamble) = fresh(app, a, &e.execution_id).await?;
            }
            other => return other,
        }
    }
}

/// Writes the turn's attachments into the thread's workspace (a sandbox pod's through its
/// supervisor) and replaces each with a line naming its file.
async fn deliver_attachments(
    app: &Arc<App>,
    client: &Client,
    a: &crate::store::Assignment,
    content: &mut [serde_json::Value],
) -> Result<(), String> {
    if !app.runtimes.on_kubernetes() {
        let work = app.runtimes.thread_dir(&a.thread_key).join("work");
        let (uid, gid) = (app.settings.uid, app.settings.gid);
        return crate::server::attachments::materialize(content, &work, uid, gid);
    }
    for (name, bytes) in crate::server::attachments::extract(content)? {
        client
            .put(&name, &bytes)
            .await
            .map_err(|e| format!("cannot write the attachment {name} into the sandbox pod: {e}"))?;
    }
    Ok(())
}

/// Whether this is the thread's first turn (no earlier one reached a harness).
async fn is_first(app: &Arc<App>, e: &crate::store::Execution) -> Result<bool, Stop> {
    Ok(!app
        .store()
        .thread_executions(&e.thread_key, 50)
        .await?
        .iter()
        .any(|x| x.execution_id != e.execution_id && x.turn_input.is_some()))
}

/// The platform's system message, put before a thread's first turn: the date, the thread
/// and where it comes from (its key's namespace).
pub fn platform_message(thread_key: &str) -> String {
    let platform = thread_key.split_once(':').map_or("api", |(ns, _)| ns);
    let today = time::OffsetDateTime::now_utc().date();
    format!(
        "[Centaur] Today is {today}. This is thread {thread_key} (platform: {platform}). Your \
         working directory is this thread's workspace; it and your home are kept between turns. \
         Your network access goes through a gateway that allows only what the team's policy \
         names; credentials in your environment are placeholders that work only there."
    )
}

/// A new sandbox for the thread, its session resumed (or its transcript to replay).
async fn fresh(
    app: &Arc<App>,
    a: crate::store::Assignment,
    current: &str,
) -> Result<(Client, crate::store::Assignment, Option<String>), Stop> {
    let store = app.store();
    let plan = app.runtimes.plan(&store, &a, current).await?;
    let wanted = plan.resume.is_some();
    let (client, a, resumed) = app
        .runtimes
        .start(&store, a, plan.resume)
        .await
        .map_err(|err| Stop::Finish(fail("sandbox_start_failed", err)))?;
    // A session the new sandbox did not have (a pod's home) is replayed as well.
    let preamble = if plan.replay || (wanted && !resumed) {
        transcript(app, &a.thread_key, current).await?
    } else {
        None
    };
    Ok((client, a, preamble))
}

/// The thread's earlier turns and answers, for a harness whose session was lost.
async fn transcript(app: &Arc<App>, thread: &str, current: &str) -> Result<Option<String>, Stop> {
    const KEEP: usize = 8 << 10;
    let mut execs = app.store().thread_executions(thread, 50).await?;
    execs.reverse();
    let cut = |s: &str| -> String {
        let mut end = s.len().min(KEEP);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_string()
    };
    let mut out = String::new();
    for x in execs.iter().filter(|x| x.execution_id != current) {
        let Some(input) = &x.turn_input else { continue };
        out.push_str(&format!(
            "User: {}\n",
            cut(&Turn::parse(input, None).plain())
        ));
        match (&x.result_text, &x.error_text) {
            (Some(r), _) => out.push_str(&format!("[Your previous response]: {}\n\n", cut(r))),
            (None, Some(err)) => out.push_str(&format!("[That turn failed: {}]\n\n", cut(err))),
            _ => out.push('\n'),
        }
    }
    if out.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "[Centaur: your previous session of this conversation could not be resumed; here is the conversation so far.]\n\n{out}[The new message follows.]"
    )))
}

/// Commits the turn's output as the supervisor spools it, until the turn ends, the harness
/// exits, the supervisor goes, a deadline passes or a cancel arrives.
#[allow(clippy::too_many_arguments)]
async fn follow(
    app: &Arc<App>,
    h: &dyn Harness,
    e: &crate::store::Execution,
    a: &mut crate::store::Assignment,
    client: &Client,
    from: i64,
    wake: &tokio::sync::Notify,
    retry_auth: bool,
) -> Result<(), Stop> {
    let mut att = match client.attach(a.spool_seq + 1).await {
        Ok(att) => att,
        Err(_) => return finish_from_spool(app, h, &e.execution_id, a, client.dir()).await,
    };
    // What an earlier worker already committed of this turn, read again for its answer.
    let mut tracker = Tracker::default();
    for (seq, text) in supervisor::read_spool(client.dir(), from).unwrap_or_default() {
        if seq <= a.spool_seq {
            tracker.feed(&crate::harness::read(h, &text));
        }
    }
    let started = Instant::now()
        - Duration::from_millis(
            u64::try_from(app.clock_ms() - e.started_at.unwrap_or(app.clock_ms())).unwrap_or(0),
        );
    let hard = started + app.settings.hard;
    let mut silence = Instant::now() + app.settings.silence;
    let mut beat = tokio::time::interval(app.settings.lease / 3);
    beat.tick().await;
    let mut cancel_by: Option<Instant> = None;
    loop {
        tracker.cancelling = cancel_by.is_some();
        tokio::select! {
            first = att.next() => {
                let Some(first) = first else {
                    return finish_from_spool(app, h, &e.execution_id, a, client.dir()).await;
                };
                let (lines, exit) = batch(first, &mut att).await;
                if !lines.is_empty() {
                    silence = Instant::now() + app.settings.silence;
                    let hold = if retry_auth && cancel_by.is_none() { Hold::AuthFailure } else { Hold::Nothing };
                    match commit(app, h, &mut tracker, &e.execution_id, a, from, lines, hold).await? {
                        Committed::Ended => return Ok(()),
                        Committed::AuthFailed(msg) => return Err(Stop::AuthFailed(msg)),
                        Committed::Open => {}
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
            _ = beat.tick() => check(app, h, &e.execution_id, client, &mut cancel_by).await?,
            _ = wake.notified() => check(app, h, &e.execution_id, client, &mut cancel_by).await?,
            _ = tokio::time::sleep_until(cancel_by.unwrap_or(hard)), if cancel_by.is_some() => {
                app.runtimes.stop(&a.runtime_id).await;
                return Err(Stop::Finish(cancelled()));
            }
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

/// How long an interrupted harness has to end its turn before its sandbox is stopped.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// Renews the lease and acts on a cancel: the harness is interrupted (its turn ends, its
/// sandbox and session stay) where its kind can be, else its sandbox is stopped.
async fn check(
    app: &Arc<App>,
    h: &dyn Harness,
    id: &str,
    client: &Client,
    cancel_by: &mut Option<Instant>,
) -> Result<(), Stop> {
    match app
        .store()
        .heartbeat(id, &app.worker_id, app.lease_ms())
        .await?
    {
        Some(Status::CancelRequested) if cancel_by.is_some() => Ok(()),
        Some(Status::CancelRequested) => {
            if let Some(line) = h.interrupt_line()
                && client.turn(&format!("{id}-interrupt"), &line).await.is_ok()
            {
                *cancel_by = Some(Instant::now() + INTERRUPT_GRACE);
                return Ok(());
            }
            let _ = client.stop().await;
            let _ = std::fs::remove_dir_all(client.dir());
            Err(Stop::Finish(cancelled()))
        }
        Some(_) => Ok(()),
        // Ended elsewhere (released, cancelled) or taken over: not ours any more.
        None => Err(Stop::Lost),
    }
}
