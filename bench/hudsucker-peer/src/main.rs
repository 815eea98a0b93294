//! The hudsucker contender of `bench/run`: hudsucker's no-op proxy, as its README builds it,
//! with two changes a private origin needs. Upstream TLS trusts the benchmark's origin CA
//! (hudsucker's own connector trusts only webpki roots), and every name resolves to one
//! address, as `upstream.hosts` pins do for centaur-gateway, so that the new-host-per-request
//! scenario can reach `h1234.origin.test`.
//!
//! Usage: hudsucker-peer LISTEN CA_CERT CA_KEY ORIGIN_CA RESOLVE_TO
//! It prints `listening on ADDR` once it accepts connections.

use std::{
    error::Error,
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use hudsucker::{
    Proxy,
    certificate_authority::RcgenAuthority,
    hyper_util::client::legacy::connect::{HttpConnector, dns::Name},
    rcgen::{Issuer, KeyPair},
    rustls::{ClientConfig, RootCertStore, crypto::aws_lc_rs},
    tokio_tungstenite::Connector,
};

/// Resolves every name to one address (the port comes from the request).
#[derive(Clone)]
struct Fixed(IpAddr);

impl tower_service::Service<Name> for Fixed {
    type Response = std::iter::Once<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Name) -> Self::Future {
        let addr = SocketAddr::new(self.0, 0);
        Box::pin(async move { Ok(std::iter::once(addr)) })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, ca_cert, ca_key, origin_ca, resolve_to] = args.as_slice() else {
        return Err("usage: hudsucker-peer LISTEN CA_CERT CA_KEY ORIGIN_CA RESOLVE_TO".into());
    };
    let key = KeyPair::from_pem(&std::fs::read_to_string(ca_key)?)?;
    let issuer = Issuer::from_ca_cert_pem(&std::fs::read_to_string(ca_cert)?, key)?;
    let ca = RcgenAuthority::new(issuer, 1_000, aws_lc_rs::default_provider());

    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::fs::read(origin_ca)?.as_slice()) {
        roots.add(cert?)?;
    }
    let tls = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new_with_resolver(Fixed(resolve_to.parse()?));
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);

    let listener = tokio::net::TcpListener::bind(listen.as_str()).await?;
    println!("listening on {}", listener.local_addr()?);
    let proxy = Proxy::builder()
        .with_listener(listener)
        .with_ca(ca)
        .with_http_connector(https)
        .with_websocket_connector(Connector::Rustls(Arc::new(tls)))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .build()?;
    proxy.start().await?;
    Ok(())
}
