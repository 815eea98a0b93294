//! The credential transforms that apply to one allowed request, as plain data: which run, in
//! which order, and whether the body must be read whole first. The gateway executes a plan;
//! `explain` prints one. Both therefore agree on what happens, by construction.

use crate::matcher::rule::Request;
use crate::policy::Policy;

/// One credential transform to run, naming its entries by index into the [`Policy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `mcp`: the JSON-RPC body judged by this MCP server's tool list (first, on the body as
    /// the client sent it).
    Mcp(usize),
    /// `secrets`: every matching entry, in file order (replace in the declared places, or
    /// inject). One step, so that its audit annotation covers every entry.
    Secrets(Vec<usize>),
    /// `gcp_auth`: a minted access token as `Authorization: Bearer`.
    GcpAuth(usize),
    /// `oauth_token`: the first matching entry's token in its header.
    OAuthToken(usize),
    /// `hmac_sign`: the request signed as it goes out (so it runs last).
    HmacSign(usize),
    /// `aws_auth`: the client's SigV4 signature replaced by one with the real keys (runs
    /// last, with the signers).
    AwsAuth(usize),
}

impl Step {
    /// The transform's name, as in the policy file and the audit record.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Mcp(_) => "mcp",
            Step::Secrets(_) => "secrets",
            Step::GcpAuth(_) => "gcp_auth",
            Step::OAuthToken(_) => "oauth_token",
            Step::HmacSign(_) => "hmac_sign",
            Step::AwsAuth(_) => "aws_auth",
        }
    }
}

/// How the request body must be read before the steps that need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRead {
    /// A body of unknown length (chunked) may be read: false when an `hmac_sign` or
    /// `aws_auth` step refuses to sign one.
    pub allow_chunked: bool,
}

/// What the credential transforms do to one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The steps, in the order they run: secrets, gcp_auth, oauth_token, hmac_sign,
    /// aws_auth.
    pub steps: Vec<Step>,
    /// Set when a step reads the body (`replace` with `body: true`, `hmac_sign`).
    pub body: Option<BodyRead>,
}

impl Plan {
    /// Whether nothing is to be done.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

impl Policy {
    /// The plan for an allowed request (`req.http` set; a tunnel has no transforms).
    pub fn plan(&self, req: &Request<'_>) -> Plan {
        let mut plan = Plan::default();
        let mcp = self
            .mcp
            .as_ref()
            .filter(|_| req.http.is_some_and(|(m, _)| m == "POST"))
            .and_then(|m| m.server_for(req));
        if let Some(i) = mcp {
            plan.steps.push(Step::Mcp(i));
        }
        let secrets: Vec<usize> = (0..self.secrets.len())
            .filter(|&i| self.secrets[i].applies(req))
            .collect();
        let secrets_read_body = secrets.iter().any(|&i| self.secrets[i].reads_body());
        if !secrets.is_empty() {
            plan.steps.push(Step::Secrets(secrets));
        }
        plan.steps.extend(
            (0..self.gcp_auth.len())
                .filter(|&i| self.gcp_auth[i].applies(req))
                .map(Step::GcpAuth),
        );
        if let Some(i) = (0..self.oauth.len()).find(|&i| self.oauth[i].applies(req)) {
            plan.steps.push(Step::OAuthToken(i));
        }
        let signing: Vec<usize> = (0..self.hmac.len())
            .filter(|&i| self.hmac[i].applies(req))
            .collect();
        let aws: Vec<usize> = (0..self.aws.len())
            .filter(|&i| self.aws[i].applies(req))
            .take(1)
            .collect();
        let aws_read_body = aws.iter().any(|&i| self.aws[i].reads_body());
        if mcp.is_some() || secrets_read_body || aws_read_body || !signing.is_empty() {
            let hmac_chunked = signing.iter().all(|&i| self.hmac[i].allow_chunked_body);
            let aws_chunked = aws
                .iter()
                .all(|&i| !self.aws[i].reads_body() || self.aws[i].allow_chunked_body);
            plan.body = Some(BodyRead {
                allow_chunked: hmac_chunked && aws_chunked,
            });
        }
        plan.steps.extend(signing.into_iter().map(Step::HmacSign));
        plan.steps.extend(aws.into_iter().map(Step::AwsAuth));
        plan
    }
}

/// Why a request path is refused before the policy judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DotSegments;

/// The percent-decoded path the policy judges. `.` and `..` segments are refused, so that
/// `/public/../admin` cannot match a rule for `/public/*` and reach `/admin` upstream. The one
/// owner of path normalisation: the gateway and `explain` both call it.
pub fn decode_path(raw: &str) -> Result<String, DotSegments> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned();
    if decoded.split('/').any(|s| s == "." || s == "..") {
        return Err(DotSegments);
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Host};

    const POLICY: &str = "dns: {enabled: false}
transforms:
  - name: allowlist
    config: {domains: ['*.test']}
  - name: hmac_sign
    config:
      signature: {message: '{{.Body}}'}
      credentials: {secret: {type: env, var: K}}
      headers: [{name: X-Sig, value: '{{.Signature}}'}]
      rules: [{host: sign.test}]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: A}
          rules: [{host: '*.test'}]
          replace: {proxy_value: A_PH, match_headers: [Authorization]}
        - source: {type: env, var: B}
          rules: [{host: body.test}]
          replace: {proxy_value: B_PH, match_body: true}
  - name: oauth_token
    config:
      tokens:
        - {grant: client_credentials, token_endpoint: 'https://auth.test/token',
           client_id: {type: env, var: C}, client_secret: {type: env, var: S}, rules: [{host: '*.test'}]}
        - {grant: client_credentials, token_endpoint: 'https://auth2.test/token',
           client_id: {type: env, var: C}, client_secret: {type: env, var: S}, rules: [{host: '*.test'}]}
";

    fn plan(host: &str) -> Plan {
        let p = Config::parse(POLICY).unwrap().policy;
        let host = Host::parse(host).unwrap();
        p.plan(&Request {
            host: &host,
            port: 443,
            http: Some(("POST", "/")),
        })
    }

    #[test]
    fn steps_run_secrets_then_tokens_then_signing_whatever_the_file_order() {
        let p = plan("sign.test");
        assert_eq!(
            p.steps,
            vec![
                Step::Secrets(vec![0]),
                Step::OAuthToken(0),
                Step::HmacSign(0)
            ]
        );
        assert_eq!(
            p.body,
            Some(BodyRead {
                allow_chunked: false
            })
        );
    }

    #[test]
    fn only_a_body_swap_or_a_signature_reads_the_body() {
        assert_eq!(plan("other.test").body, None);
        let p = plan("body.test");
        assert_eq!(p.steps[0], Step::Secrets(vec![0, 1]));
        assert_eq!(
            p.body,
            Some(BodyRead {
                allow_chunked: true
            })
        );
    }

    #[test]
    fn dot_segments_are_refused_encoded_or_not() {
        assert_eq!(decode_path("/a/%2e%2E/b"), Err(DotSegments));
        assert_eq!(decode_path("/a/./b"), Err(DotSegments));
        assert_eq!(decode_path("/a/..b/%41").as_deref(), Ok("/a/..b/A"));
    }
}
