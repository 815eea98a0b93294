//! The `centaur` binary's library: today the demo; the control plane, local sandboxes and
//! audit queries arrive here in later phases.

pub mod demo;
