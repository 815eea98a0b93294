//! Phase *transform request* for credentials: for every `secrets` entry whose rules match,
//! swap placeholders for the real value in the declared locations, or inject it. Returns the
//! scrubber that turns those values back into placeholders in the response.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::header::{self, HeaderValue};
use http::request::Parts;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use policy::{Inject, InjectTarget, Mode, Replace, Request};
use serde_json::json;

use crate::error::Failure;
use crate::scrub::Scrubber;
use crate::secrets::SecretValue;
use crate::state::Snapshot;

/// Bytes left unescaped in query and path values (RFC 3986 unreserved).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What the secrets did to one request.
#[derive(Debug, Default)]
pub struct Applied {
    /// Audit annotation: secret names and locations, never values.
    pub annotation: Option<serde_json::Value>,
    /// Response scrubbing for the values put on the wire.
    pub scrubber: Scrubber,
}

/// Applies every matching secret to the request head.
pub fn apply(snap: &Snapshot, req: &Request<'_>, parts: &mut Parts) -> Result<Applied, Failure> {
    let (mut swapped, mut injected, mut unavailable, mut pairs) = (vec![], vec![], vec![], vec![]);
    for (i, entry) in snap.policy.secrets.iter().enumerate() {
        if !entry.applies(req) {
            continue;
        }
        let require = match &entry.mode {
            Mode::Replace(r) => r.require,
            Mode::Inject(inj) => inj.require,
        };
        let value = match snap.secrets.get(i) {
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
                let locations = replace(r, &value, parts)?;
                if locations.is_empty() {
                    if r.require {
                        return Err(Failure::PlaceholderMissing {
                            name: entry.name.clone(),
                        });
                    }
                    continue;
                }
                swapped.push(json!({"secret": entry.name, "locations": locations}));
                pairs.push((value.expose().to_vec(), r.proxy_value.as_bytes().to_vec()));
            }
            Mode::Inject(inj) => {
                let location = inject(inj, &value, parts)?;
                injected.push(json!({"secret": entry.name, "locations": [location]}));
                pairs.push((
                    value.expose().to_vec(),
                    format!("[centaur:{}]", entry.name).into_bytes(),
                ));
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
    let mut ann = serde_json::Map::new();
    for (k, v) in [("swapped", swapped), ("injected", injected)] {
        if !v.is_empty() {
            ann.insert(k.into(), v.into());
        }
    }
    if !unavailable.is_empty() {
        ann.insert("secret_unavailable".into(), unavailable.into());
    }
    Ok(Applied {
        annotation: (!ann.is_empty()).then_some(ann.into()),
        scrubber: Scrubber::new(pairs),
    })
}

fn swap(hay: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    memchr::memmem::find(hay, from)?;
    let mut s = Scrubber::new(vec![(from.to_vec(), to.to_vec())]);
    s.scrub_all(hay)
}

fn header_value(bytes: &[u8]) -> Result<HeaderValue, Failure> {
    HeaderValue::from_bytes(bytes).map_err(|_| Failure::SecretTransform)
}

fn replace(r: &Replace, value: &SecretValue, parts: &mut Parts) -> Result<Vec<String>, Failure> {
    let (ph, real) = (r.proxy_value.as_bytes(), value.expose());
    let mut locations = Vec::new();
    for (name, v) in parts.headers.iter_mut() {
        if !r.headers.includes(name.as_str()) {
            continue;
        }
        if let Some(new) = swap(v.as_bytes(), ph, real) {
            *v = header_value(&new)?;
            locations.push(format!("header:{name}"));
        } else if name == header::AUTHORIZATION
            && let Some(new) = basic(v.as_bytes(), ph, real)
        {
            *v = header_value(&new)?;
            locations.push(format!("header:{name}"));
        }
    }
    let enc = |b: &[u8]| utf8_percent_encode(&String::from_utf8_lossy(b), UNRESERVED).to_string();
    let (mut path, mut query) = (
        parts.uri.path().to_string(),
        parts.uri.query().map(str::to_string),
    );
    if r.path
        && let Some(new) = swap(path.as_bytes(), ph, enc(real).as_bytes())
    {
        path = String::from_utf8_lossy(&new).into_owned();
        locations.push("path".into());
    }
    if r.query
        && let Some(q) = &query
        && let Some(new) = swap(q.as_bytes(), ph, enc(real).as_bytes())
    {
        query = Some(String::from_utf8_lossy(&new).into_owned());
        locations.push("query".into());
    }
    set_path_and_query(parts, &path, query.as_deref())?;
    Ok(locations)
}

/// `Authorization: Basic base64(user:pass)` with the placeholder inside the payload.
fn basic(v: &[u8], ph: &[u8], real: &[u8]) -> Option<Vec<u8>> {
    let payload = v
        .strip_prefix(b"Basic ")
        .or_else(|| v.strip_prefix(b"basic "))?;
    let decoded = B64.decode(payload).ok()?;
    let new = swap(&decoded, ph, real)?;
    Some(format!("Basic {}", B64.encode(new)).into_bytes())
}

fn inject(inj: &Inject, value: &SecretValue, parts: &mut Parts) -> Result<String, Failure> {
    let rendered = inj.formatter.render(value.expose());
    match &inj.target {
        InjectTarget::Header(name) => {
            let name = header::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| Failure::SecretTransform)?;
            parts.headers.insert(name.clone(), header_value(&rendered)?);
            Ok(format!("header:{name}"))
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
