//! Tools: Python plugins that every agent can call and that never hold a real credential.
//!
//! A tool is a folder with a `pyproject.toml` whose `[tool.centaur]` table declares it
//! ([`manifest`]). Each tool runs as a long-lived worker process in a sandbox of its own,
//! behind a gateway of its own whose policy is generated from the declaration ([`policy`],
//! [`spec`]): the worker holds placeholders, the gateway puts the real values on the wire
//! for the declared hosts only. The host ([`host`]) discovers tools, reloads them when their
//! folder changes, and serves calls through their workers ([`worker`]).

pub mod config;
pub mod host;
pub mod manifest;
pub mod policy;
pub mod spec;
pub mod worker;
