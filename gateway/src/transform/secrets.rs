//! `secrets`: each matching entry either swaps its placeholder for the real value in the
//! places it declares (headers, path, query, body) or injects the value (a header or query
//! parameter). A `require: true` entry refuses the request when its source fails or its
//! placeholder is nowhere it may be.

use audit::{Annotations, Placed};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::header;
use http::request::Parts;
use policy::{Inject, InjectTarget, Mode, Replace};

use crate::credential::store::SecretValue;
use crate::exchange::failure::Failure;
use crate::transform::request::{encode, header_value, set_header, set_path_and_query};
use crate::transform::scrub::replace_all;
use crate::transform::step::{Cx, Transform, shown};

/// The matching entries of the policy's `secrets`, by index.
pub(super) struct Secrets<'p>(pub &'p [usize]);

/// What the step did, for its audit entry.
#[derive(Default)]
struct Done {
    swapped: Vec<Placed>,
    injected: Vec<Placed>,
    unavailable: Vec<String>,
}

impl Transform for Secrets<'_> {
    async fn run(&self, cx: &mut Cx<'_>) -> Result<(), Failure> {
        let policy = &cx.snap.policy;
        let mut done = Done::default();
        // Replacements finish once the body is read: (entry, places so far, value).
        let mut replaced: Vec<(usize, Vec<String>, SecretValue)> = vec![];
        for &i in self.0 {
            let entry = &policy.secrets[i];
            let require = match &entry.mode {
                Mode::Replace(r) => r.require,
                Mode::Inject(inj) => inj.require,
            };
            let value = match cx.snap.secrets.get(entry.source).await {
                Ok(v) => v,
                Err(e) if require => {
                    tracing::warn!(secret = %entry.name, error = %e, "required secret unavailable");
                    return Err(Failure::SecretUnavailable {
                        name: entry.name.clone(),
                    });
                }
                Err(_) => {
                    done.unavailable.push(entry.name.clone());
                    continue;
                }
            };
            match &entry.mode {
                Mode::Replace(r) => {
                    let places = replace(r, &value, cx.parts, &mut cx.scrub)?;
                    replaced.push((i, places, value));
                }
                Mode::Inject(inj) => {
                    let location = inject(inj, &value, cx.parts)?;
                    done.injected.push(placed(&entry.name, vec![location]));
                    cx.scrub.push((value.expose().to_vec(), shown(&entry.name)));
                }
            }
        }
        cx.body.read(cx.parts).await?;
        // Body swaps once the body is read; then `require` over every declared place.
        for (i, mut places, value) in replaced {
            let entry = &policy.secrets[i];
            let Mode::Replace(r) = &entry.mode else {
                continue;
            };
            if let Some(b) = cx.body.bytes_mut().filter(|_| r.body)
                && let Some(new) = replace_all(b, r.proxy_value.as_bytes(), value.expose())
            {
                *b = Bytes::from(new);
                places.push("body".into());
            }
            if places.is_empty() {
                if r.require {
                    return Err(Failure::PlaceholderMissing {
                        name: entry.name.clone(),
                    });
                }
                continue;
            }
            cx.scrub
                .push((value.expose().to_vec(), r.proxy_value.as_bytes().to_vec()));
            done.swapped.push(placed(&entry.name, places));
        }
        if !(done.swapped.is_empty() && done.injected.is_empty() && done.unavailable.is_empty()) {
            let note = Annotations::Secrets {
                injected: done.injected,
                rejected: None,
                secret_unavailable: done.unavailable,
                swapped: done.swapped,
            };
            cx.note("secrets", "allow", note);
        }
        Ok(())
    }
}

fn placed(secret: &str, locations: Vec<String>) -> Placed {
    Placed {
        locations,
        secret: secret.to_owned(),
    }
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
    let (mut path, mut query) = (None, None);
    if r.path
        && let Some(new) = replace_all(parts.uri.path().as_bytes(), ph, encode(real).as_bytes())
    {
        path = Some(String::from_utf8_lossy(&new).into_owned());
        locations.push("path".into());
    }
    if r.query
        && let Some(q) = parts.uri.query()
        && let Some(new) = replace_all(q.as_bytes(), ph, encode(real).as_bytes())
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

/// Sets the value as its header or query parameter (replacing any the client sent).
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
            q.push_str(&format!(
                "{}={}",
                encode(param.as_bytes()),
                encode(&rendered)
            ));
            let path = parts.uri.path().to_string();
            set_path_and_query(parts, &path, Some(&q))?;
            Ok(format!("query:{param}"))
        }
    }
}
