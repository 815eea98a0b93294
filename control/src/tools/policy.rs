//! A tool's gateway policy, generated from its declaration: the base policy (when the
//! server names one) with the tool's hosts added to its enforcing allowlist (or a new one) and
//! each declared secret as a `replace` or `inject` transform for the secret's hosts only.
//! Pure: the caller reads the base file.

use policy::Config;
use serde_json::{Value, json};

use crate::runner::gateway_config::{allow_hosts, open_transforms};
use crate::tools::manifest::{Manifest, Mode};

/// What a tool holds for a replace-mode secret; its gateway swaps in the real value.
pub fn placeholder(tool: &str, secret: &str) -> String {
    format!("centaur-placeholder-{tool}-{secret}")
}

/// Checks a base policy alone, so that its errors point at its own lines.
pub fn check_base(name: &str, text: &str) -> Result<(), String> {
    Config::parse_placed(text)
        .map(|_| ())
        .map_err(|e| format!("{name}: {e}"))
}

/// The tool's policy: `base` (YAML text of a valid policy, or none) extended with the
/// tool's hosts and secrets.
pub fn generate(m: &Manifest, base: Option<&str>) -> Result<Config, String> {
    let (mut doc, mut transforms) =
        open_transforms(base).map_err(|e| format!("base policy: {e}"))?;
    let mut hosts: Vec<Value> = m.hosts.iter().map(|h| json!(h)).collect();
    for s in &m.secrets {
        hosts.extend(
            s.hosts
                .iter()
                .filter(|h| !m.hosts.contains(h))
                .map(|h| json!(h)),
        );
    }
    hosts.dedup();
    if !hosts.is_empty() {
        allow_hosts(&mut transforms, hosts);
    }
    let secrets: Vec<Value> = m
        .secrets
        .iter()
        .map(|s| {
            let rules: Vec<Value> = s.hosts.iter().map(|h| json!({"host": h})).collect();
            let mut entry = json!({"source": {"type": "env", "var": s.name}, "rules": rules});
            match &s.mode {
                Mode::Replace { headers, query } => {
                    entry["replace"] = json!({
                        "proxy_value": placeholder(&m.name, &s.name),
                        "match_headers": headers,
                        "match_query": query,
                    });
                }
                Mode::Header { header, format } => {
                    entry["inject"] = json!({
                        "header": header,
                        "formatter": format.replace("{value}", "{{ .Value }}"),
                    });
                }
                Mode::Query(param) => entry["inject"] = json!({"query_param": param}),
            }
            entry
        })
        .collect();
    if !secrets.is_empty() {
        transforms.push(json!({"name": "secrets", "config": {"secrets": secrets}}));
    }
    doc["transforms"] = Value::Array(transforms);
    Config::parse_placed(&doc.to_string())
        .map_err(|e| format!("the policy generated for tool {}: {e}", m.name))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::tools::manifest;

    fn tool(text: &str) -> Manifest {
        manifest::parse(Path::new("/t/demo"), text)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn the_tools_hosts_join_the_base_allowlist_and_its_secrets_become_transforms() {
        let m = tool(
            "[tool.centaur]\nhosts = ['api.demo.test']\nsecrets = ['DEMO_KEY', {name = 'TOK', mode = 'inject', hosts = ['auth.demo.test']}]\n",
        );
        let base = "proxy:\n  upstream_allow_cidrs: [127.0.0.1/32]\ntransforms:\n  - name: allowlist\n    config: {domains: [telemetry.test]}\n";
        let c = generate(&m, Some(base)).unwrap();
        let text = format!("{c:?}");
        for want in [
            "telemetry.test",
            "api.demo.test",
            "auth.demo.test",
            "centaur-placeholder-demo-DEMO_KEY",
            "TOK",
        ] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
        assert_eq!(c.policy.secrets.len(), 2);
    }

    #[test]
    fn a_tool_without_hosts_may_reach_nothing() {
        let c = generate(&tool("[tool.centaur]\n"), None).unwrap();
        assert!(c.policy.secrets.is_empty());
        assert!(!format!("{c:?}").contains("domains"));
        assert!(check_base("base.yaml", "transforms: [{name: nope}]\n").is_err());
    }
}
