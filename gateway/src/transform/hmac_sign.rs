//! `hmac_sign`: the message rendered over the request as it leaves, the HMAC, and the headers
//! set from it. Credential values used in headers are returned for response scrubbing.

use audit::Annotations;
use http::StatusCode;
use http::request::Parts;
use policy::{Reason, Request, TimestampFormat};

use crate::credential::crypto;
use crate::exchange::failure::Failure;
use crate::shared::Snapshot;
use crate::transform::request::set_header;
use crate::transform::step::{Cx, Transform, shown};

/// The policy's `hmac_sign` transform at this index.
pub(super) struct HmacSign(pub usize);

impl Transform for HmacSign {
    async fn run(&self, cx: &mut Cx<'_>) -> Result<(), Failure> {
        let h = &cx.snap.policy.hmac[self.0];
        let body = cx.body.bytes().cloned().unwrap_or_default();
        match sign(cx.snap, h, cx.req, cx.parts, &body).await {
            Ok((names, creds)) => {
                cx.scrub
                    .extend(creds.into_iter().map(|(n, v)| (v, shown(&n))));
                cx.note(
                    "hmac_sign",
                    "allow",
                    Annotations::Signed { injected: names },
                );
                Ok(())
            }
            Err(f) => {
                let note = Annotations::Rejected {
                    rejected: f.reason().code(),
                };
                cx.note("hmac_sign", "reject", note);
                Err(f)
            }
        }
    }
}

/// Signs one request; returns the headers set and the credential values that went on the
/// wire (to scrub from the response).
async fn sign(
    snap: &Snapshot,
    h: &policy::HmacSign,
    req: &Request<'_>,
    parts: &mut Parts,
    body: &[u8],
) -> Result<(Vec<String>, Vec<(String, Vec<u8>)>), Failure> {
    let fail = |status, reason| Failure::Credential {
        status,
        transform: "hmac_sign",
        reason,
    };
    let mut creds = Vec::with_capacity(h.credentials.len());
    for (name, id) in &h.credentials {
        let v = snap.secrets.get(*id).await.map_err(|e| {
            tracing::warn!(transform = %h.id, credential = %name, error = %e, "hmac_sign credential unavailable");
            fail(StatusCode::BAD_GATEWAY, Reason::CredentialUnavailable)
        })?;
        creds.push((name.clone(), v.expose().to_vec()));
    }
    let secret = creds
        .iter()
        .find(|(n, _)| n == "secret")
        .map(|(_, v)| v.as_slice())
        .unwrap_or_default();
    let key = crypto::decode_key(secret, h.key_encoding)
        .map_err(|_| fail(StatusCode::INTERNAL_SERVER_ERROR, Reason::KeyDecodeFailed))?;
    let ts = timestamp(h.timestamp);
    let (path, query) = (parts.uri.path(), parts.uri.query().unwrap_or(""));
    let pwq = parts.uri.path_and_query().map_or(path, |p| p.as_str());
    let host = req.host.to_string();
    let method = parts.method.as_str();
    let message = h.message.render(&|v| {
        match v {
            "Timestamp" => ts.as_bytes(),
            "Method" => method.as_bytes(),
            "Path" => path.as_bytes(),
            "PathWithQuery" => pwq.as_bytes(),
            "Query" => query.as_bytes(),
            "Host" => host.as_bytes(),
            _ => body,
        }
        .to_vec()
    });
    let signature = crypto::encode(
        &crypto::hmac(h.algorithm, &key, &message),
        h.output_encoding,
    );
    let mut names = Vec::with_capacity(h.headers.len());
    let mut used = Vec::new();
    for (name, t) in &h.headers {
        let value = t.render(&|v| match v {
            "Timestamp" => ts.as_bytes().to_vec(),
            "Signature" => signature.as_bytes().to_vec(),
            other => {
                let cred = other.strip_prefix("Credentials.").unwrap_or(other);
                creds
                    .iter()
                    .find(|(n, _)| n == cred)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            }
        });
        names.push(format!("header:{}", set_header(parts, name, &value)?));
    }
    for (name, value) in creds {
        if name != "secret"
            && h.headers
                .iter()
                .any(|(_, t)| t.uses(&format!("Credentials.{name}")))
        {
            used.push((name, value));
        }
    }
    Ok((names, used))
}

fn timestamp(f: TimestampFormat) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    match f {
        TimestampFormat::UnixSeconds => now.as_secs().to_string(),
        TimestampFormat::UnixMillis => now.as_millis().to_string(),
        TimestampFormat::UnixNanos => now.as_nanos().to_string(),
        TimestampFormat::Rfc3339 => time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default(),
    }
}
