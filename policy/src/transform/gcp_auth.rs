//! `gcp_auth`: Google access tokens minted from a service-account key, and the token
//! endpoints the gateway answers itself for client libraries; `gcp_id_token`: Google-signed
//! ID tokens for an audience (Cloud Run, IAP, Cloud Functions), from the same kind of key.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::matcher::path::PathPattern;
use crate::matcher::rule::{RawRule, Request, Rule, rules};
use crate::transform::source::{NamedSource, RawSource, SourceId, source};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGcpAuth {
    pub keyfile_path: Option<String>,
    pub keyfile: Option<RawSource>,
    #[schemars(skip)]
    pub credentials_provider: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub subject: Option<String>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGcpIdToken {
    pub keyfile_path: Option<String>,
    pub keyfile: Option<RawSource>,
    #[serde(default)]
    pub audience: String,
    pub header: Option<String>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

/// What makes a `gcp_auth` entry a `gcp_id_token` one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdToken {
    /// The `target_audience` (the receiving service's URL).
    pub audience: String,
    /// `authorization` (default) or `x-serverless-authorization`.
    pub header: String,
}

/// One `gcp_auth` transform (a Google service-account key minted into access tokens) or
/// `gcp_id_token` transform (into ID tokens for an audience).
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
    /// Set for `gcp_id_token`.
    pub id_token: Option<IdToken>,
}

impl GcpAuth {
    /// The transform's name in the policy file and the audit record.
    pub fn name(&self) -> &'static str {
        if self.id_token.is_some() {
            "gcp_id_token"
        } else {
            "gcp_auth"
        }
    }

    /// The header the token goes in.
    pub fn header(&self) -> &str {
        self.id_token
            .as_ref()
            .map_or("authorization", |t| &t.header)
    }

    /// Whether a request gets the minted token.
    pub fn applies(&self, req: &Request<'_>) -> bool {
        req.http.is_some() && (self.rules.is_empty() || self.rules.iter().any(|r| r.matches(req)))
    }
}

/// The metadata-server token path Google client libraries ask for.
pub fn gcp_metadata_token_path() -> PathPattern {
    "/computeMetadata/v1/instance/service-accounts/*/token"
        .parse()
        .unwrap_or_else(|_| unreachable!("a valid pattern"))
}

pub(crate) fn gcp_auth(
    i: usize,
    raw: RawGcpAuth,
    errs: &mut Errors,
    sources: &mut Vec<NamedSource>,
) -> Option<GcpAuth> {
    let base = format!("transforms[{i}].config");
    if raw.credentials_provider.is_some() {
        errs.hint(
            format!("{base}.credentials_provider"),
            (0, 0),
            "workload identity is not supported",
            "give the service-account key with `keyfile_path` or `keyfile: {type: …}`",
        );
    }
    let keyfile = keyfile(
        "gcp_auth",
        &base,
        raw.keyfile_path,
        raw.keyfile,
        raw.credentials_provider.is_some(),
        errs,
        sources,
    );
    if raw.scopes.is_empty() {
        errs.hint(
            format!("{base}.scopes"),
            (0, 0),
            "needs at least one scope",
            "e.g. `scopes: [https://www.googleapis.com/auth/cloud-platform]`",
        );
    }
    let rules = rules(&base, &raw.rules, errs);
    Some(GcpAuth {
        id: base,
        keyfile: keyfile?,
        scopes: raw.scopes,
        subject: raw.subject.filter(|s| !s.is_empty()),
        rules,
        id_token: None,
    })
}

/// The service-account key: exactly one of `keyfile_path` or `keyfile`.
fn keyfile(
    what: &str,
    base: &str,
    keyfile_path: Option<String>,
    keyfile: Option<RawSource>,
    provider: bool,
    errs: &mut Errors,
    sources: &mut Vec<NamedSource>,
) -> Option<SourceId> {
    match (keyfile_path, keyfile) {
        (Some(path), None) => source(
            &format!("{base}.keyfile_path"),
            RawSource::File {
                path,
                ttl: None,
                failure_ttl: None,
                json_key: None,
            },
            errs,
            sources,
        ),
        (None, Some(src)) => source(&format!("{base}.keyfile"), src, errs, sources),
        (None, None) if provider => None,
        _ => {
            errs.hint(
                base,
                (0, 0),
                format!("{what} needs exactly one of `keyfile_path` or `keyfile`"),
                "e.g. `keyfile_path: /run/secrets/sa.json`",
            );
            None
        }
    }
}

pub(crate) fn gcp_id_token(
    i: usize,
    raw: RawGcpIdToken,
    errs: &mut Errors,
    sources: &mut Vec<NamedSource>,
) -> Option<GcpAuth> {
    let base = format!("transforms[{i}].config");
    let keyfile = keyfile(
        "gcp_id_token",
        &base,
        raw.keyfile_path,
        raw.keyfile,
        false,
        errs,
        sources,
    );
    if raw.audience.is_empty() {
        errs.hint(
            format!("{base}.audience"),
            (0, 0),
            "is required",
            "the receiving service's URL, e.g. `https://my-service-abc123-uc.a.run.app`",
        );
    }
    let header = raw
        .header
        .unwrap_or_else(|| "authorization".into())
        .to_ascii_lowercase();
    if header != "authorization" && header != "x-serverless-authorization" {
        errs.push(
            format!("{base}.header"),
            (0, 0),
            format!("`{header}`: use `authorization` or `x-serverless-authorization`"),
        );
    }
    if raw.rules.is_empty() {
        errs.push(
            format!("{base}.rules"),
            (0, 0),
            "an ID token needs rules (the hosts of its audience)",
        );
    }
    let rules = rules(&base, &raw.rules, errs);
    Some(GcpAuth {
        id: base,
        keyfile: keyfile?,
        scopes: Vec::new(),
        subject: None,
        rules,
        id_token: Some(IdToken {
            audience: raw.audience,
            header,
        }),
    })
}
