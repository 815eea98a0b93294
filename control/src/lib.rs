//! The control plane's library: an injected clock, the sandbox runner (a typed spec, the
//! `SandboxBackend` trait and its local backend, progress as events), and soon the server, its
//! store and its API. The `centaur` binary (`src/bin/centaur/`) parses flags and prints; the
//! work is here.

pub mod clock;
pub mod harness;
pub mod runner;
pub mod server;
pub mod store;
pub mod supervisor;
pub mod tools;
pub mod workflows;
pub mod workspace;
