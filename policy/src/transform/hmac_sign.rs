//! `hmac_sign`: a message rendered from the request (a template), its HMAC, and headers set
//! from the signature and credentials.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::matcher::rule::{RawRule, Request, Rule, required_rules};
use crate::transform::source::{NamedSource, RawSource, SourceId, source};
use crate::transform::template::Template;
use crate::value::{S, http_token, pos};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHmac {
    #[serde(default)]
    pub timestamp: RawHmacTimestamp,
    #[serde(default)]
    pub signature: RawSignature,
    #[serde(default)]
    pub credentials: BTreeMap<String, RawSource>,
    #[serde(default)]
    pub headers: Vec<RawHmacHeader>,
    #[serde(default)]
    pub allow_chunked_body: bool,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHmacTimestamp {
    pub format: Option<S>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSignature {
    pub algorithm: Option<S>,
    pub key_encoding: Option<S>,
    pub output_encoding: Option<S>,
    pub message: Option<S>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHmacHeader {
    pub name: S,
    pub value: S,
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

fn choice<T: Copy>(
    raw: Option<&S>,
    path: &str,
    default: T,
    options: &[(&str, T)],
    errs: &mut Errors,
) -> T {
    let Some(s) = raw else { return default };
    match options.iter().find(|(n, _)| *n == s.value) {
        Some((_, v)) => *v,
        None => {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            errs.hint(
                path,
                pos(s),
                format!("unknown value `{}`", s.value),
                format!("use one of {}", names.join(", ")),
            );
            default
        }
    }
}

pub(crate) fn hmac(
    i: usize,
    raw: RawHmac,
    errs: &mut Errors,
    sources: &mut Vec<NamedSource>,
) -> Option<HmacSign> {
    let base = format!("transforms[{i}].config");
    let timestamp = choice(
        raw.timestamp.format.as_ref(),
        &format!("{base}.timestamp.format"),
        TimestampFormat::UnixSeconds,
        &[
            ("unix_seconds", TimestampFormat::UnixSeconds),
            ("unix_millis", TimestampFormat::UnixMillis),
            ("unix_nanos", TimestampFormat::UnixNanos),
            ("rfc3339", TimestampFormat::Rfc3339),
        ],
        errs,
    );
    let (algorithm, key_encoding, output_encoding) = encodings(&base, &raw.signature, errs);
    let message = message(&base, raw.signature.message.as_ref(), errs);
    let names: Vec<String> = raw.credentials.keys().cloned().collect();
    let credentials = credentials(&base, raw.credentials, errs, sources);
    let headers = headers(&base, &raw.headers, &names, errs);
    let rules = required_rules(&base, &raw.rules, errs);
    Some(HmacSign {
        id: base,
        timestamp,
        algorithm,
        key_encoding,
        output_encoding,
        message: message?,
        credentials,
        headers,
        allow_chunked_body: raw.allow_chunked_body,
        rules,
    })
}

/// The signature's algorithm, key encoding and output encoding.
fn encodings(
    base: &str,
    sig: &RawSignature,
    errs: &mut Errors,
) -> (HmacAlgorithm, Encoding, Encoding) {
    let algorithm = choice(
        sig.algorithm.as_ref(),
        &format!("{base}.signature.algorithm"),
        HmacAlgorithm::Sha256,
        &[
            ("sha256", HmacAlgorithm::Sha256),
            ("sha512", HmacAlgorithm::Sha512),
            ("sha1", HmacAlgorithm::Sha1),
        ],
        errs,
    );
    let key_encoding = choice(
        sig.key_encoding.as_ref(),
        &format!("{base}.signature.key_encoding"),
        Encoding::Raw,
        &[
            ("raw", Encoding::Raw),
            ("base64", Encoding::Base64),
            ("hex", Encoding::Hex),
        ],
        errs,
    );
    let output_encoding = choice(
        sig.output_encoding.as_ref(),
        &format!("{base}.signature.output_encoding"),
        Encoding::Base64,
        &[("base64", Encoding::Base64), ("hex", Encoding::Hex)],
        errs,
    );
    (algorithm, key_encoding, output_encoding)
}

/// The message template, over the request variables only.
fn message(base: &str, raw: Option<&S>, errs: &mut Errors) -> Option<Template> {
    let Some(m) = raw else {
        errs.hint(
            format!("{base}.signature.message"),
            (0, 0),
            "is required",
            "the string to sign, e.g. `{{.Timestamp}}{{.Method}}{{.PathWithQuery}}{{.Body}}`",
        );
        return None;
    };
    Template::parse(&m.value, &|v| HMAC_MESSAGE_VARS.contains(&v))
        .map_err(|e| errs.push(format!("{base}.signature.message"), pos(m), e))
        .ok()
}

/// The credential sources; `secret` (the key) is required.
fn credentials(
    base: &str,
    raw: BTreeMap<String, RawSource>,
    errs: &mut Errors,
    sources: &mut Vec<NamedSource>,
) -> Vec<(String, SourceId)> {
    if !raw.contains_key("secret") {
        errs.hint(
            format!("{base}.credentials"),
            (0, 0),
            "must include `secret`, the HMAC key",
            "e.g. `credentials: {secret: {type: env, var: EXCHANGE_SECRET}}`",
        );
    }
    let mut out = Vec::new();
    for (name, src) in raw {
        if let Some(s) = source(&format!("{base}.credentials.{name}"), src, errs, sources) {
            out.push((name, s));
        }
    }
    out
}

/// The headers to set, each a template over the timestamp, the signature and the credentials
/// named in `credentials`.
fn headers(
    base: &str,
    raw: &[RawHmacHeader],
    credentials: &[String],
    errs: &mut Errors,
) -> Vec<(String, Template)> {
    if raw.is_empty() {
        errs.hint(
            format!("{base}.headers"),
            (0, 0),
            "needs at least one header",
            "e.g. `headers: [{name: X-Signature, value: '{{.Signature}}'}]`",
        );
    }
    let known = |v: &str| {
        v == "Timestamp"
            || v == "Signature"
            || v.strip_prefix("Credentials.")
                .is_some_and(|n| credentials.iter().any(|c| c == n))
    };
    let mut headers = Vec::new();
    for (k, h) in raw.iter().enumerate() {
        let path = format!("{base}.headers[{k}]");
        if !http_token(&h.name.value) {
            errs.push(
                format!("{path}.name"),
                pos(&h.name),
                format!("`{}` is not a header name", h.name.value),
            );
            continue;
        }
        match Template::parse(&h.value.value, &known) {
            Ok(t) => headers.push((h.name.value.clone(), t)),
            Err(e) => errs.push(format!("{path}.value"), pos(&h.value), e),
        }
    }
    headers
}
