//! The `secrets` transform, validated: where a secret comes from, which requests it applies
//! to, and how it reaches the wire (replace a placeholder, or inject a header/query value).
//! Values are never held here; the gateway fetches them.

use std::fmt;
use std::time::Duration;

use crate::allowlist::{Request, Rule};
use crate::template::Template;

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

/// Where a source sits in [`crate::Policy::sources`]; every transform refers to its
/// credentials by this index, so one source used twice is fetched and cached once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceId(pub usize);

/// A source and its display name (the variable, file or secret path; never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSource {
    /// Where the value comes from.
    pub source: Source,
    /// Display name for audit records and logs.
    pub name: String,
}

/// A secret source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An environment variable of the gateway process, read once.
    Env {
        /// Variable name.
        var: String,
        /// Extract this top-level string field of a JSON object.
        json_key: Option<String>,
    },
    /// A file, re-read when `ttl` expires and on reload.
    File {
        /// Path.
        path: String,
        /// How long a value is fresh; `None` = until reload.
        ttl: Option<Duration>,
        /// How long a failure is remembered before retrying.
        failure_ttl: Duration,
        /// Extract this top-level string field of a JSON object.
        json_key: Option<String>,
    },
    /// A HashiCorp Vault KV version 2 secret: `GET {address}/v1/{mount}/data/{path}`.
    Vault {
        /// Vault's base URL; `None` = the gateway's `VAULT_ADDR`.
        address: Option<String>,
        /// The KV v2 mount (`secret`).
        mount: String,
        /// The secret's path under the mount.
        path: String,
        /// Which field of the secret's data holds the value.
        field: String,
        /// Where the Vault token is read from.
        token: VaultToken,
        /// How long a value is fresh; `None` = until reload.
        ttl: Option<Duration>,
        /// How long a failure is remembered before retrying.
        failure_ttl: Duration,
        /// Extract this top-level string field of a JSON object.
        json_key: Option<String>,
    },
}

impl Source {
    /// (`ttl`, `failure_ttl`): how long a value and a failure are cached.
    pub fn ttls(&self) -> (Option<Duration>, Duration) {
        match self {
            Source::Env { .. } => (None, Duration::from_secs(60)),
            Source::File {
                ttl, failure_ttl, ..
            }
            | Source::Vault {
                ttl, failure_ttl, ..
            } => (*ttl, *failure_ttl),
        }
    }

    /// The `json_key` to extract, if any.
    pub fn json_key(&self) -> Option<&str> {
        match self {
            Source::Env { json_key, .. }
            | Source::File { json_key, .. }
            | Source::Vault { json_key, .. } => json_key.as_deref(),
        }
    }
}

/// Where the gateway reads its Vault token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultToken {
    /// An environment variable (default `VAULT_TOKEN`).
    Env(String),
    /// A file (e.g. a mounted Kubernetes secret), re-read with the secret.
    File(String),
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

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Env { var, .. } => write!(f, "env:{var}"),
            Source::File { path, .. } => write!(f, "file:{path}"),
            Source::Vault {
                mount, path, field, ..
            } => write!(f, "vault:{mount}/{path}#{field}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
