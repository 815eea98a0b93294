//! State shared by every listener and request: immutable configuration, the swappable policy
//! snapshot, the CA, upstream clients, audit and metrics. No global locks on the request path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use audit::AuditLog;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use policy::{Config, Policy};
use rustls::ServerConfig;
use serde::Serialize;

use crate::ca::LeafCache;
use crate::credential::store::{SecretEnv, SecretStore};
use crate::credential::tokens::TokenCache;
use crate::metrics::Metrics;
use crate::upstream::Upstreams;

/// Everything a request needs.
#[derive(Debug)]
pub struct Shared {
    /// The configuration the gateway started with (listeners, limits, timeouts).
    pub config: Config,
    /// Where the configuration came from, for reloads.
    pub config_path: Option<PathBuf>,
    /// The policy snapshot; a request loads it once and keeps it.
    pub policy: ArcSwap<Snapshot>,
    /// TLS interception; `None` with `tls.mode: sni-only` (HTTPS passes through).
    pub mitm: Option<Mitm>,
    /// Upstream clients.
    pub upstreams: Upstreams,
    /// Audit records.
    pub audit: AuditLog,
    /// Counters.
    pub metrics: Metrics,
    /// The HTTP server settings for client connections.
    pub http: auto::Builder<TokioExecutor>,
}

/// What terminating TLS takes: the leaves signed by the CA and the server configuration.
#[derive(Debug)]
pub struct Mitm {
    /// Leaf certificates.
    pub leaves: Arc<LeafCache>,
    /// TLS server configuration for intercepted connections.
    pub tls: Arc<ServerConfig>,
}

impl Shared {
    /// Leaf certificates held now (0 without interception).
    pub fn leaf_count(&self) -> u64 {
        self.mitm.as_ref().map_or(0, |m| m.leaves.len())
    }

    /// Whether requests are refused now because the audit cannot be written
    /// (`audit.on_failure: refuse`, the default with `strict`).
    pub fn audit_refusing(&self) -> bool {
        self.config.audit.refuse_when_failing && self.audit.stats().is_failing()
    }
}

/// A compiled policy with the caches of its secrets and tokens, swapped together on reload
/// (so a reload re-reads every source and mints afresh).
#[derive(Debug)]
pub struct Snapshot {
    /// The policy.
    pub policy: Policy,
    /// Its sources' values (fetched lazily).
    pub secrets: SecretStore,
    /// Its minted tokens (minted lazily).
    pub tokens: TokenCache,
    /// Values for `env` sources supplied by the embedder; a reload keeps them.
    pub env: SecretEnv,
}

impl Snapshot {
    /// A snapshot of `policy`; reads no secret and mints no token yet. Vault and token
    /// endpoints are reached through `http`; `env` values win over the process environment.
    pub fn new(policy: Policy, http: &Upstreams, env: &SecretEnv) -> Snapshot {
        let secrets = SecretStore::new(&policy.sources, http.clone(), env.clone());
        let tokens = TokenCache::new(&policy, secrets.clone(), http.clone());
        Snapshot {
            policy,
            secrets,
            tokens,
            env: env.clone(),
        }
    }
}

/// The HTTP/1.1 + HTTP/2 server settings, with the configured limits.
pub fn http_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let p = &config.proxy;
    let mut b = auto::Builder::new(TokioExecutor::new());
    // The request-head deadline is the client connection's own (`listen::io::Idle`), not
    // hyper's, which would also cut quiet keep-alive connections after it.
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(p.max_header_bytes)
        .max_headers(p.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(p.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(p.timeouts.idle / 2))
        .keep_alive_timeout(p.timeouts.client_header);
    b
}

/// The addresses actually bound (useful with port 0).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Addrs {
    /// Transparent TLS.
    pub https: Option<SocketAddr>,
    /// Transparent HTTP.
    pub http: Option<SocketAddr>,
    /// CONNECT and SOCKS5.
    pub tunnel: Option<SocketAddr>,
    /// DNS (UDP and TCP on the same port).
    pub dns: Option<SocketAddr>,
    /// Management API.
    pub management: Option<SocketAddr>,
    /// Metrics and health.
    pub metrics: Option<SocketAddr>,
}
