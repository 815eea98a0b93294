//! SOCKS5 (RFC 1928): no-auth only, CONNECT only, IPv4, IPv6 and domain targets.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use policy::{Host, Reason, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::exchange::failure::Failure;
use crate::exchange::{ConnMeta, Exchange, Target};
use crate::listen::tunnel;
use crate::shared::Shared;

/// A refused SOCKS5 handshake.
#[derive(Debug)]
pub struct Fail {
    /// The bytes to answer with, if the client is owed an answer.
    pub reply: Option<Vec<u8>>,
    /// Stable reason code.
    pub reason: Reason,
    /// Short, fixed message.
    pub message: &'static str,
}

fn reply(code: u8) -> Vec<u8> {
    vec![5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

fn fail(code: Option<u8>, reason: Reason, message: &'static str) -> Fail {
    Fail {
        reply: code.map(reply),
        reason,
        message,
    }
}

/// Serves one SOCKS5 connection.
pub async fn serve(shared: Arc<Shared>, mut tcp: TcpStream, addr: SocketAddr) {
    let meta = ConnMeta::new("tunnel", addr);
    let mut ex = Exchange::begin(&shared, &meta).await;
    ex.record().method = Some("SOCKS5".into());
    let timeout = shared.config.proxy.timeouts.client_header;
    let outcome = match tokio::time::timeout(timeout, handshake(&mut tcp)).await {
        Ok(r) => r,
        Err(_) => Err(fail(
            None,
            Reason::HandshakeTimeout,
            "SOCKS5 handshake not completed in time",
        )),
    };
    let target = match outcome {
        Ok(t) => t,
        Err(f) => {
            if let Some(bytes) = &f.reply {
                let _ = tcp.write_all(bytes).await;
            }
            let failure = Failure::Refused {
                status: http::StatusCode::BAD_REQUEST,
                reason: f.reason,
                message: f.message,
            };
            // The SOCKS reply is already sent: nothing to hold back for the record.
            drop(ex.finish_failure(&failure, None));
            return;
        }
    };
    ex.record().host = target.to_string();
    let (decision, _) = shared.policy.load().policy.decide(&Request {
        host: &target.host,
        port: target.port,
        http: None,
    });
    if !decision.allowed() {
        let _ = tcp.write_all(&reply(2)).await;
        let f = Failure::Policy {
            decision,
            host: target.host.to_string(),
        };
        drop(ex.finish_failure(&f, None));
        return;
    }
    ex.allowed(&decision);
    if tcp.write_all(&reply(0)).await.is_err() {
        return;
    }
    tunnel::run(shared, addr, target, tcp, ex).await;
}

/// Reads a SOCKS5 greeting and CONNECT request (no-auth only) and returns the target; the
/// caller sends the reply. Bounded: at most 255 methods and a 255-byte name are read.
pub async fn handshake<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO) -> Result<Target, Fail> {
    let eof = |_| fail(None, Reason::SocksIncomplete, "SOCKS5 handshake cut short");
    let mut head = [0u8; 2];
    io.read_exact(&mut head).await.map_err(eof)?;
    let mut methods = vec![0u8; usize::from(head[1])];
    io.read_exact(&mut methods).await.map_err(eof)?;
    if !methods.contains(&0) {
        return Err(Fail {
            reply: Some(vec![5, 0xff]),
            reason: Reason::SocksNoAcceptableAuth,
            message: "SOCKS5 client offers no no-auth method",
        });
    }
    io.write_all(&[5, 0]).await.map_err(eof)?;
    let mut req = [0u8; 4];
    io.read_exact(&mut req).await.map_err(eof)?;
    if req[0] != 5 {
        return Err(fail(
            Some(1),
            Reason::SocksBadVersion,
            "SOCKS5 request has a bad version",
        ));
    }
    if req[1] != 1 {
        return Err(fail(
            Some(7),
            Reason::SocksCommandUnsupported,
            "only the SOCKS5 CONNECT command is supported",
        ));
    }
    let host = match req[3] {
        1 => {
            let mut b = [0u8; 4];
            io.read_exact(&mut b).await.map_err(eof)?;
            Host::Ip(Ipv4Addr::from(b).into())
        }
        4 => {
            let mut b = [0u8; 16];
            io.read_exact(&mut b).await.map_err(eof)?;
            policy::Host::Ip(policy::unmap(Ipv6Addr::from(b).into()))
        }
        3 => {
            let mut len = [0u8; 1];
            io.read_exact(&mut len).await.map_err(eof)?;
            let mut name = vec![0u8; usize::from(len[0])];
            io.read_exact(&mut name).await.map_err(eof)?;
            std::str::from_utf8(&name)
                .ok()
                .and_then(|n| Host::parse(n).ok())
                .ok_or_else(|| {
                    fail(
                        Some(1),
                        Reason::SocksBadAddress,
                        "SOCKS5 target is not a valid host name",
                    )
                })?
        }
        _ => {
            return Err(fail(
                Some(8),
                Reason::SocksAddressTypeUnsupported,
                "unsupported SOCKS5 address type",
            ));
        }
    };
    let mut port = [0u8; 2];
    io.read_exact(&mut port).await.map_err(eof)?;
    Ok(Target {
        host,
        port: u16::from_be_bytes(port),
    })
}
