//! `proxy`: listeners, limits and timeouts, and the upstream address rules (deny ranges, pins,
//! extra trust roots).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::matcher::cidr::Cidr;
use crate::matcher::host::HostName;
use crate::value::{Listen, S, cidrs, duration, listen, nullable, pos, positive};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProxy {
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub http_listen: Listen,
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub https_listen: Listen,
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub tunnel_listen: Listen,
    pub max_request_body_bytes: Option<u64>,
    pub max_response_body_bytes: Option<u64>,
    pub upstream_response_header_timeout: Option<S>,
    pub upstream_deny_cidrs: Option<Vec<S>>,
    pub upstream_proxy: Option<crate::section::upstream_proxy::RawUpstreamProxy>,
    #[serde(default)]
    pub upstream_allow_cidrs: Vec<S>,
    pub client_header_timeout: Option<S>,
    pub idle_timeout: Option<S>,
    pub upstream_connect_timeout: Option<S>,
    pub tunnel_idle_timeout: Option<S>,
    pub tls_handshake_timeout: Option<S>,
    pub max_connections: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    #[serde(default)]
    pub hosts: BTreeMap<String, S>,
    #[serde(default)]
    pub ca_files: Vec<String>,
}

/// Ranges the gateway never connects to unless `proxy.upstream_allow_cidrs` names them:
/// unspecified, private, CGNAT, loopback, link-local and cloud metadata, benchmarking,
/// multicast and reserved (invariant 2).
pub const DEFAULT_DENY_CIDRS: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// Proxy listeners, limits and timeouts.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Transparent plain-HTTP listener.
    pub http_listen: Option<SocketAddr>,
    /// Transparent TLS listener.
    pub https_listen: Option<SocketAddr>,
    /// CONNECT and SOCKS5 listener.
    pub tunnel_listen: Option<SocketAddr>,
    /// Largest request body a transform may buffer.
    pub max_request_body_bytes: u64,
    /// Largest response body a transform may buffer; 0 = no transform may buffer responses.
    pub max_response_body_bytes: u64,
    /// Upstream addresses never connected to.
    pub deny_cidrs: Vec<Cidr>,
    /// Exceptions to `deny_cidrs` (for example a test origin on loopback).
    pub allow_cidrs: Vec<Cidr>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Concurrent client connections across all listeners.
    pub max_connections: usize,
    /// Largest request head (request line and headers) in bytes.
    pub max_header_bytes: usize,
    /// Most headers in one request.
    pub max_headers: usize,
    /// A proxy the upstream connections go through (`None`: connect directly).
    pub upstream_proxy: Option<crate::section::upstream_proxy::UpstreamProxy>,
}

/// Every timeout of the data plane.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Reading a request head, and the TLS ClientHello or tunnel handshake.
    pub client_header: Duration,
    /// An idle client keep-alive connection.
    pub idle: Duration,
    /// Opening the upstream TCP connection.
    pub upstream_connect: Duration,
    /// Connecting upstream and receiving the response head.
    pub upstream_response_header: Duration,
    /// A WebSocket or other upgraded connection with no traffic either way.
    pub tunnel_idle: Duration,
    /// Completing a TLS handshake with a client.
    pub tls_handshake: Duration,
}

/// Upstream pins and trust.
#[derive(Debug, Clone, Default)]
pub struct UpstreamConfig {
    /// Static name → address (and optional port) pins.
    pub hosts: BTreeMap<HostName, (IpAddr, Option<u16>)>,
    /// Extra PEM CA bundles trusted for upstream TLS, beside the system and webpki roots.
    pub ca_files: Vec<String>,
    /// Routes to the control plane (`centaur.internal` → its API's address): set by the
    /// control plane's sandbox runner, never by a policy file. Unlike `hosts`, these exact
    /// addresses are exempt from the deny ranges (the API listens on loopback); a name here
    /// resolves to its address and nothing else.
    pub internal: BTreeMap<HostName, SocketAddr>,
}

pub(crate) fn proxy(raw: RawProxy, errs: &mut Errors) -> ProxyConfig {
    let deny_cidrs = match &raw.upstream_deny_cidrs {
        Some(list) => cidrs(list, "proxy.upstream_deny_cidrs", errs),
        None => DEFAULT_DENY_CIDRS
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect(),
    };
    let timeouts = Timeouts {
        client_header: duration(
            raw.client_header_timeout,
            Duration::from_secs(10),
            "proxy.client_header_timeout",
            errs,
        ),
        idle: duration(
            raw.idle_timeout,
            Duration::from_secs(90),
            "proxy.idle_timeout",
            errs,
        ),
        upstream_connect: duration(
            raw.upstream_connect_timeout,
            Duration::from_secs(10),
            "proxy.upstream_connect_timeout",
            errs,
        ),
        upstream_response_header: duration(
            raw.upstream_response_header_timeout,
            Duration::from_secs(30),
            "proxy.upstream_response_header_timeout",
            errs,
        ),
        tunnel_idle: duration(
            raw.tunnel_idle_timeout,
            Duration::from_secs(300),
            "proxy.tunnel_idle_timeout",
            errs,
        ),
        tls_handshake: duration(
            raw.tls_handshake_timeout,
            Duration::from_secs(10),
            "proxy.tls_handshake_timeout",
            errs,
        ),
    };
    ProxyConfig {
        http_listen: listen(raw.http_listen, Some(":80"), "proxy.http_listen", errs),
        https_listen: listen(raw.https_listen, Some(":443"), "proxy.https_listen", errs),
        tunnel_listen: listen(raw.tunnel_listen, None, "proxy.tunnel_listen", errs),
        max_request_body_bytes: raw
            .max_request_body_bytes
            .filter(|&n| n > 0)
            .unwrap_or(1 << 20),
        max_response_body_bytes: raw.max_response_body_bytes.unwrap_or(0),
        deny_cidrs,
        allow_cidrs: cidrs(
            &raw.upstream_allow_cidrs,
            "proxy.upstream_allow_cidrs",
            errs,
        ),
        timeouts,
        max_connections: positive(raw.max_connections, 4096, "proxy.max_connections", errs),
        max_header_bytes: positive(
            raw.max_header_bytes,
            64 * 1024,
            "proxy.max_header_bytes",
            errs,
        )
        .max(8192),
        max_headers: positive(raw.max_headers, 100, "proxy.max_headers", errs),
        upstream_proxy: raw
            .upstream_proxy
            .map(|p| crate::section::upstream_proxy::upstream_proxy(p, errs)),
    }
}

pub(crate) fn upstream(
    raw: crate::section::proxy::RawUpstream,
    errs: &mut Errors,
) -> UpstreamConfig {
    let mut hosts = BTreeMap::new();
    for (name, addr) in raw.hosts {
        let path = format!("upstream.hosts.{name}");
        let Some(host) = name
            .parse::<HostName>()
            .map_err(|e| errs.push(&path, pos(&addr), e))
            .ok()
        else {
            continue;
        };
        let pinned = if let Ok(ip) = addr.value.parse::<IpAddr>() {
            (ip, None)
        } else if let Ok(sa) = addr.value.parse::<SocketAddr>() {
            (sa.ip(), Some(sa.port()))
        } else {
            errs.hint(
                &path,
                pos(&addr),
                format!("`{}` is not an address", addr.value),
                "write an IP (`127.0.0.5`) or an IP and port (`127.0.0.5:8443`)",
            );
            continue;
        };
        hosts.insert(host, pinned);
    }
    UpstreamConfig {
        hosts,
        ca_files: raw.ca_files,
        internal: BTreeMap::new(),
    }
}
