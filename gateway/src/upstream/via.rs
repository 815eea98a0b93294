//! Dialling an upstream: directly through the address guard, or — with
//! `proxy.upstream_proxy` — through a corporate HTTP proxy's CONNECT tunnel. Through a proxy
//! the guard checks the proxy's address (as iron-proxy does) and, when the target is an IP
//! literal or a pinned name, the target's address too; a name only DNS can answer is resolved
//! by the proxy, so internal ranges must be denied there as well.

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use policy::{Host, ProxyUrl, UpstreamProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::upstream::guard::{Guard, GuardError};

/// Largest CONNECT response head read from a proxy.
const MAX_HEAD: usize = 16 * 1024;

/// Opens a TCP connection for `host:port` (`https` picks the proxy); returns it and the
/// address actually connected to (the proxy's, when there is one).
pub async fn dial(
    guard: &Guard,
    proxy: Option<&UpstreamProxy>,
    host: &Host,
    port: u16,
    https: bool,
) -> Result<(TcpStream, SocketAddr), GuardError> {
    let Some(via) = proxy.and_then(|p| p.for_target(https, &host.to_string())) else {
        return guard.connect(host, port).await;
    };
    let authority = match guard.fixed(host, port)? {
        Some(addr) => addr.to_string(),
        None => format!("{host}:{port}"),
    };
    let proxy_host = Host::parse(&via.host)
        .map_err(|_| GuardError::Resolve(format!("proxy host `{}` is not valid", via.host)))?;
    let (mut stream, peer) = guard.connect(&proxy_host, via.port).await?;
    let tunnel = open_tunnel(&mut stream, &authority, via);
    match tokio::time::timeout(guard.connect_timeout(), tunnel).await {
        Ok(Ok(())) => Ok((stream, peer)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(GuardError::Proxy("no answer to CONNECT in time".into())),
    }
}

/// Sends `CONNECT authority` and reads the proxy's answer; anything but 2xx is an error
/// carrying its status line.
async fn open_tunnel(
    stream: &mut TcpStream,
    authority: &str,
    via: &ProxyUrl,
) -> Result<(), GuardError> {
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(c) = &via.credentials {
        let decoded = percent_encoding::percent_decode_str(c).collect::<Vec<u8>>();
        head.push_str("Proxy-Authorization: Basic ");
        head.push_str(&STANDARD.encode(decoded));
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let broke =
        |e: std::io::Error| GuardError::Proxy(format!("connection to the proxy failed: {e}"));
    stream.write_all(head.as_bytes()).await.map_err(broke)?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = stream.read(&mut chunk).await.map_err(broke)?;
        if n == 0 {
            return Err(GuardError::Proxy("the proxy closed the connection".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(GuardError::Proxy("the proxy's answer is too large".into()));
        }
    };
    let status_line = String::from_utf8_lossy(buf.split(|b| *b == b'\r').next().unwrap_or(&[]))
        .chars()
        .take(120)
        .collect::<String>();
    let ok = status_line
        .split(' ')
        .nth(1)
        .is_some_and(|code| code.len() == 3 && code.starts_with('2'));
    if !ok {
        tracing::warn!(proxy = ?via, target = %authority, answer = %status_line, "the upstream proxy refused a tunnel");
        return Err(GuardError::Proxy(status_line));
    }
    // Nothing may follow the head: the tunnel carries the client's bytes only.
    if end != buf.len() {
        return Err(GuardError::Proxy(
            "the proxy sent data before the tunnel was used".into(),
        ));
    }
    Ok(())
}
