//! The `centaur` binary's library: the demo and `centaur audit`; the control plane and local
//! sandboxes arrive here in later phases.

pub mod audit_cmd;
pub mod demo;
