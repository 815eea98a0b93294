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

mod calls;
mod types;

use calls::{WaitCall, sleep, start, step, wait};
pub use calls::{recorded_step, recorded_wait};
pub use types::*;

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
            target,
            timeout_ms,
            found,
        } => {
            let deadline = timeout_ms.map_or(NEVER, |t| now.saturating_add(t.max(0)));
            let w = WaitCall {
                seq,
                name,
                target,
                deadline,
                found: found.as_ref(),
            };
            wait(&w, recorded, now)
        }
        Call::Start {
            name,
            kind,
            started,
        } => start(seq, name, *kind, started, recorded),
    }
}

#[cfg(test)]
mod tests;
