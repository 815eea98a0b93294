//! Why a request sent upstream failed, classified once from the HTTP client's error chain:
//! the guard's refusals, TLS failures in fixed words, and the client's own broken body.

use policy::Reason;

use crate::upstream::body::ClientBodyError;
use crate::upstream::guard::GuardError;

/// What went wrong with an upstream request. Carries no request or credential text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The guard refused every address (a denied range, or the gateway itself).
    #[error("upstream address is not allowed")]
    AddressDenied,
    /// The name did not resolve.
    #[error("upstream host could not be resolved")]
    Resolve,
    /// Every checked address refused the connection.
    #[error("upstream connection failed")]
    Connect,
    /// The connection did not open in time.
    #[error("upstream connection timed out")]
    ConnectTimeout,
    /// The upstream proxy (`proxy.upstream_proxy`) refused or broke the CONNECT tunnel.
    #[error("the upstream proxy did not open a tunnel")]
    Proxy,
    /// Upstream TLS failed (certificate or handshake); the fixed words say which check.
    #[error("upstream TLS failed: {0}")]
    Tls(&'static str),
    /// The client's request body broke off while it streamed upstream.
    #[error("the request body could not be read")]
    ClientBody,
    /// Any other protocol failure.
    #[error("upstream request failed")]
    Protocol,
}

impl Fault {
    /// The status a client is sent for this fault.
    pub fn status(self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Fault::AddressDenied => StatusCode::FORBIDDEN,
            Fault::ConnectTimeout => StatusCode::GATEWAY_TIMEOUT,
            Fault::ClientBody => StatusCode::BAD_REQUEST,
            Fault::Resolve | Fault::Connect | Fault::Proxy | Fault::Tls(_) | Fault::Protocol => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    /// Stable reason code (docs/reason-codes.md).
    pub fn reason(self) -> Reason {
        match self {
            Fault::AddressDenied => Reason::UpstreamAddressDenied,
            Fault::Resolve => Reason::UpstreamResolveFailed,
            Fault::Connect => Reason::UpstreamConnectFailed,
            Fault::ConnectTimeout => Reason::UpstreamConnectTimeout,
            Fault::Proxy => Reason::UpstreamProxyError,
            Fault::Tls(_) => Reason::UpstreamTlsError,
            Fault::ClientBody => Reason::BodyReadFailed,
            Fault::Protocol => Reason::UpstreamError,
        }
    }

    /// Classifies an upstream client error by walking its source chain.
    pub fn classify(err: &(dyn std::error::Error + 'static)) -> Fault {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(g) = e.downcast_ref::<GuardError>() {
                return match g {
                    GuardError::Denied(_) | GuardError::Loop(_) => Fault::AddressDenied,
                    GuardError::Resolve(_) => Fault::Resolve,
                    GuardError::Connect(..) => Fault::Connect,
                    GuardError::Timeout(_) => Fault::ConnectTimeout,
                    GuardError::Proxy(_) => Fault::Proxy,
                };
            }
            if e.is::<ClientBodyError>() {
                return Fault::ClientBody;
            }
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                return Fault::Tls(tls_detail(tls));
            }
            if let Some(tls) = e
                .downcast_ref::<std::io::Error>()
                .and_then(wrapped_tls_error)
            {
                return Fault::Tls(tls_detail(tls));
            }
            cur = e.source();
        }
        Fault::Protocol
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
