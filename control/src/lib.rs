//! The `centaur` binary's library: the demo, `centaur sandbox` (local sandboxes, each behind
//! an in-process gateway of its own) and `centaur audit`; the control plane arrives later.

pub mod audit_cmd;
pub mod demo;
pub mod sandbox_cmd;
pub mod sandbox_config;
pub mod sandbox_run;
