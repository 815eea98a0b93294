//! What the request path reads from and rewrites in a message's head: the request's host,
//! port and path, hop-by-hop headers, the upstream URI, the response's content coding.

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use hyper::body::Incoming;
use policy::{Host, Reason};

use crate::exchange::failure::Failure;

/// A 400 for the client's own mistake in its request head.
pub(super) const fn bad(reason: Reason, message: &'static str) -> Failure {
    Failure::Refused {
        status: StatusCode::BAD_REQUEST,
        reason,
        message,
    }
}

/// The method as the audit record shows it: the standard ones without an allocation.
pub(super) fn method_text(method: &Method) -> Cow<'static, str> {
    static STANDARD: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
        Method::CONNECT,
        Method::TRACE,
    ];
    match STANDARD.iter().find(|m| *m == method) {
        Some(m) => Cow::Borrowed(m.as_str()),
        None => Cow::Owned(method.as_str().to_owned()),
    }
}

/// The request's host: the absolute-form or h2 authority, else the single `Host` header;
/// when both are present they must agree.
pub(super) fn request_host(req: &Request<Incoming>) -> Result<(Host, Option<u16>), Failure> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(bad(Reason::HostInvalid, "more than one Host header"));
    }
    let header = header
        .map(|h| {
            h.to_str()
                .map_err(|_| bad(Reason::HostInvalid, "Host header is not valid"))
        })
        .transpose()?;
    let authority = req.uri().authority().map(|a| a.as_str());
    let raw = match (authority, header) {
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => {
            return Err(bad(
                Reason::HostMismatch,
                "request target and Host header disagree",
            ));
        }
        (Some(a), _) => a,
        (None, Some(h)) => h,
        (None, None) => return Err(bad(Reason::HostMissing, "request has no Host")),
    };
    split_host_port(raw).ok_or(bad(Reason::HostInvalid, "Host is not a valid host name"))
}

/// Splits `host[:port]`, `[v6][:port]`.
pub fn split_host_port(raw: &str) -> Option<(Host, Option<u16>)> {
    let (host, port) = match raw.rfind(':') {
        Some(i)
            if !raw[i..].contains(']')
                && (raw.starts_with('[') || raw[..i].find(':').is_none()) =>
        {
            (
                &raw[..i],
                Some(raw[i + 1..].parse::<u16>().ok().filter(|p| *p != 0)?),
            )
        }
        _ => (raw, None),
    };
    Some((Host::parse(host).ok()?, port))
}

/// The path the policy judges ([`policy::decode_path`]: decoded, dot segments refused).
pub(super) fn decoded_path(uri: &Uri) -> Result<String, Failure> {
    policy::decode_path(uri.path())
        .map_err(|_| bad(Reason::PathDotSegments, "path contains dot segments"))
}

pub(super) fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers and those named in `Connection`; keeps `TE: trailers` and, for
/// upgrades, `Connection: upgrade` with `Upgrade`.
pub(super) fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names finds most messages clean, where removing each hop-by-hop name
    // would hash and probe nine times (twice per request, 2% of its instructions).
    if !h
        .keys()
        .any(|k| k == header::UPGRADE || HOP_BY_HOP.contains(k))
    {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let trailers = h
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    let upgrade = h.remove(header::UPGRADE);
    for name in HOP_BY_HOP.iter().chain(named.iter()) {
        h.remove(name);
    }
    if let (true, Some(protocol)) = (keep_upgrade, upgrade) {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, protocol);
    }
    if trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The request's URI in absolute form for the upstream client: the scheme and authority
/// (its port only when not the scheme's default), the client's path and query.
pub(super) fn upstream_uri(uri: Uri, host: &Host, port: u16, https: bool) -> Result<Uri, Failure> {
    use std::fmt::Write as _;
    let (scheme, default) = if https {
        (http::uri::Scheme::HTTPS, 443)
    } else {
        (http::uri::Scheme::HTTP, 80)
    };
    let mut authority = host.to_string();
    if port != default {
        // Writing into a String cannot fail.
        let _ = write!(authority, ":{port}");
    }
    let mut parts = uri.into_parts();
    if parts
        .path_and_query
        .as_ref()
        .is_some_and(|pq| !pq.as_str().starts_with('/'))
    {
        // The asterisk form (`OPTIONS *`) has no path to judge or forward.
        return Err(Failure::SecretTransform);
    }
    parts.scheme = Some(scheme);
    parts.authority = Some(authority.try_into().map_err(|_| Failure::SecretTransform)?);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).map_err(|_| Failure::SecretTransform)
}

/// Whether a response body is content-coded (gzip, br, ...): the gateway asked for
/// `identity`, and the scrubber reads only the bytes as sent.
pub(super) fn encoded(h: &HeaderMap) -> bool {
    h.get_all(header::CONTENT_ENCODING).iter().any(|v| {
        v.to_str().map_or(true, |s| {
            s.split(',')
                .any(|c| !c.trim().eq_ignore_ascii_case("identity"))
        })
    })
}

/// Whether a request is a CONNECT.
pub fn is_connect(req: &Request<Incoming>) -> bool {
    req.method() == Method::CONNECT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_are_written_without_an_allocation_and_others_as_sent() {
        for m in [
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
        ] {
            let text = method_text(&Method::from_bytes(m.as_bytes()).unwrap());
            assert!(matches!(text, Cow::Borrowed(t) if t == m), "{m}");
        }
        let text = method_text(&Method::from_bytes(b"PROPFIND").unwrap());
        assert!(matches!(text, Cow::Owned(t) if t == "PROPFIND"));
    }

    #[test]
    fn splits_host_and_port() {
        let (h, p) = split_host_port("API.test:8443").unwrap();
        assert_eq!((h.to_string(), p), ("api.test".to_string(), Some(8443)));
        let (h, p) = split_host_port("[::1]:443").unwrap();
        assert_eq!((h.to_string(), p), ("[::1]".to_string(), Some(443)));
        assert_eq!(split_host_port("a.test").unwrap().1, None);
        assert!(split_host_port("a.test:0").is_none());
        assert!(split_host_port("a.test:x").is_none());
        assert!(split_host_port("::1").is_some());
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none() && h.get(header::PROXY_AUTHORIZATION).is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert!(h.get("x-keep").is_some());
    }

    #[test]
    fn each_hop_by_hop_header_is_removed_without_a_connection_header() {
        for name in HOP_BY_HOP.iter().chain([&header::UPGRADE]) {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("x"));
            h.insert("x-keep", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h, false);
            assert!(h.get(name).is_none(), "{name} was kept");
            assert_eq!(h.len(), 1, "only x-keep is left after {name}");
        }
        let mut clean = HeaderMap::new();
        clean.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut clean, false);
        assert_eq!(clean.len(), 1);
    }

    #[test]
    fn upstream_uri_takes_the_routes_authority_and_the_clients_path_and_query() {
        let host = |s| Host::parse(s).unwrap();
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        let up = |u, h, p, tls| upstream_uri(uri(u), &host(h), p, tls).unwrap().to_string();
        assert_eq!(
            up("/a?b=1", "api.test", 443, true),
            "https://api.test/a?b=1"
        );
        assert_eq!(up("/a", "api.test", 8443, true), "https://api.test:8443/a");
        assert_eq!(up("/", "api.test", 80, false), "http://api.test/");
        assert_eq!(up("/x", "api.test", 443, false), "http://api.test:443/x");
        // An absolute-form target's own authority gives way to the route's.
        assert_eq!(
            up("http://other.test:81/p?q", "api.test", 443, true),
            "https://api.test/p?q"
        );
        assert_eq!(up("/v6", "[::1]", 8080, true), "https://[::1]:8080/v6");
        assert!(upstream_uri(uri("*"), &host("api.test"), 443, true).is_err());
    }
}
