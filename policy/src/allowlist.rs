//! The allowlist: compiled rules and their evaluation. Default deny.

use crate::cidr::Cidr;
use crate::decision::{Decision, Reason, Verdict};
use crate::host::{Host, HostPattern};
use crate::path::PathPattern;

/// What a rule matches the request host against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A host name pattern; never matches IP literals.
    Host(HostPattern),
    /// A CIDR; matches only IP-literal hosts (names are never resolved for this).
    Cidr(Cidr),
}

/// One compiled allow rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's path in the policy file, used in decisions and audit records.
    pub id: String,
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

/// One `allowlist` transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    /// Rules, in file order.
    pub rules: Vec<Rule>,
    /// Report mode: a miss is allowed and reported as `would_deny` (iron-proxy's `warn`).
    pub warn: bool,
}

impl Allowlist {
    fn evaluate(&self, req: &Request<'_>) -> Decision {
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

/// A token endpoint answered by the gateway with a stub token, so that unmodified client
/// libraries inside the sandbox finish their own token dance with dummy credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stub {
    /// Google's OAuth token endpoint or the metadata server's token path (`gcp_auth`).
    GoogleToken {
        /// The transform that asks for it.
        id: String,
    },
    /// An `oauth_token` entry's token endpoint.
    OAuth {
        /// The entry.
        id: String,
        /// Its grant.
        grant: crate::tokens::Grant,
    },
}

impl Stub {
    /// The transform or entry that made the stub.
    pub fn id(&self) -> &str {
        match self {
            Stub::GoogleToken { id } | Stub::OAuth { id, .. } => id,
        }
    }
}

/// The compiled, immutable policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Every allowlist; a request must pass all of them. None at all denies everything.
    pub allowlists: Vec<Allowlist>,
    /// Every credential source the transforms use, each once; transforms refer to them by
    /// [`crate::SourceId`].
    pub sources: Vec<crate::secrets::NamedSource>,
    /// Every `secrets` entry, in file order.
    pub secrets: Vec<crate::secrets::SecretEntry>,
    /// Every `gcp_auth` transform.
    pub gcp_auth: Vec<crate::tokens::GcpAuth>,
    /// Every `oauth_token` entry, in file order (the first matching entry wins).
    pub oauth: Vec<crate::tokens::OAuthToken>,
    /// Every `hmac_sign` transform.
    pub hmac: Vec<crate::tokens::HmacSign>,
}

impl Policy {
    /// Decides a request. Default deny: with no allowlist nothing is allowed.
    pub fn evaluate(&self, req: &Request<'_>) -> Decision {
        let mut outcome = Decision {
            verdict: Verdict::Deny,
            rule: None,
            reason: Reason::NoAllowlist,
        };
        for (i, list) in self.allowlists.iter().enumerate() {
            let d = list.evaluate(req);
            if !d.allowed() {
                return d;
            }
            // Keep the first real match; a report-mode miss is remembered over an earlier match.
            if i == 0 || d.reason == Reason::WouldDeny {
                outcome = d;
            }
        }
        outcome
    }

    /// The token endpoint the gateway answers itself for this request, if any: Google's
    /// token and metadata endpoints when a `gcp_auth` is configured, each `oauth_token`
    /// endpoint. With `http: None` (a connection), any request to the host might be stubbed.
    pub fn stub(&self, req: &Request<'_>) -> Option<Stub> {
        let name = req.host.name().map(|n| n.as_str());
        let path = req.http.map(|(_, p)| p);
        let on = |want: &str| path.is_none_or(|p| p == want);
        if let Some(g) = self.gcp_auth.first() {
            let metadata = matches!(name, Some("metadata.google.internal"))
                || req.host.to_string() == "169.254.169.254";
            if name == Some("oauth2.googleapis.com") && on("/token") {
                return Some(Stub::GoogleToken { id: g.id.clone() });
            }
            if metadata && path.is_none_or(|p| crate::tokens::gcp_metadata_token_path().matches(p))
            {
                return Some(Stub::GoogleToken { id: g.id.clone() });
            }
        }
        self.oauth
            .iter()
            .find(|o| name == Some(o.endpoint.0.as_str()) && on(&o.endpoint.1))
            .map(|o| Stub::OAuth {
                id: o.id.clone(),
                grant: o.grant,
            })
    }

    /// Decides a request, answering token endpoints first: the decision for a stubbed
    /// endpoint is allow with reason `stubbed`.
    pub fn decide(&self, req: &Request<'_>) -> (Decision, Option<Stub>) {
        // A request to a token endpoint is stubbed even where the allowlist would let it
        // out: the dummy credential must never reach the real endpoint.
        let d = self.evaluate(req);
        if d.allowed() && req.http.is_none() {
            return (d, None);
        }
        match self.stub(req) {
            Some(stub) => (
                Decision {
                    verdict: Verdict::Allow,
                    rule: Some(stub.id().to_string()),
                    reason: Reason::Stubbed,
                },
                Some(stub),
            ),
            None => (d, None),
        }
    }

    /// Number of rules across all allowlists.
    pub fn rule_count(&self) -> usize {
        self.allowlists.iter().map(|a| a.rules.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn policy(yaml: &str) -> Policy {
        Config::parse(yaml).unwrap().policy
    }

    fn eval(p: &Policy, host: &str, port: u16, http: Option<(&str, &str)>) -> Decision {
        let host = Host::parse(host).unwrap();
        p.evaluate(&Request {
            host: &host,
            port,
            http,
        })
    }

    const BASE: &str = "dns: {enabled: false}\n";

    /// Invariant 1 (default deny): no allowlist means nothing is allowed.
    #[test]
    fn no_allowlist_denies_everything() {
        let p = policy(BASE);
        let d = eval(&p, "example.com", 443, Some(("GET", "/")));
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.reason, Reason::NoAllowlist);
        let empty = policy(&format!(
            "{BASE}transforms:\n  - name: allowlist\n    config: {{}}\n"
        ));
        assert!(!eval(&empty, "example.com", 443, None).allowed());
    }

    #[test]
    fn rules_match_on_host_port_method_and_path() {
        let p = policy(&format!(
            "{BASE}transforms:
  - name: allowlist
    config:
      domains: ['*.github.com']
      cidrs: ['10.1.0.0/16']
      rules:
        - host: api.openai.com
          methods: [post]
          paths: ['/v1/*']
          ports: [443]
"
        ));
        assert!(eval(&p, "API.GITHUB.COM.", 443, Some(("GET", "/x"))).allowed());
        assert!(eval(&p, "10.1.2.3", 80, None).allowed());
        assert!(!eval(&p, "10.2.0.1", 80, None).allowed());
        let ok = eval(&p, "api.openai.com", 443, Some(("POST", "/v1/chat")));
        assert_eq!(ok.rule.as_deref(), Some("transforms[0].config.rules[0]"));
        assert!(!eval(&p, "api.openai.com", 443, Some(("GET", "/v1/chat"))).allowed());
        assert!(!eval(&p, "api.openai.com", 443, Some(("POST", "/v2"))).allowed());
        assert!(!eval(&p, "api.openai.com", 8443, None).allowed());
        // Connection-level: the host and port could be allowed by some rule.
        assert!(eval(&p, "api.openai.com", 443, None).allowed());
        let denied = eval(&p, "evil.com", 443, None);
        assert_eq!(
            (denied.verdict, denied.reason),
            (Verdict::Deny, Reason::NotAllowlisted)
        );
    }

    #[test]
    fn warn_mode_reports_instead_of_denying() {
        let p = policy(&format!(
            "{BASE}transforms:\n  - name: allowlist\n    config: {{domains: [a.com], warn: true}}\n"
        ));
        let d = eval(&p, "b.com", 443, None);
        assert_eq!((d.verdict, d.reason), (Verdict::Allow, Reason::WouldDeny));
    }

    #[test]
    fn every_allowlist_must_pass() {
        let p = policy(&format!(
            "{BASE}transforms:
  - name: allowlist
    config: {{domains: ['*.example.com']}}
  - name: allowlist
    config: {{domains: [api.example.com]}}
"
        ));
        assert!(eval(&p, "api.example.com", 443, None).allowed());
        assert!(!eval(&p, "www.example.com", 443, None).allowed());
    }
}
