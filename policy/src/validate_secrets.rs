//! Validation of the `secrets` transform: every problem with its path.

use std::time::Duration;

use crate::allowlist::Rule;
use crate::error::{Errors, pos};
use crate::raw::{RawInject, RawReplace, RawSecret, RawSecrets, RawSource};
use crate::secrets::{
    Formatter, HeaderMatch, HeaderScope, Inject, InjectTarget, Mode, Replace, SecretEntry, Source,
};
use crate::validate::{duration, rule};

/// A `secrets` transform's entries.
pub(crate) fn secrets(i: usize, raw: RawSecrets, errs: &mut Errors) -> Vec<SecretEntry> {
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
        .filter_map(|(j, s)| secret(format!("{base}[{j}]"), s, errs))
        .collect()
}

fn secret(id: String, raw: RawSecret, errs: &mut Errors) -> Option<SecretEntry> {
    let source = source(&id, raw.source, errs);
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
    let (source, name) = source?;
    Some(SecretEntry {
        id,
        name,
        source,
        rules,
        mode: mode?,
    })
}

fn source(id: &str, raw: RawSource, errs: &mut Errors) -> Option<(Source, String)> {
    let path = format!("{id}.source");
    match raw {
        RawSource::Env { var, json_key } => {
            if var.is_empty() {
                errs.push(format!("{path}.var"), (0, 0), "is empty");
                return None;
            }
            Some((
                Source::Env {
                    var: var.clone(),
                    json_key,
                },
                var,
            ))
        }
        RawSource::File {
            path: file,
            ttl,
            failure_ttl,
            json_key,
        } => {
            if file.is_empty() {
                errs.push(format!("{path}.path"), (0, 0), "is empty");
                return None;
            }
            let ttl = ttl.map(|t| duration(Some(t), Duration::ZERO, &format!("{path}.ttl"), errs));
            let failure_ttl = duration(
                failure_ttl,
                Duration::from_secs(60),
                &format!("{path}.failure_ttl"),
                errs,
            );
            Some((
                Source::File {
                    path: file.clone(),
                    ttl,
                    failure_ttl,
                    json_key,
                },
                file,
            ))
        }
    }
}

fn replace(path: &str, r: RawReplace, errs: &mut Errors) -> Option<Mode> {
    let proxy_value = match r.proxy_value {
        Some(v) if !v.value.is_empty() => v.value,
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

fn http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
