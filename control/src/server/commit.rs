//! A turn's output, from spool to store: each harness line committed once with its
//! canonical events (in batches), the turn's answer and session id gathered on the way, and
//! the execution ended on its turn's last line — also from the spool of a supervisor that is
//! gone. How an execution stops (`Stop`) and its terminal states.

use std::sync::Arc;

use crate::harness::{End, Harness};
use crate::server::app::App;
use crate::store::{Finish, Line, Status};
use crate::supervisor::{self, Attached, Output};

/// Lines committed per transaction at most.
const BATCH: usize = 256;

pub(super) fn fail(reason: &str, error: impl Into<String>) -> Finish {
    Finish {
        status: Status::Failed,
        reason: reason.into(),
        result_text: None,
        error_text: Some(error.into()),
        agent_thread_id: None,
    }
}

pub(super) enum Stop {
    Finish(Finish),
    /// The model API refused the key (the turn may be retried).
    AuthFailed(String),
    Lost,
    Store(crate::store::StoreError),
}

impl From<crate::store::StoreError> for Stop {
    fn from(e: crate::store::StoreError) -> Self {
        Stop::Store(e)
    }
}

/// Per-turn knowledge gathered from the harness's lines: its answer so far and its
/// session id.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    answer: Option<String>,
    thread: Option<String>,
    /// The turn was interrupted for a cancel: its end is a cancellation.
    pub(super) cancelling: bool,
}

impl Tracker {
    pub(super) fn feed(&mut self, r: &crate::harness::Read) {
        if let Some(t) = &r.result {
            self.answer = Some(t.clone());
        }
        if let Some(t) = &r.thread {
            self.thread = Some(t.clone());
        }
    }

    pub(super) fn finish(&self, h: &dyn Harness, end: &End) -> Finish {
        let thread = self
            .thread
            .clone()
            .or_else(|| h.fixed_session().map(str::to_string));
        if self.cancelling {
            return Finish {
                agent_thread_id: thread,
                ..cancelled()
            };
        }
        match end {
            End::Completed(text) => Finish {
                status: Status::Completed,
                reason: "completed".into(),
                result_text: text.clone().or_else(|| self.answer.clone()),
                error_text: None,
                agent_thread_id: thread,
            },
            End::Failed { reason, error } => Finish {
                agent_thread_id: thread,
                ..fail(reason, error.clone())
            },
        }
    }
}

pub(super) fn cancelled() -> Finish {
    Finish {
        status: Status::Cancelled,
        reason: "cancelled".into(),
        result_text: None,
        error_text: None,
        agent_thread_id: None,
    }
}

/// The first message and whatever else is already buffered (up to [`BATCH`] lines).
pub(super) async fn batch(first: Output, att: &mut Attached) -> (Vec<Line>, Option<i32>) {
    let mut lines = Vec::new();
    let mut next = Some(first);
    while let Some(m) = next.take() {
        match m {
            Output::Line(seq, text) => lines.push(Line {
                seq,
                text,
                agent: Vec::new(),
            }),
            Output::Exit(code) => return (lines, Some(code)),
        }
        if lines.len() < BATCH && att.buffered() {
            next = att.next().await;
        }
    }
    (lines, None)
}

/// What a commit found.
pub(super) enum Committed {
    /// The turn goes on.
    Open,
    /// The turn ended (and the execution with it).
    Ended,
    /// The model API refused the key; the execution was left running for a retry.
    AuthFailed(String),
}

/// Whether an end is held back from the store.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    Nothing,
    AuthFailure,
}

/// Commits lines (those before `from` belong to no execution), each with its canonical
/// events, and ends the execution on its turn's last line.
#[allow(clippy::too_many_arguments)]
pub(super) async fn commit(
    app: &Arc<App>,
    h: &dyn Harness,
    tracker: &mut Tracker,
    id: &str,
    a: &mut crate::store::Assignment,
    from: i64,
    mut lines: Vec<Line>,
    hold: Hold,
) -> Result<Committed, Stop> {
    let store = app.store();
    let key = (a.thread_key.as_str(), a.generation);
    let mut end = None;
    for (i, l) in lines.iter_mut().enumerate() {
        let r = crate::harness::read(h, &l.text);
        l.agent = r.agent.clone();
        if l.seq >= from {
            tracker.feed(&r);
            if end.is_none()
                && let Some(x) = r.end
            {
                end = Some((i, x));
            }
        }
    }
    if let Some(l) = lines.last() {
        a.spool_seq = a.spool_seq.max(l.seq);
    }
    let split = lines
        .iter()
        .position(|l| l.seq >= from)
        .unwrap_or(lines.len());
    if split > 0 {
        store.commit_lines(key, None, &lines[..split], None).await?;
    }
    let mine = &lines[split..];
    let Some((i, x)) = end else {
        if !mine.is_empty() {
            store.commit_lines(key, Some(id), mine, None).await?;
        }
        return Ok(Committed::Open);
    };
    let mine = &mine[..=i - split];
    if let (
        Hold::AuthFailure,
        End::Failed {
            reason: "harness_auth_failed",
            error,
        },
    ) = (hold, &x)
    {
        store.commit_lines(key, Some(id), mine, None).await?;
        return Ok(Committed::AuthFailed(error.clone()));
    }
    let finish = tracker.finish(h, &x);
    store
        .commit_lines(key, Some(id), mine, Some(&finish))
        .await?;
    Ok(Committed::Ended)
}

/// The supervisor is gone: commit what its spool holds, and end the execution — normally if
/// the harness ended its turn in there, else with `sandbox_lost` (the turn is not re-sent).
pub(super) async fn finish_from_spool(
    app: &Arc<App>,
    h: &dyn Harness,
    id: &str,
    a: &crate::store::Assignment,
    dir: &std::path::Path,
) -> Result<(), Stop> {
    let rest = supervisor::read_spool(dir, 1).unwrap_or_default();
    let from = supervisor::read_turns(dir)
        .into_iter()
        .find(|(t, _)| t == id)
        .map_or(i64::MAX, |(_, f)| f);
    let mut tracker = Tracker::default();
    let mut lines = Vec::new();
    for (seq, text) in rest {
        if seq > a.spool_seq {
            lines.push(Line {
                seq,
                text,
                agent: Vec::new(),
            });
        } else if seq >= from {
            tracker.feed(&crate::harness::read(h, &text));
        }
    }
    let mut a = a.clone();
    if let Committed::Ended =
        commit(app, h, &mut tracker, id, &mut a, from, lines, Hold::Nothing).await?
    {
        return Ok(());
    }
    Err(Stop::Finish(fail(
        "sandbox_lost",
        "the sandbox's supervisor is gone before the harness ended its turn; the turn was not re-sent",
    )))
}
