//! The request path, as named phases sharing one [`Exchange`]:
//!
//! decide → transform request → connect upstream → transform response → record.
//!
//! (Connect and terminate happen in the listeners, before a request exists.)
//! See `docs/lifecycle.md`.

use std::convert::Infallible;
use std::sync::Arc;

use audit::Durable;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either};
use hyper::body::Incoming;
use policy::{Host, Reason, Request as PolicyRequest, Stub};

use crate::exchange::body::{AuditedBody, ProxyBody};
use crate::exchange::failure::Failure;
use crate::exchange::head::{
    bad, decoded_path, encoded, is_connect, is_upgrade, method_text, request_host,
    strip_hop_by_hop, upstream_uri,
};
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
        r.method = Some(method_text(req.method()));
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
        ex.record().upstream = Some(addr.clone());
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
        name,
        action: "allow",
        rule: Some(stub.id().into()),
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
