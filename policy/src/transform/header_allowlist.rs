//! `header_allowlist` (iron-proxy's): request headers not on the list are stripped before the
//! request leaves, so a sandbox cannot carry data out in headers of its own making. Entries
//! are literal names or `/regex/` (case-insensitive, matched against the lower-case name);
//! `rules` limit the requests it applies to (none: every request).
//!
//! Ours on top: it runs after every credential transform, wherever it is written, and never
//! strips a header a credential transform set or changed; the framing and hop-by-hop headers
//! the gateway manages itself (`host`, `content-length`, `transfer-encoding`, `connection`,
//! `upgrade`, `te`, `trailer`, `keep-alive`, `proxy-connection`) are never stripped.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::matcher::rule::{RawRule, Request, Rule, rule};
use crate::value::{S, http_token, pos};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderAllowlist {
    pub headers: Vec<S>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

/// Headers the gateway manages itself: never stripped.
pub const MANAGED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

/// One `header_allowlist` transform.
#[derive(Debug, Clone)]
pub struct HeaderAllowlist {
    /// Its path in the policy file (`transforms[3]`).
    pub id: String,
    /// Literal names, lower case.
    pub names: Vec<String>,
    /// `/regex/` entries, case-insensitive.
    pub patterns: Vec<regex::Regex>,
    /// The requests it applies to; empty: every request.
    pub rules: Vec<Rule>,
}

impl PartialEq for HeaderAllowlist {
    fn eq(&self, other: &Self) -> bool {
        let src = |p: &[regex::Regex]| p.iter().map(|r| r.as_str().to_string()).collect::<Vec<_>>();
        self.id == other.id
            && self.names == other.names
            && src(&self.patterns) == src(&other.patterns)
            && self.rules == other.rules
    }
}

impl Eq for HeaderAllowlist {}

impl HeaderAllowlist {
    /// Whether it applies to this request.
    pub fn applies(&self, req: &Request<'_>) -> bool {
        self.rules.is_empty() || self.rules.iter().any(|r| r.matches(req))
    }

    /// Whether a (lower-case) header name may pass.
    pub fn allows(&self, name: &str) -> bool {
        MANAGED_HEADERS.contains(&name)
            || self.names.iter().any(|n| n == name)
            || self.patterns.iter().any(|p| p.is_match(name))
    }
}

pub(crate) fn header_allowlist(
    i: usize,
    raw: RawHeaderAllowlist,
    errs: &mut Errors,
) -> HeaderAllowlist {
    let base = format!("transforms[{i}].config");
    let mut names = Vec::new();
    let mut patterns = Vec::new();
    if raw.headers.is_empty() {
        errs.push(
            format!("{base}.headers"),
            (0, 0),
            "is empty: every header would be stripped (list the headers to keep)",
        );
    }
    for (j, h) in raw.headers.iter().enumerate() {
        let path = format!("{base}.headers[{j}]");
        let v = h.value.trim();
        match v.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
            Some(re) if !re.is_empty() => {
                match regex::RegexBuilder::new(re)
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                {
                    Ok(r) => patterns.push(r),
                    Err(e) => errs.push(path, pos(h), format!("not a valid regex: {e}")),
                }
            }
            _ if http_token(v) => names.push(v.to_ascii_lowercase()),
            _ => errs.push(
                path,
                pos(h),
                format!("{v:?} is neither a header name nor a /regex/"),
            ),
        }
    }
    let rules = raw
        .rules
        .iter()
        .enumerate()
        .filter_map(|(j, r)| rule(format!("{base}.rules[{j}]"), r, errs))
        .collect();
    HeaderAllowlist {
        id: format!("transforms[{i}]"),
        names,
        patterns,
        rules,
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;
    use crate::matcher::host::Host;
    use crate::matcher::rule::Request;

    #[test]
    fn names_and_regexes_case_insensitively_and_managed_headers_always() {
        let c = Config::parse_placed(
            "transforms:\n  - name: header_allowlist\n    config:\n      headers: [Content-Type, Authorization, '/^x-codex-.*$/', '/^x-[a-z0-9-]*(api-key|token)$/']\n",
        )
        .unwrap();
        let h = &c.policy.header_allowlists[0];
        for ok in [
            "content-type",
            "authorization",
            "x-codex-turn",
            "x-goog-api-key",
            "x-my-token",
            "host",
            "content-length",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for stripped in ["x-exfil", "cookie", "x-codex", "x-token-extra"] {
            assert!(!h.allows(stripped), "{stripped}");
        }
        let host = Host::parse("example.com").unwrap();
        assert!(h.applies(&Request {
            host: &host,
            port: 443,
            http: Some(("GET", "/"))
        }));
    }

    #[test]
    fn bad_entries_are_errors_with_their_place() {
        let e = Config::parse_placed(
            "transforms:\n  - name: header_allowlist\n    config:\n      headers: ['/([/', 'bad header', ok]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("headers[0]: not a valid regex"), "{e}");
        assert!(e.contains("headers[1]: \"bad header\" is neither"), "{e}");
        let e = Config::parse_placed(
            "transforms:\n  - name: header_allowlist\n    config:\n      headers: []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("is empty"), "{e}");
    }
}
