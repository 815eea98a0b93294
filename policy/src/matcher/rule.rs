//! An allowlist-style rule (host or CIDR, optional methods and paths) as written, validated
//! and matched. Every transform scopes itself with these rules.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::matcher::cidr::Cidr;
use crate::matcher::host::{Host, HostPattern};
use crate::matcher::path::PathPattern;
use crate::value::{S, parse, pos};

/// What a rule matches the request host against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A host name pattern; never matches IP literals.
    Host(HostPattern),
    /// A CIDR; matches only IP-literal hosts (names are never resolved for this).
    Cidr(Cidr),
    /// Every host, names and addresses (a bare `*` in an `allowlist`'s `domains`, as in
    /// iron-proxy: "credentials only where declared, egress open"). The upstream address
    /// guard still applies.
    Any,
}

/// One compiled allow rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's path in the policy file, used in decisions and audit records (shared with
    /// every record it decides, which is why it is not a `String`).
    pub id: Arc<str>,
    /// Host or CIDR.
    pub target: Target,
    /// Upper-case methods; empty = all.
    pub methods: Vec<String>,
    /// Path patterns; empty = all.
    pub paths: Vec<PathPattern>,
    /// Ports; empty = all.
    pub ports: Vec<u16>,
}

/// What is being decided.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The destination host.
    pub host: &'a Host,
    /// The destination port.
    pub port: u16,
    /// Method and decoded path; `None` for a connection-level decision (CONNECT, SOCKS, SNI),
    /// which asks whether any rule could allow requests to this host and port.
    pub http: Option<(&'a str, &'a str)>,
}

impl Rule {
    /// Whether the rule matches; with `http: None` only host and port are compared.
    pub fn matches(&self, req: &Request<'_>) -> bool {
        let host_ok = match &self.target {
            Target::Host(p) => p.matches(req.host),
            Target::Cidr(c) => matches!(req.host, Host::Ip(ip) if c.contains(*ip)),
            Target::Any => true,
        };
        if !host_ok || !(self.ports.is_empty() || self.ports.contains(&req.port)) {
            return false;
        }
        let Some((method, path)) = req.http else {
            return true;
        };
        (self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path)))
    }
}

impl std::fmt::Display for Rule {
    /// `api.example.com:443 POST,GET /v1/*`: what the rule lets through.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Host(h) => write!(f, "{h}")?,
            Target::Cidr(c) => write!(f, "{c}")?,
            Target::Any => f.write_str("* (every host)")?,
        }
        if !self.ports.is_empty() {
            let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
            write!(f, ":{}", ports.join(","))?;
        }
        if !self.methods.is_empty() {
            write!(f, " {}", self.methods.join(","))?;
        }
        if !self.paths.is_empty() {
            let paths: Vec<String> = self.paths.iter().map(ToString::to_string).collect();
            write!(f, " {}", paths.join(" "))?;
        }
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub host: Option<S>,
    pub cidr: Option<S>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<S>,
    #[serde(default)]
    pub ports: Vec<u16>,
}

pub(crate) fn simple(id: String, target: Target) -> Rule {
    Rule {
        id: id.into(),
        target,
        methods: Vec::new(),
        paths: Vec::new(),
        ports: Vec::new(),
    }
}

/// One `{host | cidr, methods, paths, ports}` rule.
pub(crate) fn rule(id: String, r: &RawRule, errs: &mut Errors) -> Option<Rule> {
    let target = match (&r.host, &r.cidr) {
        (Some(h), None) => parse(h, &format!("{id}.host"), errs).map(Target::Host),
        (None, Some(c)) => parse(c, &format!("{id}.cidr"), errs).map(Target::Cidr),
        (Some(h), Some(_)) => {
            errs.hint(
                &id,
                pos(h),
                "a rule has both `host` and `cidr`",
                "split it into two rules",
            );
            None
        }
        (None, None) => {
            errs.hint(
                &id,
                (0, 0),
                "a rule needs `host` or `cidr`",
                "add `host: api.example.com` or `cidr: 10.0.0.0/8`",
            );
            None
        }
    };
    let paths = r
        .paths
        .iter()
        .enumerate()
        .filter_map(|(k, p)| parse(p, &format!("{id}.paths[{k}]"), errs))
        .collect();
    let methods = r
        .methods
        .iter()
        .filter(|m| m.as_str() != "*")
        .map(|m| m.to_ascii_uppercase())
        .collect();
    Some(Rule {
        id: id.into(),
        target: target?,
        methods,
        paths,
        ports: r.ports.clone(),
    })
}

pub(crate) fn rules(base: &str, raw: &[RawRule], errs: &mut Errors) -> Vec<Rule> {
    raw.iter()
        .enumerate()
        .filter_map(|(k, r)| rule(format!("{base}.rules[{k}]"), r, errs))
        .collect()
}

pub(crate) fn required_rules(base: &str, raw: &[RawRule], errs: &mut Errors) -> Vec<Rule> {
    if raw.is_empty() {
        errs.hint(
            format!("{base}.rules"),
            (0, 0),
            "is required",
            "say which requests get the credential, e.g. `rules: [{host: api.example.com}]`",
        );
    }
    rules(base, raw, errs)
}
