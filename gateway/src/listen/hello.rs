//! Client-side TLS: read the ClientHello (bounded in bytes and time) before deciding anything,
//! refuse with a real TLS alert, and terminate with a leaf for the SNI.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use audit::TlsInfo;
use rustls::server::{Accepted, Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::ca::LeafCache;

/// Largest ClientHello accepted (bytes on the wire).
pub const MAX_HELLO: usize = 16 * 1024;

/// TLS alert descriptions we send.
pub mod alert {
    /// The server refuses to serve this name (policy).
    pub const ACCESS_DENIED: u8 = 49;
    /// No usable SNI.
    pub const UNRECOGNIZED_NAME: u8 = 112;
    /// Something failed on our side.
    pub const INTERNAL_ERROR: u8 = 80;
}

/// Why no ClientHello was read.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    /// It did not arrive in time.
    #[error("ClientHello not received in time")]
    Timeout,
    /// The client closed the connection first; `bytes` were received.
    #[error("client closed the connection during the ClientHello")]
    Closed {
        /// Bytes received before the close.
        bytes: usize,
    },
    /// It exceeded [`MAX_HELLO`].
    #[error("ClientHello too large")]
    TooLarge,
    /// It was not a valid ClientHello (an alert was sent).
    #[error("invalid ClientHello")]
    Invalid,
    /// Socket error.
    #[error("socket error reading ClientHello")]
    Io(#[from] io::Error),
}

/// Reads until a complete ClientHello is parsed by rustls. With `keep`, the bytes read are
/// returned too (at most [`MAX_HELLO`]), to be replayed to the upstream (`sni-only`).
pub async fn read_client_hello<IO>(
    io: &mut IO,
    timeout: Duration,
    keep: bool,
) -> Result<(Accepted, Vec<u8>), HelloError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(timeout, read_hello(io, keep))
        .await
        .map_err(|_| HelloError::Timeout)?
}

async fn read_hello<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    keep: bool,
) -> Result<(Accepted, Vec<u8>), HelloError> {
    let mut acceptor = Acceptor::default();
    let mut buf = [0u8; 4096];
    let mut total = 0;
    let mut kept = Vec::new();
    loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return Err(HelloError::Closed { bytes: total });
        }
        total += n;
        if total > MAX_HELLO {
            return Err(HelloError::TooLarge);
        }
        if keep {
            kept.extend_from_slice(&buf[..n]);
        }
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            if acceptor.read_tls(&mut chunk)? == 0 {
                return Err(HelloError::TooLarge);
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok((accepted, kept)),
            Ok(None) => continue,
            Err((_, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                let _ = io.write_all(&out).await;
                return Err(HelloError::Invalid);
            }
        }
    }
}

/// Sends a fatal alert as a plaintext record (the handshake has not started) and closes.
pub async fn send_alert<IO: AsyncWrite + Unpin>(io: &mut IO, description: u8) {
    let record = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description];
    let _ = io.write_all(&record).await;
    let _ = io.shutdown().await;
}

#[derive(Debug)]
struct LeafResolver(Arc<LeafCache>);

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name: policy::HostName = hello.server_name()?.parse().ok()?;
        self.0.get(name.as_str()).ok()
    }
}

/// The shared server configuration: leaves from the cache, ALPN h2 and http/1.1.
pub fn server_config(leaves: Arc<LeafCache>) -> Arc<ServerConfig> {
    let mut cfg = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(LeafResolver(leaves)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Negotiated parameters of a finished handshake.
pub fn tls_info(conn: &ServerConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    };
    TlsInfo {
        version: version.into(),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    }
}
