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
use crate::raw::{
    Listen, RawAllowlist, RawDns, RawInject, RawProxy, RawReplace, RawRule, RawSecret, RawSecrets,
    RawSource, S,
};
use crate::secrets::{
    Formatter, HeaderMatch, HeaderScope, Inject, InjectTarget, Mode, Replace, SecretEntry, Source,
};

pub(crate) fn yaml_error(e: &serde_saphyr::Error) -> ConfigErrors {
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
        .then(|| "this version supports the `allowlist` and `secrets` transforms; gcp_auth, oauth_token and hmac_sign are not implemented yet".to_string());
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

pub(crate) fn dns(raw: RawDns, errs: &mut Errors) -> DnsConfig {
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

/// One `{host | cidr, methods, paths, ports}` rule.
fn rule(id: String, r: &RawRule, errs: &mut Errors) -> Option<Rule> {
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

/// A `secrets` transform's entries.
pub(crate) fn secrets(i: usize, raw: RawSecrets, errs: &mut Errors) -> Vec<SecretEntry> {
    let base = format!("transforms[{i}].config.secrets");
    if raw.secrets.is_empty() {
        errs.push(
            base.clone(),
            (0, 0),
            "a `secrets` transform with no secrets does nothing",
        );
    }
    raw.secrets
        .into_iter()
        .enumerate()
        .filter_map(|(j, s)| secret(format!("{base}[{j}]"), s, errs))
        .collect()
}

fn secret(id: String, raw: RawSecret, errs: &mut Errors) -> Option<SecretEntry> {
    let source = source(&id, raw.source, errs);
    if raw.rules.is_empty() {
        errs.hint(
            format!("{id}.rules"),
            (0, 0),
            "a secret without rules never applies",
            "add `rules: [{host: api.example.com}]`",
        );
    }
    let rules: Vec<Rule> = raw
        .rules
        .iter()
        .enumerate()
        .filter_map(|(k, r)| rule(format!("{id}.rules[{k}]"), r, errs))
        .collect();
    let legacy = raw.proxy_value.is_some()
        || raw.match_headers.is_some()
        || raw.match_body.is_some()
        || raw.require.is_some();
    let mode = match (raw.replace, raw.inject, legacy) {
        (Some(r), None, false) => replace(&format!("{id}.replace"), r, errs),
        (None, Some(inj), false) => inject(&format!("{id}.inject"), inj, errs),
        (None, None, true) => {
            let r = RawReplace {
                proxy_value: raw.proxy_value,
                match_headers: raw.match_headers,
                match_body: raw.match_body.unwrap_or(false),
                require: raw.require.unwrap_or(false),
                ..RawReplace::default()
            };
            replace(&id, r, errs)
        }
        (None, None, false) => {
            errs.hint(&id, (0, 0), "a secret needs a mode", "add `replace: {proxy_value: PLACEHOLDER}` or `inject: {header: Authorization, formatter: 'Bearer {{ .Value }}'}`");
            None
        }
        _ => {
            errs.hint(&id, (0, 0), "a secret has more than one mode", "use exactly one of `replace`, `inject`, or the legacy entry-level `proxy_value` fields");
            None
        }
    };
    let (source, name) = source?;
    Some(SecretEntry {
        id,
        name,
        source,
        rules,
        mode: mode?,
    })
}

fn source(id: &str, raw: RawSource, errs: &mut Errors) -> Option<(Source, String)> {
    let path = format!("{id}.source");
    match raw {
        RawSource::Env { var, json_key } => {
            if var.is_empty() {
                errs.push(format!("{path}.var"), (0, 0), "is empty");
                return None;
            }
            Some((
                Source::Env {
                    var: var.clone(),
                    json_key,
                },
                var,
            ))
        }
        RawSource::File {
            path: file,
            ttl,
            failure_ttl,
            json_key,
        } => {
            if file.is_empty() {
                errs.push(format!("{path}.path"), (0, 0), "is empty");
                return None;
            }
            let ttl = ttl.map(|t| duration(Some(t), Duration::ZERO, &format!("{path}.ttl"), errs));
            let failure_ttl = duration(
                failure_ttl,
                Duration::from_secs(60),
                &format!("{path}.failure_ttl"),
                errs,
            );
            Some((
                Source::File {
                    path: file.clone(),
                    ttl,
                    failure_ttl,
                    json_key,
                },
                file,
            ))
        }
    }
}

fn replace(path: &str, r: RawReplace, errs: &mut Errors) -> Option<Mode> {
    let proxy_value = match r.proxy_value {
        Some(v) if !v.value.is_empty() => v.value,
        Some(v) => {
            errs.push(format!("{path}.proxy_value"), pos(&v), "is empty");
            return None;
        }
        None => {
            errs.hint(
                format!("{path}.proxy_value"),
                (0, 0),
                "is required",
                "the placeholder the sandbox sends, e.g. `proxy_value: OPENAI_API_KEY`",
            );
            return None;
        }
    };
    let list = r.match_headers.unwrap_or_default();
    let mut matches = Vec::new();
    for (k, h) in list.iter().enumerate() {
        let hpath = format!("{path}.match_headers[{k}]");
        if let Some(re) = h.value.strip_prefix('/').and_then(|v| v.strip_suffix('/')) {
            match regex::Regex::new(&format!("(?i){re}")) {
                Ok(re) => matches.push(HeaderMatch::Pattern(re)),
                Err(_) => errs.push(hpath, pos(h), "is not a valid regular expression"),
            }
        } else if http_token(&h.value) {
            matches.push(HeaderMatch::Name(h.value.clone()));
        } else {
            errs.hint(
                hpath,
                pos(h),
                format!("`{}` is not a header name", h.value),
                "write a name (`Authorization`) or a `/regex/`",
            );
        }
    }
    let headers = if list.is_empty() {
        HeaderScope::All
    } else {
        HeaderScope::Only(matches)
    };
    Some(Mode::Replace(Replace {
        proxy_value,
        headers,
        body: r.match_body,
        query: r.match_query,
        path: r.match_path,
        require: r.require,
    }))
}

fn inject(path: &str, r: RawInject, errs: &mut Errors) -> Option<Mode> {
    let target = match (r.header, r.query_param) {
        (Some(h), None) if http_token(&h) => InjectTarget::Header(h),
        (Some(h), None) => {
            errs.push(
                format!("{path}.header"),
                (0, 0),
                format!("`{h}` is not a header name"),
            );
            return None;
        }
        (None, Some(q)) if !q.is_empty() => InjectTarget::Query(q),
        _ => {
            errs.hint(
                path,
                (0, 0),
                "inject needs exactly one of `header` or `query_param`",
                "e.g. `header: Authorization`",
            );
            return None;
        }
    };
    let formatter = match r.formatter {
        Some(f) => f
            .value
            .parse::<Formatter>()
            .map_err(|e| errs.push(format!("{path}.formatter"), pos(&f), e))
            .ok()?,
        None => Formatter::value(),
    };
    Some(Mode::Inject(Inject {
        target,
        formatter,
        require: r.require,
    }))
}

fn http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
