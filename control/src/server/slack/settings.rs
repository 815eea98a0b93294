//! The `slack:` and `egress:` sections of the server's config, and their checked form.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// `slack:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Where the signing secret is (`{type: env, var: …}` or `{type: file, path: …}`): the
    /// server reads it to check requests.
    pub signing_secret: Value,
    /// Where the bot token is (any gateway secret source). Only the control plane's gateway
    /// reads it; the Slack client holds a placeholder.
    pub bot_token: Value,
    /// An app-level token (`xapp-…`): with it, the server also follows Socket Mode.
    pub app_token: Option<Value>,
    /// The Web API's base (default `https://slack.com/api`).
    pub api_url: Option<String>,
}

/// `egress:`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// The control plane's own gateway policy (the gateway's format); the `slack:` section
    /// adds its host and token rules to it.
    pub policy: Option<PathBuf>,
}

/// `slack:`, checked.
#[derive(Clone)]
pub struct SlackSettings {
    /// The signing secret's value.
    pub signing_secret: Vec<u8>,
    /// The bot token's source, as the gateway reads it.
    pub bot_token: Value,
    /// The app token's source.
    pub app_token: Option<Value>,
    /// The Web API's host.
    pub host: String,
    /// Its path prefix (`/api`).
    pub prefix: String,
}

impl std::fmt::Debug for SlackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackSettings")
            .field("signing_secret", &"<redacted>")
            .field("bot_token", &self.bot_token)
            .field("app_token", &self.app_token)
            .field("host", &self.host)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl SlackConfig {
    /// Checks the section, reading the signing secret; every problem is pushed.
    pub fn settle(self, base: &Path, errors: &mut Vec<String>) -> Option<SlackSettings> {
        let secret = read_secret(&self.signing_secret, "slack.signing_secret", base, errors);
        check_source(&self.bot_token, "slack.bot_token", errors);
        if let Some(t) = &self.app_token {
            check_source(t, "slack.app_token", errors);
        }
        let url = self
            .api_url
            .unwrap_or_else(|| "https://slack.com/api".into());
        let Some(rest) = url.strip_prefix("https://") else {
            errors.push(format!(
                "slack.api_url: {url:?} must start with https:// (the control plane's gateway terminates TLS)"
            ));
            return None;
        };
        let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !valid {
            errors.push(format!(
                "slack.api_url: {host:?} is not a host name (no port: pin one with upstream.hosts in egress.policy)"
            ));
            return None;
        }
        Some(SlackSettings {
            signing_secret: secret?,
            bot_token: self.bot_token,
            app_token: self.app_token,
            host: host.to_ascii_lowercase(),
            prefix: format!("/{}", prefix.trim_matches('/')),
        })
    }
}

/// A source must be a mapping with a `type` (the gateway checks the rest); an environment
/// variable it names must be set.
fn check_source(v: &Value, key: &str, errors: &mut Vec<String>) {
    match (v.get("type").and_then(Value::as_str), v["var"].as_str()) {
        (None, _) => errors.push(format!(
            "{key}: expected a secret source such as {{type: env, var: NAME}}"
        )),
        (Some("env"), Some(var)) if std::env::var_os(var).is_none_or(|v| v.is_empty()) => {
            errors.push(format!("{key}: the environment variable {var} is not set"));
        }
        _ => {}
    }
}

/// Reads a secret the server itself needs: `{type: env, var}` or `{type: file, path}`.
fn read_secret(v: &Value, key: &str, base: &Path, errors: &mut Vec<String>) -> Option<Vec<u8>> {
    let got = match (v["type"].as_str(), v["var"].as_str(), v["path"].as_str()) {
        (Some("env"), Some(var), None) => std::env::var(var)
            .map_err(|_| format!("{key}: the environment variable {var} is not set")),
        (Some("file"), None, Some(p)) => std::fs::read_to_string(base.join(p))
            .map_err(|e| format!("{key}: cannot read {p}: {e}")),
        _ => Err(format!(
            "{key}: expected {{type: env, var: NAME}} or {{type: file, path: FILE}}"
        )),
    };
    match got.map(|s| s.trim().to_string()) {
        Ok(s) if !s.is_empty() => Some(s.into_bytes()),
        Ok(_) => {
            errors.push(format!("{key}: the secret is empty"));
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: Value) -> SlackConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_issues_snippet_settles_with_the_default_api() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sign"), "s3cret\n").unwrap();
        let c = config(json!({
            "signing_secret": {"type": "file", "path": "sign"},
            "bot_token": {"type": "file", "path": "/run/secrets/slack-bot"},
        }));
        let mut errors = Vec::new();
        let s = c.settle(dir.path(), &mut errors).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.signing_secret, b"s3cret");
        assert_eq!((s.host.as_str(), s.prefix.as_str()), ("slack.com", "/api"));
    }

    #[test]
    fn every_mistake_is_reported() {
        let c = config(json!({
            "signing_secret": {"type": "env", "var": "CENTAUR_TEST_NO_SUCH_VAR"},
            "bot_token": "xoxb-literal",
            "app_token": {"type": "env", "var": "CENTAUR_TEST_NO_SUCH_APP_VAR"},
            "api_url": "http://slack.com/api",
        }));
        let mut errors = Vec::new();
        assert!(c.settle(Path::new("/"), &mut errors).is_none());
        let all = errors.join("\n");
        for want in [
            "CENTAUR_TEST_NO_SUCH_VAR is not set",
            "slack.bot_token: expected a secret source",
            "slack.app_token: the environment variable CENTAUR_TEST_NO_SUCH_APP_VAR is not set",
            "must start with https://",
        ] {
            assert!(all.contains(want), "{want}: {all}");
        }
    }
}
