//! The Centaur egress gateway: a transparent MITM TLS proxy that decides every request by
//! policy, terminates TLS with leaves from its own CA, connects upstream only to checked
//! addresses over verified TLS, and writes one audit record per request.
//!
//! Owns the data plane and the `centaur-gateway` binary. Must not depend on control-plane
//! code (sqlx, kube, an axum server).

pub mod admin;
pub mod ca;
pub mod cli;
pub mod credential;
pub mod exchange;
pub mod gateway;
pub mod listen;
pub mod metrics;
pub mod shared;
pub mod transform;
pub mod upstream;

pub use gateway::{Gateway, StartError};
pub use shared::Addrs;

/// Installs the process-wide rustls crypto provider (aws-lc-rs). Call once, first thing.
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
