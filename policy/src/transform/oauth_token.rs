//! `oauth_token`: OAuth 2.0 access tokens from a grant (client credentials, refresh token,
//! JWT bearer…), set in a header; the first matching entry wins.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::matcher::host::HostName;
use crate::matcher::rule::{RawRule, Request, Rule, required_rules};
use crate::transform::source::{NamedSource, RawSource, SourceId, source};
use crate::value::{S, http_token, pos};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOAuth {
    #[serde(default)]
    pub tokens: Vec<RawOAuthEntry>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOAuthEntry {
    pub grant: S,
    pub token_endpoint: Option<S>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    pub header: Option<String>,
    pub value_prefix: Option<String>,
    #[serde(default)]
    pub require: bool,
    #[serde(default)]
    pub token_endpoint_headers: BTreeMap<String, RawSource>,
    pub audience: Option<String>,
    pub refresh_token: Option<RawSource>,
    pub client_id: Option<RawSource>,
    pub client_secret: Option<RawSource>,
    pub username: Option<RawSource>,
    pub password: Option<RawSource>,
    pub issuer: Option<RawSource>,
    pub subject: Option<RawSource>,
    pub private_key: Option<RawSource>,
    pub private_key_id: Option<RawSource>,
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

pub(crate) fn oauth(
    i: usize,
    raw: RawOAuth,
    errs: &mut Errors,
    sources: &mut Vec<NamedSource>,
) -> Vec<OAuthToken> {
    let base = format!("transforms[{i}].config.tokens");
    if raw.tokens.is_empty() {
        errs.push(
            &base,
            (0, 0),
            "an `oauth_token` transform needs at least one token",
        );
    }
    raw.tokens
        .into_iter()
        .enumerate()
        .filter_map(|(j, t)| oauth_entry(format!("{base}[{j}]"), t, errs, sources))
        .collect()
}

fn oauth_entry(
    id: String,
    raw: RawOAuthEntry,
    errs: &mut Errors,
    sources: &mut Vec<NamedSource>,
) -> Option<OAuthToken> {
    let grant = grant(&id, &raw.grant, errs);
    let endpoint = token_endpoint(&id, raw.token_endpoint.as_ref(), errs);
    let rules = required_rules(&id, &raw.rules, errs);
    let given: Vec<(&str, Option<RawSource>)> = vec![
        ("refresh_token", raw.refresh_token),
        ("client_id", raw.client_id),
        ("client_secret", raw.client_secret),
        ("username", raw.username),
        ("password", raw.password),
        ("issuer", raw.issuer),
        ("subject", raw.subject),
        ("private_key", raw.private_key),
        ("private_key_id", raw.private_key_id),
    ];
    let fields = fields(&id, grant, given, errs, sources);
    match (grant, &raw.audience) {
        (Some(Grant::JwtBearer), None) => errs.push(
            format!("{id}.audience"),
            (0, 0),
            "is required by the `jwt_bearer` grant",
        ),
        (Some(g), Some(_)) if g != Grant::JwtBearer => errs.push(
            format!("{id}.audience"),
            (0, 0),
            "is only used by the `jwt_bearer` grant",
        ),
        _ => {}
    }
    let endpoint_headers = endpoint_headers(&id, raw.token_endpoint_headers, errs, sources);
    let header = raw.header.unwrap_or_else(|| "Authorization".into());
    if !http_token(&header) {
        errs.push(
            format!("{id}.header"),
            (0, 0),
            format!("`{header}` is not a header name"),
        );
    }
    let token_endpoint = raw.token_endpoint.map(|s| s.0.value)?;
    Some(OAuthToken {
        id,
        grant: grant?,
        token_endpoint,
        endpoint: endpoint?,
        scopes: raw.scopes,
        audience: raw.audience,
        fields,
        endpoint_headers,
        header,
        value_prefix: raw.value_prefix.unwrap_or_else(|| "Bearer ".into()),
        require: raw.require,
        rules,
    })
}

fn grant(id: &str, raw: &S, errs: &mut Errors) -> Option<Grant> {
    match raw.value.as_str() {
        "refresh_token" => Some(Grant::RefreshToken),
        "client_credentials" => Some(Grant::ClientCredentials),
        "password" => Some(Grant::Password),
        "jwt_bearer" => Some(Grant::JwtBearer),
        other => {
            errs.hint(
                format!("{id}.grant"),
                pos(raw),
                format!("unknown grant `{other}`"),
                "use refresh_token, client_credentials, password or jwt_bearer",
            );
            None
        }
    }
}

fn token_endpoint(id: &str, raw: Option<&S>, errs: &mut Errors) -> Option<(HostName, String)> {
    let Some(url) = raw else {
        errs.hint(
            format!("{id}.token_endpoint"),
            (0, 0),
            "is required",
            "the authorization server's token URL, e.g. `https://auth.example.com/oauth/token`",
        );
        return None;
    };
    endpoint(&url.value)
        .map_err(|e| errs.push(format!("{id}.token_endpoint"), pos(url), e))
        .ok()
}

/// The credential fields given, each checked against what the grant requires and uses.
fn fields(
    id: &str,
    grant: Option<Grant>,
    given: Vec<(&str, Option<RawSource>)>,
    errs: &mut Errors,
    sources: &mut Vec<NamedSource>,
) -> Vec<(String, SourceId)> {
    let mut fields = Vec::new();
    for (name, src) in given {
        let Some(src) = src else {
            if let Some(g) = grant
                && g.fields().0.contains(&name)
            {
                errs.push(
                    format!("{id}.{name}"),
                    (0, 0),
                    format!("is required by the `{}` grant", g.as_str()),
                );
            }
            continue;
        };
        if let Some(g) = grant {
            let (req, opt) = g.fields();
            if !req.contains(&name) && !opt.contains(&name) {
                errs.push(
                    format!("{id}.{name}"),
                    (0, 0),
                    format!("is not used by the `{}` grant", g.as_str()),
                );
                continue;
            }
        }
        if let Some(s) = source(&format!("{id}.{name}"), src, errs, sources) {
            fields.push((name.to_string(), s));
        }
    }
    fields
}

fn endpoint_headers(
    id: &str,
    raw: BTreeMap<String, RawSource>,
    errs: &mut Errors,
    sources: &mut Vec<NamedSource>,
) -> Vec<(String, SourceId)> {
    let mut out = Vec::new();
    for (name, src) in raw {
        let path = format!("{id}.token_endpoint_headers.{name}");
        if !http_token(&name) {
            errs.push(&path, (0, 0), format!("`{name}` is not a header name"));
            continue;
        }
        if let Some(s) = source(&path, src, errs, sources) {
            out.push((name, s));
        }
    }
    out
}

/// The host and path of an `http(s)://host[:port]/path` URL.
fn endpoint(url: &str) -> Result<(HostName, String), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("`{url}` is not an http(s) URL"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        _ => authority,
    };
    let host = host
        .parse::<HostName>()
        .map_err(|e| format!("`{url}`: {e}"))?;
    let path = if path.is_empty() { "/" } else { path };
    Ok((host, path.split('?').next().unwrap_or(path).to_string()))
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn errors(transform: &str) -> Vec<String> {
        let doc = format!("dns: {{enabled: false}}\ntransforms:\n{transform}");
        match Config::parse(&doc) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn has(errs: &[String], want: &str) {
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "missing {want:?} in {errs:#?}"
        );
    }

    #[test]
    fn iron_proxy_token_transforms_load() {
        let doc = "dns: {enabled: false}
transforms:
  - name: gcp_auth
    config:
      keyfile_path: /run/sa.json
      scopes: [https://www.googleapis.com/auth/cloud-platform]
      rules: [{host: '*.googleapis.com'}]
  - name: oauth_token
    config:
      tokens:
        - grant: client_credentials
          token_endpoint: https://auth.example.com/oauth/token
          client_id: {type: env, var: CID}
          client_secret: {type: env, var: CSECRET}
          scopes: [read]
          token_endpoint_headers: {X-Tenant: {type: env, var: TENANT}}
          rules: [{host: api.example.com}]
  - name: hmac_sign
    config:
      timestamp: {format: unix_millis}
      signature:
        algorithm: sha512
        key_encoding: base64
        output_encoding: hex
        message: '{{.Timestamp}}{{.Method}}{{.PathWithQuery}}{{.Body}}'
      credentials:
        secret: {type: env, var: HMAC_KEY}
        key: {type: env, var: API_KEY}
      headers:
        - {name: X-Key, value: '{{.Credentials.key}}'}
        - {name: X-Sig, value: '{{.Signature}}'}
        - {name: X-Ts, value: '{{.Timestamp}}'}
      rules: [{host: exchange.example.com}]
";
        let c = Config::parse(doc).unwrap_or_else(|e| panic!("{e}"));
        let p = &c.policy;
        assert_eq!(p.gcp_auth.len(), 1);
        assert_eq!(p.oauth.len(), 1);
        assert_eq!(p.oauth[0].endpoint.1, "/oauth/token");
        assert_eq!(p.oauth[0].value_prefix, "Bearer ");
        assert_eq!(p.hmac.len(), 1);
        assert_eq!(p.hmac[0].headers.len(), 3);
        // CID, CSECRET, TENANT, HMAC_KEY, API_KEY and the keyfile: each source once.
        assert_eq!(p.sources.len(), 6);
    }

    #[test]
    fn every_invalid_token_transform_is_reported() {
        let errs = errors(
            "  - name: gcp_auth
    config: {scopes: []}
  - name: oauth_token
    config:
      tokens:
        - grant: device_code
          token_endpoint: ftp://x
        - grant: client_credentials
          token_endpoint: https://a.test/token
          client_id: {type: env, var: A}
          username: {type: env, var: U}
          rules: [{host: a.test}]
        - grant: jwt_bearer
          token_endpoint: https://a.test/token
          issuer: {type: env, var: I}
          subject: {type: env, var: S}
          private_key: {type: file, path: /k.pem}
          rules: [{host: a.test}]
  - name: hmac_sign
    config:
      signature: {algorithm: md5, message: '{{.Secret}}'}
      credentials: {key: {type: env, var: K}}
      headers: [{name: 'X Sig', value: '{{.Signature}}'}, {name: X-A, value: '{{.Credentials.nope}}'}]
",
        );
        for want in [
            "transforms[0].config: gcp_auth needs exactly one of",
            "transforms[0].config.scopes: needs at least one scope",
            "tokens[0].grant: unknown grant `device_code`",
            "tokens[0].token_endpoint: `ftp://x` is not an http(s) URL",
            "tokens[0].rules: is required",
            "tokens[1].client_secret: is required by the `client_credentials` grant",
            "tokens[1].username: is not used by the `client_credentials` grant",
            "tokens[2].audience: is required by the `jwt_bearer` grant",
            "transforms[2].config.signature.algorithm: unknown value `md5`",
            "transforms[2].config.signature.message: unknown template variable `.Secret`",
            "transforms[2].config.credentials: must include `secret`",
            "headers[0].name: `X Sig` is not a header name",
            "headers[1].value: unknown template variable `.Credentials.nope`",
            "transforms[2].config.rules: is required",
        ] {
            has(&errs, want);
        }
    }
}
