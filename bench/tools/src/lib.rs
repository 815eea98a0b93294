//! Shared parts of the benchmark's origin and probe: PEM loading and the client side of a
//! connection (direct, or through a CONNECT tunnel, then TLS with the URL's host as SNI).

use std::{path::Path, sync::Arc};

use anyhow::{Context, bail};
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

/// Every certificate in a PEM file.
pub fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate", path.display());
    }
    Ok(certs)
}

/// A TLS server configuration from a PEM chain and key, offering `alpn`.
pub fn server_config(cert: &Path, key: &Path, alpn: &[&[u8]]) -> anyhow::Result<ServerConfig> {
    let pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())?
        .with_context(|| format!("{}: no private key", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs(cert)?, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A TLS client configuration trusting the certificates in `cas`, offering HTTP/1.1 only.
pub fn client_config(cas: &[impl AsRef<Path>]) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        for cert in certs(ca.as_ref())? {
            roots.add(cert)?;
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Where a client's connection goes and how.
#[derive(Clone)]
pub struct Route {
    /// The TCP address dialled: the origin, a transparent listener, or a proxy.
    pub connect: String,
    /// Ask `connect` for a CONNECT tunnel to `host:port` first.
    pub tunnel: bool,
    /// The URL's host: SNI, `Host` and the tunnel's target.
    pub host: String,
    /// The URL's port.
    pub port: u16,
    /// Trust for the TLS handshake.
    pub tls: Arc<ClientConfig>,
}

impl Route {
    /// Splits `https://host:port/path` into a route and the path.
    pub fn new(
        connect: String,
        tunnel: bool,
        url: &str,
        tls: Arc<ClientConfig>,
    ) -> anyhow::Result<(Route, String)> {
        let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
        if uri.scheme_str() != Some("https") {
            bail!("{url}: only https URLs are measured");
        }
        let host = uri.host().context("URL without a host")?.to_string();
        let port = uri.port_u16().unwrap_or(443);
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        Ok((
            Route {
                connect,
                tunnel,
                host,
                port,
                tls,
            },
            path,
        ))
    }

    /// Dials, tunnels if asked, and completes the TLS handshake.
    pub async fn open(&self) -> anyhow::Result<TlsStream<TcpStream>> {
        let mut tcp = TcpStream::connect(&self.connect)
            .await
            .with_context(|| format!("connecting to {}", self.connect))?;
        tcp.set_nodelay(true)?;
        if self.tunnel {
            let target = format!("{}:{}", self.host, self.port);
            tcp.write_all(
                format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
            )
            .await?;
            let head = read_head(&mut tcp).await?;
            if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
                bail!("CONNECT refused: {}", head.lines().next().unwrap_or(""));
            }
        }
        let name = ServerName::try_from(self.host.clone())?;
        Ok(TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await?)
    }

    /// An HTTP/1.1 GET head for `path` with one extra header line.
    pub fn request(&self, path: &str, header: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}:{}\r\n{header}\r\n\r\n",
            self.host, self.port
        )
    }

    /// One HTTP/1.1 GET on an open connection; returns the status and the body's length.
    pub async fn get<S>(&self, stream: &mut S, path: &str) -> anyhow::Result<(u16, usize)>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        // The placeholder the realistic policy swaps for a real credential, as oha sends it.
        let auth = "Authorization: Bearer CENTAUR_BENCH_PLACEHOLDER";
        stream
            .write_all(self.request(path, auth).as_bytes())
            .await?;
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let before = head.len();
            reader.read_line(&mut head).await?;
            if head.len() == before {
                bail!("connection closed in the response head");
            }
            if head.ends_with("\r\n\r\n") {
                break;
            }
        }
        let status = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line: {head:?}"))?;
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (n, value) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_ascii_lowercase())
            })
        };
        let length = if header("transfer-encoding").as_deref() == Some("chunked") {
            // A scrubbing gateway cannot know the length in advance.
            let mut total = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .with_context(|| format!("bad chunk size line: {line:?}"))?;
                if size == 0 {
                    reader.read_line(&mut line).await?; // the empty line: no trailers here
                    break total;
                }
                let mut chunk = vec![0; size + 2]; // the data and its CRLF
                reader.read_exact(&mut chunk).await?;
                total += size;
            }
        } else {
            let length: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .context("response with neither Content-Length nor chunked encoding")?;
            let mut body = vec![0; length];
            reader.read_exact(&mut body).await?;
            length
        };
        if !reader.buffer().is_empty() {
            bail!("bytes after the response body");
        }
        Ok((status, length))
    }
}

/// Reads an HTTP head byte by byte (a tunnel's reply: nothing after it may be consumed).
async fn read_head(tcp: &mut TcpStream) -> anyhow::Result<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            bail!("tunnel reply head too long");
        }
        let byte = tcp.read_u8().await.context("proxy closed during CONNECT")?;
        head.push(byte);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Percentile (0–100) of sorted samples, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
