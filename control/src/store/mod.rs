//! The durable store: threads, assignments, messages, executions, the event log and API keys,
//! on embedded SQLite (WAL) or PostgreSQL.
//!
//! One implementation serves both engines: the SQL is written once (`$N` parameters, `ON
//! CONFLICT`, `RETURNING` and partial indexes mean the same thing in both) and each operation
//! runs on whichever pool the store opened (the `in_tx!` and `on_pool!` macros expand the body
//! once per engine, so every query is checked against both drivers' types). Every write runs
//! in one transaction that first takes the thread's row lock (`BEGIN IMMEDIATE` takes the
//! database's on SQLite), so per-thread sequences (event ids, message and execution order,
//! assignment generations) are allocated and committed in order.
//!
//! Live delivery: after a commit that appended events the store announces the thread on an
//! in-process channel; on PostgreSQL it also sends `NOTIFY centaur_events` inside the
//! transaction, and [`Store::listen`] turns other replicas' notifications into announcements.

mod code;
mod db;
mod event;
mod events;
mod executions;
mod keys;
mod queue;
mod runtimes;
mod slack;
mod threads;
mod turns;
mod workflows;

pub use code::{Code, Rejection};
pub use db::{
    Announcement, Location, MAX_THREAD_KEY, Store, StoreError, check_thread_key, hex, new_id,
    request_hash, unhex,
};
pub use event::Event;
pub use executions::{Claimed, EnqueueRequest, Execution, Finish, Line, Status};
pub use keys::{Key, Scope};
pub use runtimes::PoolMember;
pub use slack::{Delivery, InboxEnd, InboxRow, NewDelivery};
pub use threads::{Assignment, Message, NewMessage, Outcome, SpawnRequest, ThreadSummary};
pub use workflows::{ClaimedRun, DueSchedule, NewRun, RunEnd, RunRecord, RunStatus};
