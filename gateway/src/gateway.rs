//! Start-up and shutdown: bind every configured listener, build the shared state, serve until
//! told to stop, reload on SIGHUP.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use audit::AuditLog;
use policy::Config;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::admin;
use crate::admin::Mgmt;
use crate::ca::{Authority, CaError, LeafCache};
use crate::credential::store::SecretEnv;
use crate::listen::{Kind, accept_loop, dns, hello};
use crate::metrics::Metrics;
use crate::shared::{Addrs, Mitm, Shared, Snapshot, http_builder};
use crate::upstream::guard::Guard;
use crate::upstream::{TrustError, Upstreams, root_store};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// No CA configured.
    #[error(
        "tls.ca_cert and tls.ca_key are required: create a CA with `centaur-gateway ca init --out DIR` and point the configuration at it"
    )]
    NoCa,
    /// The CA is unusable.
    #[error("certificate authority: {0}")]
    Ca(#[from] CaError),
    /// An upstream CA bundle is unusable.
    #[error("upstream.ca_files: {0}")]
    Trust(#[from] TrustError),
    /// The audit output could not be opened.
    #[error("audit output: {0}")]
    Audit(std::io::Error),
    /// `HTTP_PROXY`, `HTTPS_PROXY` or `NO_PROXY` is unusable.
    #[error("proxy.upstream_proxy from the environment: {0}")]
    UpstreamProxy(String),
    /// The management token is missing.
    #[error("management.listen is set but {0} is empty")]
    NoApiKey(String),
}

/// A bound, ready gateway.
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
    addrs: Addrs,
    tcp: Vec<(Kind, TcpListener)>,
    dns: Option<(UdpSocket, TcpListener)>,
    mgmt: Vec<(Arc<Mgmt>, TcpListener)>,
}

async fn bind(
    what: &'static str,
    addr: Option<SocketAddr>,
) -> Result<Option<TcpListener>, StartError> {
    let Some(addr) = addr else { return Ok(None) };
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn local(l: &Option<TcpListener>) -> Option<SocketAddr> {
    l.as_ref().and_then(|l| l.local_addr().ok())
}

/// Every listener the configuration asks for, bound.
struct Bound {
    https: Option<TcpListener>,
    http: Option<TcpListener>,
    tunnel: Option<TcpListener>,
    management: Option<TcpListener>,
    metrics: Option<TcpListener>,
    dns: Option<(UdpSocket, TcpListener)>,
}

impl Bound {
    async fn bind(config: &Config) -> Result<Bound, StartError> {
        let p = &config.proxy;
        Ok(Bound {
            https: bind("https", p.https_listen).await?,
            http: bind("http", p.http_listen).await?,
            tunnel: bind("tunnel", p.tunnel_listen).await?,
            management: bind("management", config.management.listen).await?,
            metrics: bind("metrics", config.metrics_listen).await?,
            dns: match config.dns.listen {
                Some(addr) => Some(bind_dns(addr).await?),
                None => None,
            },
        })
    }

    fn addrs(&self) -> Addrs {
        Addrs {
            https: local(&self.https),
            http: local(&self.http),
            tunnel: local(&self.tunnel),
            dns: self.dns.as_ref().and_then(|(u, _)| u.local_addr().ok()),
            management: local(&self.management),
            metrics: local(&self.metrics),
        }
    }
}

/// The upstream clients, behind a guard that also refuses the gateway's own addresses.
fn upstreams(config: &Config, addrs: &Addrs) -> Result<Upstreams, StartError> {
    let p = &config.proxy;
    let own: Vec<SocketAddr> = [
        addrs.https,
        addrs.http,
        addrs.tunnel,
        addrs.dns,
        addrs.management,
        addrs.metrics,
    ]
    .into_iter()
    .flatten()
    .collect();
    let guard = Guard::new(
        p.deny_cidrs.clone(),
        p.allow_cidrs.clone(),
        own,
        config.upstream.hosts.clone(),
        p.timeouts.upstream_connect,
    )
    .with_internal(config.upstream.internal.clone());
    let roots = root_store(&config.upstream.ca_files)?;
    let proxy = match &p.upstream_proxy {
        Some(up) => Some(
            up.with_env(|k| std::env::var(k).ok())
                .map_err(StartError::UpstreamProxy)?,
        ),
        None => None,
    };
    if let Some(up) = &proxy {
        tracing::info!(http = ?up.http, https = ?up.https, no_proxy = ?up.no_proxy, "upstream connections go through a proxy");
    }
    Ok(Upstreams::new(
        Arc::new(guard),
        proxy,
        roots,
        Duration::from_secs(90),
        p.max_connections,
    ))
}

/// TLS interception from the configured CA; none with `tls.mode: sni-only`.
fn mitm(config: &Config) -> Result<Option<Mitm>, StartError> {
    let t = &config.tls;
    let authority = match (&t.ca_cert, &t.ca_key) {
        _ if t.sni_only => return Ok(None),
        (Some(cert), Some(key)) => {
            Authority::load(Path::new(cert), Path::new(key), t.leaf_validity)?
        }
        _ => return Err(StartError::NoCa),
    };
    let leaves = Arc::new(LeafCache::new(
        authority,
        t.cert_cache_size,
        t.leaf_issue_rate,
        t.leaf_issue_burst,
    ));
    Ok(Some(Mitm {
        tls: hello::server_config(leaves.clone()),
        leaves,
    }))
}

impl Gateway {
    /// Binds every listener and builds the shared state.
    pub async fn start(
        config: Config,
        config_path: Option<PathBuf>,
    ) -> Result<Gateway, StartError> {
        Gateway::start_with_env(config, config_path, SecretEnv::default()).await
    }

    /// [`Gateway::start`], with values for `{type: env}` sources that win over the process
    /// environment (an embedder's secrets file).
    pub async fn start_with_env(
        config: Config,
        config_path: Option<PathBuf>,
        env: SecretEnv,
    ) -> Result<Gateway, StartError> {
        for w in &config.warnings {
            tracing::warn!("policy: {w}");
        }
        let mitm = mitm(&config)?;
        let token = match config.management.listen {
            Some(_) => Some(api_key(&config.management)?),
            None => None,
        };
        let bound = Bound::bind(&config).await?;
        let addrs = bound.addrs();
        let upstreams = upstreams(&config, &addrs)?;
        let audit = AuditLog::spawn(&config.audit)
            .await
            .map_err(StartError::Audit)?;
        let shared = Arc::new(Shared {
            policy: ArcSwap::from_pointee(Snapshot::new(config.policy.clone(), &upstreams, &env)),
            mitm,
            upstreams,
            audit,
            metrics: Metrics::default(),
            http: http_builder(&config),
            config,
            config_path,
        });
        let started = Instant::now();
        let admin = |token| {
            Arc::new(Mgmt {
                shared: shared.clone(),
                addrs,
                started,
                token,
            })
        };
        let mut mgmt = Vec::new();
        if let Some(l) = bound.management {
            mgmt.push((admin(token), l));
        }
        if let Some(l) = bound.metrics {
            mgmt.push((admin(None), l));
        }
        let tcp = [
            (Kind::Https, bound.https),
            (Kind::Http, bound.http),
            (Kind::Tunnel, bound.tunnel),
        ]
        .into_iter()
        .filter_map(|(k, l)| l.map(|l| (k, l)))
        .collect();
        Ok(Gateway {
            shared,
            addrs,
            tcp,
            dns: bound.dns,
            mgmt,
        })
    }

    /// The state every request shares: an embedder swaps the policy through it
    /// ([`crate::admin::install_policy`]) while the gateway runs.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// The bound addresses.
    pub fn addrs(&self) -> Addrs {
        self.addrs
    }

    /// Serves until `shutdown` completes, then stops accepting, gives open connections up to
    /// `drain` to finish, and flushes the audit log.
    pub async fn run(self, shutdown: impl Future<Output = ()>, drain: Duration) {
        let limit = Arc::new(Semaphore::new(self.shared.config.proxy.max_connections));
        let mut tasks = JoinSet::new();
        for (kind, l) in self.tcp {
            tasks.spawn(accept_loop(self.shared.clone(), l, kind, limit.clone()));
        }
        if let Some((udp, tcp)) = self.dns {
            tasks.spawn(dns::serve_udp(self.shared.clone(), udp));
            tasks.spawn(dns::serve_tcp(self.shared.clone(), tcp));
        }
        for (state, l) in self.mgmt {
            tasks.spawn(admin::serve(state, l));
        }
        tasks.spawn(reload_on_sighup(self.shared.clone()));
        shutdown.await;
        tasks.abort_all();
        let max = self.shared.config.proxy.max_connections as u32;
        let _ = tokio::time::timeout(drain, limit.acquire_many(max)).await;
        self.shared.audit.flush().await;
    }
}

/// Binds DNS over UDP and TCP on one port. With port 0 the kernel picks the UDP port, which
/// may already be taken for TCP: then try another pair.
async fn bind_dns(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), StartError> {
    let err = |what, addr, source| StartError::Bind { what, addr, source };
    let mut attempts = if addr.port() == 0 { 16 } else { 1 };
    loop {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| err("dns/udp", addr, e))?;
        let bound = udp.local_addr().unwrap_or(addr);
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if attempts > 1 && e.kind() == std::io::ErrorKind::AddrInUse => attempts -= 1,
            Err(e) => return Err(err("dns/tcp", bound, e)),
        }
    }
}

fn api_key(m: &policy::ManagementConfig) -> Result<String, StartError> {
    let (token, source) = match &m.api_key_file {
        Some(path) => (
            std::fs::read_to_string(path).unwrap_or_default(),
            format!("the file {path} (management.api_key_file)"),
        ),
        None => (
            std::env::var(&m.api_key_env).unwrap_or_default(),
            format!(
                "the environment variable {} (management.api_key_env)",
                m.api_key_env
            ),
        ),
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(StartError::NoApiKey(source));
    }
    Ok(token)
}

async fn reload_on_sighup(shared: Arc<Shared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        let _ = admin::reload(&shared);
    }
}
