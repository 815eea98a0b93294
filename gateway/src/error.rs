//! Every way an exchange can fail, and the one mapping from a failure to the client's
//! response *and* the audit reason. Messages never carry request or configuration text.

use audit::Action;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use policy::Decision;

use crate::body::{ClientBodyError, ProxyBody, full};
use crate::guard::GuardError;

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
        reason: &'static str,
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
        reason: &'static str,
    },
    /// The guard refused every address of the upstream.
    #[error("upstream address is not allowed")]
    AddressDenied,
    /// Resolution failed.
    #[error("upstream host could not be resolved")]
    Resolve,
    /// Connecting failed.
    #[error("upstream connection failed")]
    Connect,
    /// Connecting timed out.
    #[error("upstream connection timed out")]
    ConnectTimeout,
    /// Upstream TLS failed (certificate or handshake); never downgraded. Carries which check
    /// failed, in fixed words.
    #[error("upstream TLS failed: {0}")]
    UpstreamTls(&'static str),
    /// No response head in time.
    #[error("upstream did not answer in time")]
    ResponseTimeout,
    /// Secrets were used and the upstream answered with a content-coded body (gzip, br) in
    /// spite of `Accept-Encoding: identity`: the scrubber cannot read it, so it is withheld.
    #[error("upstream answered with an encoded body that cannot be scrubbed")]
    UnscrubbableEncoding,
    /// Any other upstream protocol failure.
    #[error("upstream request failed")]
    Upstream,
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
            | Failure::AddressDenied
            | Failure::SecretUnavailable { .. }
            | Failure::PlaceholderMissing { .. } => StatusCode::FORBIDDEN,
            Failure::SecretTransform => StatusCode::BAD_GATEWAY,
            Failure::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Refused { status, .. } | Failure::Credential { status, .. } => *status,
            Failure::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::ConnectTimeout | Failure::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            Failure::Resolve
            | Failure::Connect
            | Failure::UpstreamTls(_)
            | Failure::UnscrubbableEncoding
            | Failure::Upstream => StatusCode::BAD_GATEWAY,
        }
    }

    /// Stable reason code (docs/reason-codes.md).
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Policy { decision, .. } => decision.reason.code(),
            Failure::Refused { reason, .. } | Failure::Credential { reason, .. } => reason,
            Failure::BodyTooLarge => "body_too_large",
            Failure::AddressDenied => "upstream_address_denied",
            Failure::SecretUnavailable { .. } => "secret_unavailable",
            Failure::PlaceholderMissing { .. } => "secret_placeholder_missing",
            Failure::SecretTransform => "secret_transform_failed",
            Failure::Resolve => "upstream_resolve_failed",
            Failure::Connect => "upstream_connect_failed",
            Failure::ConnectTimeout => "upstream_connect_timeout",
            Failure::UpstreamTls(_) => "upstream_tls_error",
            Failure::ResponseTimeout => "upstream_response_timeout",
            Failure::UnscrubbableEncoding => "upstream_encoding_unscrubbable",
            Failure::Upstream => "upstream_error",
            Failure::AuditUnavailable => "audit_unavailable",
        }
    }

    /// Audit action: refusals are `reject`, failures after an allow are `error`.
    pub fn action(&self) -> Action {
        match self {
            Failure::Policy { .. }
            | Failure::Refused { .. }
            | Failure::AddressDenied
            | Failure::SecretUnavailable { .. }
            | Failure::PlaceholderMissing { .. }
            | Failure::BodyTooLarge
            | Failure::Credential { .. } => Action::Reject,
            _ => Action::Error,
        }
    }

    /// The HTTP response for this failure: a short JSON body.
    pub fn response(&self) -> Response<ProxyBody> {
        let body = match self {
            Failure::Policy { host, .. } => serde_json::json!({
                "error": "blocked by policy", "reason": self.reason(), "host": host,
            })
            .to_string(),
            _ => serde_json::json!({ "error": self.to_string(), "reason": self.reason() })
                .to_string(),
        };
        let mut resp = Response::new(full(Bytes::from(body)));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        h.insert(
            "x-centaur-reason",
            http::HeaderValue::from_static(self.reason()),
        );
        resp
    }

    /// Classifies an upstream client error by walking its source chain.
    pub fn from_upstream(err: &(dyn std::error::Error + 'static)) -> Failure {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(g) = e.downcast_ref::<GuardError>() {
                return match g {
                    GuardError::Denied(_) | GuardError::Loop(_) => Failure::AddressDenied,
                    GuardError::Resolve(_) => Failure::Resolve,
                    GuardError::Connect(..) => Failure::Connect,
                    GuardError::Timeout(_) => Failure::ConnectTimeout,
                };
            }
            if e.is::<ClientBodyError>() {
                return Failure::Refused {
                    status: StatusCode::BAD_REQUEST,
                    reason: "body_read_failed",
                    message: "the request body could not be read",
                };
            }
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                return Failure::UpstreamTls(tls_detail(tls));
            }
            if let Some(tls) = e
                .downcast_ref::<std::io::Error>()
                .and_then(wrapped_tls_error)
            {
                return Failure::UpstreamTls(tls_detail(tls));
            }
            cur = e.source();
        }
        Failure::Upstream
    }
}

/// io::Error hides its payload from `source()`; TLS errors arrive wrapped one or more times.
fn wrapped_tls_error(io: &std::io::Error) -> Option<&rustls::Error> {
    let mut inner = io.get_ref();
    while let Some(e) = inner {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref);
    }
    None
}

/// Which upstream TLS check failed, in words fit for a client and an audit record.
fn tls_detail(e: &rustls::Error) -> &'static str {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error};
    match e {
        Error::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
            "the certificate has expired"
        }
        Error::InvalidCertificate(Cert::NotValidYet | Cert::NotValidYetContext { .. }) => {
            "the certificate is not valid yet"
        }
        Error::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            "the certificate does not name this host (subjectAltName)"
        }
        Error::InvalidCertificate(Cert::UnknownIssuer) => "the certificate's issuer is not trusted",
        Error::InvalidCertificate(_) => "the certificate is not valid",
        Error::PeerIncompatible(_)
        | Error::AlertReceived(
            Alert::ProtocolVersion | Alert::HandshakeFailure | Alert::InsufficientSecurity,
        ) => "no TLS version and cipher suite in common (TLS 1.2 or 1.3 with forward secrecy)",
        _ => "the handshake failed",
    }
}
