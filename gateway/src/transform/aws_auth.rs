//! `aws_auth`: the client signed with placeholder AWS keys (any SDK); the gateway reads the
//! region and service it signed for, applies the policy's gates, drops the client's signature
//! and signs the request as it leaves with the real keys.

use audit::Annotations;
use http::StatusCode;
use http::header::{self, HeaderName};
use http::request::Parts;
use policy::{AwsAuth as Entry, Reason};

use crate::credential::sigv4::{self, Canonical, Keys, PRESIGN_PARAMS, Scope};
use crate::credential::store::SecretValue;
use crate::exchange::failure::Failure;
use crate::transform::request::{set_header, set_path_and_query};
use crate::transform::step::{Cx, Transform, shown};

/// The policy's `aws_auth` transform at this index.
pub(super) struct AwsAuth(pub usize);

/// The client's signature headers, replaced by ours.
const STRIPPED: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

impl Transform for AwsAuth {
    async fn run(&self, cx: &mut Cx<'_>) -> Result<(), Failure> {
        let entry = &cx.snap.policy.aws[self.0];
        match sign(cx, entry).await {
            Ok((scope, injected)) => {
                let note = Annotations::AwsSigned {
                    injected,
                    region: scope.region,
                    service: scope.service,
                };
                cx.note("aws_auth", "allow", note);
                Ok(())
            }
            Err(f) => {
                let note = Annotations::Rejected {
                    rejected: f.reason().code(),
                };
                cx.note("aws_auth", "reject", note);
                Err(f)
            }
        }
    }
}

fn fail(status: StatusCode, reason: Reason) -> Failure {
    Failure::Credential {
        status,
        transform: "aws_auth",
        reason,
    }
}

/// Re-signs the request; returns the scope and the headers set.
async fn sign(cx: &mut Cx<'_>, entry: &Entry) -> Result<(Scope, Vec<String>), Failure> {
    let query = cx.parts.uri.query().unwrap_or("").to_string();
    let auth = cx.parts.headers.get(header::AUTHORIZATION);
    let scope = sigv4::inbound_scope(auth.map(|v| v.as_bytes()), &query)
        .map_err(|_| fail(StatusCode::BAD_REQUEST, Reason::MissingSigv4))?;
    let gate = |allowed: &[String], v: &str| allowed.is_empty() || allowed.iter().any(|a| a == v);
    if !gate(&entry.allowed_regions, &scope.region) {
        return Err(fail(StatusCode::FORBIDDEN, Reason::RegionNotAllowed));
    }
    if !gate(&entry.allowed_services, &scope.service) {
        return Err(fail(StatusCode::FORBIDDEN, Reason::ServiceNotAllowed));
    }
    let (id, secret, token) = credentials(cx, entry).await?;
    for name in STRIPPED {
        cx.parts.headers.remove(name);
    }
    if scope.presigned {
        let path = cx.parts.uri.path().to_string();
        let kept = without_presign(&query);
        set_path_and_query(cx.parts, &path, (!kept.is_empty()).then_some(kept.as_str()))?;
    }
    let payload = match entry.unsigned_payload {
        true => sigv4::UNSIGNED_PAYLOAD.to_string(),
        false => sigv4::payload_hash(cx.body.bytes().map_or(&[][..], |b| &b[..])),
    };
    let amz_date = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .map_err(|_| {
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                Reason::SecretTransformFailed,
            )
        })?;
    let mut injected = vec![
        set_header(cx.parts, "x-amz-date", amz_date.as_bytes())?,
        set_header(cx.parts, "x-amz-content-sha256", payload.as_bytes())?,
    ];
    if let Some(t) = &token {
        injected.push(set_header(cx.parts, "x-amz-security-token", t.expose())?);
    }
    let host = match cx.req.port {
        443 | 80 => cx.req.host.to_string(),
        p => format!("{}:{p}", cx.req.host),
    };
    let req = Canonical {
        method: cx.parts.method.as_str(),
        path: cx.parts.uri.path(),
        query: cx.parts.uri.query().unwrap_or(""),
        headers: signed_headers(cx.parts, &host),
        payload_hash: &payload,
    };
    let keys = Keys {
        id: &id,
        secret: secret.expose(),
    };
    let value = sigv4::authorization(&req, &keys, &scope.region, &scope.service, &amz_date);
    injected.insert(0, set_header(cx.parts, "authorization", value.as_bytes())?);
    // The key id and session token go on the wire; an echo of them is scrubbed.
    cx.scrub.push((id.into_bytes(), shown("aws_access_key_id")));
    if let Some(t) = token {
        cx.scrub
            .push((t.expose().to_vec(), shown("aws_session_token")));
    }
    Ok((scope, injected))
}

/// The real key id, secret key and session token, from their sources.
async fn credentials(
    cx: &Cx<'_>,
    entry: &Entry,
) -> Result<(String, SecretValue, Option<SecretValue>), Failure> {
    let secrets = &cx.snap.secrets;
    let unavailable = |e| {
        tracing::warn!(transform = %entry.id, error = %e, "aws_auth credential unavailable");
        fail(StatusCode::BAD_GATEWAY, Reason::CredentialUnavailable)
    };
    let id = secrets
        .get(entry.access_key_id)
        .await
        .map_err(unavailable)?;
    let secret = secrets
        .get(entry.secret_access_key)
        .await
        .map_err(unavailable)?;
    let token = match entry.session_token {
        Some(t) => Some(secrets.get(t).await.map_err(unavailable)?),
        None => None,
    };
    let id = std::str::from_utf8(id.expose())
        .map(|s| s.trim().to_string())
        .map_err(|_| fail(StatusCode::BAD_GATEWAY, Reason::CredentialUnavailable))?;
    Ok((id, secret, token))
}

/// The headers signed: `host` as the upstream will see it, and every `x-amz-*`,
/// `content-type` and `content-md5` header. Others (`user-agent`, hop-by-hop headers) may be
/// changed on the way and are left out, as AWS allows.
fn signed_headers(parts: &Parts, host: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![("host".to_string(), host.as_bytes().to_vec())];
    let signed = |n: &HeaderName| {
        let n = n.as_str();
        n.starts_with("x-amz-") || n == "content-type" || n == "content-md5"
    };
    for (name, value) in parts.headers.iter().filter(|(n, _)| signed(n)) {
        out.push((name.as_str().to_string(), value.as_bytes().to_vec()));
    }
    out
}

/// The query without a presigned URL's signature parameters.
fn without_presign(query: &str) -> String {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| {
            let name = p.split('=').next().unwrap_or("");
            !p.is_empty() && !PRESIGN_PARAMS.contains(&name)
        })
        .collect();
    kept.join("&")
}
