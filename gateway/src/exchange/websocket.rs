//! Upgraded connections (WebSocket over HTTP/1.1): after the upstream answers 101, bytes are
//! copied both ways until either side closes or the tunnel idles out; then the exchange is
//! recorded with the real upstream status and the bytes moved.

use std::sync::Arc;

use http::Response;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use policy::Reason;

use crate::exchange::Exchange;
use crate::exchange::body::{ProxyBody, full};
use crate::listen::io::Idle;
use crate::shared::Shared;

/// Answers the client's upgrade with the upstream's 101 and splices the two connections.
pub fn upgrade(
    shared: Arc<Shared>,
    mut ex: Exchange,
    client: OnUpgrade,
    mut upstream: Response<Incoming>,
) -> Response<ProxyBody> {
    let upstream_io = hyper::upgrade::on(&mut upstream);
    let (parts, _) = upstream.into_parts();
    let idle = shared.config.proxy.timeouts.tunnel_idle;
    tokio::spawn(async move {
        let (Ok(c), Ok(u)) = (client.await, upstream_io.await) else {
            ex.record().reason = Reason::UpgradeFailed.code();
            return;
        };
        let mut c = Idle::new(TokioIo::new(c), idle, None);
        let mut u = Idle::new(TokioIo::new(u), idle, None);
        // A reset at the end of a WebSocket is normal; the record notes how it ended.
        if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
            ex.record().error = Some(format!("tunnel closed: {}", e.kind()));
        }
        ex.bytes_in
            .fetch_add(c.bytes_read(), std::sync::atomic::Ordering::Relaxed);
        ex.add_bytes_out(u.bytes_read());
        drop(ex.finish_ok());
    });
    Response::from_parts(parts, full(bytes::Bytes::new()))
}
