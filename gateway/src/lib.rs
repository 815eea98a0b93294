//! The Centaur egress gateway: a transparent MITM TLS proxy that decides every request by
//! policy, terminates TLS with leaves from its own CA, connects upstream only to checked
//! addresses over verified TLS, and writes one audit record per request.
//!
//! Owns the data plane and the `centaur-gateway` binary. Must not depend on control-plane
//! code (sqlx, kube, an axum server).

pub mod body;
pub mod ca;
pub mod conn;
pub mod context;
pub mod crypto;
pub mod dns;
pub mod error;
pub mod guard;
pub mod listener;
pub mod metrics;
pub mod mgmt;
mod mint;
pub mod origin;
pub mod proxy;
pub mod scrub;
pub mod secrets;
pub mod server;
mod sign;
pub mod splice;
pub mod state;
pub mod tls;
pub mod tokens;
pub mod transform;
pub mod upstream;

pub use server::{Addrs, Gateway, StartError};

/// Installs the process-wide rustls crypto provider (aws-lc-rs). Call once, first thing.
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
