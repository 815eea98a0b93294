//! `gcp_auth`: Google access tokens minted from a service-account key, and the token
//! endpoints the gateway answers itself for client libraries.

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
    let keyfile = match (raw.keyfile_path, raw.keyfile) {
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
        (None, None) if raw.credentials_provider.is_some() => None,
        _ => {
            errs.hint(
                &base,
                (0, 0),
                "gcp_auth needs exactly one of `keyfile_path` or `keyfile`",
                "e.g. `keyfile_path: /run/secrets/sa.json`",
            );
            None
        }
    };
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
    })
}
