//! The control plane's route into a thread's sandbox: `http://centaur.internal` reaches the
//! server's API through the sandbox's own gateway, which injects the thread's token (the
//! sandbox never holds it). Pure: the caller reads the policy file.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use policy::Config;
use serde_json::{Value, json};

use crate::runner::gateway_config::{allow_hosts, open_transforms};

/// The name a sandbox reaches the control plane at.
pub const HOST: &str = "centaur.internal";

/// The `{type: env}` variable the token is read from; the gateway holds its value.
pub const TOKEN_VAR: &str = "CENTAUR_THREAD_TOKEN";

/// The sandbox's policy (the file's text, or none) with the route: `centaur.internal` on the
/// allowlist, the token injected as `Authorization: Bearer` and `X-Api-Key` for that host
/// only, and the name
/// routed to `api` (the server's listener) past the deny ranges.
pub fn route(policy: Option<&str>, api: SocketAddr) -> Result<Config, String> {
    let doc = route_doc(policy)?;
    let mut config = Config::parse_placed(&doc.to_string())
        .map_err(|e| format!("the policy with the centaur.internal route: {e}"))?;
    let name = HOST.parse().map_err(|e| format!("{HOST}: {e}"))?;
    config.upstream.internal = BTreeMap::from([(name, loopback(api))]);
    Ok(config)
}

/// The policy (as parsed YAML) with the route's allowlist entry and token injection, for a
/// gateway whose route to the API is given apart (`centaur-gateway run --route`).
pub fn route_doc(policy: Option<&str>) -> Result<Value, String> {
    let (mut doc, mut transforms) = open_transforms(policy)?;
    allow_hosts(&mut transforms, vec![json!(HOST)]);
    // Both headers the API reads a key from are set, so a key the sandbox got hold of (a user
    // pasted one) is overwritten and never used from inside it.
    let source = json!({"type": "env", "var": TOKEN_VAR});
    transforms.push(json!({"name": "secrets", "config": {"secrets": [
        {"source": source, "rules": [{"host": HOST}],
         "inject": {"header": "Authorization", "formatter": "Bearer {{ .Value }}"}},
        {"source": source, "rules": [{"host": HOST}],
         "inject": {"header": "X-Api-Key", "formatter": "{{ .Value }}"}},
    ]}}));
    doc["transforms"] = Value::Array(transforms);
    Ok(doc)
}

/// Where a gateway on this machine reaches a listener bound to `addr` (an unspecified
/// address is reached on loopback).
pub fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        a => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_allows_the_host_and_injects_the_token_there_only() {
        let c = route(
            Some("transforms:\n  - name: allowlist\n    config: {domains: [api.example.test]}\n"),
            "0.0.0.0:8700".parse().unwrap(),
        )
        .unwrap();
        let internal: Vec<_> = c.upstream.internal.iter().collect();
        assert_eq!(internal.len(), 1);
        assert_eq!(internal[0].0.as_str(), HOST);
        assert_eq!(*internal[0].1, "127.0.0.1:8700".parse().unwrap());
        let text = format!("{c:?}");
        assert!(text.contains("api.example.test") && text.contains(TOKEN_VAR));
        assert_eq!(c.policy.secrets.len(), 2);
        // Without a policy, the route is the only way out.
        let bare = route(None, "127.0.0.1:1".parse().unwrap()).unwrap();
        assert_eq!(bare.policy.secrets.len(), 2);
    }
}
