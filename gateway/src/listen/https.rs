//! The interception path shared by the transparent TLS listener and TLS inside tunnels:
//! read ClientHello → validate SNI → decide → leaf → handshake → serve HTTP; or, with
//! `tls.mode: sni-only`, read ClientHello → validate SNI → decide → pass through.

use std::sync::Arc;

use policy::{Decision, Host, HostName, Reason, Request};
use rustls::server::Accepted;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::StartHandshake;

use crate::exchange::failure::Failure;
use crate::exchange::{ConnMeta, TlsMeta};
use crate::listen::hello::{self, HelloError, alert};
use crate::listen::passthrough;
use crate::listen::serve::{refuse_conn, serve_http};
use crate::shared::{Mitm, Shared};

fn refused(reason: Reason, message: &'static str) -> Failure {
    Failure::Refused {
        status: http::StatusCode::BAD_REQUEST,
        reason,
        message,
    }
}

/// Terminates TLS on `io` (a client connection, or a tunnel after CONNECT/SOCKS5); with
/// `tls.mode: sni-only`, passes it through to the server it names instead.
pub async fn intercept<IO>(shared: Arc<Shared>, mut meta: ConnMeta, mut io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let t = shared.config.proxy.timeouts;
    let sni_only = shared.mitm.is_none();
    let (accepted, hello_bytes) =
        match hello::read_client_hello(&mut io, t.client_header, sni_only).await {
            Ok(a) => a,
            Err(HelloError::Closed { bytes: 0 }) | Err(HelloError::Io(_)) => return,
            Err(e) => {
                if !matches!(e, HelloError::Invalid) {
                    hello::send_alert(&mut io, 50).await;
                }
                return refuse_conn(&shared, &meta, None, &hello_failure(&e), None).await;
            }
        };
    let admitted = admit(&shared, &meta, &accepted).and_then(|(name, d)| match &shared.mitm {
        Some(m) => leaf(m, name).map(|n| (n, d)),
        None => Ok((name, d)),
    });
    let (name, decision) = match admitted {
        Ok(admitted) => admitted,
        Err(r) => {
            hello::send_alert(&mut io, r.alert).await;
            return refuse_conn(&shared, &meta, r.host, &r.failure, None).await;
        }
    };
    let Some(mitm) = &shared.mitm else {
        let pass = passthrough::Admitted {
            name,
            decision,
            hello: hello_bytes,
        };
        return passthrough::run(shared, meta, pass, io).await;
    };
    let handshake = StartHandshake::from_parts(accepted, io).into_stream(mitm.tls.clone());
    let stream = match tokio::time::timeout(t.tls_handshake, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) | Err(_) => {
            let f = refused(
                Reason::TlsHandshakeFailed,
                "TLS handshake with the client failed",
            );
            return refuse_conn(&shared, &meta, Some(name.to_string()), &f, None).await;
        }
    };
    let info = hello::tls_info(stream.get_ref().1);
    meta.tls = Some(TlsMeta::new(name, info));
    serve_http(shared, Arc::new(meta), stream).await;
}

/// A ClientHello that could not be read.
fn hello_failure(e: &HelloError) -> Failure {
    match e {
        HelloError::Timeout => refused(
            Reason::TlsClientHelloTimeout,
            "ClientHello not received in time",
        ),
        HelloError::TooLarge => refused(Reason::TlsClientHelloTooLarge, "ClientHello too large"),
        HelloError::Invalid => refused(
            Reason::TlsClientHelloInvalid,
            "invalid ClientHello or server name",
        ),
        _ => refused(
            Reason::TlsClientHelloIncomplete,
            "connection closed during the ClientHello",
        ),
    }
}

/// A connection refused after its ClientHello: the TLS alert, the host to record, why.
struct Refusal {
    alert: u8,
    host: Option<String>,
    failure: Failure,
}

/// The server name, once it is present and valid, matches the tunnel's target and is allowed
/// by the policy. With `sni-only` the port judged is 443, whatever the tunnel's: the
/// connection goes to the name's port 443 (no port pivoting).
fn admit(
    shared: &Shared,
    meta: &ConnMeta,
    accepted: &Accepted,
) -> Result<(HostName, Decision), Refusal> {
    let refuse = |alert, host: Option<String>, failure| Refusal {
        alert,
        host,
        failure,
    };
    let Some(sni) = accepted.client_hello().server_name().map(str::to_string) else {
        let f = refused(Reason::TlsSniMissing, "ClientHello has no server name");
        return Err(refuse(alert::UNRECOGNIZED_NAME, None, f));
    };
    let Ok(name) = sni.parse::<HostName>() else {
        let f = refused(
            Reason::TlsSniInvalid,
            "server name is not a valid host name",
        );
        return Err(refuse(alert::UNRECOGNIZED_NAME, Some(sni), f));
    };
    let host = Host::Name(name.clone());
    let shown = Some(name.to_string());
    if let Some(target) = &meta.tunnel
        && target.host != host
    {
        let f = refused(
            Reason::TlsSniTunnelMismatch,
            "server name does not match the tunnel target",
        );
        return Err(refuse(alert::ACCESS_DENIED, shown, f));
    }
    let port = match shared.mitm {
        Some(_) => meta.tunnel.as_ref().map_or(443, |t| t.port),
        None => 443,
    };
    let (decision, _) = shared.policy.load().policy.decide(&Request {
        host: &host,
        port,
        http: None,
    });
    if !decision.allowed() {
        let f = Failure::Policy {
            decision,
            host: name.to_string(),
        };
        return Err(refuse(alert::ACCESS_DENIED, shown, f));
    }
    Ok((name, decision))
}

/// A leaf certificate for an admitted name (issued now, or from the cache).
fn leaf(mitm: &Mitm, name: HostName) -> Result<HostName, Refusal> {
    let Err(e) = mitm.leaves.get(name.as_str()) else {
        return Ok(name);
    };
    let failure = match *e {
        crate::ca::CaError::RateLimited => refused(
            Reason::LeafRateLimited,
            "new names arrive faster than tls.leaf_issue_rate",
        ),
        _ => refused(Reason::LeafIssueFailed, "could not issue a certificate"),
    };
    Err(Refusal {
        alert: alert::INTERNAL_ERROR,
        host: Some(name.to_string()),
        failure,
    })
}
