//! Validation: raw serde structs to the validated types of `config.rs`, collecting every
//! problem with its path and position instead of stopping at the first.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::allowlist::{Allowlist, Rule, Target};
use crate::cidr::Cidr;
use crate::config::{
    DEFAULT_DENY_CIDRS, DnsConfig, DnsRecord, DnsValue, ProxyConfig, Timeouts, TlsConfig,
    UpstreamConfig, parse_listen,
};
use crate::duration::parse_duration;
use crate::error::{ConfigErrors, Errors, pos};
use crate::host::HostName;
use crate::raw::{Listen, RawAllowlist, RawDns, RawProxy, RawRule, S};

pub(crate) fn yaml_error(e: &serde_saphyr::Error) -> ConfigErrors {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    // saphyr renders a position and a code frame; keep ours in front and one line of text.
    let full = e.to_string();
    let first = full.lines().next().unwrap_or(&full);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let message = match first.split_once(": ") {
        Some((at, rest)) if at.starts_with("line ") => rest,
        _ => first,
    };
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string();
    let hint = if message.contains("unknown variant") {
        Some("supported transforms: allowlist, secrets, gcp_auth, oauth_token, hmac_sign; sources: env, file, vault")
    } else if message.starts_with("invalid u") || message.starts_with("invalid i") {
        Some("expected a whole number")
    } else {
        None
    }
    .map(str::to_string);
    ConfigErrors(vec![crate::error::ConfigError {
        path: String::new(),
        line,
        column,
        message,
        hint,
    }])
}

pub(crate) fn parse<T: std::str::FromStr>(s: &S, path: &str, errs: &mut Errors) -> Option<T>
where
    T::Err: std::fmt::Display,
{
    s.value.parse().map_err(|e| errs.push(path, pos(s), e)).ok()
}

pub(crate) fn listen(
    raw: Listen,
    default: Option<&str>,
    path: &str,
    errs: &mut Errors,
) -> Option<SocketAddr> {
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

pub(crate) fn duration(
    raw: Option<S>,
    default: Duration,
    path: &str,
    errs: &mut Errors,
) -> Duration {
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

/// `placed`: a sandbox runner chooses the gateway's addresses, so `proxy_ip` may be left out.
pub(crate) fn dns(raw: RawDns, placed: bool, errs: &mut Errors) -> DnsConfig {
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
    if enabled && raw.proxy_ip.is_none() && !placed {
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

pub(crate) fn proxy(raw: RawProxy, errs: &mut Errors) -> ProxyConfig {
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

pub(crate) fn tls(raw: crate::raw::RawTls, errs: &mut Errors) -> TlsConfig {
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

pub(crate) fn upstream(raw: crate::raw::RawUpstream, errs: &mut Errors) -> UpstreamConfig {
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

pub(crate) fn log_level(raw: Option<S>, errs: &mut Errors) -> String {
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

pub(crate) fn allowlist(i: usize, raw: RawAllowlist, errs: &mut Errors) -> Allowlist {
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
        if let Some(rule) = rule(format!("{base}.rules[{j}]"), r, errs) {
            rules.push(rule);
        }
    }
    let report = match &raw.mode {
        None => raw.warn,
        Some(m) if m.value == "report" => true,
        Some(m) if m.value == "enforce" => {
            if raw.warn {
                errs.push(
                    format!("{base}.warn"),
                    pos(m),
                    "`warn: true` contradicts `mode: enforce`",
                );
            }
            false
        }
        Some(m) => {
            errs.hint(
                format!("{base}.mode"),
                pos(m),
                format!("unknown mode `{}`", m.value),
                "use `enforce` (deny misses) or `report` (allow, audit `would_deny`)",
            );
            raw.warn
        }
    };
    Allowlist {
        rules,
        warn: report,
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

/// One `{host | cidr, methods, paths, ports}` rule.
pub(crate) fn rule(id: String, r: &RawRule, errs: &mut Errors) -> Option<Rule> {
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
    Some(Rule {
        id,
        target: target?,
        methods,
        paths,
        ports: r.ports.clone(),
    })
}
