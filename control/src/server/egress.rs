//! The control plane's own gateway: its outbound calls (the Slack Web API today) leave
//! through the same gateway code the sandboxes use, in this process, on loopback. The policy
//! is `egress.policy` (optional) plus the rules the `slack:` section adds: its host on the
//! allowlist and its tokens as `replace` secrets. The callers hold placeholders; the gateway
//! puts the real token on the wire for the Slack host only, and audits every call to
//! `DATA/egress/audit.jsonl`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gateway::ca::{CaAlgorithm, CaInit};
use policy::{AuditFile, Config};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::server::slack::settings::SlackSettings;

/// What the Slack client sends as the bot token; the gateway swaps in the real one.
pub const SLACK_BOT_PLACEHOLDER: &str = "xoxb-centaur-placeholder-bot-token";
/// What the Socket Mode client sends as the app-level token.
pub const SLACK_APP_PLACEHOLDER: &str = "xapp-centaur-placeholder-app-token";

/// The running gateway, and how to reach an origin through it.
#[derive(Clone)]
pub struct Egress {
    https: SocketAddr,
    tls: TlsConnector,
    /// The audit file.
    pub audit: PathBuf,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("https", &self.https)
            .finish()
    }
}

impl Egress {
    /// A TLS connection to `host` through the gateway (which reads the name from SNI, checks
    /// its policy and connects upstream itself).
    pub async fn connect(&self, host: &str) -> std::io::Result<TlsStream<TcpStream>> {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tcp = TcpStream::connect(self.https).await?;
        tcp.set_nodelay(true)?;
        tokio::time::timeout(Duration::from_secs(10), self.tls.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))?
    }
}

/// The policy: the file's (or an empty one), with the Slack rules added. Errors name the
/// file and every problem in it.
pub fn policy(file: Option<&Path>, slack: Option<&SlackSettings>) -> Result<Config, String> {
    let text = match file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| format!("egress.policy: cannot read {}: {e}", p.display()))?,
        None => "{}".into(),
    };
    let name = file.map_or("egress policy".into(), |p| p.display().to_string());
    // Checked alone first, so errors point at the file's own lines.
    Config::parse_placed(&text).map_err(|e| format!("{name}: {e}"))?;
    let Some(slack) = slack else {
        return Config::parse_placed(&text).map_err(|e| format!("{name}: {e}"));
    };
    let mut doc: Value = serde_saphyr::from_str(&text).map_err(|e| format!("{name}: {e}"))?;
    if doc.is_null() {
        doc = json!({});
    }
    add_slack(&mut doc, slack);
    Config::parse_placed(&doc.to_string())
        .map_err(|e| format!("{name} with the slack section's rules: {e}"))
}

/// Adds the Slack host to the first enforcing allowlist (or a new one) and the tokens as
/// `replace` secrets for that host only.
fn add_slack(doc: &mut Value, s: &SlackSettings) {
    let mut hosts = vec![Value::String(s.host.clone())];
    if s.host == "slack.com" {
        // Socket Mode's WebSocket hosts.
        hosts.extend(["wss-primary.slack.com", "wss-backup.slack.com"].map(Value::from));
    }
    let transforms = doc["transforms"].as_array_mut().map(std::mem::take);
    let mut transforms = transforms.unwrap_or_default();
    crate::runner::gateway_config::allow_hosts(&mut transforms, hosts);
    let rule = |source: &Value, placeholder: &str| {
        json!({"source": source, "rules": [{"host": s.host}],
               "replace": {"proxy_value": placeholder, "match_headers": ["Authorization"]}})
    };
    let mut secrets = vec![rule(&s.bot_token, SLACK_BOT_PLACEHOLDER)];
    if let Some(app) = &s.app_token {
        secrets.push(rule(app, SLACK_APP_PLACEHOLDER));
    }
    transforms.push(json!({"name": "secrets", "config": {"secrets": secrets}}));
    doc["transforms"] = Value::Array(transforms);
}

/// Starts the gateway on loopback with a CA of its own (`DATA/egress/ca.crt`), serving until
/// the process ends.
pub async fn start(mut config: Config, data_dir: &Path) -> Result<Egress, String> {
    let dir = data_dir.join("egress");
    crate::server::paths::private_dir(&dir, 0o700)?;
    let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if !cert.exists() || !key.exists() {
        let _ = std::fs::remove_file(&cert);
        let _ = std::fs::remove_file(&key);
        gateway::ca::init(
            &dir,
            &CaInit {
                name: "Centaur control-plane egress CA".into(),
                algorithm: CaAlgorithm::EcdsaP256,
                validity: Duration::from_secs(10 * 365 * 86400),
                permitted: vec![],
            },
        )
        .map_err(|e| format!("egress CA: {e}"))?;
    }
    let audit = dir.join("audit.jsonl");
    config.proxy.https_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.proxy.http_listen = None;
    config.proxy.tunnel_listen = None;
    config.dns.listen = None;
    config.tls.ca_cert = Some(cert.display().to_string());
    config.tls.ca_key = Some(key.display().to_string());
    config.management.listen = None;
    config.metrics_listen = None;
    config.audit.stdout = false;
    config.audit.file = Some(AuditFile {
        path: audit.display().to_string(),
        max_bytes: Some(100 << 20),
        max_age: None,
        keep: Some(10),
        compress: true,
    });
    config
        .audit
        .sandbox
        .insert("sandbox_id".into(), "control-plane".into());
    let gw = gateway::Gateway::start(config, None)
        .await
        .map_err(|e| format!("egress gateway: {e}"))?;
    let https = gw
        .addrs()
        .https
        .ok_or("egress gateway: no https listener")?;
    tokio::spawn(gw.run(std::future::pending(), Duration::ZERO));
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        let c = c.map_err(|e| format!("{}: {e}", cert.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", cert.display()))?;
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Egress {
        https,
        tls: TlsConnector::from(Arc::new(tls)),
        audit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slack() -> SlackSettings {
        SlackSettings {
            signing_secret: b"s".to_vec(),
            bot_token: json!({"type": "env", "var": "SLACK_BOT_TOKEN"}),
            app_token: Some(json!({"type": "env", "var": "SLACK_APP_TOKEN"})),
            host: "slack.com".into(),
            prefix: "/api".into(),
        }
    }

    #[test]
    fn the_slack_rules_join_an_existing_allowlist() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("egress.yaml");
        std::fs::write(
            &f,
            "transforms:\n  - name: allowlist\n    config:\n      domains: [oauth2.example.com]\n",
        )
        .unwrap();
        let c = policy(Some(&f), Some(&slack())).unwrap();
        assert_eq!(c.policy.allowlists.len(), 1, "merged, not a second list");
        assert_eq!(c.policy.secrets.len(), 2, "bot and app tokens");
        let bare = policy(None, Some(&slack())).unwrap();
        assert_eq!(bare.policy.allowlists.len(), 1);
    }

    #[test]
    fn a_broken_egress_policy_is_reported_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("egress.yaml");
        std::fs::write(&f, "transforms:\n  - name: nope\n").unwrap();
        let e = policy(Some(&f), Some(&slack())).unwrap_err();
        assert!(e.contains("egress.yaml"), "{e}");
    }
}
