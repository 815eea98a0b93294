//! Editing the request as it leaves: headers, path and query set from credential values, and
//! the body read whole (within the limit) for the steps that need it.

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use policy::{BodyRead, Reason};

use crate::exchange::failure::Failure;

/// Bytes left unescaped in query and path values (RFC 3986 unreserved).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a value for a path or query.
pub(super) fn encode(value: &[u8]) -> String {
    utf8_percent_encode(&String::from_utf8_lossy(value), UNRESERVED).to_string()
}

/// A header value from bytes a credential produced.
pub(super) fn header_value(bytes: &[u8]) -> Result<HeaderValue, Failure> {
    HeaderValue::from_bytes(bytes).map_err(|_| Failure::SecretTransform)
}

/// Sets a header (the name in any case); returns its normalised name.
pub(super) fn set_header(parts: &mut Parts, name: &str, value: &[u8]) -> Result<String, Failure> {
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| Failure::SecretTransform)?;
    let shown = name.as_str().to_owned();
    parts.headers.insert(name, header_value(value)?);
    Ok(shown)
}

/// Replaces the path and query, keeping the rest of the URI.
pub(super) fn set_path_and_query(
    parts: &mut Parts,
    path: &str,
    query: Option<&str>,
) -> Result<(), Failure> {
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

/// The request body: untouched until a step needs it, then read whole, once.
pub(super) struct Body<'a> {
    incoming: &'a mut Option<Incoming>,
    how: Option<BodyRead>,
    limit: u64,
    read: Option<Bytes>,
}

impl<'a> Body<'a> {
    /// The body of a request whose plan reads it as `how` (`None`: never read).
    pub(super) fn new(
        incoming: &'a mut Option<Incoming>,
        how: Option<BodyRead>,
        limit: u64,
    ) -> Self {
        Body {
            incoming,
            how,
            limit,
            read: None,
        }
    }

    /// Reads the body if the plan needs it and it is not read yet; within `limit`, never
    /// forwarding a truncated body (413 instead).
    pub(super) async fn read(&mut self, parts: &Parts) -> Result<(), Failure> {
        let Some(how) = self.how.take() else {
            return Ok(());
        };
        let Some(incoming) = self.incoming.take() else {
            self.read = Some(Bytes::new());
            return Ok(());
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_none() && !incoming.is_end_stream() && !how.allow_chunked {
            return Err(Failure::Credential {
                status: StatusCode::BAD_REQUEST,
                transform: "hmac_sign",
                reason: Reason::ChunkedBodyNotAllowed,
            });
        }
        if declared.is_some_and(|n| n > self.limit) {
            return Err(Failure::BodyTooLarge);
        }
        let cap = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let bytes = match http_body_util::Limited::new(incoming, cap).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(Failure::BodyTooLarge);
            }
            Err(_) => {
                return Err(Failure::Refused {
                    status: StatusCode::BAD_REQUEST,
                    reason: Reason::BodyReadFailed,
                    message: "the request body could not be read",
                });
            }
        };
        self.read = Some(bytes);
        Ok(())
    }

    /// The body as read so far (`None` before [`Body::read`] or when the plan never reads it).
    pub(super) fn bytes(&self) -> Option<&Bytes> {
        self.read.as_ref()
    }

    /// The body, to change it in place.
    pub(super) fn bytes_mut(&mut self) -> Option<&mut Bytes> {
        self.read.as_mut()
    }

    /// The body to send instead of the client's stream, if it was read.
    pub(super) fn into_bytes(self) -> Option<Bytes> {
        self.read
    }
}
