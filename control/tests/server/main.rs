//! `centaur server` as a real process: the API with real clients, and crash recovery.

mod api;
mod calls;
mod clis;
mod crash;
mod failures;
mod harness;
mod idle;
mod kube;
mod kube_pool;
mod pool;
mod slack;
mod tools;
mod tools_sandbox;
mod workflows;
mod workflows_crash;
mod workflows_triggers;
