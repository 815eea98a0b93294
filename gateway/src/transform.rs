//! Phase *transform request* for credentials: `secrets` swap placeholders for real values in
//! the declared locations or inject them; `gcp_auth` and `oauth_token` inject minted tokens;
//! `hmac_sign` signs the request as it leaves. Returns the scrubber that turns every value
//! put on the wire back into a placeholder in the response.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use policy::{HmacSign, Inject, InjectTarget, Mode, Replace, Request};
use serde_json::json;

use crate::error::Failure;
use crate::scrub::{Scrubber, replace_all};
use crate::secrets::SecretValue;
use crate::state::Snapshot;
use crate::tokens::TokenId;

/// Bytes left unescaped in query and path values (RFC 3986 unreserved).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What the credential transforms did to one request.
#[derive(Debug, Default)]
pub struct Applied {
    /// The body, when a transform had to read it (and maybe changed it).
    pub body: Option<Bytes>,
    /// Response scrubbing for the values put on the wire.
    pub scrubber: Scrubber,
}

/// The request as the transforms see it.
pub struct Input<'a> {
    /// What the policy judged.
    pub req: &'a Request<'a>,
    /// The head, changed in place.
    pub parts: &'a mut Parts,
    /// The body, read only if a transform needs it.
    pub body: &'a mut Option<Incoming>,
    /// `proxy.max_request_body_bytes`.
    pub limit: u64,
    /// Audit annotations, one per transform that acted; kept on failure too.
    pub audit: &'a mut Vec<audit::Transform>,
}

fn note(audit: &mut Vec<audit::Transform>, name: &str, action: &str, ann: serde_json::Value) {
    audit.push(audit::Transform {
        name: name.into(),
        action: action.into(),
        rule: None,
        annotations: Some(ann),
    });
}

/// Applies, in order, every matching `secrets` entry, `gcp_auth`, the first matching
/// `oauth_token` entry and every matching `hmac_sign` (which therefore signs the request as
/// it goes out).
pub async fn apply(snap: &Snapshot, inp: Input<'_>) -> Result<Applied, Failure> {
    let Input {
        req,
        parts,
        body,
        limit,
        audit,
    } = inp;
    let policy = &snap.policy;
    let (mut swapped, mut injected, mut unavailable, mut pairs) = (vec![], vec![], vec![], vec![]);
    // Replacements finish once the body is read (if any needs it): (entry, places, value).
    let mut replaced: Vec<(usize, Vec<String>, SecretValue)> = vec![];
    for (i, entry) in policy.secrets.iter().enumerate() {
        if !entry.applies(req) {
            continue;
        }
        let require = match &entry.mode {
            Mode::Replace(r) => r.require,
            Mode::Inject(inj) => inj.require,
        };
        let value = match snap.secrets.get(entry.source).await {
            Ok(v) => v,
            Err(e) if require => {
                tracing::warn!(secret = %entry.name, error = %e, "required secret unavailable");
                return Err(Failure::SecretUnavailable {
                    name: entry.name.clone(),
                });
            }
            Err(_) => {
                unavailable.push(entry.name.clone());
                continue;
            }
        };
        match &entry.mode {
            Mode::Replace(r) => {
                let locations = replace(r, &value, parts, &mut pairs)?;
                replaced.push((i, locations, value));
            }
            Mode::Inject(inj) => {
                let location = inject(inj, &value, parts)?;
                injected.push(json!({"secret": entry.name, "locations": [location]}));
                pairs.push((value.expose().to_vec(), shown(&entry.name)));
            }
        }
    }
    let signing: Vec<&HmacSign> = policy.hmac.iter().filter(|h| h.applies(req)).collect();
    let in_body = |i: usize| matches!(&policy.secrets[i].mode, Mode::Replace(r) if r.body);
    let mut buffered = None;
    if replaced.iter().any(|(i, ..)| in_body(*i)) || !signing.is_empty() {
        let allow_chunked = signing.iter().all(|h| h.allow_chunked_body);
        buffered = Some(read_body(body, parts, limit, allow_chunked).await?);
    }
    // Body swaps once the body is read; then `require` over every declared place.
    for (i, mut locations, value) in replaced {
        let entry = &policy.secrets[i];
        let Mode::Replace(r) = &entry.mode else {
            continue;
        };
        if let Some(b) = buffered.as_mut().filter(|_| r.body)
            && let Some(new) = replace_all(b, r.proxy_value.as_bytes(), value.expose())
        {
            *b = Bytes::from(new);
            locations.push("body".into());
        }
        if locations.is_empty() {
            if r.require {
                return Err(Failure::PlaceholderMissing {
                    name: entry.name.clone(),
                });
            }
            continue;
        }
        pairs.push((value.expose().to_vec(), r.proxy_value.as_bytes().to_vec()));
        swapped.push(json!({"secret": entry.name, "locations": locations}));
    }
    let mut ann = serde_json::Map::new();
    for (k, v) in [("swapped", swapped), ("injected", injected)] {
        if !v.is_empty() {
            ann.insert(k.into(), v.into());
        }
    }
    if !unavailable.is_empty() {
        ann.insert("secret_unavailable".into(), unavailable.into());
    }
    if !ann.is_empty() {
        note(audit, "secrets", "allow", ann.into());
    }
    for (i, g) in policy.gcp_auth.iter().enumerate() {
        if !g.applies(req) {
            continue;
        }
        match snap.tokens.get(TokenId::Gcp(i)).await {
            Ok(m) => {
                set_header(
                    parts,
                    "authorization",
                    &[b"Bearer ", m.token.expose()].concat(),
                )?;
                pairs.push((m.token.expose().to_vec(), b"[centaur:gcp_auth]".to_vec()));
                note(
                    audit,
                    "gcp_auth",
                    "allow",
                    json!({"service_account": m.account, "injected": ["header:authorization"]}),
                );
            }
            Err(e) => {
                note(
                    audit,
                    "gcp_auth",
                    "reject",
                    json!({"error": e.code(), "rejected": "token_unavailable"}),
                );
                return Err(Failure::Credential {
                    status: StatusCode::FORBIDDEN,
                    transform: "gcp_auth",
                    reason: "token_unavailable",
                });
            }
        }
    }
    if let Some((i, o)) = policy
        .oauth
        .iter()
        .enumerate()
        .find(|(_, o)| o.applies(req))
    {
        match snap.tokens.get(TokenId::OAuth(i)).await {
            Ok(m) => {
                let value = [o.value_prefix.as_bytes(), m.token.expose()].concat();
                let name = set_header(parts, &o.header, &value)?;
                pairs.push((m.token.expose().to_vec(), b"[centaur:oauth_token]".to_vec()));
                note(
                    audit,
                    "oauth_token",
                    "allow",
                    json!({"grant": o.grant.as_str(), "injected": [format!("header:{name}")]}),
                );
            }
            Err(e) if o.require => {
                note(
                    audit,
                    "oauth_token",
                    "reject",
                    json!({"grant": o.grant.as_str(), "error": e.code(), "rejected": "token_unavailable"}),
                );
                return Err(Failure::Credential {
                    status: StatusCode::BAD_GATEWAY,
                    transform: "oauth_token",
                    reason: "token_unavailable",
                });
            }
            Err(e) => {
                note(
                    audit,
                    "oauth_token",
                    "allow",
                    json!({"grant": o.grant.as_str(), "error": e.code(), "skipped": "token_unavailable"}),
                );
            }
        }
    }
    for h in signing {
        let body = buffered.as_ref().map(|b| &b[..]).unwrap_or_default();
        match crate::sign::sign(snap, h, req, parts, body).await {
            Ok((names, creds)) => {
                pairs.extend(creds.into_iter().map(|(n, v)| (v, shown(&n))));
                note(audit, "hmac_sign", "allow", json!({"injected": names}));
            }
            Err(f) => {
                note(
                    audit,
                    "hmac_sign",
                    "reject",
                    json!({"rejected": f.reason()}),
                );
                return Err(f);
            }
        }
    }
    if !pairs.is_empty() {
        // Scrubbing reads the response as sent: ask for it uncompressed.
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    if let Some(b) = &buffered {
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
    }
    Ok(Applied {
        body: buffered,
        scrubber: Scrubber::new(pairs),
    })
}

/// What the client sees in place of a value injected by the transform or secret `name`.
fn shown(name: &str) -> Vec<u8> {
    ["[centaur:", name, "]"].concat().into_bytes()
}

/// Sets a header (the name in any case); returns its normalised name.
pub(crate) fn set_header(parts: &mut Parts, name: &str, value: &[u8]) -> Result<String, Failure> {
    let name =
        header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| Failure::SecretTransform)?;
    let shown = name.as_str().to_owned();
    parts.headers.insert(name, header_value(value)?);
    Ok(shown)
}

/// Reads the whole body, within `limit`; never forwards a truncated body (413 instead).
async fn read_body(
    body: &mut Option<Incoming>,
    parts: &Parts,
    limit: u64,
    allow_chunked: bool,
) -> Result<Bytes, Failure> {
    let Some(incoming) = body.take() else {
        return Ok(Bytes::new());
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_none() && !incoming.is_end_stream() && !allow_chunked {
        return Err(Failure::Credential {
            status: StatusCode::BAD_REQUEST,
            transform: "hmac_sign",
            reason: "chunked_body_not_allowed",
        });
    }
    if declared.is_some_and(|n| n > limit) {
        return Err(Failure::BodyTooLarge);
    }
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    match http_body_util::Limited::new(incoming, cap).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Failure::BodyTooLarge),
        Err(_) => Err(Failure::Refused {
            status: StatusCode::BAD_REQUEST,
            reason: "body_read_failed",
            message: "the request body could not be read",
        }),
    }
}

fn header_value(bytes: &[u8]) -> Result<HeaderValue, Failure> {
    HeaderValue::from_bytes(bytes).map_err(|_| Failure::SecretTransform)
}

/// Swaps in headers, path and query; `scrub` gets the encoded forms the response might echo.
fn replace(
    r: &Replace,
    value: &SecretValue,
    parts: &mut Parts,
    scrub: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<Vec<String>, Failure> {
    let (ph, real) = (r.proxy_value.as_bytes(), value.expose());
    let mut locations = Vec::new();
    for (name, v) in parts.headers.iter_mut() {
        if !r.headers.includes(name.as_str()) {
            continue;
        }
        if let Some(new) = replace_all(v.as_bytes(), ph, real) {
            *v = header_value(&new)?;
            locations.push(["header:", name.as_str()].concat());
        } else if name == header::AUTHORIZATION
            && let Some(new) = basic(v.as_bytes(), ph, real)
        {
            // An echo would carry the re-encoded credential: scrub it back to what was sent.
            scrub.push((new.clone(), v.as_bytes().to_vec()));
            *v = header_value(&new)?;
            locations.push(["header:", name.as_str()].concat());
        }
    }
    let enc = |b: &[u8]| utf8_percent_encode(&String::from_utf8_lossy(b), UNRESERVED).to_string();
    let (mut path, mut query) = (None, None);
    if r.path
        && let Some(new) = replace_all(parts.uri.path().as_bytes(), ph, enc(real).as_bytes())
    {
        path = Some(String::from_utf8_lossy(&new).into_owned());
        locations.push("path".into());
    }
    if r.query
        && let Some(q) = parts.uri.query()
        && let Some(new) = replace_all(q.as_bytes(), ph, enc(real).as_bytes())
    {
        query = Some(String::from_utf8_lossy(&new).into_owned());
        locations.push("query".into());
    }
    if path.is_some() || query.is_some() {
        let path = path.unwrap_or_else(|| parts.uri.path().to_string());
        let query = query.or_else(|| parts.uri.query().map(str::to_string));
        set_path_and_query(parts, &path, query.as_deref())?;
    }
    Ok(locations)
}

/// `Authorization: Basic base64(user:pass)` with the placeholder inside the payload.
fn basic(v: &[u8], ph: &[u8], real: &[u8]) -> Option<Vec<u8>> {
    let payload = v
        .strip_prefix(b"Basic ")
        .or_else(|| v.strip_prefix(b"basic "))?;
    let decoded = B64.decode(payload).ok()?;
    let new = replace_all(&decoded, ph, real)?;
    Some(format!("Basic {}", B64.encode(new)).into_bytes())
}

fn inject(inj: &Inject, value: &SecretValue, parts: &mut Parts) -> Result<String, Failure> {
    let rendered = inj.formatter.render(value.expose());
    match &inj.target {
        InjectTarget::Header(name) => {
            Ok(["header:", &set_header(parts, name, &rendered)?].concat())
        }
        InjectTarget::Query(param) => {
            let kept: Vec<&str> = parts
                .uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some(param.as_str()))
                .collect();
            let mut q = kept.join("&");
            if !q.is_empty() {
                q.push('&');
            }
            let enc = |s: &str| utf8_percent_encode(s, UNRESERVED).to_string();
            q.push_str(&format!(
                "{}={}",
                enc(param),
                enc(&String::from_utf8_lossy(&rendered))
            ));
            let path = parts.uri.path().to_string();
            set_path_and_query(parts, &path, Some(&q))?;
            Ok(format!("query:{param}"))
        }
    }
}

fn set_path_and_query(parts: &mut Parts, path: &str, query: Option<&str>) -> Result<(), Failure> {
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    if parts.uri.path_and_query().map(|p| p.as_str()) == Some(pq.as_str()) {
        return Ok(());
    }
    let mut up = std::mem::take(&mut parts.uri).into_parts();
    up.path_and_query = Some(pq.parse().map_err(|_| Failure::SecretTransform)?);
    parts.uri = http::Uri::from_parts(up).map_err(|_| Failure::SecretTransform)?;
    Ok(())
}
