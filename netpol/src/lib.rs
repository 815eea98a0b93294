//! One model of "who may talk to whom", rendered as nftables rules for a local sandbox and as
//! Kubernetes NetworkPolicy objects for a cluster. Pure rendering: no IO, no tokio.
//!
//! The model has one shape: *sandbox S may open connections only to its gateway G, on G's DNS,
//! HTTP, HTTPS and tunnel ports; nothing may open a connection to S.* Each backend renders it
//! in its own terms; the two renderings are unit-tested here so the backends only apply them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// The ports a sandbox may reach on its gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// DNS, UDP and TCP.
    pub dns: u16,
    /// Transparent plain HTTP.
    pub http: u16,
    /// Transparent TLS.
    pub https: u16,
    /// CONNECT and SOCKS5.
    pub tunnel: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            dns: 53,
            http: 80,
            https: 443,
            tunnel: 1080,
        }
    }
}

impl Ports {
    /// The TCP ports, in a stable order.
    pub fn tcp(&self) -> [u16; 4] {
        [self.dns, self.http, self.https, self.tunnel]
    }
}

/// "Sandbox `sandbox` may reach only its gateway, on `ports`; nothing reaches the sandbox."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// The sandbox's id: lower-case letters, digits and `-`, at most 32 characters. It names
    /// every rendered object, so one sandbox's rules can be found and removed by id.
    pub sandbox: String,
    /// What it may reach on its gateway.
    pub ports: Ports,
}

/// Why a model cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The id would not make a valid object name.
    #[error("sandbox id {0:?} must be 1-32 characters of a-z, 0-9 and '-'")]
    BadId(String),
    /// An interface name the kernel would refuse.
    #[error("interface name {0:?} must be 1-15 characters of a-z, A-Z, 0-9, '-', '_' and '.'")]
    BadInterface(String),
}

impl Model {
    /// A model for `sandbox`, checking that the id can name objects.
    pub fn new(sandbox: &str, ports: Ports) -> Result<Model, ModelError> {
        let ok = !sandbox.is_empty()
            && sandbox.len() <= 32
            && sandbox
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(ModelError::BadId(sandbox.to_string()));
        }
        Ok(Model {
            sandbox: sandbox.to_string(),
            ports,
        })
    }

    /// The nftables table that holds this sandbox's rules (family `inet`).
    pub fn table(&self) -> String {
        format!("centaur_{}", self.sandbox.replace('-', "_"))
    }
}

/// Where a local sandbox sits: the host end of its veth pair and the gateway's address on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// The host-side interface every packet from the sandbox arrives on.
    pub host_iface: String,
    /// The gateway's address on that interface.
    pub gateway: Ipv4Addr,
    /// Send the sandbox's HTTP and HTTPS to any address (a literal IP, a hard-coded resolver
    /// answer) to the gateway instead of dropping it, so it is decided and audited there.
    pub redirect: bool,
}

/// The nftables script (`nft -f -`) for a local sandbox: one `inet` table of its own, so one
/// `delete table` removes it and no other sandbox's rules are touched.
///
/// - input: from the sandbox, only the gateway's address on its ports; replies pass.
/// - forward: nothing from or to the sandbox is routed anywhere (literal IPs, IPv6, DNS to
///   other resolvers all end here).
/// - output: the host opens no connection into the sandbox (default-deny ingress).
/// - prerouting (with `redirect`): HTTP and HTTPS to any IPv4 address go to the gateway.
pub fn nftables(model: &Model, local: &Local) -> Result<String, ModelError> {
    if !valid_iface(&local.host_iface) {
        return Err(ModelError::BadInterface(local.host_iface.clone()));
    }
    let (i, g, p) = (&local.host_iface, local.gateway, model.ports);
    let tcp = p.tcp().map(|p| p.to_string()).join(", ");
    let mut s = String::new();
    let _ = writeln!(s, "table inet {} {{", model.table());
    if local.redirect {
        let _ = writeln!(
            s,
            "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    \
             iifname \"{i}\" meta nfproto ipv4 tcp dport {{ {}, {} }} dnat ip to {g}\n  }}",
            p.http, p.https
        );
    }
    let _ = writeln!(
        s,
        "  chain input {{\n    type filter hook input priority filter; policy accept;\n    \
         iifname \"{i}\" ct state established,related accept\n    \
         iifname \"{i}\" ip daddr {g} tcp dport {{ {tcp} }} accept\n    \
         iifname \"{i}\" ip daddr {g} udp dport {} accept\n    \
         iifname \"{i}\" drop\n  }}",
        p.dns
    );
    let _ = writeln!(
        s,
        "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    \
         iifname \"{i}\" drop\n    oifname \"{i}\" drop\n  }}"
    );
    let _ = writeln!(
        s,
        "  chain output {{\n    type filter hook output priority filter; policy accept;\n    \
         oifname \"{i}\" ct state established,related accept\n    oifname \"{i}\" drop\n  }}"
    );
    s.push_str("}\n");
    Ok(s)
}

fn valid_iface(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Where a sandbox runs in a cluster: its namespace and the labels that select its pod and
/// its gateway's pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Kubernetes namespace of both pods.
    pub namespace: String,
    /// Labels of the sandbox pod.
    pub sandbox_labels: BTreeMap<String, String>,
    /// Labels of its gateway pod.
    pub gateway_labels: BTreeMap<String, String>,
    /// The control plane's pods, which alone may call the gateway's management API.
    pub control_plane: Option<ControlPlane>,
}

/// Who may call a gateway's management API (`PUT /v1/policy` when a warm sandbox is
/// claimed, `GET /v1/status`) in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlane {
    /// Labels of the control plane's pods.
    pub labels: BTreeMap<String, String>,
    /// Their namespace, when it is not the sandbox's.
    pub namespace: Option<String>,
    /// The gateway's management port.
    pub management_port: u16,
}

/// The `networking.k8s.io/v1` NetworkPolicy objects for a sandbox in a cluster:
///
/// 1. `centaur-sandbox-<id>`: the sandbox pod gets default-deny ingress and egress only to its
///    gateway pod's ports (DNS over UDP and TCP, HTTP, HTTPS, tunnel).
/// 2. `centaur-gateway-<id>`: the gateway pod accepts connections only from its own sandbox,
///    on those ports, and (with [`Cluster::control_plane`]) from the control plane's pods on
///    its management port. Its egress is left open: the gateway's own policy decides it (and
///    its upstream address guard refuses internal ranges).
pub fn network_policies(model: &Model, cluster: &Cluster) -> [Value; 2] {
    let p = model.ports;
    let mut ports: Vec<Value> = p
        .tcp()
        .iter()
        .map(|port| json!({"protocol": "TCP", "port": port}))
        .collect();
    ports.insert(0, json!({"protocol": "UDP", "port": p.dns}));
    let meta = |name: String| {
        json!({
            "name": name,
            "namespace": cluster.namespace,
            "labels": {"app.kubernetes.io/managed-by": "centaur", "centaur.dev/sandbox": model.sandbox},
        })
    };
    let sandbox = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(format!("centaur-sandbox-{}", model.sandbox)),
        "spec": {
            "podSelector": {"matchLabels": cluster.sandbox_labels},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [{
                "to": [{"podSelector": {"matchLabels": cluster.gateway_labels}}],
                "ports": ports,
            }],
        },
    });
    let mut ingress = vec![json!({
        "from": [{"podSelector": {"matchLabels": cluster.sandbox_labels}}],
        "ports": ports,
    })];
    if let Some(cp) = &cluster.control_plane {
        let mut peer = json!({"podSelector": {"matchLabels": cp.labels}});
        if let Some(ns) = &cp.namespace {
            peer["namespaceSelector"] = json!({"matchLabels": {"kubernetes.io/metadata.name": ns}});
        }
        ingress.push(json!({
            "from": [peer],
            "ports": [{"protocol": "TCP", "port": cp.management_port}],
        }));
    }
    let gateway = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(format!("centaur-gateway-{}", model.sandbox)),
        "spec": {
            "podSelector": {"matchLabels": cluster.gateway_labels},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    });
    [sandbox, gateway]
}

#[cfg(test)]
mod tests;
