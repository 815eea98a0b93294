//! Host names and host patterns: lower-cased, trailing dot removed, IDNA to punycode.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// Why a host name or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The name is empty.
    #[error("host name is empty")]
    Empty,
    /// The name contains a port, a path or other characters that are not part of a name.
    #[error("host name contains a character that is not allowed: {0:?}")]
    BadChar(char),
    /// A label is empty (`a..b`) or longer than 63 bytes.
    #[error("host name has an empty or over-long label")]
    BadLabel,
    /// The whole name is longer than 253 bytes.
    #[error("host name is longer than 253 bytes")]
    TooLong,
    /// IDNA conversion failed.
    #[error("host name is not a valid internationalised name")]
    Idna,
    /// A pattern is a bare `*`.
    #[error(
        "a bare `*` would match every host; list the hosts (or `*.domain`) instead (only an allowlist's `domains` may be `*`)"
    )]
    BareWildcard,
    /// A `*` appears anywhere but as the whole first label.
    #[error("`*` is only allowed as the whole first label, as in `*.example.com`")]
    WildcardPlacement,
    /// The name is an IP address where a name was required.
    #[error("an IP address is not a host name; use a `cidr` rule for addresses")]
    IpLiteral,
    /// The last label is a number (as in `0x7f.1` or `2130706433`), which makes the whole
    /// name an IPv4 address, but it is not a valid one.
    #[error("host name ends in a number but is not a valid IPv4 address")]
    BadIpv4,
}

/// A normalised DNS host name: lower case, ASCII (punycode), no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostName(String);

impl HostName {
    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for HostName {
    type Err = HostError;

    fn from_str(raw: &str) -> Result<Self, HostError> {
        if raw.parse::<IpAddr>().is_ok() {
            return Err(HostError::IpLiteral);
        }
        let name = normalize_name(raw)?;
        if ends_in_number(&name) {
            return Err(HostError::IpLiteral);
        }
        Ok(HostName(name))
    }
}

/// The host a request names: a DNS name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A normalised DNS name.
    Name(HostName),
    /// An IP literal (IPv4-mapped IPv6 addresses are unmapped).
    Ip(IpAddr),
}

impl Host {
    /// Parses a host as found in `Host`, SNI, CONNECT or SOCKS: a name, an IPv4 literal or a
    /// bracketed or bare IPv6 literal. No port.
    ///
    /// A name whose last label is a number is an IPv4 address in any spelling that browsers,
    /// curl and `inet_aton` accept (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`,
    /// `127.0.0.1.`, full-width digits), so it is judged as the address it will reach, never
    /// as a name (the WHATWG URL host parser's rule).
    pub fn parse(raw: &str) -> Result<Host, HostError> {
        let unbracketed = raw
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(raw);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Host::Ip(unmap(ip)));
        }
        let name = normalize_name(raw)?;
        if ends_in_number(&name) {
            return lenient_ipv4(&name)
                .map(|ip| Host::Ip(IpAddr::V4(ip)))
                .ok_or(HostError::BadIpv4);
        }
        Ok(Host::Name(HostName(name)))
    }

    /// The DNS name, when the host is one.
    pub fn name(&self) -> Option<&HostName> {
        match self {
            Host::Name(n) => Some(n),
            Host::Ip(_) => None,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n.as_str()),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Turns an IPv4-mapped IPv6 address into the IPv4 address it carries.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Whether a normalised name's last label is decimal digits or `0x` hex: such a name is an
/// IPv4 address (WHATWG URL, "ends in a number").
fn ends_in_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The WHATWG URL IPv4 parser: one to four dot-separated numbers, each decimal, octal (a
/// leading `0`) or hex (`0x`); all but the last at most 255, the last filling the rest.
fn lenient_ipv4(name: &str) -> Option<Ipv4Addr> {
    let parts = name
        .split('.')
        .map(ipv4_number)
        .collect::<Option<Vec<u64>>>()?;
    let (last, init) = parts.split_last()?;
    if parts.len() > 4 || init.iter().any(|n| *n > 255) {
        return None;
    }
    let rest_bits = 8 * (5 - parts.len() as u32);
    if *last >= 1u64 << rest_bits {
        return None;
    }
    let high = init
        .iter()
        .enumerate()
        .fold(0u64, |acc, (i, n)| acc | n << (24 - 8 * i as u32));
    u32::try_from(high | last).ok().map(Ipv4Addr::from)
}

fn ipv4_number(part: &str) -> Option<u64> {
    let (digits, radix) = match part.strip_prefix("0x") {
        Some(hex) => (hex, 16),
        None if part.len() > 1 && part.starts_with('0') => (&part[1..], 8),
        None => (part, 10),
    };
    if part.is_empty() || !digits.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match digits.is_empty() {
        true => Some(0),
        false => u64::from_str_radix(digits, radix).ok(),
    }
}

fn normalize_name(raw: &str) -> Result<String, HostError> {
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    if trimmed.is_empty() {
        return Err(HostError::Empty);
    }
    let ascii = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(trimmed).map_err(|_| HostError::Idna)?
    };
    check_ldh(&ascii)?;
    Ok(ascii)
}

fn check_ldh(name: &str) -> Result<(), HostError> {
    if name.len() > 253 {
        return Err(HostError::TooLong);
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(HostError::BadLabel);
        }
        // Underscores appear in real service names (`_dmarc`, some SaaS hosts); allow them.
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(HostError::BadChar(c));
        }
    }
    Ok(())
}

/// A host pattern from a policy: `api.example.com`, or `*.example.com` which matches the apex
/// and every subdomain at any depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    suffix: String,
    wildcard: bool,
}

impl HostPattern {
    /// Whether `host` matches this pattern. IP literals never match a name pattern.
    pub fn matches(&self, host: &Host) -> bool {
        let Host::Name(name) = host else {
            return false;
        };
        let name = name.as_str();
        if name == self.suffix {
            return true;
        }
        self.wildcard
            && name.len() > self.suffix.len()
            && name.ends_with(&self.suffix)
            && name.as_bytes()[name.len() - self.suffix.len() - 1] == b'.'
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.suffix)
        } else {
            f.write_str(&self.suffix)
        }
    }
}

impl FromStr for HostPattern {
    type Err = HostError;

    fn from_str(raw: &str) -> Result<Self, HostError> {
        let raw = raw.trim();
        if raw == "*" {
            return Err(HostError::BareWildcard);
        }
        let (wildcard, rest) = match raw.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        if rest.contains('*') {
            return Err(HostError::WildcardPlacement);
        }
        let name: HostName = rest.parse()?;
        Ok(HostPattern {
            suffix: name.0,
            wildcard,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn host(s: &str) -> Host {
        Host::parse(s).unwrap()
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(host("API.OpenAI.com."), host("api.openai.com"));
        assert_eq!(host("bücher.example").to_string(), "xn--bcher-kva.example");
        assert_eq!(
            host("[::ffff:127.0.0.1]"),
            Host::Ip("127.0.0.1".parse().unwrap())
        );
        assert!(Host::parse("a..b").is_err());
        assert!(Host::parse("host:443").is_err());
        assert!(Host::parse("a b").is_err());
        assert!(Host::parse("").is_err());
        assert!(Host::parse(".").is_err());
    }

    /// Invariant 1 (SSRF): every spelling of an IPv4 address that a resolver or URL parser
    /// would connect to is judged as that address, never as a name.
    #[test]
    fn numeric_names_are_ipv4_addresses_in_every_spelling() {
        let loopback = Host::Ip("127.0.0.1".parse().unwrap());
        for spelling in [
            "2130706433",
            "0177.0.0.1",
            "0x7f.1",
            "0x7F.0.0.1",
            "127.1",
            "127.0.1",
            "127.0.0.1.",
            "0x7f000001",
            "017700000001",
            "\u{ff11}\u{ff12}\u{ff17}.0.0.1",
        ] {
            assert_eq!(host(spelling), loopback, "{spelling}");
        }
        assert_eq!(host("0x"), Host::Ip("0.0.0.0".parse().unwrap()));
        for bad in [
            "256.0.0.1",
            "1.2.3.4.5",
            "4294967296",
            "09.0.0.1",
            "0x1g.0x1",
        ] {
            assert_eq!(Host::parse(bad), Err(HostError::BadIpv4), "{bad}");
        }
        assert_eq!(Host::parse("a.0x"), Err(HostError::BadIpv4));
        assert!(host("1.2.3.example").name().is_some());
        assert!(host("0x7f.example").name().is_some());
        assert_eq!("127.0.0.1.".parse::<HostName>(), Err(HostError::IpLiteral));
        assert_eq!("0x7f.1".parse::<HostPattern>(), Err(HostError::IpLiteral));
    }

    #[test]
    fn wildcard_matches_apex_and_subdomains_only() {
        let p: HostPattern = "*.Example.com".parse().unwrap();
        assert!(p.matches(&host("example.com")));
        assert!(p.matches(&host("a.b.example.com")));
        assert!(p.matches(&host("API.EXAMPLE.COM.")));
        assert!(!p.matches(&host("badexample.com")));
        assert!(!p.matches(&host("example.com.evil.net")));
        assert!(!p.matches(&host("127.0.0.1")));
        let exact: HostPattern = "example.com".parse().unwrap();
        assert!(!exact.matches(&host("a.example.com")));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert_eq!("*".parse::<HostPattern>(), Err(HostError::BareWildcard));
        assert_eq!(
            "api.*.com".parse::<HostPattern>(),
            Err(HostError::WildcardPlacement)
        );
        assert_eq!(
            "*api.com".parse::<HostPattern>(),
            Err(HostError::WildcardPlacement)
        );
        assert_eq!("10.0.0.1".parse::<HostPattern>(), Err(HostError::IpLiteral));
    }

    proptest! {
        #[test]
        fn wildcard_never_matches_a_name_outside_its_domain(
            labels in proptest::collection::vec("[a-z0-9]{1,8}", 1..4),
            other in "[a-z0-9]{1,12}",
        ) {
            let p: HostPattern = "*.example.com".parse().unwrap();
            let inside = format!("{}.example.com", labels.join("."));
            prop_assert!(p.matches(&host(&inside)));
            let outside = format!("{other}example.com");
            prop_assert!(!p.matches(&host(&outside)) || other.is_empty());
            let suffixed = format!("example.com.{other}");
            prop_assert!(Host::parse(&suffixed).map_or(true, |h| !p.matches(&h)));
        }

        /// Host matching against a reference model: the name's labels, compared from the
        /// right with the pattern's; a wildcard also takes the apex.
        #[test]
        fn matching_agrees_with_a_label_by_label_model(
            pattern in proptest::collection::vec("[a-c]{1,2}", 1..4),
            wildcard: bool,
            name in proptest::collection::vec("[a-cA-C]{1,2}", 1..5),
        ) {
            let text = format!("{}{}", if wildcard { "*." } else { "" }, pattern.join("."));
            let p: HostPattern = text.parse().unwrap();
            let lower: Vec<String> = name.iter().map(|l| l.to_ascii_lowercase()).collect();
            let model = match wildcard {
                true => lower.len() >= pattern.len() && lower[lower.len() - pattern.len()..] == pattern[..],
                false => lower == pattern,
            };
            prop_assert_eq!(p.matches(&host(&name.join("."))), model);
        }

        #[test]
        fn case_and_trailing_dot_never_change_the_verdict(name in "[a-z]{1,10}\\.[a-z]{2,5}") {
            let p: HostPattern = name.parse().unwrap();
            let upper = format!("{}.", name.to_uppercase());
            prop_assert!(p.matches(&host(&upper)));
        }
    }
}
