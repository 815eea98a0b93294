//! Invariant 2: resolve the upstream name ourselves, check every address against the deny
//! ranges, and connect to exactly an address that was checked. No second resolution.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use policy::{Cidr, Host, HostName, unmap};
use tokio::net::TcpStream;

/// Why no upstream connection was made.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// A resolved or literal address lies in a denied range.
    #[error("upstream address {0} is in a denied range")]
    Denied(IpAddr),
    /// The address is one of the gateway's own listeners.
    #[error("upstream address {0} is the gateway itself")]
    Loop(SocketAddr),
    /// The name did not resolve.
    #[error("could not resolve upstream host: {0}")]
    Resolve(String),
    /// Every checked address refused or failed.
    #[error("could not connect to upstream {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    /// The connection did not open in time.
    #[error("connecting to upstream {0} timed out")]
    Timeout(SocketAddr),
    /// The upstream proxy did not open the tunnel (its status, or what went wrong).
    #[error("the upstream proxy did not open a tunnel: {0}")]
    Proxy(String),
}

/// The upstream address guard.
#[derive(Debug, Clone)]
pub struct Guard {
    deny: Vec<Cidr>,
    allow: Vec<Cidr>,
    own: Vec<SocketAddr>,
    pins: BTreeMap<HostName, (IpAddr, Option<u16>)>,
    internal: BTreeMap<HostName, SocketAddr>,
    connect_timeout: Duration,
}

impl Guard {
    /// A guard over the given ranges, the gateway's own listener addresses and name pins.
    pub fn new(
        deny: Vec<Cidr>,
        allow: Vec<Cidr>,
        own: Vec<SocketAddr>,
        pins: BTreeMap<HostName, (IpAddr, Option<u16>)>,
        connect_timeout: Duration,
    ) -> Self {
        Guard {
            deny,
            allow,
            own,
            pins,
            internal: BTreeMap::new(),
            connect_timeout,
        }
    }

    /// Adds the control plane's routes (`upstream.internal`): each name goes to exactly its
    /// address, which the deny ranges do not apply to (the gateway's own listeners still do).
    pub fn with_internal(mut self, routes: BTreeMap<HostName, SocketAddr>) -> Self {
        self.internal = routes;
        self
    }

    /// The control plane's route for this host, checked against the gateway's own listeners.
    fn internal(&self, host: &Host) -> Result<Option<SocketAddr>, GuardError> {
        let Host::Name(name) = host else {
            return Ok(None);
        };
        let Some(addr) = self.internal.get(name) else {
            return Ok(None);
        };
        if self.own.contains(addr) {
            return Err(GuardError::Loop(*addr));
        }
        Ok(Some(*addr))
    }

    /// Checks one address. IPv4-mapped, NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`)
    /// addresses are checked as the IPv4 address they carry, too.
    pub fn check(&self, addr: SocketAddr) -> Result<(), GuardError> {
        let ip = unmap(addr.ip());
        if self.own.iter().any(|o| {
            o.port() == addr.port()
                && (o.ip() == ip || (o.ip().is_unspecified() && ip.is_loopback()))
        }) {
            return Err(GuardError::Loop(addr));
        }
        for candidate in std::iter::once(ip).chain(embedded_v4(ip).map(IpAddr::V4)) {
            let denied = self.deny.iter().any(|c| c.contains(candidate));
            if denied && !self.allow.iter().any(|c| c.contains(candidate)) {
                return Err(GuardError::Denied(candidate));
            }
        }
        Ok(())
    }

    /// Resolves `host:port` (pins first) and checks every answer. One denied answer denies
    /// the name: a mix of public and private answers is how rebinding attacks look.
    pub async fn resolve(&self, host: &Host, port: u16) -> Result<Vec<SocketAddr>, GuardError> {
        if let Some(route) = self.internal(host)? {
            return Ok(vec![route]);
        }
        let addrs: Vec<SocketAddr> = match host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            Host::Name(name) => match self.pins.get(name) {
                Some((ip, pinned_port)) => vec![SocketAddr::new(*ip, pinned_port.unwrap_or(port))],
                None => tokio::net::lookup_host((name.as_str(), port))
                    .await
                    .map_err(|e| GuardError::Resolve(e.kind().to_string()))?
                    .collect(),
            },
        };
        if addrs.is_empty() {
            return Err(GuardError::Resolve("no addresses".into()));
        }
        for a in &addrs {
            self.check(*a)?;
        }
        Ok(addrs)
    }

    /// The address a target is fixed to without resolving it — an IP literal, or a name
    /// pinned in `upstream.hosts` — checked; `None` for a name only DNS can answer.
    pub fn fixed(&self, host: &Host, port: u16) -> Result<Option<SocketAddr>, GuardError> {
        if let Some(route) = self.internal(host)? {
            return Ok(Some(route));
        }
        let addr = match host {
            Host::Ip(ip) => SocketAddr::new(*ip, port),
            Host::Name(name) => match self.pins.get(name) {
                Some((ip, pinned)) => SocketAddr::new(*ip, pinned.unwrap_or(port)),
                None => return Ok(None),
            },
        };
        self.check(addr)?;
        Ok(Some(addr))
    }

    /// How long opening a connection may take.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Resolves, checks and connects to the first checked address that answers.
    pub async fn connect(
        &self,
        host: &Host,
        port: u16,
    ) -> Result<(TcpStream, SocketAddr), GuardError> {
        let addrs = self.resolve(host, port).await?;
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok((stream, addr));
                }
                Ok(Err(e)) => last = Some(GuardError::Connect(addr, e)),
                Err(_) => last = Some(GuardError::Timeout(addr)),
            }
        }
        Err(last.unwrap_or_else(|| GuardError::Resolve("no addresses".into())))
    }
}

fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);
    if s[..6] == nat64.segments()[..6] {
        return Some(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allow: &[&str]) -> Guard {
        Guard::new(
            policy::DEFAULT_DENY_CIDRS
                .iter()
                .map(|c| c.parse().unwrap())
                .collect(),
            allow.iter().map(|c| c.parse().unwrap()).collect(),
            vec!["127.0.0.1:8443".parse().unwrap()],
            BTreeMap::new(),
            Duration::from_secs(1),
        )
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Invariant 2: loopback, metadata, private and disguised forms of them are refused.
    #[test]
    fn denies_internal_addresses_in_every_spelling() {
        let g = guard(&[]);
        for a in [
            "127.0.0.1:443",
            "169.254.169.254:80",
            "10.1.2.3:443",
            "[::1]:443",
            "[::ffff:127.0.0.1]:443",
            "[64:ff9b::a00:1]:443",
            "[2002:7f00:1::]:443",
            "[fd00:ec2::254]:80",
            "[fe80::1]:80",
            "0.0.0.0:80",
        ] {
            assert!(g.check(sa(a)).is_err(), "{a} must be denied");
        }
        assert!(g.check(sa("93.184.216.34:443")).is_ok());
        assert!(g.check(sa("[2606:4700::1111]:443")).is_ok());
    }

    #[test]
    fn allow_cidrs_exempt_but_never_the_gateway_itself() {
        let g = guard(&["127.0.0.0/8"]);
        assert!(g.check(sa("127.0.0.1:9000")).is_ok());
        assert!(matches!(
            g.check(sa("127.0.0.1:8443")),
            Err(GuardError::Loop(_))
        ));
    }

    #[tokio::test]
    async fn a_pinned_name_is_still_checked() {
        let mut g = guard(&[]);
        g.pins.insert(
            "api.test".parse().unwrap(),
            ("127.0.0.5".parse().unwrap(), Some(9)),
        );
        let host = Host::parse("api.test").unwrap();
        assert!(matches!(
            g.resolve(&host, 443).await,
            Err(GuardError::Denied(_))
        ));
        g.allow.push("127.0.0.5/32".parse().unwrap());
        assert_eq!(
            g.resolve(&host, 443).await.unwrap(),
            vec![sa("127.0.0.5:9")]
        );
    }

    #[tokio::test]
    async fn an_internal_route_reaches_exactly_its_address_and_never_the_gateway() {
        let host = Host::parse("centaur.internal").unwrap();
        let g = guard(&[]).with_internal(BTreeMap::from([(
            "centaur.internal".parse().unwrap(),
            sa("127.0.0.1:8700"),
        )]));
        // Loopback is denied to every other name, and to this one at any other address.
        assert_eq!(
            g.resolve(&host, 80).await.unwrap(),
            vec![sa("127.0.0.1:8700")]
        );
        assert_eq!(g.fixed(&host, 443).unwrap(), Some(sa("127.0.0.1:8700")));
        assert!(g.check(sa("127.0.0.1:8701")).is_err());
        let other = Host::parse("other.internal").unwrap();
        assert_eq!(g.fixed(&other, 80).unwrap(), None);
        let looped = guard(&[]).with_internal(BTreeMap::from([(
            "centaur.internal".parse().unwrap(),
            sa("127.0.0.1:8443"),
        )]));
        assert!(matches!(
            looped.resolve(&host, 80).await,
            Err(GuardError::Loop(_))
        ));
    }
}
