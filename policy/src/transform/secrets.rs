//! `secrets`: placeholders swapped for real values in declared places (`replace`), or values
//! injected into a header or query parameter (`inject`), per matching entry.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::matcher::rule::{RawRule, Request, Rule, rule};
use crate::transform::source::{NamedSource, RawSource, SourceId, source};
use crate::transform::template::Template;
use crate::value::{S, pos};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecrets {
    #[serde(default)]
    pub secrets: Vec<RawSecret>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecret {
    pub source: RawSource,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    pub replace: Option<RawReplace>,
    pub inject: Option<RawInject>,
    // iron-proxy's legacy replace fields, normalised into `replace`.
    pub proxy_value: Option<S>,
    pub match_headers: Option<Vec<S>>,
    pub match_body: Option<bool>,
    pub require: Option<bool>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReplace {
    pub proxy_value: Option<S>,
    pub match_headers: Option<Vec<S>>,
    #[serde(default)]
    pub match_body: bool,
    #[serde(default)]
    pub match_query: bool,
    #[serde(default)]
    pub match_path: bool,
    #[serde(default)]
    pub require: bool,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInject {
    pub header: Option<String>,
    pub query_param: Option<String>,
    pub formatter: Option<S>,
    #[serde(default)]
    pub require: bool,
}

/// One `secrets` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEntry {
    /// Path in the policy file: `transforms[1].config.secrets[0]`.
    pub id: String,
    /// Display name for audit records: the variable name or file path, never the value.
    pub name: String,
    /// Where the value comes from.
    pub source: SourceId,
    /// Requests it applies to (host, port, method, path).
    pub rules: Vec<Rule>,
    /// How it is put on the wire.
    pub mode: Mode,
}

impl SecretEntry {
    /// Whether this entry applies to a request (never to a connection-level decision).
    pub fn applies(&self, req: &Request<'_>) -> bool {
        req.http.is_some() && self.rules.iter().any(|r| r.matches(req))
    }

    /// Whether this entry needs the request body read whole (`replace` with `match_body`).
    pub fn reads_body(&self) -> bool {
        matches!(&self.mode, Mode::Replace(r) if r.body)
    }
}

/// Replace or inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Swap a placeholder the client sent for the real value.
    Replace(Replace),
    /// Set a header or query parameter from the real value.
    Inject(Inject),
}

/// Replace mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replace {
    /// The placeholder the sandbox holds.
    pub proxy_value: String,
    /// Which headers are searched.
    pub headers: HeaderScope,
    /// Search the body (buffered up to `proxy.max_request_body_bytes`).
    pub body: bool,
    /// Search query parameter values.
    pub query: bool,
    /// Search the path.
    pub path: bool,
    /// Reject (403) a matching request that carries no placeholder.
    pub require: bool,
}

/// Which headers a replace searches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderScope {
    /// Every header (`match_headers` omitted or empty).
    All,
    /// Only these.
    Only(Vec<HeaderMatch>),
}

/// A header selector.
#[derive(Debug, Clone)]
pub enum HeaderMatch {
    /// A literal name, matched case-insensitively, written back as typed.
    Name(String),
    /// `/regex/`, case-insensitive, over the lower-case name.
    Pattern(regex::Regex),
}

impl PartialEq for HeaderMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (HeaderMatch::Name(a), HeaderMatch::Name(b)) => a == b,
            (HeaderMatch::Pattern(a), HeaderMatch::Pattern(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for HeaderMatch {}

impl HeaderMatch {
    /// Whether `name` (lower case) is selected.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            HeaderMatch::Name(n) => n.eq_ignore_ascii_case(name),
            HeaderMatch::Pattern(r) => r.is_match(name),
        }
    }
}

impl HeaderScope {
    /// Whether `name` (lower case) is searched.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            HeaderScope::All => true,
            HeaderScope::Only(list) => list.iter().any(|m| m.matches(name)),
        }
    }
}

/// Inject mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inject {
    /// Where the value goes.
    pub target: InjectTarget,
    /// How the value is formatted.
    pub formatter: Formatter,
    /// Reject (403) the request when the secret is unavailable.
    pub require: bool,
}

/// An inject destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectTarget {
    /// A header, written with the casing given.
    Header(String),
    /// A query parameter.
    Query(String),
}

/// An inject formatter: a template over `.Value`, e.g. `Bearer {{ .Value }}` or
/// `{{ base64 "user:" .Value }}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Formatter(Template);

impl Formatter {
    /// `{{ .Value }}`.
    pub fn value() -> Formatter {
        Formatter(
            Template::parse("{{ .Value }}", &|v| v == "Value").unwrap_or_else(|_| unreachable!()),
        )
    }

    /// Renders with the secret value.
    pub fn render(&self, value: &[u8]) -> Vec<u8> {
        self.0.render(&|_| value.to_vec())
    }
}

impl std::str::FromStr for Formatter {
    type Err = String;

    fn from_str(raw: &str) -> Result<Formatter, String> {
        let t = Template::parse(raw, &|v| v == "Value")?;
        if !t.uses("Value") {
            return Err("the formatter never uses `.Value`".into());
        }
        Ok(Formatter(t))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::source::Source;
    use crate::{Config, Host};

    fn entries(yaml: &str) -> Vec<SecretEntry> {
        let doc = format!(
            "dns: {{enabled: false}}\ntransforms:\n  - name: secrets\n    config:\n      secrets:\n{yaml}"
        );
        Config::parse(&doc)
            .unwrap_or_else(|e| panic!("{e}"))
            .policy
            .secrets
    }

    fn errors(yaml: &str) -> Vec<String> {
        let doc = format!(
            "dns: {{enabled: false}}\ntransforms:\n  - name: secrets\n    config:\n      secrets:\n{yaml}"
        );
        Config::parse(&doc)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn iron_proxy_shapes_load() {
        let e = entries(
            "        - source: {type: env, var: OPENAI_API_KEY}
          rules: [{host: api.openai.com}]
          replace: {proxy_value: sk-placeholder, match_headers: [Authorization, '/^x-.*-key$/'], match_query: true}
        - source: {type: file, path: /run/key, ttl: 5m}
          rules: [{host: '*.anthropic.com', methods: [POST]}]
          inject: {header: x-api-key, formatter: '{{ .Value }}', require: true}
        - source: {type: env, var: LEGACY}
          rules: [{host: legacy.test}]
          proxy_value: LEGACY_PH
          match_headers: [Authorization]
",
        );
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].name, "OPENAI_API_KEY");
        let Mode::Replace(r) = &e[0].mode else {
            panic!()
        };
        assert!(
            r.headers.includes("authorization")
                && r.headers.includes("x-goog-key")
                && !r.headers.includes("cookie")
        );
        assert!(r.query && !r.body);
        let file = &Config::parse("dns: {enabled: false}\ntransforms:\n  - name: secrets\n    config:\n      secrets:\n        - source: {type: file, path: /k, ttl: 5m}\n          rules: [{host: a.test}]\n          replace: {proxy_value: X}\n").unwrap().policy.sources[0].source;
        assert!(matches!(file, Source::File { ttl: Some(t), .. } if t.as_secs() == 300));
        assert!(matches!(&e[2].mode, Mode::Replace(r) if r.proxy_value == "LEGACY_PH"));
        let host = Host::parse("API.openai.com").unwrap();
        let req = |http| Request {
            host: &host,
            port: 443,
            http,
        };
        assert!(e[0].applies(&req(Some(("GET", "/v1")))));
        assert!(!e[0].applies(&req(None)), "never on a bare CONNECT");
    }

    #[test]
    fn every_invalid_shape_is_reported() {
        let errs = errors(
            "        - source: {type: env, var: A}
          rules: [{host: a.test}]
          replace: {proxy_value: X}
          inject: {header: Authorization}
        - source: {type: env, var: B}
          rules: [{host: b.test}]
        - source: {type: env, var: C}
          replace: {proxy_value: C}
        - source: {type: env, var: D}
          rules: [{host: d.test}]
          inject: {header: Authorization, query_param: key}
        - source: {type: env, var: E}
          rules: [{host: e.test}]
          inject: {header: Authorization, formatter: 'Bearer {{ .Token }}'}
        - source: {type: env, var: F}
          rules: [{host: f.test}]
          replace: {proxy_value: F, match_headers: ['/(/']}
        - source: {type: env, var: G}
          rules: [{host: g.test}]
          replace: {}
",
        );
        let expect = [
            "secrets[0]: a secret has more than one mode",
            "secrets[1]: a secret needs a mode",
            "secrets[2].rules: a secret without rules never applies",
            "secrets[3].inject: inject needs exactly one of",
            "secrets[4].inject.formatter: unknown template variable `.Token`",
            "secrets[5].replace.match_headers[0]: is not a valid regular expression",
            "secrets[6].replace.proxy_value: is required",
        ];
        for e in expect {
            assert!(
                errs.iter().any(|m| m.contains(e)),
                "missing {e:?} in {errs:#?}"
            );
        }
        let bad_source = Config::parse("dns: {enabled: false}\ntransforms:\n  - name: secrets\n    config:\n      secrets:\n        - source: {type: aws_sm, secret_id: x}\n          rules: [{host: a.test}]\n          replace: {proxy_value: X}\n").unwrap_err();
        assert!(bad_source.to_string().contains("aws_sm"), "{bad_source}");
    }

    #[test]
    fn formatters_render_like_iron_proxy() {
        let f: Formatter = "Bearer {{ .Value }}".parse().unwrap();
        assert_eq!(f.render(b"k"), b"Bearer k");
        let b: Formatter = "Basic {{ base64 \"x-credential:\" .Value }}"
            .parse()
            .unwrap();
        assert_eq!(b.render(b"pw"), b"Basic eC1jcmVkZW50aWFsOnB3");
        assert!("Bearer {{ .Other }}".parse::<Formatter>().is_err());
        assert!("no value".parse::<Formatter>().is_err());
        assert!("{{ .Value".parse::<Formatter>().is_err());
    }
}
