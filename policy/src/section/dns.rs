//! `dns`: the gateway's DNS server (every name answers with the gateway's address, except
//! static records and passthrough names).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::matcher::host::{HostName, HostPattern};
use crate::value::{Listen, S, listen, nullable, parse, pos};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub listen: Listen,
    pub proxy_ip: Option<S>,
    pub proxy_ip6: Option<S>,
    pub upstream_resolver: Option<S>,
    #[serde(default)]
    pub passthrough: Vec<S>,
    #[serde(default)]
    pub records: Vec<RawRecord>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecord {
    pub name: S,
    #[serde(rename = "type")]
    pub kind: S,
    pub value: S,
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
