//! Durable workflows: Python handlers with checkpointed steps, run by the control plane.
//!
//! [`core`] decides (pure: checkpoints, time and a call in; an answer and effects out); the
//! store keeps runs, checkpoints and events; the executor claims due runs under a lease,
//! drives their handlers in a Python worker that runs in a sandbox behind its own gateway,
//! and commits each decision's effects before the handler goes on.

pub mod config;
pub mod core;
pub mod executor;
pub mod facts;
pub mod reload;
pub mod schedule;
pub mod scheduler;
pub mod webhooks;
pub mod worker;
