//! What a sandbox runner makes of a policy file: the gateway configuration for one
//! sandbox (its listeners, resolver and CA chosen by the runner), the placeholder environment
//! the command gets, and the secret values read from a `.env` file. Pure: no IO.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use gateway::credential::store::SecretValue;
use netpol::Ports;
use policy::{AuditFile, Config, Mode, Source};

/// The value a sandbox sees for an `inject` secret: the gateway sets the real header itself,
/// so this only satisfies tools that refuse to start without a key.
pub const INJECTED: &str = "centaur-injected-by-gateway";

/// Settings of the policy file that the runner replaces, each with the reason a user is told.
/// Returns a warning per setting the file gave a value other than the default.
pub fn overridden(config: &Config) -> Vec<String> {
    let Ok(d) = Config::parse_placed("{}") else {
        return Vec::new();
    };
    let mut w = Vec::new();
    let mut check = |key: &str, differs: bool, why: &str| {
        if differs {
            w.push(format!("{key} in the policy is ignored: {why}"));
        }
    };
    let listeners = "the runner puts every listener on the sandbox's own link";
    check(
        "proxy.https_listen",
        config.proxy.https_listen != d.proxy.https_listen,
        listeners,
    );
    check(
        "proxy.http_listen",
        config.proxy.http_listen != d.proxy.http_listen,
        listeners,
    );
    check(
        "proxy.tunnel_listen",
        config.proxy.tunnel_listen != d.proxy.tunnel_listen,
        listeners,
    );
    check("dns.listen", config.dns.listen != d.dns.listen, listeners);
    check(
        "dns.proxy_ip",
        config.dns.proxy_ip != d.dns.proxy_ip,
        listeners,
    );
    check(
        "dns.proxy_ip6",
        config.dns.proxy_ip6 != d.dns.proxy_ip6,
        "sandboxes have no IPv6",
    );
    let ca = "each sandbox gets a CA of its own";
    check("tls.ca_cert", config.tls.ca_cert != d.tls.ca_cert, ca);
    check("tls.ca_key", config.tls.ca_key != d.tls.ca_key, ca);
    let off = "a sandbox's gateway has no management or metrics listener";
    check("management.listen", config.management.listen.is_some(), off);
    check(
        "metrics.listen",
        config.metrics_listen != d.metrics_listen,
        off,
    );
    check(
        "dns.passthrough",
        !config.dns.passthrough.is_empty(),
        "names it passes through resolve to addresses the sandbox cannot reach",
    );
    check(
        "audit.stdout",
        config.audit.stdout && config.audit.file.is_some(),
        "stdout belongs to the sandboxed command; records go to the audit file",
    );
    w
}

/// Where one sandbox's gateway listens and keeps its files.
#[derive(Debug, Clone)]
pub struct Placement<'a> {
    /// The run id.
    pub id: &'a str,
    /// The gateway's address on the sandbox's link.
    pub gateway: Ipv4Addr,
    /// Its ports.
    pub ports: Ports,
    /// The CA certificate and key.
    pub ca: (&'a Path, &'a Path),
    /// The audit file, unless the policy names one.
    pub audit: &'a Path,
    /// Extra identity labels (`--label`).
    pub labels: &'a BTreeMap<String, String>,
}

/// The gateway configuration for one sandbox: the policy as written, with the runner's
/// listeners, resolver, CA and audit destination.
pub fn shape(mut c: Config, at: &Placement<'_>) -> Config {
    let on = |port| Some(SocketAddr::from((at.gateway, port)));
    c.proxy.https_listen = on(at.ports.https);
    c.proxy.http_listen = on(at.ports.http);
    c.proxy.tunnel_listen = on(at.ports.tunnel);
    c.dns.listen = on(at.ports.dns);
    c.dns.proxy_ip = Some(at.gateway);
    c.dns.proxy_ip6 = None;
    c.dns.passthrough.clear();
    c.tls.ca_cert = Some(at.ca.0.display().to_string());
    c.tls.ca_key = Some(at.ca.1.display().to_string());
    c.management.listen = None;
    c.metrics_listen = None;
    c.audit.stdout = false;
    if c.audit.file.is_none() {
        c.audit.file = Some(AuditFile {
            path: at.audit.display().to_string(),
            max_bytes: Some(100 << 20),
            max_age: None,
            keep: None,
            compress: true,
        });
    }
    c.audit
        .sandbox
        .insert("sandbox_id".into(), at.id.to_string());
    c.audit.sandbox.insert("runner".into(), "local".into());
    for (k, v) in at.labels {
        c.audit.sandbox.insert(k.clone(), v.clone());
    }
    c
}

/// A policy's text (or none: the empty policy) as JSON, with its `transforms` taken out for
/// the caller to extend and put back.
pub fn open_transforms(
    text: Option<&str>,
) -> Result<(serde_json::Value, Vec<serde_json::Value>), String> {
    let mut doc: serde_json::Value = match text {
        Some(t) => serde_saphyr::from_str(t).map_err(|e| e.to_string())?,
        None => serde_json::json!({}),
    };
    if doc.is_null() {
        doc = serde_json::json!({});
    }
    if !doc.is_object() {
        return Err("the policy file is not a mapping of sections".into());
    }
    let transforms = doc["transforms"]
        .as_array_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    Ok((doc, transforms))
}

/// Adds `hosts` to the first enforcing allowlist of a policy's `transforms` (as parsed
/// JSON), or appends a new allowlist with them.
pub fn allow_hosts(transforms: &mut Vec<serde_json::Value>, hosts: Vec<serde_json::Value>) {
    let enforcing = transforms.iter_mut().find(|t| {
        t["name"] == "allowlist" && t["config"]["mode"].as_str().unwrap_or("enforce") == "enforce"
    });
    match enforcing {
        Some(t) => {
            if !t["config"]["domains"].is_array() {
                t["config"]["domains"] = serde_json::json!([]);
            }
            if let Some(d) = t["config"]["domains"].as_array_mut() {
                d.extend(hosts);
            }
        }
        None => {
            transforms.push(serde_json::json!({"name": "allowlist", "config": {"domains": hosts}}))
        }
    }
}

/// The placeholder environment: for every `secrets` entry read from an environment variable,
/// `VAR=<its proxy_value>` (replace) or `VAR=`[`INJECTED`] (inject). Real values never.
pub fn placeholders(config: &Config) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for entry in &config.policy.secrets {
        let Some(source) = config.policy.sources.get(entry.source.0) else {
            continue;
        };
        let Source::Env { var, .. } = &source.source else {
            continue;
        };
        if out.iter().any(|(k, _)| k == var) {
            continue;
        }
        let value = match &entry.mode {
            Mode::Replace(r) => r.proxy_value.clone(),
            Mode::Inject(_) => INJECTED.to_string(),
        };
        out.push((var.clone(), value));
    }
    out
}

/// Every `{type: env}` variable the policy reads (secrets, token and signing credentials).
pub fn env_vars(config: &Config) -> Vec<String> {
    let mut vars: Vec<String> = config
        .policy
        .sources
        .iter()
        .filter_map(|s| match &s.source {
            Source::Env { var, .. } => Some(var.clone()),
            _ => None,
        })
        .collect();
    vars.sort();
    vars.dedup();
    vars
}

/// Parses a `.env` file: `NAME=VALUE` lines, optional `export `, `#` comments, values in
/// single or double quotes kept literally. Errors name the line, never the value.
pub fn parse_dotenv(text: &str) -> Result<HashMap<String, SecretValue>, String> {
    let mut vars = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected NAME=VALUE", n + 1));
        };
        let name = name.trim();
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!(
                "line {}: {name:?} is not a variable name (letters, digits, _)",
                n + 1
            ));
        }
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        vars.insert(name.to_string(), SecretValue::new(value.as_bytes()));
    }
    Ok(vars)
}

#[cfg(test)]
#[path = "gateway_config_tests.rs"]
mod tests;
