//! The validated policy file: listeners, limits, upstream rules and the compiled policy.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::allowlist::{Allowlist, Policy, Rule, Target};
use crate::cidr::Cidr;
use crate::duration::parse_duration;
use crate::error::{ConfigErrors, Errors, pos};
use crate::host::{HostName, HostPattern};
use crate::raw::{Listen, RawAllowlist, RawConfig, RawDns, RawProxy, RawTransform, S};

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
    pub audit: AuditConfig,
    /// The compiled request policy.
    pub policy: Policy,
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

/// Audit settings.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// `stdout` or a file path (appended).
    pub output: String,
    /// Identity labels written into every record.
    pub sandbox: BTreeMap<String, String>,
}

impl Config {
    /// Parses and validates a policy file, returning every problem found.
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| yaml_error(&e))?;
        let mut errs = Errors::default();
        let config = Config {
            dns: dns(raw.dns, &mut errs),
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
            audit: AuditConfig {
                output: raw.audit.output.unwrap_or_else(|| "stdout".into()),
                sandbox: raw.audit.sandbox,
            },
            policy: Policy {
                allowlists: raw
                    .transforms
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| match t {
                        RawTransform::Allowlist(a) => allowlist(i, a, &mut errs),
                    })
                    .collect(),
            },
        };
        errs.finish(config)
    }
}

fn yaml_error(e: &serde_saphyr::Error) -> ConfigErrors {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let message = e.to_string();
    // saphyr appends its own position; keep ours in front and the message short.
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_string();
    let hint = message
        .contains("unknown variant")
        .then(|| "this version supports the `allowlist` transform; the others arrive with the policy language".to_string());
    ConfigErrors(vec![crate::error::ConfigError {
        path: String::new(),
        line,
        column,
        message,
        hint,
    }])
}

fn parse<T: std::str::FromStr>(s: &S, path: &str, errs: &mut Errors) -> Option<T>
where
    T::Err: std::fmt::Display,
{
    s.value.parse().map_err(|e| errs.push(path, pos(s), e)).ok()
}

fn listen(raw: Listen, default: Option<&str>, path: &str, errs: &mut Errors) -> Option<SocketAddr> {
    let text = match raw {
        Some(None) => return None,
        Some(Some(s)) => match parse_listen(&s.value) {
            Ok(a) => return Some(a),
            Err(e) => {
                errs.hint(
                    path,
                    pos(&s),
                    e,
                    "write `127.0.0.1:8080`, `:443` or `[::1]:53`; `null` turns it off",
                );
                return None;
            }
        },
        None => default?,
    };
    parse_listen(text).ok()
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

fn duration(raw: Option<S>, default: Duration, path: &str, errs: &mut Errors) -> Duration {
    let Some(s) = raw else { return default };
    match parse_duration(&s.value) {
        Ok(d) if d > Duration::ZERO => d,
        Ok(_) => {
            errs.push(path, pos(&s), "must be greater than zero");
            default
        }
        Err(e) => {
            errs.push(path, pos(&s), e);
            default
        }
    }
}

fn cidrs(list: &[S], path: &str, errs: &mut Errors) -> Vec<Cidr> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| parse(s, &format!("{path}[{i}]"), errs))
        .collect()
}

fn dns(raw: RawDns, errs: &mut Errors) -> DnsConfig {
    let enabled = raw.enabled.unwrap_or(true);
    if let Some(r) = &raw.upstream_resolver {
        errs.hint(
            "dns.upstream_resolver",
            pos(r),
            "is not supported yet",
            "remove it: passthrough names and upstream connections use the system resolver",
        );
    }
    let proxy_ip: Option<Ipv4Addr> = raw
        .proxy_ip
        .as_ref()
        .and_then(|s| parse(s, "dns.proxy_ip", errs));
    if enabled && raw.proxy_ip.is_none() {
        errs.hint(
            "dns.proxy_ip",
            (0, 0),
            "is required while DNS is enabled",
            "set it to the gateway's IPv4 address, or set `dns.enabled: false`",
        );
    }
    let records = raw
        .records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let path = format!("dns.records[{i}]");
            let name = parse(&r.name, &format!("{path}.name"), errs)?;
            let value = match r.kind.value.to_ascii_uppercase().as_str() {
                "A" => DnsValue::A(parse(&r.value, &format!("{path}.value"), errs)?),
                "AAAA" => DnsValue::Aaaa(parse(&r.value, &format!("{path}.value"), errs)?),
                "CNAME" => DnsValue::Cname(parse(&r.value, &format!("{path}.value"), errs)?),
                other => {
                    errs.hint(
                        format!("{path}.type"),
                        pos(&r.kind),
                        format!("unknown record type `{other}`"),
                        "use A, AAAA or CNAME",
                    );
                    return None;
                }
            };
            Some(DnsRecord { name, value })
        })
        .collect();
    DnsConfig {
        listen: if enabled {
            listen(raw.listen, Some(":53"), "dns.listen", errs)
        } else {
            None
        },
        proxy_ip,
        proxy_ip6: raw
            .proxy_ip6
            .as_ref()
            .and_then(|s| parse(s, "dns.proxy_ip6", errs)),
        passthrough: raw
            .passthrough
            .iter()
            .enumerate()
            .filter_map(|(i, s)| parse(s, &format!("dns.passthrough[{i}]"), errs))
            .collect(),
        records,
    }
}

fn proxy(raw: RawProxy, errs: &mut Errors) -> ProxyConfig {
    if raw.upstream_proxy.is_some() {
        errs.hint("proxy.upstream_proxy", (0, 0), "is not supported", "the gateway connects to upstreams itself so that it can check every address (invariant 2)");
    }
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
    }
}

fn positive(v: Option<usize>, default: usize, path: &str, errs: &mut Errors) -> usize {
    match v {
        Some(0) => {
            errs.push(path, (0, 0), "must be greater than zero");
            default
        }
        Some(n) => n,
        None => default,
    }
}

fn tls(raw: crate::raw::RawTls, errs: &mut Errors) -> TlsConfig {
    if let Some(mode) = &raw.mode
        && mode.value != "mitm"
    {
        errs.hint("tls.mode", pos(mode), format!("mode `{}` is not supported", mode.value), "only `mitm` is supported: SNI-only passthrough cannot enforce paths, methods or credentials");
    }
    if raw.ca_cert.is_some() != raw.ca_key.is_some() {
        errs.push(
            "tls",
            (0, 0),
            "`ca_cert` and `ca_key` must be given together",
        );
    }
    TlsConfig {
        ca_cert: raw.ca_cert,
        ca_key: raw.ca_key,
        cert_cache_size: raw.cert_cache_size.filter(|&n| n > 0).unwrap_or(1000),
        leaf_validity: Duration::from_secs(
            3600 * raw.leaf_cert_expiry_hours.filter(|&h| h > 0).unwrap_or(24),
        ),
    }
}

fn upstream(raw: crate::raw::RawUpstream, errs: &mut Errors) -> UpstreamConfig {
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
    }
}

fn log_level(raw: Option<S>, errs: &mut Errors) -> String {
    let Some(s) = raw else { return "info".into() };
    let level = s.value.to_ascii_lowercase();
    if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
        errs.hint(
            "log.level",
            pos(&s),
            format!("unknown level `{}`", s.value),
            "use error, warn, info or debug",
        );
    }
    level
}

fn allowlist(i: usize, raw: RawAllowlist, errs: &mut Errors) -> Allowlist {
    let base = format!("transforms[{i}].config");
    let mut rules = Vec::new();
    for (j, d) in raw.domains.iter().enumerate() {
        let id = format!("{base}.domains[{j}]");
        if let Some(p) = parse(d, &id, errs) {
            rules.push(simple(id, Target::Host(p)));
        }
    }
    for (j, c) in raw.cidrs.iter().enumerate() {
        let id = format!("{base}.cidrs[{j}]");
        if let Some(c) = parse(c, &id, errs) {
            rules.push(simple(id, Target::Cidr(c)));
        }
    }
    for (j, r) in raw.rules.iter().enumerate() {
        let id = format!("{base}.rules[{j}]");
        let target = match (&r.host, &r.cidr) {
            (Some(h), None) => parse(h, &format!("{id}.host"), errs).map(Target::Host),
            (None, Some(c)) => parse(c, &format!("{id}.cidr"), errs).map(Target::Cidr),
            (Some(h), Some(_)) => {
                errs.hint(
                    &id,
                    pos(h),
                    "a rule has both `host` and `cidr`",
                    "split it into two rules",
                );
                None
            }
            (None, None) => {
                errs.hint(
                    &id,
                    (0, 0),
                    "a rule needs `host` or `cidr`",
                    "add `host: api.example.com` or `cidr: 10.0.0.0/8`",
                );
                None
            }
        };
        let paths = r
            .paths
            .iter()
            .enumerate()
            .filter_map(|(k, p)| parse(p, &format!("{id}.paths[{k}]"), errs))
            .collect();
        let methods = r
            .methods
            .iter()
            .filter(|m| m.as_str() != "*")
            .map(|m| m.to_ascii_uppercase())
            .collect();
        if let Some(target) = target {
            rules.push(Rule {
                id,
                target,
                methods,
                paths,
                ports: r.ports.clone(),
            });
        }
    }
    Allowlist {
        rules,
        warn: raw.warn,
    }
}

fn simple(id: String, target: Target) -> Rule {
    Rule {
        id,
        target,
        methods: Vec::new(),
        paths: Vec::new(),
        ports: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
