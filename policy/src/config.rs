//! The validated policy file: listeners, limits, upstream rules and the compiled policy.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::allowlist::Policy;
use crate::cidr::Cidr;
use crate::error::{ConfigErrors, Errors};
use crate::host::{HostName, HostPattern};
use crate::raw::{RawConfig, RawTransform};
use crate::validate::{allowlist, dns, listen, log_level, proxy, tls, upstream, yaml_error};
use crate::validate_hmac::hmac;
use crate::validate_secrets::secrets;
use crate::validate_tokens::{gcp_auth, oauth};

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

/// The whole validated file.
#[derive(Debug, Clone)]
pub struct Config {
    /// DNS listener.
    pub dns: DnsConfig,
    /// Proxy listeners, limits and timeouts.
    pub proxy: ProxyConfig,
    /// Certificate authority and leaf certificates.
    pub tls: TlsConfig,
    /// Upstream name pins and extra trust.
    pub upstream: UpstreamConfig,
    /// Management API.
    pub management: ManagementConfig,
    /// Unauthenticated metrics and health listener (iron-proxy's `metrics.listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// Log level: error, warn, info or debug.
    pub log_level: String,
    /// Audit output and sandbox labels.
    pub audit: crate::audit::AuditConfig,
    /// The compiled request policy.
    pub policy: Policy,
    /// Policy test cases written in the file (`tests:`); `centaur-gateway test` runs them.
    pub tests: Vec<crate::explain::Case>,
}

/// DNS settings.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// UDP and TCP address, `None` when disabled.
    pub listen: Option<SocketAddr>,
    /// The answer to every intercepted A query.
    pub proxy_ip: Option<Ipv4Addr>,
    /// The answer to every intercepted AAAA query; without it AAAA gets an empty answer.
    pub proxy_ip6: Option<Ipv6Addr>,
    /// Names resolved with the system resolver instead of intercepted.
    pub passthrough: Vec<HostPattern>,
    /// Static records.
    pub records: Vec<DnsRecord>,
}

/// A static DNS record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// Exact name.
    pub name: HostName,
    /// The answer.
    pub value: DnsValue,
}

/// The value of a static record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsValue {
    /// An A record.
    A(Ipv4Addr),
    /// An AAAA record.
    Aaaa(Ipv6Addr),
    /// A CNAME record.
    Cname(HostName),
}

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

/// Certificate authority settings.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// CA certificate PEM path.
    pub ca_cert: Option<String>,
    /// CA private key PEM path.
    pub ca_key: Option<String>,
    /// Leaf certificates kept in memory.
    pub cert_cache_size: u64,
    /// Validity of a leaf certificate.
    pub leaf_validity: Duration,
}

/// Upstream pins and trust.
#[derive(Debug, Clone, Default)]
pub struct UpstreamConfig {
    /// Static name → address (and optional port) pins.
    pub hosts: BTreeMap<HostName, (IpAddr, Option<u16>)>,
    /// Extra PEM CA bundles trusted for upstream TLS, beside the system and webpki roots.
    pub ca_files: Vec<String>,
}

/// Management API settings.
#[derive(Debug, Clone)]
pub struct ManagementConfig {
    /// Address, `None` when off.
    pub listen: Option<SocketAddr>,
    /// Name of the environment variable holding the bearer token.
    pub api_key_env: String,
    /// A file holding the bearer token (e.g. a mounted Kubernetes secret); wins over the variable.
    pub api_key_file: Option<String>,
}

impl Config {
    /// Parses and validates a policy file, returning every problem found.
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse_as(text, false)
    }

    /// As [`Config::parse`], for a policy whose gateway a sandbox runner places (`centaur
    /// sandbox run`): the runner chooses the listeners and `dns.proxy_ip`, so the file may
    /// leave `dns.proxy_ip` out.
    pub fn parse_placed(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse_as(text, true)
    }

    fn parse_as(text: &str, placed: bool) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| yaml_error(&e))?;
        let mut errs = Errors::default();
        let mut config = Config {
            dns: dns(raw.dns, placed, &mut errs),
            proxy: proxy(raw.proxy, &mut errs),
            tls: tls(raw.tls, &mut errs),
            upstream: upstream(raw.upstream, &mut errs),
            management: crate::config::ManagementConfig {
                listen: listen(raw.management.listen, None, "management.listen", &mut errs),
                api_key_env: raw
                    .management
                    .api_key_env
                    .unwrap_or_else(|| "IRON_MANAGEMENT_API_KEY".into()),
                api_key_file: raw.management.api_key_file,
            },
            metrics_listen: listen(
                raw.metrics.listen,
                Some(":9090"),
                "metrics.listen",
                &mut errs,
            ),
            log_level: log_level(raw.log.level, &mut errs),
            audit: crate::audit::audit(raw.audit, &mut errs),
            policy: Policy::default(),
            tests: Vec::new(),
        };
        config.tests = crate::explain::cases(raw.tests, &mut errs);
        for (i, t) in raw.transforms.into_iter().enumerate() {
            match t {
                RawTransform::Allowlist(a) => {
                    config.policy.allowlists.push(allowlist(i, a, &mut errs))
                }
                RawTransform::Secrets(s) => {
                    let list = secrets(i, s, &mut errs, &mut config.policy.sources);
                    config.policy.secrets.extend(list);
                }
                RawTransform::GcpAuth(g) => {
                    let g = gcp_auth(i, g, &mut errs, &mut config.policy.sources);
                    config.policy.gcp_auth.extend(g);
                }
                RawTransform::OAuthToken(o) => {
                    let list = oauth(i, o, &mut errs, &mut config.policy.sources);
                    config.policy.oauth.extend(list);
                }
                RawTransform::HmacSign(h) => {
                    let h = hmac(i, h, &mut errs, &mut config.policy.sources);
                    config.policy.hmac.extend(h);
                }
            }
        }
        errs.finish(config)
    }
}

/// Parses a listen address: `:port` (all IPv4 interfaces), `ip:port`, `[v6]:port`, `localhost:port`.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let expanded = if let Some(port) = text.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else if let Some(port) = text.strip_prefix("localhost:") {
        format!("127.0.0.1:{port}")
    } else {
        text.to_string()
    };
    expanded
        .parse()
        .map_err(|_| format!("`{text}` is not a listen address"))
}

/// The JSON Schema of the policy file, generated from the types the parser reads (so it cannot
/// drift from what `check` accepts); for editors and CI.
pub fn schema() -> String {
    let mut s = schemars::schema_for!(crate::raw::RawConfig);
    s.insert("title".into(), "Centaur gateway policy".into());
    serde_json::to_string_pretty(&s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placed_policy_may_leave_the_resolver_address_to_the_runner() {
        let e = Config::parse("{}").unwrap_err().to_string();
        assert!(
            e.contains("dns.proxy_ip: is required while DNS is enabled"),
            "{e}"
        );
        let c = Config::parse_placed("{}").unwrap();
        assert_eq!(c.dns.proxy_ip, None);
        assert!(c.dns.listen.is_some());
        // Every other check still applies.
        assert!(Config::parse_placed("dns: {proxy_ip: nope}").is_err());
    }

    #[test]
    fn defaults_follow_iron_proxy() {
        let c = Config::parse("dns: {proxy_ip: 10.0.0.1}\n").unwrap();
        assert_eq!(c.dns.listen, Some("0.0.0.0:53".parse().unwrap()));
        assert_eq!(c.proxy.https_listen, Some("0.0.0.0:443".parse().unwrap()));
        assert_eq!(c.proxy.tunnel_listen, None);
        assert_eq!(c.proxy.deny_cidrs.len(), DEFAULT_DENY_CIDRS.len());
        assert_eq!(c.tls.leaf_validity, Duration::from_secs(24 * 3600));
        assert!(c.policy.allowlists.is_empty());
    }

    #[test]
    fn null_turns_a_listener_off_and_empty_deny_list_is_kept() {
        let c = Config::parse(
            "dns: {enabled: false}\nproxy: {http_listen: null, https_listen: '127.0.0.1:0', upstream_deny_cidrs: []}\nmetrics: {listen: null}\n",
        )
        .unwrap();
        assert_eq!(c.proxy.http_listen, None);
        assert_eq!(c.metrics_listen, None);
        assert!(c.proxy.deny_cidrs.is_empty());
    }

    #[test]
    fn every_error_is_reported_with_its_path_and_position() {
        let errs = Config::parse(
            "dns:
  enabled: true
proxy:
  https_listen: 'nope'
  idle_timeout: 10
transforms:
  - name: allowlist
    config:
      domains: ['*', 'ok.com', 'api.*.com']
      cidrs: ['10.0.0.1']
      rules:
        - {host: a.com, cidr: 10.0.0.0/8}
        - {methods: [GET]}
        - {host: b.com, paths: [relative]}
",
        )
        .unwrap_err();
        let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
        for expected in [
            "dns.proxy_ip",
            "proxy.https_listen",
            "proxy.idle_timeout",
            "transforms[0].config.domains[0]",
            "transforms[0].config.domains[2]",
            "transforms[0].config.cidrs[0]",
            "transforms[0].config.rules[0]",
            "transforms[0].config.rules[1]",
            "transforms[0].config.rules[2].paths[0]",
        ] {
            assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
        }
        let listen = errs
            .0
            .iter()
            .find(|e| e.path == "proxy.https_listen")
            .unwrap();
        assert_eq!((listen.line, listen.column), (4, 17));
    }

    #[test]
    fn unknown_keys_are_errors_with_a_position() {
        let errs = Config::parse("proxy:\n  http_lisen: ':80'\n").unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert!(errs.0[0].message.contains("http_lisen"), "{}", errs.0[0]);
        assert_eq!(errs.0[0].line, 2);
        let typo = Config::parse("dns: {enabled: false}\ntransforms:\n  - name: allowlist\n    config: {hosts: [a.com]}\n").unwrap_err();
        assert!(typo.0[0].message.contains("hosts"), "{}", typo.0[0]);
    }

    #[test]
    fn pins_take_an_address_and_optional_port() {
        let c = Config::parse("dns: {enabled: false}\nupstream:\n  hosts: {API.test: '127.0.0.5', b.test: '127.0.0.1:8443'}\n").unwrap();
        let a: HostName = "api.test".parse().unwrap();
        assert_eq!(c.upstream.hosts[&a], ("127.0.0.5".parse().unwrap(), None));
        let b: HostName = "b.test".parse().unwrap();
        assert_eq!(c.upstream.hosts[&b].1, Some(8443));
    }
}
