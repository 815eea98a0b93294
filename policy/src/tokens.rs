//! The credential transforms that compute what goes on the wire: `gcp_auth` and
//! `oauth_token` (mint an access token and inject it) and `hmac_sign` (sign each request).
//! Validated here; the gateway does the minting and signing.

use crate::allowlist::{Request, Rule};
use crate::host::HostName;
use crate::path::PathPattern;
use crate::secrets::SourceId;
use crate::template::Template;

/// One `gcp_auth` transform: a Google service-account key minted into access tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcpAuth {
    /// Path in the policy file.
    pub id: String,
    /// The service-account key (JSON) source.
    pub keyfile: SourceId,
    /// OAuth scopes baked into the token.
    pub scopes: Vec<String>,
    /// Domain-wide delegation: the user to impersonate (`sub`).
    pub subject: Option<String>,
    /// Requests it applies to; empty = every request.
    pub rules: Vec<Rule>,
}

impl GcpAuth {
    /// Whether a request gets the minted token.
    pub fn applies(&self, req: &Request<'_>) -> bool {
        req.http.is_some() && (self.rules.is_empty() || self.rules.iter().any(|r| r.matches(req)))
    }
}

/// An OAuth 2.0 grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// RFC 6749 §6.
    RefreshToken,
    /// RFC 6749 §4.4.
    ClientCredentials,
    /// RFC 6749 §4.3.
    Password,
    /// RFC 7523 §2.1.
    JwtBearer,
}

impl Grant {
    /// The name used in policies and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::RefreshToken => "refresh_token",
            Grant::ClientCredentials => "client_credentials",
            Grant::Password => "password",
            Grant::JwtBearer => "jwt_bearer",
        }
    }

    /// (required, optional) credential fields.
    pub fn fields(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Grant::RefreshToken => (&["refresh_token", "client_id"], &["client_secret"]),
            Grant::ClientCredentials => (&["client_id", "client_secret"], &[]),
            Grant::Password => (&["username", "password", "client_id"], &["client_secret"]),
            Grant::JwtBearer => (&["issuer", "subject", "private_key"], &["private_key_id"]),
        }
    }
}

/// One `oauth_token` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthToken {
    /// Path in the policy file.
    pub id: String,
    /// The grant used to mint.
    pub grant: Grant,
    /// The token endpoint URL.
    pub token_endpoint: String,
    /// Its host and path, for the stub that answers the sandbox's own token requests.
    pub endpoint: (HostName, String),
    /// Scopes requested.
    pub scopes: Vec<String>,
    /// `jwt_bearer`: the assertion's audience.
    pub audience: Option<String>,
    /// Credential fields (`client_id`, `refresh_token`, …) and their sources.
    pub fields: Vec<(String, SourceId)>,
    /// Extra headers on the token request, with their sources, casing as written.
    pub endpoint_headers: Vec<(String, SourceId)>,
    /// The header the token goes into (`Authorization`).
    pub header: String,
    /// Text before the token (`Bearer `).
    pub value_prefix: String,
    /// Fail closed (502) when no token can be minted; default is to forward without one.
    pub require: bool,
    /// Requests it applies to (at least one rule).
    pub rules: Vec<Rule>,
}

impl OAuthToken {
    /// Whether a request gets the token.
    pub fn applies(&self, req: &Request<'_>) -> bool {
        req.http.is_some() && self.rules.iter().any(|r| r.matches(req))
    }

    /// The source of credential field `name`.
    pub fn field(&self, name: &str) -> Option<SourceId> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, s)| *s)
    }
}

/// The metadata-server token path Google client libraries ask for.
pub fn gcp_metadata_token_path() -> PathPattern {
    "/computeMetadata/v1/instance/service-accounts/*/token"
        .parse()
        .unwrap_or_else(|_| unreachable!("a valid pattern"))
}

/// How `hmac_sign` writes the timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampFormat {
    /// Seconds since the epoch.
    UnixSeconds,
    /// Milliseconds since the epoch.
    UnixMillis,
    /// Nanoseconds since the epoch.
    UnixNanos,
    /// RFC 3339 in UTC.
    Rfc3339,
}

/// The HMAC hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
    /// HMAC-SHA-1 (legacy APIs only).
    Sha1,
}

impl HmacAlgorithm {
    /// The name used in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            HmacAlgorithm::Sha256 => "sha256",
            HmacAlgorithm::Sha512 => "sha512",
            HmacAlgorithm::Sha1 => "sha1",
        }
    }
}

/// How bytes are written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Used as is (keys only).
    Raw,
    /// Standard base64 with padding.
    Base64,
    /// Lower-case hex.
    Hex,
}

/// One `hmac_sign` transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacSign {
    /// Path in the policy file.
    pub id: String,
    /// Timestamp format.
    pub timestamp: TimestampFormat,
    /// Hash.
    pub algorithm: HmacAlgorithm,
    /// How the `secret` credential is decoded into the key.
    pub key_encoding: Encoding,
    /// How the signature is written.
    pub output_encoding: Encoding,
    /// The string to sign, over `.Timestamp .Method .Path .PathWithQuery .Query .Host .Body`.
    pub message: Template,
    /// Named credentials; always includes `secret`.
    pub credentials: Vec<(String, SourceId)>,
    /// Headers set, in order, over `.Timestamp .Signature .Credentials.<name>`.
    pub headers: Vec<(String, Template)>,
    /// Sign bodies without a declared length (read whole, within the body limit).
    pub allow_chunked_body: bool,
    /// Requests it applies to (at least one rule).
    pub rules: Vec<Rule>,
}

impl HmacSign {
    /// Whether a request is signed.
    pub fn applies(&self, req: &Request<'_>) -> bool {
        req.http.is_some() && self.rules.iter().any(|r| r.matches(req))
    }
}

/// Variables of the `hmac_sign` message template.
pub const HMAC_MESSAGE_VARS: [&str; 7] = [
    "Timestamp",
    "Method",
    "Path",
    "PathWithQuery",
    "Query",
    "Host",
    "Body",
];
