//! `explain` and policy test cases: what the policy would do with one request, without any
//! secret value: the decision, the rule that made it, and each credential transform's effect
//! (secret names and locations only).

pub(crate) mod cases;

use std::fmt;

use base64::Engine;

use crate::decision::{Decision, Verdict};
use crate::matcher::host::Host;
use crate::matcher::rule::Request;
use crate::policy::{Policy, Stub};
use crate::reason::Reason;
use crate::transform::plan::Step;
use crate::transform::secrets::{InjectTarget, Mode, SecretEntry};

/// A request to explain: `POST https://api.example.com/v1/x?y=1` plus headers.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Upper-case method.
    pub method: String,
    /// `https` or `http`.
    pub https: bool,
    /// Destination host.
    pub host: Host,
    /// Destination port.
    pub port: u16,
    /// Path as sent (percent-encoded).
    pub path: String,
    /// Query as sent, without `?`.
    pub query: Option<String>,
    /// Headers as sent.
    pub headers: Vec<(String, String)>,
}

impl Sample {
    /// Parses `METHOD URL`; headers are added with [`Sample::header`].
    pub fn parse(line: &str) -> Result<Sample, String> {
        let (method, url) = line
            .trim()
            .split_once(char::is_whitespace)
            .ok_or("write the request as `METHOD URL`, e.g. `GET https://api.example.com/v1`")?;
        let (https, rest) = if let Some(r) = url.trim().strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.trim().strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("`{url}` is not an http:// or https:// URL"));
        };
        let cut = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(cut);
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse() {
                Ok(p) => (h, p),
                Err(_) => (authority, if https { 443 } else { 80 }),
            },
            _ => (authority, if https { 443 } else { 80 }),
        };
        let host = Host::parse(host).map_err(|e| format!("`{host}`: {e}"))?;
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (target, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        Ok(Sample {
            method: method.to_ascii_uppercase(),
            https,
            host,
            port,
            path: path.to_string(),
            query,
            headers: Vec::new(),
        })
    }

    /// Adds a `Name: value` header.
    pub fn header(&mut self, line: &str) -> Result<(), String> {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("`{line}` is not a header: write `Name: value`"))?;
        self.headers
            .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        Ok(())
    }
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{} {scheme}://{}", self.method, self.host)?;
        if self.port != if self.https { 443 } else { 80 } {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.path)?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

/// One transform's effect on the sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    /// `secrets`, `gcp_auth`, `oauth_token`, `hmac_sign` or `aws_auth`.
    pub transform: &'static str,
    /// The entry's path in the policy file.
    pub id: String,
    /// What happens, in words; names and locations, never values.
    pub what: String,
}

/// The outcome for a sample.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The allowlist decision (or `stubbed`).
    pub decision: Decision,
    /// The stub that answers it, if any.
    pub stub: Option<Stub>,
    /// A refusal after the allowlist: (status, reason code).
    pub refusal: Option<(u16, Reason)>,
    /// Effects of the credential transforms, in the order they apply.
    pub effects: Vec<Effect>,
}

impl Explanation {
    /// `allow` or `deny` as the client would see it.
    pub fn verdict(&self) -> Verdict {
        if self.refusal.is_some() {
            Verdict::Deny
        } else {
            self.decision.verdict
        }
    }

    /// The reason code the audit record would carry.
    pub fn reason(&self) -> Reason {
        self.refusal.map_or(self.decision.reason, |(_, r)| r)
    }
}

impl Policy {
    /// What this policy does with `s`, as the gateway would (same matching, same order).
    pub fn explain(&self, s: &Sample) -> Explanation {
        let mut out = Explanation {
            decision: Decision {
                verdict: Verdict::Deny,
                rule: None,
                reason: Reason::NotAllowlisted,
            },
            stub: None,
            refusal: None,
            effects: Vec::new(),
        };
        let Ok(path) = crate::transform::plan::decode_path(&s.path) else {
            out.refusal = Some((400, Reason::PathDotSegments));
            return out;
        };
        let req = Request {
            host: &s.host,
            port: s.port,
            http: Some((&s.method, &path)),
        };
        let (decision, stub) = self.decide(&req);
        out.decision = decision;
        out.stub = stub;
        if !out.decision.allowed() || out.stub.is_some() {
            return out;
        }
        for step in self.plan(&req).steps {
            match step {
                Step::Secrets(entries) => {
                    for i in entries {
                        let entry = &self.secrets[i];
                        let (what, refused) = secret_effect(entry, s);
                        out.effects.push(Effect {
                            transform: "secrets",
                            id: entry.id.clone(),
                            what,
                        });
                        if refused {
                            out.refusal = Some((403, Reason::SecretPlaceholderMissing));
                            return out;
                        }
                    }
                }
                Step::Mcp(i) => out.effects.push(self.mcp_effect(i)),
                Step::GcpAuth(i) => out.effects.push(self.gcp_effect(i)),
                Step::OAuthToken(i) => out.effects.push(self.oauth_effect(i)),
                Step::HmacSign(i) => out.effects.push(self.hmac_effect(i)),
                Step::AwsAuth(i) => out.effects.push(self.aws_effect(i)),
            }
        }
        out
    }

    fn gcp_effect(&self, i: usize) -> Effect {
        let g = &self.gcp_auth[i];
        Effect {
            transform: g.name(),
            id: g.id.clone(),
            what: match &g.id_token {
                None => format!(
                    "access token minted from the service-account key `{}` (scopes {}) set as header:authorization",
                    self.sources[g.keyfile.0].name,
                    g.scopes.join(" ")
                ),
                Some(t) => format!(
                    "ID token for audience `{}` minted from the service-account key `{}` set as header:{}",
                    t.audience, self.sources[g.keyfile.0].name, t.header
                ),
            },
        }
    }

    fn oauth_effect(&self, i: usize) -> Effect {
        let o = &self.oauth[i];
        Effect {
            transform: "oauth_token",
            id: o.id.clone(),
            what: format!(
                "access token ({} grant at {}) set as header:{}{}",
                o.grant.as_str(),
                o.token_endpoint,
                o.header.to_ascii_lowercase(),
                if o.require {
                    "; no token → 502"
                } else {
                    "; no token → sent without"
                }
            ),
        }
    }

    fn mcp_effect(&self, i: usize) -> Effect {
        let s = self.mcp.as_ref().map(|m| &m.servers[i]);
        let tools: Vec<&str> = s.map_or(vec![], |s| {
            s.tools.iter().map(|t| t.name.as_str()).collect()
        });
        Effect {
            transform: "mcp",
            id: format!("mcp.servers[{i}]"),
            what: format!(
                "JSON-RPC judged as MCP server `{}`: tools/call allowed only for {}; anything else is answered with a JSON-RPC error (HTTP 200) and not sent",
                s.map_or("", |s| s.name.as_str()),
                if tools.is_empty() {
                    "no tool".to_string()
                } else {
                    tools.join(", ")
                }
            ),
        }
    }

    fn aws_effect(&self, i: usize) -> Effect {
        let a = &self.aws[i];
        Effect {
            transform: "aws_auth",
            id: a.id.clone(),
            what: format!(
                "SigV4 signature re-made with the key `{}` for the region and service the client signed for; sets authorization, x-amz-date, x-amz-content-sha256{}",
                self.sources[a.access_key_id.0].name,
                if a.session_token.is_some() {
                    ", x-amz-security-token"
                } else {
                    ""
                }
            ),
        }
    }

    fn hmac_effect(&self, i: usize) -> Effect {
        let h = &self.hmac[i];
        let names: Vec<&str> = h.headers.iter().map(|(n, _)| n.as_str()).collect();
        Effect {
            transform: "hmac_sign",
            id: h.id.clone(),
            what: format!(
                "request signed (hmac-{}); sets {}",
                h.algorithm.as_str(),
                names.join(", ")
            ),
        }
    }
}

/// What a `secrets` entry does to the sample, and whether it refuses it (a required
/// placeholder that is nowhere it may be).
fn secret_effect(entry: &SecretEntry, s: &Sample) -> (String, bool) {
    let r = match &entry.mode {
        Mode::Replace(r) => r,
        Mode::Inject(inj) => {
            let at = match &inj.target {
                InjectTarget::Header(h) => format!("header:{}", h.to_ascii_lowercase()),
                InjectTarget::Query(q) => format!("query:{q}"),
            };
            let what = format!(
                "`{}`: injected into {at}, replacing any client value",
                entry.name
            );
            return (what, false);
        }
    };
    let ph = r.proxy_value.as_str();
    let mut found: Vec<String> = s
        .headers
        .iter()
        .filter(|(n, v)| r.headers.includes(n) && carries(n, v, ph))
        .map(|(n, _)| format!("header:{n}"))
        .collect();
    if r.path && s.path.contains(ph) {
        found.push("path".into());
    }
    if r.query && s.query.as_deref().is_some_and(|q| q.contains(ph)) {
        found.push("query".into());
    }
    let body = if r.body {
        " (and in the body, if it is there)"
    } else {
        ""
    };
    let name = &entry.name;
    if found.is_empty() && !r.body && r.require {
        let what = format!("`{name}`: required placeholder `{ph}` is missing: refused");
        (what, true)
    } else if found.is_empty() {
        let what = format!(
            "`{name}`: placeholder `{ph}` not found in the declared places{body}; nothing swapped"
        );
        (what, false)
    } else {
        let what = format!(
            "`{name}`: placeholder `{ph}` replaced in {}{body}",
            found.join(", ")
        );
        (what, false)
    }
}

/// Whether a header value carries the placeholder, also inside `Basic` credentials.
fn carries(name: &str, value: &str, ph: &str) -> bool {
    if value.contains(ph) {
        return true;
    }
    name == "authorization"
        && value
            .strip_prefix("Basic ")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .is_some_and(|d| String::from_utf8_lossy(&d).contains(ph))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    const POLICY: &str = "dns: {enabled: false}
transforms:
  - name: allowlist
    config:
      rules: [{host: api.openai.com, paths: ['/v1/*']}, {host: exchange.test}]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: OPENAI_API_KEY}
          rules: [{host: api.openai.com}]
          replace: {proxy_value: OPENAI_PH, match_headers: [Authorization], require: true}
  - name: hmac_sign
    config:
      signature: {message: '{{.Timestamp}}{{.Body}}'}
      credentials: {secret: {type: env, var: K}}
      headers: [{name: X-Sig, value: '{{.Signature}}'}]
      rules: [{host: exchange.test}]
";

    fn explain(line: &str, headers: &[&str]) -> Explanation {
        let p = Config::parse(POLICY).unwrap().policy;
        let mut s = Sample::parse(line).unwrap();
        for h in headers {
            s.header(h).unwrap();
        }
        p.explain(&s)
    }

    #[test]
    fn explains_decisions_and_effects_without_values() {
        let e = explain(
            "post https://api.openai.com/v1/chat/completions",
            &["Authorization: Bearer OPENAI_PH"],
        );
        assert_eq!(e.verdict(), Verdict::Allow);
        assert_eq!(
            e.decision.rule.as_deref(),
            Some("transforms[0].config.rules[0]")
        );
        assert_eq!(e.effects.len(), 1);
        assert!(
            e.effects[0]
                .what
                .contains("replaced in header:authorization"),
            "{:?}",
            e.effects
        );
        let missing = explain("POST https://api.openai.com/v1/chat", &[]);
        assert_eq!(missing.verdict(), Verdict::Deny);
        assert_eq!(missing.reason(), Reason::SecretPlaceholderMissing);
        let denied = explain("GET https://api.openai.com/admin", &[]);
        assert_eq!(denied.reason(), Reason::NotAllowlisted);
        let signed = explain("POST https://exchange.test:8443/orders", &[]);
        assert_eq!(signed.effects[0].transform, "hmac_sign");
        assert!(
            explain("GET https://api.openai.com/v1/../admin", &[])
                .refusal
                .is_some()
        );
        assert!(Sample::parse("GET ftp://x").is_err());
        assert!(Sample::parse("https://x").is_err());
    }
}
