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
        if d.value.trim() == "*" {
            errs.warn(
                id.clone(),
                pos(d),
                "`*` allows every host: only the upstream address guard and the credential rules still limit where requests go",
            );
            rules.push(simple(id, Target::Any));
            continue;
        }
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

#[cfg(test)]
mod tests {
    use crate::Config;
    use crate::matcher::host::Host;
    use crate::matcher::rule::Request;

    /// iron-proxy's `domains: ["*"]` (the seed's base configuration): every host, with a
    /// warning; a `*` anywhere else in a name stays an error.
    #[test]
    fn a_bare_star_allows_every_host_loudly() {
        let c = Config::parse_placed(
            "transforms:\n  - name: allowlist\n    config:\n      domains: ['*']\n",
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 1);
        let w = c.warnings[0].to_string();
        assert!(
            w.starts_with("4:17: transforms[0].config.domains[0]: `*` allows every host"),
            "{w}"
        );
        for h in ["example.com", "a.b.c.d", "10.0.0.1", "[::1]"] {
            let host = Host::parse(h).unwrap();
            let req = Request {
                host: &host,
                port: 443,
                http: Some(("GET", "/")),
            };
            assert!(c.policy.evaluate(&req).allowed(), "{h}");
        }
        for bad in ["'api.*.com'", "'*x.com'", "'a.*'", "'**'"] {
            let text =
                format!("transforms:\n  - name: allowlist\n    config:\n      domains: [{bad}]\n");
            assert!(Config::parse_placed(&text).is_err(), "{bad}");
        }
        let secrets = "transforms:\n  - name: secrets\n    config:\n      secrets:\n        - source: {type: env, var: K}\n          rules: [{host: '*'}]\n          replace: {proxy_value: P}\n";
        assert!(
            Config::parse_placed(secrets).is_err(),
            "a secret for every host stays refused"
        );
    }
}
