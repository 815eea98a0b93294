//! Phase *transform request* for credentials: runs the policy's [`Plan`] for the request, one
//! step per credential transform (`secrets`, `gcp_auth`, `oauth_token`, `hmac_sign`, `aws_auth`, each in
//! its own file behind `step::Transform`), and returns the scrubber that turns every value put on
//! the wire back into a placeholder in the response.

mod aws_auth;
mod gcp_auth;
mod hmac_sign;
mod mcp;
mod oauth_token;
mod request;
pub mod scrub;
mod secrets;
mod step;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use hyper::body::Incoming;
use policy::{HeaderAllowlist, Plan, Request, Step};

use crate::exchange::failure::Failure;
use crate::shared::Snapshot;
use crate::transform::request::Body;
use crate::transform::scrub::Scrubber;
use crate::transform::step::{Cx, Transform};

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

/// Runs the plan's steps in order: every matching `secrets` entry, each `gcp_auth`, the first
/// matching `oauth_token` and each `hmac_sign` (last, so it signs the request as it goes out).
/// A body a step needs is read once, after the `secrets` head swaps and before the rest.
pub async fn apply(snap: &Snapshot, inp: Input<'_>) -> Result<Applied, Failure> {
    let Plan { steps, body } = snap.policy.plan(inp.req);
    let lists: Vec<&HeaderAllowlist> = snap
        .policy
        .header_allowlists
        .iter()
        .filter(|h| h.applies(inp.req))
        .collect();
    // What the client sent, to tell the headers the credential transforms set or changed.
    let sent = (!lists.is_empty() && !steps.is_empty()).then(|| inp.parts.headers.clone());
    let mut cx = Cx {
        snap,
        req: inp.req,
        parts: inp.parts,
        body: Body::new(inp.body, body, inp.limit),
        audit: inp.audit,
        scrub: Vec::new(),
    };
    for step in &steps {
        if !matches!(step, Step::Secrets(_)) {
            cx.body.read(cx.parts).await?;
        }
        match step {
            Step::Mcp(i) => mcp::Mcp(*i).run(&mut cx).await?,
            Step::Secrets(entries) => secrets::Secrets(entries).run(&mut cx).await?,
            Step::GcpAuth(i) => gcp_auth::GcpAuth(*i).run(&mut cx).await?,
            Step::OAuthToken(i) => oauth_token::OAuthToken(*i).run(&mut cx).await?,
            Step::HmacSign(i) => hmac_sign::HmacSign(*i).run(&mut cx).await?,
            Step::AwsAuth(i) => aws_auth::AwsAuth(*i).run(&mut cx).await?,
        }
    }
    if !lists.is_empty() {
        strip_headers(&lists, sent.as_ref(), cx.parts, cx.audit);
    }
    Ok(finish(cx))
}

/// `header_allowlist`: removes every header some applicable list does not allow, unless a
/// credential transform set or changed it (its values differ from what the client `sent`).
fn strip_headers(
    lists: &[&HeaderAllowlist],
    sent: Option<&HeaderMap>,
    parts: &mut Parts,
    audit: &mut Vec<audit::Transform>,
) {
    let mut stripped = Vec::new();
    let names: Vec<HeaderName> = parts.headers.keys().cloned().collect();
    for name in names {
        if lists.iter().all(|l| l.allows(name.as_str())) {
            continue;
        }
        let touched = sent.is_some_and(|sent| {
            !sent
                .get_all(&name)
                .iter()
                .eq(parts.headers.get_all(&name).iter())
        });
        if !touched {
            parts.headers.remove(&name);
            stripped.push(name.as_str().to_string());
        }
    }
    if !stripped.is_empty() {
        stripped.sort();
        audit.push(audit::Transform {
            name: "header_allowlist",
            action: "allow",
            rule: Some(
                lists
                    .iter()
                    .map(|l| l.id.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
                    .into(),
            ),
            annotations: Some(audit::Annotations::Stripped {
                stripped_headers: stripped,
            }),
        });
    }
}

fn finish(cx: Cx<'_>) -> Applied {
    if !cx.scrub.is_empty() {
        // Scrubbing reads the response as sent: ask for it uncompressed.
        cx.parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    let body = cx.body.into_bytes();
    if let Some(b) = &body {
        cx.parts.headers.remove(header::TRANSFER_ENCODING);
        cx.parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
    }
    Applied {
        body,
        scrubber: Scrubber::new(cx.scrub),
    }
}
