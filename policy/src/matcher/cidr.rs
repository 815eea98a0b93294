//! CIDR ranges, written in CIDR notation (`10.0.0.0/8`, `fd00:ec2::254/128`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::matcher::host::unmap;

/// Why a CIDR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// A bare address was given where a range was expected.
    #[error("`{0}` is an address, not a range: write `{0}/{1}`")]
    BareAddress(String, u8),
    /// Not CIDR notation at all.
    #[error("not a CIDR range (expected e.g. `10.0.0.0/8` or `fd00::/8`)")]
    Invalid,
}

/// A CIDR range. Containment unmaps IPv4-mapped IPv6 addresses first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(IpNet);

impl Cidr {
    /// Whether `ip` lies in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&unmap(ip))
    }

    /// The underlying network.
    pub fn net(&self) -> IpNet {
        self.0
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(raw: &str) -> Result<Self, CidrError> {
        let raw = raw.trim();
        if let Ok(ip) = raw.parse::<IpAddr>() {
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            return Err(CidrError::BareAddress(raw.to_string(), bits));
        }
        // `trunc` so that `10.1.2.3/8` means `10.0.0.0/8`, as every firewall reads it.
        raw.parse::<IpNet>()
            .map(|n| Cidr(n.trunc()))
            .map_err(|_| CidrError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_contains() {
        let c: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(c.contains("127.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!c.contains("128.0.0.1".parse().unwrap()));
        assert!(matches!(
            "10.0.0.1".parse::<Cidr>(),
            Err(CidrError::BareAddress(_, 32))
        ));
        assert_eq!("nope".parse::<Cidr>(), Err(CidrError::Invalid));
    }

    proptest! {
        #[test]
        fn v4_containment_agrees_with_mask_arithmetic(a: u32, b: u32, len in 0u8..=32) {
            let net: Cidr = format!("{}/{len}", std::net::Ipv4Addr::from(a)).parse().unwrap();
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let expected = (a & mask) == (b & mask);
            prop_assert_eq!(net.contains(IpAddr::V4(b.into())), expected);
            let mapped = std::net::Ipv4Addr::from(b).to_ipv6_mapped();
            prop_assert_eq!(net.contains(IpAddr::V6(mapped)), expected);
        }
    }
}
