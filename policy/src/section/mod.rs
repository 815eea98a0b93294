//! The policy file's top level: its sections (`dns`, `proxy`, `tls`, `management`, `metrics`,
//! `log`, `audit`) and transforms, parsed and validated into a [`Config`] with every error at
//! once.

pub(crate) mod audit;
pub(crate) mod dns;
pub(crate) mod management;
pub(crate) mod mcp;
pub(crate) mod proxy;
pub(crate) mod tls;
pub(crate) mod upstream_proxy;

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::{ConfigErrors, Errors};
use crate::explain::cases::RawCase;
use crate::policy::Policy;
use crate::section::audit::RawAudit;
use crate::section::dns::{DnsConfig, RawDns, dns};
use crate::section::management::{ManagementConfig, RawLog, RawManagement, RawMetrics, log_level};
use crate::section::proxy::{ProxyConfig, RawProxy, RawUpstream, UpstreamConfig, proxy, upstream};
use crate::section::tls::{RawTls, TlsConfig, tls};
use crate::transform::RawTransform;
use crate::transform::allowlist::allowlist;
use crate::transform::gcp_auth::gcp_auth;
use crate::transform::hmac_sign::hmac;
use crate::transform::oauth_token::oauth;
use crate::transform::secrets::secrets;
use crate::value::{listen, yaml_error};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub transforms: Vec<RawTransform>,
    #[serde(default)]
    pub management: RawManagement,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub tests: Vec<RawCase>,
    #[serde(default)]
    pub mcp: crate::section::mcp::RawMcp,
}

/// The whole validated file.
#[derive(Debug, Clone)]
pub struct Config {
    /// DNS listener.
    pub dns: DnsConfig,
    /// Proxy listeners, limits and timeouts.
    pub proxy: ProxyConfig,
    /// Certificate authority and leaf certificates.
    pub tls: TlsConfig,
    /// Upstream name pins and extra trust.
    pub upstream: UpstreamConfig,
    /// Management API.
    pub management: ManagementConfig,
    /// Unauthenticated metrics and health listener (iron-proxy's `metrics.listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// Log level: error, warn, info or debug.
    pub log_level: String,
    /// Audit output and sandbox labels.
    pub audit: crate::section::audit::AuditConfig,
    /// The compiled request policy.
    pub policy: Policy,
    /// Policy test cases written in the file (`tests:`); `centaur-gateway test` runs them.
    pub tests: Vec<crate::explain::cases::Case>,
    /// Valid but risky choices (`*` in an allowlist), for `check` and the start-up log.
    pub warnings: Vec<crate::error::ConfigError>,
}

impl Config {
    /// Parses and validates a policy file, returning every problem found.
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse_as(text, false)
    }

    /// As [`Config::parse`], for a policy whose gateway a sandbox runner places (`centaur
    /// sandbox run`): the runner chooses the listeners and `dns.proxy_ip`, so the file may
    /// leave `dns.proxy_ip` out.
    pub fn parse_placed(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse_as(text, true)
    }

    fn parse_as(text: &str, placed: bool) -> Result<Config, ConfigErrors> {
        match serde_saphyr::from_str::<RawConfig>(text) {
            Ok(raw) => Config::from_raw(raw, placed),
            Err(e) => Err(structural(text, &e, placed)),
        }
    }

    fn from_raw(raw: RawConfig, placed: bool) -> Result<Config, ConfigErrors> {
        let mut errs = Errors::default();
        let mut config = Config {
            dns: dns(raw.dns, placed, &mut errs),
            proxy: proxy(raw.proxy, &mut errs),
            tls: tls(raw.tls, &mut errs),
            upstream: upstream(raw.upstream, &mut errs),
            management: crate::section::management::ManagementConfig {
                listen: listen(raw.management.listen, None, "management.listen", &mut errs),
                api_key_env: raw
                    .management
                    .api_key_env
                    .unwrap_or_else(|| "IRON_MANAGEMENT_API_KEY".into()),
                api_key_file: raw.management.api_key_file,
            },
            metrics_listen: listen(
                raw.metrics.listen,
                Some("127.0.0.1:9090"),
                "metrics.listen",
                &mut errs,
            ),
            log_level: log_level(raw.log.level, &mut errs),
            audit: crate::section::audit::audit(raw.audit, &mut errs),
            policy: Policy::default(),
            tests: Vec::new(),
            warnings: Vec::new(),
        };
        config.tests = crate::explain::cases::cases(raw.tests, &mut errs);
        transforms(raw.transforms, &mut config, &mut errs);
        config.policy.mcp = crate::section::mcp::mcp(raw.mcp, &mut errs);
        config.warnings = errs.take_warnings();
        errs.finish(config)
    }
}

/// The transforms, in file order, into the policy; and what `sni-only` means for them.
fn transforms(raw: Vec<RawTransform>, config: &mut Config, errs: &mut Errors) {
    for (i, t) in raw.into_iter().enumerate() {
        match t {
            RawTransform::Allowlist(a) => config.policy.allowlists.push(allowlist(i, a, errs)),
            RawTransform::Secrets(s) => {
                let list = secrets(i, s, errs, &mut config.policy.sources);
                config.policy.secrets.extend(list);
            }
            RawTransform::GcpAuth(g) => {
                let g = gcp_auth(i, g, errs, &mut config.policy.sources);
                config.policy.gcp_auth.extend(g);
            }
            RawTransform::OAuthToken(o) => {
                let list = oauth(i, o, errs, &mut config.policy.sources);
                config.policy.oauth.extend(list);
            }
            RawTransform::HmacSign(h) => {
                let h = hmac(i, h, errs, &mut config.policy.sources);
                config.policy.hmac.extend(h);
            }
            RawTransform::GcpIdToken(g) => {
                let g = crate::transform::gcp_auth::gcp_id_token(
                    i,
                    g,
                    errs,
                    &mut config.policy.sources,
                );
                config.policy.gcp_auth.extend(g);
            }
            RawTransform::AwsAuth(a) => {
                let a =
                    crate::transform::aws_auth::aws_auth(i, *a, errs, &mut config.policy.sources);
                config.policy.aws.extend(a);
            }
            RawTransform::HeaderAllowlist(h) => {
                let h = crate::transform::header_allowlist::header_allowlist(i, h, errs);
                config.policy.header_allowlists.push(h);
            }
        }
    }
    let p = &config.policy;
    let credentials = p.secrets.len() + p.gcp_auth.len() + p.oauth.len() + p.hmac.len();
    if config.tls.sni_only && credentials + p.aws.len() > 0 {
        errs.warn(
            "tls.mode",
            (0, 0),
            "with `sni-only`, HTTPS is passed through untouched: credential transforms (and \
             rules on methods or paths) apply to plain HTTP only",
        );
    }
}

/// A file the typed parser refused: every structural problem (`shape`), and the semantic
/// errors of the rest once the entries at fault are cut out; the parser's own error when the
/// text is not YAML at all.
fn structural(text: &str, e: &serde_saphyr::Error, placed: bool) -> ConfigErrors {
    let problems = crate::shape::problems(text, &schema());
    if problems.is_empty() {
        return yaml_error(e);
    }
    let cuts: Option<Vec<crate::shape::Cut>> = problems.iter().map(|p| p.cut.clone()).collect();
    let mut errors: Vec<crate::error::ConfigError> =
        problems.into_iter().map(|p| p.error).collect();
    let rest = cuts
        .and_then(|c| crate::shape::without(text, &c))
        .and_then(|(t, removed)| Some((serde_saphyr::from_str::<RawConfig>(&t).ok()?, removed)));
    if let Some((raw, removed)) = rest
        && let Err(more) = Config::from_raw(raw, placed)
    {
        errors.extend(more.0.into_iter().map(|mut e| {
            e.path = crate::shape::original_path(&e.path, &removed);
            e
        }));
    }
    errors.sort_by_key(|e| (e.line == 0, e.line, e.column));
    ConfigErrors(errors)
}

/// The JSON Schema of the policy file, generated from the types the parser reads (so it cannot
/// drift from what `check` accepts); for editors and CI.
pub fn schema() -> String {
    let mut s = schemars::schema_for!(crate::section::RawConfig);
    s.insert("title".into(), "Centaur gateway policy".into());
    serde_json::to_string_pretty(&s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::matcher::host::HostName;
    use crate::section::proxy::DEFAULT_DENY_CIDRS;

    #[test]
    fn a_placed_policy_may_leave_the_resolver_address_to_the_runner() {
        let e = Config::parse("{}").unwrap_err().to_string();
        assert!(
            e.contains("dns.proxy_ip: is required while DNS is enabled"),
            "{e}"
        );
        let c = Config::parse_placed("{}").unwrap();
        assert_eq!(c.dns.proxy_ip, None);
        assert!(c.dns.listen.is_some());
        // Every other check still applies.
        assert!(Config::parse_placed("dns: {proxy_ip: nope}").is_err());
    }

    #[test]
    fn defaults_follow_iron_proxy() {
        let c = Config::parse("dns: {proxy_ip: 10.0.0.1}\n").unwrap();
        assert_eq!(c.dns.listen, Some("0.0.0.0:53".parse().unwrap()));
        assert_eq!(c.proxy.https_listen, Some("0.0.0.0:443".parse().unwrap()));
        assert_eq!(c.proxy.tunnel_listen, None);
        assert_eq!(c.proxy.deny_cidrs.len(), DEFAULT_DENY_CIDRS.len());
        assert_eq!(c.tls.leaf_validity, Duration::from_secs(24 * 3600));
        // Ours: the unauthenticated metrics listener stays on loopback unless configured.
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9090".parse().unwrap()));
        assert!(c.policy.allowlists.is_empty());
    }

    #[test]
    fn null_turns_a_listener_off_and_empty_deny_list_is_kept() {
        let c = Config::parse(
            "dns: {enabled: false}\nproxy: {http_listen: null, https_listen: '127.0.0.1:0', upstream_deny_cidrs: []}\nmetrics: {listen: null}\n",
        )
        .unwrap();
        assert_eq!(c.proxy.http_listen, None);
        assert_eq!(c.metrics_listen, None);
        assert!(c.proxy.deny_cidrs.is_empty());
    }

    #[test]
    fn every_error_is_reported_with_its_path_and_position() {
        let errs = Config::parse(
            "dns:
  enabled: true
proxy:
  https_listen: 'nope'
  idle_timeout: 10
transforms:
  - name: allowlist
    config:
      domains: ['*.', 'ok.com', 'api.*.com']
      cidrs: ['10.0.0.1']
      rules:
        - {host: a.com, cidr: 10.0.0.0/8}
        - {methods: [GET]}
        - {host: b.com, paths: [relative]}
",
        )
        .unwrap_err();
        let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
        for expected in [
            "dns.proxy_ip",
            "proxy.https_listen",
            "proxy.idle_timeout",
            "transforms[0].config.domains[2]",
            "transforms[0].config.cidrs[0]",
            "transforms[0].config.rules[0]",
            "transforms[0].config.rules[1]",
            "transforms[0].config.rules[2].paths[0]",
        ] {
            assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
        }
        let listen = errs
            .0
            .iter()
            .find(|e| e.path == "proxy.https_listen")
            .unwrap();
        assert_eq!((listen.line, listen.column), (4, 17));
    }

    #[test]
    fn unknown_keys_are_errors_with_a_position() {
        let errs = Config::parse("proxy:\n  http_lisen: ':80'\n").unwrap_err();
        assert_eq!(
            errs.0.len(),
            2,
            "the unknown key and, with it, the missing proxy_ip"
        );
        assert!(errs.0[0].message.contains("http_lisen"), "{}", errs.0[0]);
        assert_eq!(errs.0[0].line, 2);
        assert_eq!(errs.0[1].path, "dns.proxy_ip");
        let typo = Config::parse("dns: {enabled: false}\ntransforms:\n  - name: allowlist\n    config: {hosts: [a.com]}\n").unwrap_err();
        assert!(typo.0[0].message.contains("hosts"), "{}", typo.0[0]);
    }

    #[test]
    fn pins_take_an_address_and_optional_port() {
        let c = Config::parse("dns: {enabled: false}\nupstream:\n  hosts: {API.test: '127.0.0.5', b.test: '127.0.0.1:8443'}\n").unwrap();
        let a: HostName = "api.test".parse().unwrap();
        assert_eq!(c.upstream.hosts[&a], ("127.0.0.5".parse().unwrap(), None));
        let b: HostName = "b.test".parse().unwrap();
        assert_eq!(c.upstream.hosts[&b].1, Some(8443));
    }
}
