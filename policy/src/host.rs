//! Host names and host patterns: lower-cased, trailing dot removed, IDNA to punycode.

use std::fmt;
use std::net::IpAddr;
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
    #[error("a bare `*` would match every host; list the hosts (or `*.domain`) instead")]
    BareWildcard,
    /// A `*` appears anywhere but as the whole first label.
    #[error("`*` is only allowed as the whole first label, as in `*.example.com`")]
    WildcardPlacement,
    /// The name is an IP address where a name was required.
    #[error("an IP address is not a host name; use a `cidr` rule for addresses")]
    IpLiteral,
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
        normalize_name(raw).map(HostName)
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
    pub fn parse(raw: &str) -> Result<Host, HostError> {
        let unbracketed = raw
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(raw);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Host::Ip(unmap(ip)));
        }
        normalize_name(raw).map(|n| Host::Name(HostName(n)))
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
            prop_assert!(!p.matches(&host(&suffixed)));
        }

        #[test]
        fn case_and_trailing_dot_never_change_the_verdict(name in "[a-z]{1,10}\\.[a-z]{2,5}") {
            let p: HostPattern = name.parse().unwrap();
            let upper = format!("{}.", name.to_uppercase());
            prop_assert!(p.matches(&host(&upper)));
        }
    }
}
