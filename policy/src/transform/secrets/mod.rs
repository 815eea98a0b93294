//! `secrets`: placeholders swapped for real values in declared places (`replace`), or values
//! injected into a header or query parameter (`inject`), per matching entry.

mod inject;
mod replace;

pub use inject::{Formatter, Inject, InjectTarget};
pub use replace::{HeaderMatch, HeaderScope, Replace};

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::matcher::rule::{RawRule, Request, Rule, rule};
use crate::transform::source::{NamedSource, RawSource, SourceId, source};
use crate::value::S;

use inject::{RawInject, inject};
use replace::{RawReplace, replace};

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
        (Some(r), None, false) => replace(&format!("{id}.replace"), r, errs).map(Mode::Replace),
        (None, Some(inj), false) => inject(&format!("{id}.inject"), inj, errs).map(Mode::Inject),
        (None, None, true) => {
            let r = RawReplace {
                proxy_value: raw.proxy_value,
                match_headers: raw.match_headers,
                match_body: raw.match_body.unwrap_or(false),
                require: raw.require.unwrap_or(false),
                ..RawReplace::default()
            };
            replace(&id, r, errs).map(Mode::Replace)
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
        let bad_source = Config::parse("dns: {enabled: false}\ntransforms:\n  - name: secrets\n    config:\n      secrets:\n        - source: {type: 1password, secret_ref: x}\n          rules: [{host: a.test}]\n          replace: {proxy_value: X}\n").unwrap_err();
        assert!(
            bad_source.to_string().contains("1password_connect"),
            "{bad_source}"
        );
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
