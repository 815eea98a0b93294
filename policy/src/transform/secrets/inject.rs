//! `inject`: the real value set into a header or query parameter (replacing any the client
//! sent), rendered through a formatter template.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::transform::template::Template;
use crate::value::{S, http_token, pos};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInject {
    pub header: Option<String>,
    pub query_param: Option<String>,
    pub formatter: Option<S>,
    #[serde(default)]
    pub require: bool,
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

pub(super) fn inject(path: &str, r: RawInject, errs: &mut Errors) -> Option<Inject> {
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
    Some(Inject {
        target,
        formatter,
        require: r.require,
    })
}
