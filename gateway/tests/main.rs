//! The gateway's integration tests, one module per concern, in one test binary: one link
//! step and one executable instead of one per file (CI machines are 2 cores and share their
//! disk). Every test still runs in a process of its own under nextest.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

mod audit;
mod audit_disk;
mod aws_auth;
mod bad_input;
mod cli;
mod clients;
mod compat;
mod exhaustion;
mod h2_frames;
mod hmac_vault;
mod mcp;
mod ops;
mod passthrough;
mod routes;
mod secrets;
mod smuggling;
mod ssrf;
mod tokens;
mod upstream_proxy;
mod upstream_tls;
