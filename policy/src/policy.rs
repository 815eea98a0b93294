//! The compiled policy: every transform's validated entries, and the decision for a request
//! (every allowlist must allow; none at all denies everything).

use crate::decision::{Decision, Verdict};
use crate::matcher::rule::Request;
use crate::reason::Reason;
use crate::transform::allowlist::Allowlist;

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
        grant: crate::transform::oauth_token::Grant,
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
    pub sources: Vec<crate::transform::source::NamedSource>,
    /// Every `secrets` entry, in file order.
    pub secrets: Vec<crate::transform::secrets::SecretEntry>,
    /// Every `gcp_auth` transform.
    pub gcp_auth: Vec<crate::transform::gcp_auth::GcpAuth>,
    /// Every `oauth_token` entry, in file order (the first matching entry wins).
    pub oauth: Vec<crate::transform::oauth_token::OAuthToken>,
    /// Every `hmac_sign` transform.
    pub hmac: Vec<crate::transform::hmac_sign::HmacSign>,
    /// Every `aws_auth` transform.
    pub aws: Vec<crate::transform::aws_auth::AwsAuth>,
    /// Every `header_allowlist` transform: a header leaves only if each that applies allows it.
    pub header_allowlists: Vec<crate::transform::header_allowlist::HeaderAllowlist>,
    /// The `mcp` block: JSON-RPC to MCP servers judged per tool.
    pub mcp: Option<crate::section::mcp::Mcp>,
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
        if let Some(g) = self.gcp_auth.iter().find(|g| g.id_token.is_none()) {
            let metadata = matches!(name, Some("metadata.google.internal"))
                || req.host.to_string() == "169.254.169.254";
            if name == Some("oauth2.googleapis.com") && on("/token") {
                return Some(Stub::GoogleToken { id: g.id.clone() });
            }
            if metadata
                && path.is_none_or(|p| {
                    crate::transform::gcp_auth::gcp_metadata_token_path().matches(p)
                })
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
                    rule: Some(stub.id().into()),
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
    use crate::matcher::host::Host;

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
