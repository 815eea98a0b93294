//! Minting: resolve a cell's credentials, build the grant (RFC 7523 JWT assertions for
//! `gcp_auth` and `jwt_bearer`, RFC 6749 forms for the others), POST it, read the answer.
//! Errors are codes only.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use policy::{GcpAuth, Grant, OAuthToken, SourceId};
use serde_json::json;

use crate::credential::crypto::{self, KeyError};
use crate::credential::store::{SecretStore, SecretValue};
use crate::upstream::Upstreams;

/// Why no token could be had. Codes and statuses only, never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// A credential source failed.
    #[error("credential `{0}` is unavailable")]
    Credential(String),
    /// The key is not usable.
    #[error("key is invalid: {0}")]
    Key(KeyError),
    /// The service-account key file is not one.
    #[error("service-account key lacks `{0}`")]
    KeyFile(&'static str),
    /// The token endpoint could not be reached.
    #[error("token endpoint unreachable: {0}")]
    Unreachable(String),
    /// The endpoint answered with an OAuth error code.
    #[error("token endpoint refused: {0}")]
    OAuth(String),
    /// The endpoint answered with another status.
    #[error("token endpoint answered HTTP {0}")]
    Http(u16),
    /// A success answer without an access token.
    #[error("token endpoint answer has no access_token")]
    Response,
}

impl MintError {
    /// A short code for audit records: the OAuth error code, `token_endpoint_http_<n>`, …
    pub fn code(&self) -> String {
        match self {
            MintError::Credential(_) => "credential_unavailable".into(),
            MintError::Key(_) | MintError::KeyFile(_) => "key_invalid".into(),
            MintError::Unreachable(_) => "token_endpoint_unreachable".into(),
            MintError::OAuth(code) => code.clone(),
            MintError::Http(n) => format!("token_endpoint_http_{n}"),
            MintError::Response => "token_response_invalid".into(),
        }
    }
}

/// A minted token and what the audit record may say about it.
#[derive(Debug, Clone)]
pub struct Minted {
    /// The access token.
    pub token: SecretValue,
    /// The service account it was minted for (`gcp_auth`).
    pub account: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum Spec {
    Gcp(Arc<GcpAuth>),
    OAuth(Arc<OAuthToken>),
}

/// How long a token request may take.
pub(crate) const MINT_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime assumed when the endpoint gives none, and of our JWT assertions.
pub(crate) const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// The resolved credentials of one cell, in a fixed order.
pub(crate) struct Creds {
    fields: Vec<(String, SecretValue)>,
    headers: Vec<(String, SecretValue)>,
}

impl Creds {
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        crypto::fingerprint(
            self.fields
                .iter()
                .chain(&self.headers)
                .flat_map(|(n, v)| [n.as_bytes(), v.expose()]),
        )
    }

    fn get(&self, name: &str) -> Option<&SecretValue> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|v| String::from_utf8_lossy(v.expose()).into_owned())
    }
}

pub(crate) async fn resolve(spec: &Spec, secrets: &SecretStore) -> Result<Creds, MintError> {
    let one = |name: String, id: SourceId| async move {
        secrets
            .get(id)
            .await
            .map(|v| (name.clone(), v))
            .map_err(|_| MintError::Credential(name))
    };
    let (fields, headers) = match spec {
        Spec::Gcp(g) => (vec![("keyfile".to_string(), g.keyfile)], vec![]),
        Spec::OAuth(o) => (o.fields.clone(), o.endpoint_headers.clone()),
    };
    let mut creds = Creds {
        fields: Vec::with_capacity(fields.len()),
        headers: Vec::with_capacity(headers.len()),
    };
    for (n, id) in fields {
        creds.fields.push(one(n, id).await?);
    }
    for (n, id) in headers {
        creds.headers.push(one(n, id).await?);
    }
    Ok(creds)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `application/x-www-form-urlencoded` value escaping.
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn form(pairs: &[(&str, &str)]) -> Bytes {
    let s: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, FORM),
                utf8_percent_encode(v, FORM)
            )
        })
        .collect();
    Bytes::from(s.join("&"))
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

pub(crate) type MintResult = Result<(Minted, Duration, Option<SecretValue>), MintError>;

pub(crate) async fn mint(
    spec: &Spec,
    creds: &Creds,
    rotated: Option<SecretValue>,
    http: &Upstreams,
) -> MintResult {
    match spec {
        Spec::Gcp(g) => mint_gcp(g, creds, http).await,
        Spec::OAuth(o) => mint_oauth(o, creds, rotated, http).await,
    }
}

async fn mint_gcp(g: &GcpAuth, creds: &Creds, http: &Upstreams) -> MintResult {
    let key = creds.get("keyfile").ok_or(MintError::KeyFile("keyfile"))?;
    let key: serde_json::Value =
        serde_json::from_slice(key.expose()).map_err(|_| MintError::KeyFile("JSON"))?;
    let field = |name: &'static str| {
        key.get(name)
            .and_then(|v| v.as_str())
            .ok_or(MintError::KeyFile(name))
    };
    let email = field("client_email")?;
    let pem = field("private_key")?;
    let token_uri = field("token_uri").unwrap_or("https://oauth2.googleapis.com/token");
    let iat = now_secs();
    let mut claims = json!({
        "iss": email,
        "aud": token_uri,
        "iat": iat,
        "exp": iat + DEFAULT_LIFETIME.as_secs(),
    });
    // An access token carries scopes; an ID token names its audience instead.
    match &g.id_token {
        None => claims["scope"] = g.scopes.join(" ").into(),
        Some(t) => claims["target_audience"] = t.audience.as_str().into(),
    }
    if let Some(sub) = &g.subject {
        claims["sub"] = sub.as_str().into();
    }
    let kid = field("private_key_id").ok();
    let assertion = crypto::jwt_rs256(pem.as_bytes(), kid, &claims).map_err(MintError::Key)?;
    let body = form(&[("grant_type", JWT_BEARER), ("assertion", &assertion)]);
    let (token, lifetime, _) = exchange(http, token_uri, vec![], body).await?;
    Ok((
        Minted {
            token,
            account: Some(email.to_string()),
        },
        lifetime,
        None,
    ))
}

async fn mint_oauth(
    o: &OAuthToken,
    creds: &Creds,
    rotated: Option<SecretValue>,
    http: &Upstreams,
) -> MintResult {
    let text = |n: &str| creds.text(n).unwrap_or_default();
    let scope = o.scopes.join(" ");
    let mut pairs: Vec<(&str, String)> = Vec::new();
    match o.grant {
        Grant::RefreshToken => {
            let refresh = rotated
                .map(|r| String::from_utf8_lossy(r.expose()).into_owned())
                .unwrap_or_else(|| text("refresh_token"));
            pairs.push(("grant_type", "refresh_token".into()));
            pairs.push(("refresh_token", refresh));
        }
        Grant::ClientCredentials => pairs.push(("grant_type", "client_credentials".into())),
        Grant::Password => {
            pairs.push(("grant_type", "password".into()));
            pairs.push(("username", text("username")));
            pairs.push(("password", text("password")));
        }
        Grant::JwtBearer => {
            let iat = now_secs();
            let mut claims = json!({
                "iss": text("issuer"),
                "sub": text("subject"),
                "aud": o.audience.clone().unwrap_or_default(),
                "iat": iat,
                "exp": iat + DEFAULT_LIFETIME.as_secs(),
            });
            if !scope.is_empty() {
                claims["scope"] = scope.clone().into();
            }
            let kid = creds.text("private_key_id");
            let key = creds
                .get("private_key")
                .map(SecretValue::expose)
                .unwrap_or_default();
            let assertion =
                crypto::jwt_rs256(key, kid.as_deref(), &claims).map_err(MintError::Key)?;
            pairs.push(("grant_type", JWT_BEARER.into()));
            pairs.push(("assertion", assertion));
        }
    }
    if o.grant != Grant::JwtBearer {
        for f in ["client_id", "client_secret"] {
            if creds.get(f).is_some() {
                pairs.push((f, text(f)));
            }
        }
        if !scope.is_empty() {
            pairs.push(("scope", scope));
        }
    }
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let headers = creds
        .headers
        .iter()
        .filter_map(|(n, v)| {
            Some((
                HeaderName::from_bytes(n.as_bytes()).ok()?,
                HeaderValue::from_bytes(v.expose()).ok()?,
            ))
        })
        .collect();
    let (token, lifetime, refresh) =
        exchange(http, &o.token_endpoint, headers, form(&pairs)).await?;
    Ok((
        Minted {
            token,
            account: None,
        },
        lifetime,
        refresh,
    ))
}

/// POSTs a token request and reads `access_token`, `expires_in` and a rotated
/// `refresh_token` from the answer.
async fn exchange(
    http: &Upstreams,
    url: &str,
    mut headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
) -> Result<(SecretValue, Duration, Option<SecretValue>), MintError> {
    headers.push((
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    ));
    headers.push((
        http::header::ACCEPT,
        HeaderValue::from_static("application/json"),
    ));
    let (status, body) = http
        .call(Method::POST, url, headers, body, MINT_TIMEOUT)
        .await
        .map_err(|e| MintError::Unreachable(e.to_string()))?;
    let doc: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    if !status.is_success() {
        let code = doc
            .as_ref()
            .and_then(|d| d.get("error"))
            .and_then(|e| e.as_str())
            .map(sanitise);
        return Err(match code {
            Some(c) => MintError::OAuth(c),
            None => MintError::Http(status.as_u16()),
        });
    }
    let doc = doc.ok_or(MintError::Response)?;
    // Google's endpoint answers a `target_audience` assertion with `id_token` alone.
    let token = ["access_token", "id_token"]
        .iter()
        .find_map(|k| {
            doc.get(k)
                .and_then(|t| t.as_str())
                .filter(|t| !t.is_empty())
        })
        .ok_or(MintError::Response)?;
    let lifetime = doc
        .get("expires_in")
        .and_then(|e| e.as_u64().or_else(|| e.as_str()?.parse().ok()))
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_LIFETIME);
    let refresh = doc
        .get("refresh_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .map(|t| SecretValue::new(t.as_bytes()));
    Ok((SecretValue::new(token.as_bytes()), lifetime, refresh))
}

/// An OAuth error code is an ASCII token (RFC 6749 §5.2); anything else is cut down.
fn sanitise(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect()
}
