//! Per-connection metadata and the per-exchange context that owns its audit record.
//!
//! Every request, tunnel and refused connection gets an [`Exchange`]; it is finished exactly
//! once — explicitly, or by `Drop` as a client cancellation — so each yields exactly one audit
//! record (invariant 4).

pub mod body;
pub mod failure;
pub mod head;
pub mod proxy;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use audit::{Action, Durable, Record, Slot, TlsInfo, Transform};
use policy::{Decision, Host, HostName, Reason};

use crate::exchange::failure::Failure;
use crate::shared::Shared;

/// A CONNECT or SOCKS5 destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host.
    pub host: Host,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// What the TLS layer learned about a client connection.
#[derive(Debug, Clone)]
pub struct TlsMeta {
    /// The validated SNI.
    pub sni: HostName,
    /// The SNI and the TLS parameters as every record of the connection shows them, made once.
    sni_text: Arc<str>,
    info: Arc<TlsInfo>,
}

impl TlsMeta {
    /// The connection's validated SNI and its negotiated TLS parameters.
    pub fn new(sni: HostName, info: TlsInfo) -> Self {
        TlsMeta {
            sni_text: sni.as_str().into(),
            sni,
            info: Arc::new(info),
        }
    }
}

/// One client connection, shared by every request on it.
#[derive(Debug)]
pub struct ConnMeta {
    /// Listener name: `https`, `http` or `tunnel`.
    pub listener: &'static str,
    /// Client address.
    pub client: SocketAddr,
    /// The client address as the audit record shows it, formatted once per connection.
    client_text: Arc<str>,
    /// Set once TLS is terminated.
    pub tls: Option<TlsMeta>,
    /// Set inside a CONNECT or SOCKS5 tunnel ([`ConnMeta::in_tunnel`]).
    pub tunnel: Option<Target>,
    /// The tunnel's target as the audit record shows it, formatted once per connection.
    tunnel_text: Option<Arc<str>>,
    /// Requests currently in flight; the idle timeout only runs while this is zero.
    pub inflight: Arc<AtomicUsize>,
}

impl ConnMeta {
    /// Metadata for a new connection.
    pub fn new(listener: &'static str, client: SocketAddr) -> Self {
        ConnMeta {
            listener,
            client,
            client_text: client.to_string().into(),
            tls: None,
            tunnel: None,
            tunnel_text: None,
            inflight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// This connection, carried inside a tunnel to `target`.
    pub fn in_tunnel(mut self, target: Target) -> Self {
        self.tunnel_text = Some(target.to_string().into());
        self.tunnel = Some(target);
        self
    }
}

/// One request, tunnel or refused connection, and its audit record.
#[derive(Debug)]
pub struct Exchange {
    shared: Arc<Shared>,
    /// Boxed: an exchange moves through a request's phases by value, and the record is most
    /// of its size (moving it inline was 22 copies a request: `bench/profile`).
    record: Box<Record>,
    slot: Option<Slot>,
    started: Instant,
    /// Request body bytes, counted as they stream upstream.
    pub bytes_in: Arc<AtomicU64>,
    inflight: Option<Arc<AtomicUsize>>,
}

impl Exchange {
    /// Starts an exchange, reserving its place in the audit queue (back-pressure if full).
    pub async fn begin(shared: &Arc<Shared>, conn: &ConnMeta) -> Exchange {
        let slot = shared.audit.reserve().await;
        if slot.is_none() {
            tracing::error!("audit writer stopped: records are being lost");
        }
        let mut record = Box::new(Record::start(conn.listener, conn.client_text.clone()));
        if let Some(tls) = &conn.tls {
            record.sni = Some(tls.sni_text.clone());
            record.tls = Some(tls.info.clone());
        }
        record.tunnel.clone_from(&conn.tunnel_text);
        Exchange {
            shared: shared.clone(),
            record,
            slot,
            started: Instant::now(),
            bytes_in: Arc::new(AtomicU64::new(0)),
            inflight: None,
        }
    }

    /// Counts this exchange as a request in flight on `conn` until it finishes.
    pub fn track(&mut self, conn: &ConnMeta) {
        conn.inflight.fetch_add(1, Ordering::Relaxed);
        self.inflight = Some(conn.inflight.clone());
    }

    /// No longer a request in flight on its connection.
    fn untrack(&mut self) {
        if let Some(n) = self.inflight.take() {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The record being filled.
    pub fn record(&mut self) -> &mut Record {
        &mut self.record
    }

    /// Notes an allow decision and the rule that made it.
    pub fn allowed(&mut self, d: &Decision) {
        self.record.rule = d.rule.clone();
        self.record.reason = d.reason.code();
        self.record.request_transforms.push(Transform {
            name: "allowlist",
            action: "allow",
            rule: d.rule.clone(),
            annotations: None,
        });
    }

    /// Adds response bytes.
    pub fn add_bytes_out(&mut self, n: u64) {
        self.record.bytes_out += n;
    }

    /// Records the upstream answer's status.
    pub fn set_status(&mut self, status: u16) {
        self.record.status_code = Some(status);
    }

    /// Finishes an exchange that completed normally. With `audit.durability: strict`, the
    /// returned [`Durable`] resolves when the record is on disk; what the client is still to
    /// receive waits for it.
    pub fn finish_ok(mut self) -> Option<Durable> {
        if self.record.reason.is_empty() {
            self.record.reason = Reason::Allowed.code();
        }
        self.emit(Action::Allow)
    }

    /// Finishes an exchange whose upstream body failed midway.
    pub fn finish_body_error(mut self) -> Option<Durable> {
        self.record.reason = Reason::UpstreamBodyError.code();
        self.record.error = Some("upstream response body ended with an error".into());
        self.emit(Action::Error)
    }

    /// Finishes with a failure: the record carries its reason, the status the client was sent
    /// (`None` for a TLS alert or SOCKS reply) and a short message (unless one is set).
    pub fn finish_failure(mut self, failure: &Failure, status: Option<u16>) -> Option<Durable> {
        let (reason, action) = (failure.reason(), failure.action());
        self.record.status_code = status;
        self.record.reason = reason.code();
        if let Failure::Policy { .. } = failure {
            self.record.rejected_by = Some("allowlist");
            self.record.request_transforms.push(Transform {
                name: "allowlist",
                action: "reject",
                rule: None,
                annotations: None,
            });
        } else {
            // A more specific message set by the caller is kept.
            if self.record.error.is_none() {
                self.record.error = Some(failure.to_string());
            }
            if let Failure::SecretUnavailable { name } | Failure::PlaceholderMissing { name } =
                failure
            {
                self.record.rejected_by = Some("secrets");
                self.record.request_transforms.push(Transform {
                    name: "secrets",
                    action: "reject",
                    rule: None,
                    annotations: Some(audit::Annotations::Secrets {
                        injected: vec![],
                        rejected: Some(name.clone()),
                        secret_unavailable: vec![],
                        swapped: vec![],
                    }),
                });
            }
            if let Failure::Credential { transform, .. } = failure {
                self.record.rejected_by = Some(*transform);
            }
            if let Failure::Mcp { .. } = failure {
                self.record.rejected_by = Some("mcp");
            }
        }
        self.emit(action)
    }

    fn emit(&mut self, action: Action) -> Option<Durable> {
        self.untrack();
        let slot = self.slot.take()?;
        let r = &mut self.record;
        r.action = action;
        r.duration_ms = (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        r.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        self.shared
            .metrics
            .exchange(r.listener, action, r.bytes_in, r.bytes_out);
        slot.emit(r)
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        // Even with no audit slot (a stopped writer), or the connection would stay busy.
        self.untrack();
        if self.slot.is_some() {
            if self.record.reason.is_empty() || self.record.reason == Reason::Allowed.code() {
                self.record.reason = Reason::ClientCancel.code();
            }
            // Nothing is left to release to a client that went away.
            drop(self.emit(Action::ClientCancel));
        }
    }
}
