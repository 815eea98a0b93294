//! Every way an exchange can fail, and the one mapping from a failure to the client's
//! response *and* the audit reason. Messages never carry request or configuration text.

use audit::Action;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use policy::{Decision, Reason};

use crate::upstream::fault::Fault;

/// Why an exchange did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The policy denied the request.
    #[error("blocked by policy")]
    Policy {
        /// The decision.
        decision: Decision,
        /// The normalised host, echoed so the user sees what was judged.
        host: String,
    },
    /// Bad input: a refused request, handshake or protocol (400, 405, 408, 431, TLS alerts).
    #[error("{message}")]
    Refused {
        /// HTTP status when the refusal is an HTTP response (431, 408, 400, 405).
        status: StatusCode,
        /// Stable reason code.
        reason: Reason,
        /// Short, fixed message.
        message: &'static str,
    },
    /// A required secret could not be read.
    #[error("a required credential is unavailable")]
    SecretUnavailable {
        /// The secret's name (never its value).
        name: String,
    },
    /// `require: true` and the request carried no placeholder.
    #[error("the request lacks the required credential placeholder")]
    PlaceholderMissing {
        /// The secret's name.
        name: String,
    },
    /// A secret could not be put on the wire (it is not a valid header or URI value).
    #[error("a credential could not be applied to the request")]
    SecretTransform,
    /// The request body is over `proxy.max_request_body_bytes` and a transform must read it
    /// whole (never forwarded truncated).
    #[error("request body is too large for this policy's transforms")]
    BodyTooLarge,
    /// A credential transform could not do its work (`gcp_auth`, `oauth_token`,
    /// `hmac_sign`); the reason is sanitised and never carries a value.
    #[error("{transform} could not apply its credential")]
    Credential {
        /// The status sent.
        status: StatusCode,
        /// The transform's name.
        transform: &'static str,
        /// Stable reason code.
        reason: Reason,
    },
    /// The upstream request failed before a response: guard, resolution, connection, TLS
    /// (never downgraded) or protocol.
    #[error("{0}")]
    Upstream(Fault),
    /// No response head in time.
    #[error("upstream did not answer in time")]
    ResponseTimeout,
    /// Secrets were used and the upstream answered with a content-coded body (gzip, br) in
    /// spite of `Accept-Encoding: identity`: the scrubber cannot read it, so it is withheld.
    #[error("upstream answered with an encoded body that cannot be scrubbed")]
    UnscrubbableEncoding,
    /// An MCP server's policy denied the JSON-RPC body: answered with JSON-RPC errors and
    /// HTTP 200, as MCP clients expect.
    #[error("blocked by the MCP policy")]
    Mcp {
        /// Stable reason code (the first denied message's).
        reason: Reason,
        /// The JSON-RPC error body.
        body: String,
    },
    /// `strict` audit: the exchange's record could not be made durable, so its response is
    /// withheld.
    #[error("the audit record could not be written")]
    AuditUnavailable,
}

impl Failure {
    /// Status sent to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            Failure::Policy { .. }
            | Failure::SecretUnavailable { .. }
            | Failure::PlaceholderMissing { .. } => StatusCode::FORBIDDEN,
            Failure::Upstream(fault) => fault.status(),
            Failure::SecretTransform => StatusCode::BAD_GATEWAY,
            Failure::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Mcp { .. } => StatusCode::OK,
            Failure::Refused { status, .. } | Failure::Credential { status, .. } => *status,
            Failure::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            Failure::UnscrubbableEncoding => StatusCode::BAD_GATEWAY,
        }
    }

    /// Stable reason code (docs/reason-codes.md).
    pub fn reason(&self) -> Reason {
        match self {
            Failure::Policy { decision, .. } => decision.reason,
            Failure::Refused { reason, .. }
            | Failure::Credential { reason, .. }
            | Failure::Mcp { reason, .. } => *reason,
            Failure::BodyTooLarge => Reason::BodyTooLarge,
            Failure::SecretUnavailable { .. } => Reason::SecretUnavailable,
            Failure::PlaceholderMissing { .. } => Reason::SecretPlaceholderMissing,
            Failure::SecretTransform => Reason::SecretTransformFailed,
            Failure::Upstream(fault) => fault.reason(),
            Failure::ResponseTimeout => Reason::UpstreamResponseTimeout,
            Failure::UnscrubbableEncoding => Reason::UpstreamEncodingUnscrubbable,
            Failure::AuditUnavailable => Reason::AuditUnavailable,
        }
    }

    /// Audit action: refusals are `reject`, failures after an allow are `error`.
    pub fn action(&self) -> Action {
        match self {
            Failure::Policy { .. }
            | Failure::Refused { .. }
            | Failure::Upstream(Fault::AddressDenied)
            | Failure::SecretUnavailable { .. }
            | Failure::PlaceholderMissing { .. }
            | Failure::BodyTooLarge
            | Failure::Mcp { .. }
            | Failure::Credential { .. } => Action::Reject,
            _ => Action::Error,
        }
    }

    /// The HTTP response for this failure: a short JSON body.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let body = match self {
            Failure::Policy { host, .. } => serde_json::json!({
                "error": "blocked by policy", "reason": self.reason().code(), "host": host,
            })
            .to_string(),
            Failure::Mcp { body, .. } => body.clone(),
            _ => serde_json::json!({ "error": self.to_string(), "reason": self.reason().code() })
                .to_string(),
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        h.insert(
            "x-centaur-reason",
            http::HeaderValue::from_static(self.reason().code()),
        );
        resp
    }
}

impl From<Fault> for Failure {
    fn from(fault: Fault) -> Failure {
        match fault {
            Fault::ClientBody => Failure::Refused {
                status: StatusCode::BAD_REQUEST,
                reason: Reason::BodyReadFailed,
                message: "the request body could not be read",
            },
            fault => Failure::Upstream(fault),
        }
    }
}
