//! `proxy.upstream_proxy`: a corporate HTTP proxy the gateway's upstream connections go
//! through (`http_proxy`, `https_proxy`, `no_proxy`), with the process environment's
//! `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` winning field by field, as in iron-proxy — but
//! only when the file has the section: a variable left in the gateway's environment never
//! reroutes it silently.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::error::Errors;
use crate::value::{S, pos};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamProxy {
    /// Proxy for plain-HTTP upstreams, e.g. `http://proxy.corp:3128`.
    pub http_proxy: Option<S>,
    /// Proxy for HTTPS upstreams.
    pub https_proxy: Option<S>,
    /// Hosts reached directly: comma-separated names (a name covers its subdomains; a
    /// leading dot is allowed), IP addresses, or `*`.
    pub no_proxy: Option<S>,
}

/// Where a proxy listens, and the Basic credentials its URL carried.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// Host name or IP address.
    pub host: String,
    /// Port (default 80).
    pub port: u16,
    /// `user:password` from the URL, for `Proxy-Authorization: Basic`.
    pub credentials: Option<String>,
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = if self.credentials.is_some() {
            "…@"
        } else {
            ""
        };
        write!(f, "http://{auth}{}:{}", self.host, self.port)
    }
}

/// Proxies for upstream connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamProxy {
    /// For plain-HTTP upstreams.
    pub http: Option<ProxyUrl>,
    /// For HTTPS upstreams.
    pub https: Option<ProxyUrl>,
    /// Hosts reached directly.
    pub no_proxy: Vec<String>,
}

impl UpstreamProxy {
    /// This configuration with the environment's variables (upper or lower case) winning field
    /// by field. An unusable URL in the environment is an error naming the variable.
    pub fn with_env(&self, env: impl Fn(&str) -> Option<String>) -> Result<UpstreamProxy, String> {
        let var = |name: &str| env(name).or_else(|| env(&name.to_ascii_lowercase()));
        let url = |name: &str, current: &Option<ProxyUrl>| match var(name) {
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => parse_url(&v).map(Some).map_err(|e| format!("{name}: {e}")),
            None => Ok(current.clone()),
        };
        Ok(UpstreamProxy {
            http: url("HTTP_PROXY", &self.http)?,
            https: url("HTTPS_PROXY", &self.https)?,
            no_proxy: var("NO_PROXY").map_or_else(|| self.no_proxy.clone(), |v| no_proxy(&v)),
        })
    }

    /// The proxy for a connection to `host` (a name or an IP address), if any.
    pub fn for_target(&self, https: bool, host: &str) -> Option<&ProxyUrl> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let direct = self.no_proxy.iter().any(|e| {
            e == "*"
                || host == *e
                || host
                    .strip_suffix(e.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        });
        match (direct, https) {
            (true, _) => None,
            (false, true) => self.https.as_ref(),
            (false, false) => self.http.as_ref(),
        }
    }
}

/// `no_proxy` entries: lower case, without a leading dot or a port.
fn no_proxy(text: &str) -> Vec<String> {
    text.split(',')
        .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
        .map(|e| match e.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h.into(),
            _ => e,
        })
        .filter(|e| !e.is_empty())
        .collect()
}

/// `http://[user:password@]host[:port][/]`; a URL without a scheme is taken as `http://`.
pub fn parse_url(text: &str) -> Result<ProxyUrl, String> {
    let rest = match text.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "`{scheme}://` proxies are not supported (use an `http://` proxy; the gateway \
                 tunnels through it with CONNECT)"
            ));
        }
        None => text,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') {
        return Err("a proxy URL has no path".into());
    }
    let (credentials, hostport) = match rest.rsplit_once('@') {
        Some((c, h)) => (Some(c.to_string()), h),
        None => (None, rest),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("`{p}` is not a port"))?,
        ),
        _ => (hostport, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("the proxy URL has no host".into());
    }
    Ok(ProxyUrl {
        host: host.to_string(),
        port,
        credentials,
    })
}

pub(crate) fn upstream_proxy(raw: RawUpstreamProxy, errs: &mut Errors) -> UpstreamProxy {
    let mut url = |key: &str, s: Option<S>| {
        let s = s.filter(|s| !s.value.is_empty())?;
        parse_url(&s.value)
            .map_err(|e| errs.push(format!("proxy.upstream_proxy.{key}"), pos(&s), e))
            .ok()
    };
    UpstreamProxy {
        http: url("http_proxy", raw.http_proxy),
        https: url("https_proxy", raw.https_proxy),
        no_proxy: raw.no_proxy.map(|s| no_proxy(&s.value)).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_no_proxy_and_the_environment() {
        let p = parse_url("http://u:p%40ss@proxy.corp:3128/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        assert_eq!(p.credentials.as_deref(), Some("u:p%40ss"));
        assert_eq!(
            format!("{p:?}"),
            "http://…@proxy.corp:3128",
            "no password in logs"
        );
        assert_eq!(parse_url("10.0.0.1").unwrap().port, 80);
        assert_eq!(parse_url("http://[::1]:8080").unwrap().host, "::1");
        assert!(
            parse_url("socks5://p:1080")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(parse_url("http://p:x").is_err());

        let cfg = UpstreamProxy {
            http: Some(parse_url("http://a:1").unwrap()),
            https: Some(parse_url("http://a:1").unwrap()),
            no_proxy: no_proxy(".internal.corp, 10.1.2.3, localhost:8080"),
        };
        assert_eq!(cfg.for_target(true, "api.example.com").unwrap().host, "a");
        assert!(cfg.for_target(true, "vault.internal.corp").is_none());
        assert!(cfg.for_target(true, "internal.corp").is_none());
        assert!(cfg.for_target(true, "notinternal.corp").is_some());
        assert!(cfg.for_target(false, "10.1.2.3").is_none());
        assert!(cfg.for_target(false, "localhost").is_none());

        let env = |k: &str| match k {
            "HTTPS_PROXY" => Some("http://b:2".to_string()),
            "no_proxy" => Some("*".to_string()),
            _ => None,
        };
        let merged = cfg.with_env(env).unwrap();
        assert_eq!(merged.https.as_ref().unwrap().host, "b");
        assert_eq!(merged.http.as_ref().unwrap().host, "a", "config kept");
        assert!(merged.for_target(true, "anything").is_none());
        let bad = cfg.with_env(|k| (k == "HTTP_PROXY").then(|| "socks5://x".to_string()));
        assert!(bad.unwrap_err().starts_with("HTTP_PROXY: "));
    }
}
