//! `aws_auth`: requests a client signed (AWS Signature Version 4) with placeholder keys are
//! re-signed with the real keys, for the region and service the client's signature names.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::matcher::rule::{RawRule, Request, Rule, required_rules};
use crate::transform::source::{NamedSource, RawSource, SourceId, source};
use crate::value::{S, pos};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAwsAuth {
    /// The real access key id.
    pub access_key_id: Option<RawSource>,
    /// The real secret access key.
    pub secret_access_key: Option<RawSource>,
    /// A session token for temporary credentials (sent as `X-Amz-Security-Token`).
    pub session_token: Option<RawSource>,
    /// iron-proxy's AWS default credential chain; not supported here.
    #[schemars(skip)]
    pub credentials_provider: Option<serde::de::IgnoredAny>,
    /// Regions a request may be signed for (default: any).
    #[serde(default)]
    pub allowed_regions: Vec<S>,
    /// Services a request may be signed for (default: any).
    #[serde(default)]
    pub allowed_services: Vec<S>,
    /// Sign `UNSIGNED-PAYLOAD` instead of the body's hash: the body is streamed, not read.
    #[serde(default)]
    pub unsigned_payload: bool,
    /// Sign bodies without a declared length (read whole, within the body limit).
    #[serde(default)]
    pub allow_chunked_body: bool,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

/// One `aws_auth` transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsAuth {
    /// Path in the policy file.
    pub id: String,
    /// The access key id's source.
    pub access_key_id: SourceId,
    /// The secret access key's source.
    pub secret_access_key: SourceId,
    /// The session token's source, for temporary credentials.
    pub session_token: Option<SourceId>,
    /// Regions allowed (empty: any).
    pub allowed_regions: Vec<String>,
    /// Services allowed (empty: any).
    pub allowed_services: Vec<String>,
    /// Sign `UNSIGNED-PAYLOAD`; the body is not read.
    pub unsigned_payload: bool,
    /// Sign bodies of unknown length (read whole).
    pub allow_chunked_body: bool,
    /// Requests it applies to (at least one rule).
    pub rules: Vec<Rule>,
}

impl AwsAuth {
    /// Whether a request is re-signed.
    pub fn applies(&self, req: &Request<'_>) -> bool {
        req.http.is_some() && self.rules.iter().any(|r| r.matches(req))
    }

    /// Whether the body must be read to sign it.
    pub fn reads_body(&self) -> bool {
        !self.unsigned_payload
    }
}

pub(crate) fn aws_auth(
    i: usize,
    raw: RawAwsAuth,
    errs: &mut Errors,
    sources: &mut Vec<NamedSource>,
) -> Option<AwsAuth> {
    let base = format!("transforms[{i}].config");
    if raw.credentials_provider.is_some() {
        errs.hint(
            format!("{base}.credentials_provider"),
            (0, 0),
            "is not supported: the gateway does not read the AWS default credential chain",
            "give `access_key_id` and `secret_access_key` as sources (env, file, vault, 1password_connect, aws_sm, aws_ssm)",
        );
    }
    let mut key = |name: &str, raw: Option<RawSource>, required: bool| match raw {
        Some(r) => source(&format!("{base}.{name}"), r, errs, sources),
        None if required => {
            errs.hint(
                format!("{base}.{name}"),
                (0, 0),
                "is required",
                format!(
                    "e.g. `{name}: {{type: env, var: AWS_{}}}`",
                    name.to_uppercase()
                ),
            );
            None
        }
        None => None,
    };
    let access_key_id = key("access_key_id", raw.access_key_id, true);
    let secret_access_key = key("secret_access_key", raw.secret_access_key, true);
    let session_token = key("session_token", raw.session_token, false);
    let allowed_regions = names(&base, "allowed_regions", &raw.allowed_regions, errs);
    let allowed_services = names(&base, "allowed_services", &raw.allowed_services, errs);
    let rules = required_rules(&base, &raw.rules, errs);
    Some(AwsAuth {
        id: base,
        access_key_id: access_key_id?,
        secret_access_key: secret_access_key?,
        session_token,
        allowed_regions,
        allowed_services,
        unsigned_payload: raw.unsigned_payload,
        allow_chunked_body: raw.allow_chunked_body,
        rules,
    })
}

/// Region or service names: lower-case letters, digits and dashes, as AWS writes them.
fn names(base: &str, key: &str, raw: &[S], errs: &mut Errors) -> Vec<String> {
    let mut out = Vec::with_capacity(raw.len());
    for (k, s) in raw.iter().enumerate() {
        let ok = !s.value.is_empty()
            && s.value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            out.push(s.value.clone());
        } else {
            errs.push(
                format!("{base}.{key}[{k}]"),
                pos(s),
                format!(
                    "`{}` is not a region or service name (lower-case letters, digits, dashes)",
                    s.value
                ),
            );
        }
    }
    out
}
