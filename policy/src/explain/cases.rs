//! Policy test cases: requests kept beside a policy with the verdict each must get, run by
//! `check` and `test`.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::decision::Verdict;
use crate::explain::{Explanation, Sample};
use crate::policy::Policy;
use crate::value::S;

/// A file of policy test cases only.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCases {
    #[serde(default)]
    pub tests: Vec<RawCase>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCase {
    pub name: Option<String>,
    pub request: S,
    #[serde(default)]
    pub headers: Vec<S>,
    pub expect: S,
    pub reason: Option<String>,
    pub rule: Option<String>,
}

/// A policy test case: a request and the verdict it must get.
#[derive(Debug, Clone)]
pub struct Case {
    /// A name for reports (defaults to the request line).
    pub name: String,
    /// The request.
    pub sample: Sample,
    /// The verdict expected.
    pub expect: Verdict,
    /// The reason code expected, if given.
    pub reason: Option<String>,
    /// The deciding rule expected, if given.
    pub rule: Option<String>,
}

impl Case {
    /// Runs the case: the explanation, and what differed from the expectation (`None`: pass).
    pub fn run(&self, policy: &Policy) -> (Explanation, Option<String>) {
        let e = policy.explain(&self.sample);
        let word = |v: Verdict| if v == Verdict::Allow { "allow" } else { "deny" };
        let mut diffs = Vec::new();
        if e.verdict() != self.expect {
            diffs.push(format!(
                "expected {}, got {}",
                word(self.expect),
                word(e.verdict())
            ));
        }
        if let Some(r) = self.reason.as_deref().filter(|r| *r != e.reason().code()) {
            diffs.push(format!("expected reason {r}, got {}", e.reason()));
        }
        if let Some(r) = &self.rule
            && e.decision.rule.as_deref() != Some(r.as_str())
        {
            diffs.push(format!(
                "expected rule {r}, got {}",
                e.decision.rule.as_deref().unwrap_or("none")
            ));
        }
        let failed = (!diffs.is_empty()).then(|| diffs.join("; "));
        (e, failed)
    }
}

pub(crate) fn cases(
    raw: Vec<crate::explain::cases::RawCase>,
    errs: &mut crate::error::Errors,
) -> Vec<Case> {
    use crate::value::pos;
    let mut out = Vec::new();
    for (i, c) in raw.into_iter().enumerate() {
        let path = format!("tests[{i}]");
        let sample = Sample::parse(&c.request.value).and_then(|mut s| {
            for h in &c.headers {
                s.header(&h.value)?;
            }
            Ok(s)
        });
        let expect = match c.expect.value.as_str() {
            "allow" => Some(Verdict::Allow),
            "deny" => Some(Verdict::Deny),
            other => {
                errs.hint(
                    format!("{path}.expect"),
                    pos(&c.expect),
                    format!("unknown verdict `{other}`"),
                    "use `allow` or `deny`",
                );
                None
            }
        };
        match (sample, expect) {
            (Ok(sample), Some(expect)) => out.push(Case {
                name: c.name.unwrap_or_else(|| c.request.value.clone()),
                sample,
                expect,
                reason: c.reason,
                rule: c.rule,
            }),
            (Err(e), _) => errs.push(format!("{path}.request"), pos(&c.request), e),
            _ => {}
        }
    }
    out
}

/// Parses a file of test cases kept beside a policy (`tests: [...]`).
pub fn parse_cases(text: &str) -> Result<Vec<Case>, crate::error::ConfigErrors> {
    let raw: crate::explain::cases::RawCases =
        serde_saphyr::from_str(text).map_err(|e| crate::value::yaml_error(&e))?;
    let mut errs = crate::error::Errors::default();
    let list = cases(raw.tests, &mut errs);
    errs.finish(list)
}
