//! Validation of the `secrets` transform: every problem with its path.

use std::time::Duration;

use crate::allowlist::Rule;
use crate::error::{Errors, pos};
use crate::raw::{RawInject, RawReplace, RawSecret, RawSecrets, RawSource, S};
use crate::secrets::{
    Formatter, HeaderMatch, HeaderScope, Inject, InjectTarget, Mode, NamedSource, Replace,
    SecretEntry, Source, SourceId, VaultToken,
};
use crate::validate::{duration, rule};

/// A `secrets` transform's entries.
pub(crate) fn secrets(
    i: usize,
    raw: RawSecrets,
    errs: &mut Errors,
    sources: &mut Vec<NamedSource>,
) -> Vec<SecretEntry> {
    let base = format!("transforms[{i}].config.secrets");
    if raw.secrets.is_empty() {
        errs.push(
            base.clone(),
            (0, 0),
            "a `secrets` transform with no secrets does nothing",
        );
    }
    raw.secrets
        .into_iter()
        .enumerate()
        .filter_map(|(j, s)| secret(format!("{base}[{j}]"), s, errs, sources))
        .collect()
}

fn secret(
    id: String,
    raw: RawSecret,
    errs: &mut Errors,
    sources: &mut Vec<NamedSource>,
) -> Option<SecretEntry> {
    let source = source(&format!("{id}.source"), raw.source, errs, sources);
    if raw.rules.is_empty() {
        errs.hint(
            format!("{id}.rules"),
            (0, 0),
            "a secret without rules never applies",
            "add `rules: [{host: api.example.com}]`",
        );
    }
    let rules: Vec<Rule> = raw
        .rules
        .iter()
        .enumerate()
        .filter_map(|(k, r)| rule(format!("{id}.rules[{k}]"), r, errs))
        .collect();
    let legacy = raw.proxy_value.is_some()
        || raw.match_headers.is_some()
        || raw.match_body.is_some()
        || raw.require.is_some();
    let mode = match (raw.replace, raw.inject, legacy) {
        (Some(r), None, false) => replace(&format!("{id}.replace"), r, errs),
        (None, Some(inj), false) => inject(&format!("{id}.inject"), inj, errs),
        (None, None, true) => {
            let r = RawReplace {
                proxy_value: raw.proxy_value,
                match_headers: raw.match_headers,
                match_body: raw.match_body.unwrap_or(false),
                require: raw.require.unwrap_or(false),
                ..RawReplace::default()
            };
            replace(&id, r, errs)
        }
        (None, None, false) => {
            errs.hint(&id, (0, 0), "a secret needs a mode", "add `replace: {proxy_value: PLACEHOLDER}` or `inject: {header: Authorization, formatter: 'Bearer {{ .Value }}'}`");
            None
        }
        _ => {
            errs.hint(&id, (0, 0), "a secret has more than one mode", "use exactly one of `replace`, `inject`, or the legacy entry-level `proxy_value` fields");
            None
        }
    };
    let source = source?;
    Some(SecretEntry {
        id,
        name: sources[source.0].name.clone(),
        source,
        rules,
        mode: mode?,
    })
}

/// Validates a source and registers it (once, however often it is used).
pub(crate) fn source(
    path: &str,
    raw: RawSource,
    errs: &mut Errors,
    sources: &mut Vec<NamedSource>,
) -> Option<SourceId> {
    let ttls = |ttl: Option<S>, failure_ttl: Option<S>, errs: &mut Errors| {
        let ttl = ttl.map(|t| duration(Some(t), Duration::ZERO, &format!("{path}.ttl"), errs));
        let failure_ttl = duration(
            failure_ttl,
            Duration::from_secs(60),
            &format!("{path}.failure_ttl"),
            errs,
        );
        (ttl, failure_ttl)
    };
    let empty = |field: &str, value: &str, errs: &mut Errors| {
        if value.is_empty() {
            errs.push(format!("{path}.{field}"), (0, 0), "is empty");
        }
        value.is_empty()
    };
    let named = match raw {
        RawSource::Env { var, json_key } => {
            if empty("var", &var, errs) {
                return None;
            }
            NamedSource {
                name: var.clone(),
                source: Source::Env { var, json_key },
            }
        }
        RawSource::File {
            path: file,
            ttl,
            failure_ttl,
            json_key,
        } => {
            if empty("path", &file, errs) {
                return None;
            }
            let (ttl, failure_ttl) = ttls(ttl, failure_ttl, errs);
            NamedSource {
                name: file.clone(),
                source: Source::File {
                    path: file,
                    ttl,
                    failure_ttl,
                    json_key,
                },
            }
        }
        RawSource::Vault {
            address,
            mount,
            path: secret,
            field,
            token_env,
            token_file,
            ttl,
            failure_ttl,
            json_key,
        } => {
            if empty("path", &secret, errs) | empty("field", &field, errs) {
                return None;
            }
            if let Some(a) = &address
                && !(a.starts_with("https://") || a.starts_with("http://"))
            {
                errs.hint(
                    format!("{path}.address"),
                    (0, 0),
                    format!("`{a}` is not an http(s) URL"),
                    "e.g. `https://vault.internal:8200`; omit it to use VAULT_ADDR",
                );
            }
            let token = match (token_env, token_file) {
                (None, Some(f)) => VaultToken::File(f),
                (e, None) => VaultToken::Env(e.unwrap_or_else(|| "VAULT_TOKEN".into())),
                (Some(_), Some(_)) => {
                    errs.push(
                        path,
                        (0, 0),
                        "give the Vault token by `token_env` or `token_file`, not both",
                    );
                    return None;
                }
            };
            let (ttl, failure_ttl) = ttls(ttl, failure_ttl, errs);
            let mount = mount.unwrap_or_else(|| "secret".into());
            NamedSource {
                name: format!("vault:{mount}/{secret}#{field}"),
                source: Source::Vault {
                    address,
                    mount,
                    path: secret,
                    field,
                    token,
                    ttl,
                    failure_ttl,
                    json_key,
                },
            }
        }
    };
    let at = match sources.iter().position(|s| *s == named) {
        Some(i) => i,
        None => {
            sources.push(named);
            sources.len() - 1
        }
    };
    Some(SourceId(at))
}

fn replace(path: &str, r: RawReplace, errs: &mut Errors) -> Option<Mode> {
    let proxy_value = match r.proxy_value {
        Some(v) if !v.value.is_empty() => v.0.value,
        Some(v) => {
            errs.push(format!("{path}.proxy_value"), pos(&v), "is empty");
            return None;
        }
        None => {
            errs.hint(
                format!("{path}.proxy_value"),
                (0, 0),
                "is required",
                "the placeholder the sandbox sends, e.g. `proxy_value: OPENAI_API_KEY`",
            );
            return None;
        }
    };
    let list = r.match_headers.unwrap_or_default();
    let mut matches = Vec::new();
    for (k, h) in list.iter().enumerate() {
        let hpath = format!("{path}.match_headers[{k}]");
        if let Some(re) = h.value.strip_prefix('/').and_then(|v| v.strip_suffix('/')) {
            match regex::Regex::new(&format!("(?i){re}")) {
                Ok(re) => matches.push(HeaderMatch::Pattern(re)),
                Err(_) => errs.push(hpath, pos(h), "is not a valid regular expression"),
            }
        } else if http_token(&h.value) {
            matches.push(HeaderMatch::Name(h.value.clone()));
        } else {
            errs.hint(
                hpath,
                pos(h),
                format!("`{}` is not a header name", h.value),
                "write a name (`Authorization`) or a `/regex/`",
            );
        }
    }
    let headers = if list.is_empty() {
        HeaderScope::All
    } else {
        HeaderScope::Only(matches)
    };
    Some(Mode::Replace(Replace {
        proxy_value,
        headers,
        body: r.match_body,
        query: r.match_query,
        path: r.match_path,
        require: r.require,
    }))
}

fn inject(path: &str, r: RawInject, errs: &mut Errors) -> Option<Mode> {
    let target = match (r.header, r.query_param) {
        (Some(h), None) if http_token(&h) => InjectTarget::Header(h),
        (Some(h), None) => {
            errs.push(
                format!("{path}.header"),
                (0, 0),
                format!("`{h}` is not a header name"),
            );
            return None;
        }
        (None, Some(q)) if !q.is_empty() => InjectTarget::Query(q),
        _ => {
            errs.hint(
                path,
                (0, 0),
                "inject needs exactly one of `header` or `query_param`",
                "e.g. `header: Authorization`",
            );
            return None;
        }
    };
    let formatter = match r.formatter {
        Some(f) => f
            .value
            .parse::<Formatter>()
            .map_err(|e| errs.push(format!("{path}.formatter"), pos(&f), e))
            .ok()?,
        None => Formatter::value(),
    };
    Some(Mode::Inject(Inject {
        target,
        formatter,
        require: r.require,
    }))
}

pub(crate) fn http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
