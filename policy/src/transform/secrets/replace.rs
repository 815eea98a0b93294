//! `replace`: a placeholder swapped for the real value in the places an entry declares (all or
//! listed headers, path, query, body), and the validation of those places.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::value::{S, http_token, pos};

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

pub(super) fn replace(path: &str, r: RawReplace, errs: &mut Errors) -> Option<Replace> {
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
    Some(Replace {
        proxy_value,
        headers,
        body: r.match_body,
        query: r.match_query,
        path: r.match_path,
        require: r.require,
    })
}
