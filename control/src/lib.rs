//! The `centaur` binary's library: the demo and `centaur audit`; the control plane and local
//! sandboxes arrive here in later phases.

pub mod audit_cmd;
pub mod demo;
pub mod sandbox_cmd;
pub mod sandbox_config;
pub mod sandbox_run;
