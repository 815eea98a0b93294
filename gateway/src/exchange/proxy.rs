//! The request path, as named phases sharing one [`Exchange`]:
//!
//! decide → transform request → connect upstream → transform response → record.
//!
//! (Connect and terminate happen in the listeners, before a request exists.)
//! See `docs/lifecycle.md`.

use std::convert::Infallible;
use std::sync::Arc;

use audit::Durable;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either};
use hyper::body::Incoming;
use policy::{Host, Reason, Request as PolicyRequest, Stub};

use crate::exchange::body::{AuditedBody, ProxyBody};
use crate::exchange::failure::Failure;
use crate::exchange::{ConnMeta, Exchange};
use crate::shared::{Shared, Snapshot};
use crate::transform;
use crate::transform::scrub::Scrubber;
use crate::upstream::body::CountedBody;
use crate::upstream::fault::Fault;
use crate::upstream::{UpstreamAddr, Wants};

/// Where a request goes, once decided.
struct Route {
    host: Host,
    port: u16,
    https: bool,
    /// The percent-decoded path the policy judged.
    path: String,
    /// The policy snapshot this request keeps from start to end.
    snap: Arc<Snapshot>,
    /// A token endpoint the gateway answers itself.
    stub: Option<Stub>,
}

/// Serves one request from a client connection.
pub async fn serve_request(
    shared: Arc<Shared>,
    conn: Arc<ConnMeta>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let mut ex = Exchange::begin(&shared, &conn).await;
    ex.track(&conn);
    {
        let r = ex.record();
        r.method = Some(req.method().as_str().to_owned());
        r.path = Some(req.uri().path().to_string());
    }
    if shared.audit_refusing() {
        return Ok(refuse(ex, Failure::AuditUnavailable).await);
    }
    if is_connect(&req) {
        let f = Failure::Refused {
            status: StatusCode::METHOD_NOT_ALLOWED,
            reason: Reason::MethodNotAllowed,
            message: "CONNECT is served on the tunnel listener",
        };
        return Ok(refuse(ex, f).await);
    }
    let route = match decide(&shared, &conn, &req, &mut ex) {
        Ok(route) => route,
        Err(f) => return Ok(refuse(ex, f).await),
    };
    if let Some(stub) = &route.stub {
        // Read the (small) token request first: an HTTP/2 client still sending would
        // otherwise see its stream reset after the answer.
        let body = http_body_util::Limited::new(req.into_body(), 64 * 1024);
        let _ = tokio::time::timeout(STUB_READ, body.collect()).await;
        return Ok(stub_token(ex, stub).await);
    }
    let upgrade = is_upgrade(req.headers());
    let wants = if upgrade {
        Wants::Upgrade
    } else if req.version() < Version::HTTP_2 {
        Wants::Http1
    } else {
        Wants::Http2
    };
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let limit = shared.config.proxy.max_request_body_bytes;
    let (out, scrubber) = match transform_request(req, &route, upgrade, &mut ex, limit).await {
        Ok(x) => x,
        Err(f) => return Ok(refuse(ex, f).await),
    };
    let resp = match connect_upstream(&shared, out, wants).await {
        Ok(resp) => resp,
        Err(f) => return Ok(refuse(ex, f).await),
    };
    if let Some(UpstreamAddr(addr)) = resp.extensions().get::<UpstreamAddr>() {
        ex.record().upstream = Some(addr.as_ref().into());
    }
    ex.set_status(resp.status().as_u16());
    if scrubber.is_active() && encoded(resp.headers()) {
        // A body the scrubber cannot read could carry a real value back (invariant 3).
        return Ok(refuse(ex, Failure::UnscrubbableEncoding).await);
    }
    if let Some(client_io) =
        client_upgrade.filter(|_| resp.status() == StatusCode::SWITCHING_PROTOCOLS)
    {
        return Ok(crate::exchange::websocket::upgrade(
            shared, ex, client_io, resp,
        ));
    }
    Ok(transform_response(resp, ex, scrubber).await)
}

/// Answers with the failure's response and records the exchange with the status sent.
pub async fn refuse(ex: Exchange, f: Failure) -> Response<ProxyBody> {
    let resp = f.response().map(Either::Right);
    let durable = ex.finish_failure(&f, Some(resp.status().as_u16()));
    released(resp, durable).await
}

/// A response of the gateway's own, released once its record is durable (`strict` audit);
/// if the record could not be written, the client gets 503 instead (fail closed).
async fn released(resp: Response<ProxyBody>, durable: Option<Durable>) -> Response<ProxyBody> {
    match durable {
        Some(d) => match d.await {
            true => resp,
            false => Failure::AuditUnavailable.response().map(Either::Right),
        },
        None => resp,
    }
}

const fn bad(reason: Reason, message: &'static str) -> Failure {
    Failure::Refused {
        status: StatusCode::BAD_REQUEST,
        reason,
        message,
    }
}

/// Phase *decide*: which host, port and path the request is for, and whether the policy allows
/// it. TLS requests must name their SNI; tunnelled requests their tunnel's host.
fn decide(
    shared: &Shared,
    conn: &ConnMeta,
    req: &Request<Incoming>,
    ex: &mut Exchange,
) -> Result<Route, Failure> {
    let (host, port) = request_host(req)?;
    let record = ex.record();
    record.host = match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    if let Some(tls) = &conn.tls
        && host.name() != Some(&tls.sni)
    {
        return Err(bad(
            Reason::SniHostMismatch,
            "Host does not match the TLS server name",
        ));
    }
    let port = match &conn.tunnel {
        Some(t) if t.host != host => {
            return Err(bad(
                Reason::TunnelHostMismatch,
                "Host does not match the tunnel target",
            ));
        }
        Some(t) => t.port,
        None => port.unwrap_or(if conn.tls.is_some() { 443 } else { 80 }),
    };
    let path = decoded_path(req.uri())?;
    let snap = shared.policy.load_full();
    let (decision, stub) = snap.policy.decide(&PolicyRequest {
        host: &host,
        port,
        http: Some((req.method().as_str(), &path)),
    });
    if !decision.allowed() {
        return Err(Failure::Policy {
            decision,
            host: host.to_string(),
        });
    }
    ex.allowed(&decision);
    Ok(Route {
        host,
        port,
        https: conn.tls.is_some(),
        path,
        snap,
        stub,
    })
}

/// Answers a client library's own token request with a stub token, so that it carries on
/// with a dummy credential; the real token is put on the requests it then makes.
async fn stub_token(mut ex: Exchange, stub: &Stub) -> Response<ProxyBody> {
    let (name, endpoint) = match stub {
        Stub::GoogleToken { .. } => ("gcp_auth", "oauth2_token_endpoint"),
        Stub::OAuth { .. } => ("oauth_token", "token_endpoint"),
    };
    ex.record().request_transforms.push(audit::Transform {
        name: name.into(),
        action: "allow".into(),
        rule: Some(stub.id().to_string()),
        annotations: Some(audit::Annotations::Stubbed {
            stubbed: endpoint.into(),
        }),
    });
    ex.set_status(200);
    let body = serde_json::json!({
        "access_token": STUB_TOKEN,
        "expires_in": 3600,
        "token_type": "Bearer",
    });
    let mut resp = Response::new(crate::exchange::body::full(body.to_string()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The metadata server's answers carry this; Google's libraries check it.
    h.insert("metadata-flavor", HeaderValue::from_static("Google"));
    let durable = ex.finish_ok();
    released(resp, durable).await
}

/// How long a stubbed token request's body may take to arrive.
const STUB_READ: std::time::Duration = std::time::Duration::from_secs(5);

/// The token the stubs hand out: meaningless anywhere but at this gateway.
pub const STUB_TOKEN: &str = "centaur-stub-token";

/// The request's host: the absolute-form or h2 authority, else the single `Host` header;
/// when both are present they must agree.
fn request_host(req: &Request<Incoming>) -> Result<(Host, Option<u16>), Failure> {
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
fn decoded_path(uri: &Uri) -> Result<String, Failure> {
    policy::decode_path(uri.path())
        .map_err(|_| bad(Reason::PathDotSegments, "path contains dot segments"))
}

fn is_upgrade(h: &HeaderMap) -> bool {
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
fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
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

/// Phase *transform request*: credentials applied (`transform.rs`), the upstream request in
/// origin form, hop-by-hop headers gone, the body streamed (and counted) as it arrives.
async fn transform_request(
    req: Request<Incoming>,
    route: &Route,
    upgrade: bool,
    ex: &mut Exchange,
    limit: u64,
) -> Result<(Request<CountedBody>, Scrubber), Failure> {
    let (mut parts, body) = req.into_parts();
    let mut body = Some(body);
    let method = parts.method.clone();
    let preq = PolicyRequest {
        host: &route.host,
        port: route.port,
        http: Some((method.as_str(), &route.path)),
    };
    let mut notes = Vec::new();
    let applied = transform::apply(
        &route.snap,
        transform::Input {
            req: &preq,
            parts: &mut parts,
            body: &mut body,
            limit,
            audit: &mut notes,
        },
    )
    .await;
    ex.record().request_transforms.extend(notes);
    let applied = applied?;
    parts.uri = upstream_uri(
        std::mem::take(&mut parts.uri),
        &route.host,
        route.port,
        route.https,
    )?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers, upgrade);
    parts.headers.remove(header::HOST);
    let count = ex.bytes_in.clone();
    let body = match (applied.body, body) {
        (Some(bytes), _) => CountedBody::bytes(bytes, count),
        (None, Some(stream)) => CountedBody::new(stream, count),
        (None, None) => CountedBody::bytes(bytes::Bytes::new(), count),
    };
    Ok((Request::from_parts(parts, body), applied.scrubber))
}

/// The request's URI in absolute form for the upstream client: the scheme and authority
/// (its port only when not the scheme's default), the client's path and query.
fn upstream_uri(uri: Uri, host: &Host, port: u16, https: bool) -> Result<Uri, Failure> {
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

/// Phase *connect upstream*: guard, TLS, pool, and the response head within its timeout.
async fn connect_upstream(
    shared: &Shared,
    req: Request<CountedBody>,
    wants: Wants,
) -> Result<Response<Incoming>, Failure> {
    let (client, _waiting) = shared.upstreams.pick(wants);
    let timeout = shared.config.proxy.timeouts.upstream_response_header;
    match tokio::time::timeout(timeout, client.request(req)).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "upstream request failed");
            Err(Failure::from(Fault::classify(&e)))
        }
        Err(_) => Err(Failure::ResponseTimeout),
    }
}

/// Phase *transform response*: hop-by-hop headers gone, real secret values scrubbed back to
/// placeholders (headers now, the body as it streams); the exchange is recorded when it ends.
async fn transform_response(
    resp: Response<Incoming>,
    ex: Exchange,
    mut scrubber: Scrubber,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    if scrubber.is_active() {
        for v in parts.headers.values_mut() {
            if let Some(clean) = scrubber.scrub_all(v.as_bytes())
                && let Ok(clean) = HeaderValue::from_bytes(&clean)
            {
                *v = clean;
            }
        }
        // The body may change length as it is scrubbed.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let scrub = scrubber.is_active().then_some(scrubber);
    let (body, durable) = AuditedBody::new(body, ex, scrub);
    // An empty body has ended already: its head is all the client receives.
    released(Response::from_parts(parts, Either::Left(body)), durable).await
}

/// Whether a response body is content-coded (gzip, br, ...): the gateway asked for
/// `identity`, and the scrubber reads only the bytes as sent.
fn encoded(h: &HeaderMap) -> bool {
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
