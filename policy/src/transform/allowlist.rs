//! `allowlist`: the hosts, CIDRs, methods and paths a request may reach (enforced, or
//! reported with `warn: true`).

use schemars::JsonSchema;
use serde::Deserialize;

use crate::decision::{Decision, Verdict};
use crate::error::Errors;
use crate::matcher::rule::{RawRule, Request, Rule, Target, rule, simple};
use crate::reason::Reason;
use crate::value::{S, parse, pos};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAllowlist {
    #[serde(default)]
    pub domains: Vec<S>,
    #[serde(default)]
    pub cidrs: Vec<S>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub warn: bool,
    pub mode: Option<S>,
}

/// One `allowlist` transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    /// Rules, in file order.
    pub rules: Vec<Rule>,
    /// Report mode: a miss is allowed and reported as `would_deny` (iron-proxy's `warn`).
    pub warn: bool,
}

impl Allowlist {
    pub(crate) fn evaluate(&self, req: &Request<'_>) -> Decision {
        if let Some(rule) = self.rules.iter().find(|r| r.matches(req)) {
            return Decision {
                verdict: Verdict::Allow,
                rule: Some(rule.id.clone()),
                reason: Reason::Allowed,
            };
        }
        let (verdict, reason) = if self.warn {
            (Verdict::Allow, Reason::WouldDeny)
        } else {
            (Verdict::Deny, Reason::NotAllowlisted)
        };
        Decision {
            verdict,
            rule: None,
            reason,
        }
    }
}

pub(crate) fn allowlist(i: usize, raw: RawAllowlist, errs: &mut Errors) -> Allowlist {
    let base = format!("transforms[{i}].config");
    let mut rules = Vec::new();
    for (j, d) in raw.domains.iter().enumerate() {
        let id = format!("{base}.domains[{j}]");
        if let Some(p) = parse(d, &id, errs) {
            rules.push(simple(id, Target::Host(p)));
        }
    }
    for (j, c) in raw.cidrs.iter().enumerate() {
        let id = format!("{base}.cidrs[{j}]");
        if let Some(c) = parse(c, &id, errs) {
            rules.push(simple(id, Target::Cidr(c)));
        }
    }
    for (j, r) in raw.rules.iter().enumerate() {
        if let Some(rule) = rule(format!("{base}.rules[{j}]"), r, errs) {
            rules.push(rule);
        }
    }
    let report = match &raw.mode {
        None => raw.warn,
        Some(m) if m.value == "report" => true,
        Some(m) if m.value == "enforce" => {
            if raw.warn {
                errs.push(
                    format!("{base}.warn"),
                    pos(m),
                    "`warn: true` contradicts `mode: enforce`",
                );
            }
            false
        }
        Some(m) => {
            errs.hint(
                format!("{base}.mode"),
                pos(m),
                format!("unknown mode `{}`", m.value),
                "use `enforce` (deny misses) or `report` (allow, audit `would_deny`)",
            );
            raw.warn
        }
    };
    Allowlist {
        rules,
        warn: report,
    }
}
