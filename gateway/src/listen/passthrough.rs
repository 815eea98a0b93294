//! `tls.mode: sni-only`: a TLS connection whose server name the policy allowed goes, untouched,
//! to that name's port 443 (never the CONNECT port: no port pivoting) through the address
//! guard (and the upstream proxy, if one is configured). The ClientHello read to judge it is
//! replayed, then bytes flow both ways until either side ends or nothing has moved either way
//! for `tunnel_idle_timeout`; the connection's record is written then. Nothing is decrypted,
//! so only host rules can apply.

use std::sync::Arc;

use policy::{Decision, Host, HostName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::exchange::failure::Failure;
use crate::exchange::{ConnMeta, Exchange};
use crate::listen::hello::{self, alert};
use crate::listen::io::Idle;
use crate::shared::Shared;
use crate::upstream::fault::Fault;
use crate::upstream::via;

/// A connection the policy let through, with the ClientHello bytes read to judge it.
pub struct Admitted {
    /// The validated server name.
    pub name: HostName,
    /// The allow decision (its rule goes in the record).
    pub decision: Decision,
    /// The ClientHello as the client sent it.
    pub hello: Vec<u8>,
}

/// Connects to the server and pipes the connection through.
pub async fn run<IO>(shared: Arc<Shared>, meta: ConnMeta, pass: Admitted, mut client: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut ex = Exchange::begin(&shared, &meta).await;
    let record = ex.record();
    record.host = pass.name.to_string();
    record.sni = Some(pass.name.as_str().into());
    record.mode = Some("sni-only");
    if shared.audit_refusing() {
        hello::send_alert(&mut client, alert::INTERNAL_ERROR).await;
        drop(ex.finish_failure(&Failure::AuditUnavailable, None));
        return;
    }
    ex.allowed(&pass.decision);
    let host = Host::Name(pass.name);
    let up = &shared.upstreams;
    let dial = via::dial(&up.guard, up.proxy.as_deref(), &host, 443, true);
    let (mut upstream, addr) = match dial.await {
        Ok(c) => c,
        Err(e) => {
            hello::send_alert(&mut client, alert::INTERNAL_ERROR).await;
            let f = Failure::from(Fault::classify(&e));
            drop(ex.finish_failure(&f, None));
            return;
        }
    };
    ex.record().upstream = Some(addr.to_string().into());
    ex.set_status(200);
    if upstream.write_all(&pass.hello).await.is_err() {
        drop(ex.finish_failure(&Failure::from(Fault::Connect), None));
        return;
    }
    // Each side's wrapper counts what it read, however the copy ends, and ends the copy once
    // nothing has moved on its side for the timeout; every byte crosses both sides.
    let idle = shared.config.proxy.timeouts.tunnel_idle;
    let mut client = Idle::new(client, idle, None);
    let mut upstream = Idle::new(upstream, idle, None);
    let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    let sent = pass.hello.len() as u64 + client.bytes_read();
    ex.bytes_in
        .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
    ex.add_bytes_out(upstream.bytes_read());
    match copied {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            ex.record().error = Some("closed: no traffic for tunnel_idle_timeout".into());
        }
        Err(e) => {
            tracing::debug!(error = %e, "sni-only connection ended with an error");
            ex.record().error = Some("connection ended with an error".into());
        }
    }
    drop(ex.finish_ok());
}
