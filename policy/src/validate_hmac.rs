//! Validation of `hmac_sign`: every problem with its path.

use crate::error::{Errors, pos};
use crate::raw::{RawHmac, S};
use crate::secrets::NamedSource;
use crate::template::Template;
use crate::tokens::{Encoding, HMAC_MESSAGE_VARS, HmacAlgorithm, HmacSign, TimestampFormat};
use crate::validate_secrets::{http_token, source};
use crate::validate_tokens::required_rules;

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
    let sig = &raw.signature;
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
    let message = match &sig.message {
        None => {
            errs.hint(
                format!("{base}.signature.message"),
                (0, 0),
                "is required",
                "the string to sign, e.g. `{{.Timestamp}}{{.Method}}{{.PathWithQuery}}{{.Body}}`",
            );
            None
        }
        Some(m) => Template::parse(&m.value, &|v| HMAC_MESSAGE_VARS.contains(&v))
            .map_err(|e| errs.push(format!("{base}.signature.message"), pos(m), e))
            .ok(),
    };
    if !raw.credentials.contains_key("secret") {
        errs.hint(
            format!("{base}.credentials"),
            (0, 0),
            "must include `secret`, the HMAC key",
            "e.g. `credentials: {secret: {type: env, var: EXCHANGE_SECRET}}`",
        );
    }
    let names: Vec<String> = raw.credentials.keys().cloned().collect();
    let mut credentials = Vec::new();
    for (name, src) in raw.credentials {
        if let Some(s) = source(&format!("{base}.credentials.{name}"), src, errs, sources) {
            credentials.push((name, s));
        }
    }
    if raw.headers.is_empty() {
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
                .is_some_and(|n| names.iter().any(|c| c == n))
    };
    let mut headers = Vec::new();
    for (k, h) in raw.headers.iter().enumerate() {
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
