//! The objects of one sandbox (see the module above), each a `serde_json::Value` with
//! `apiVersion`, `kind`, `metadata.name` and `metadata.namespace`: what server-side apply
//! takes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use base64::Engine as _;
use netpol::{Cluster, ControlPlane, Model, Ports};
use serde_json::{Value, json};

use crate::local::bwrap::{CA_VARS, SYSTEM_BUNDLES};

/// The gateway's management API port (`PUT /v1/policy`, `GET /v1/status`).
pub const MANAGEMENT_PORT: u16 = 9092;
/// The gateway's metrics and probe port (`/healthz`, `/readyz`, `/metrics`).
pub const METRICS_PORT: u16 = 9090;
/// The gateway's user: not root, and not the sandbox's.
pub const GATEWAY_UID: i64 = 65532;
/// Where the gateway's policy is mounted, in the gateway pod.
pub const POLICY_FILE: &str = "/etc/centaur/gateway/policy.yaml";
/// Where the gateway's CA (certificate and key) is mounted, in the gateway pod.
pub const CA_DIR: &str = "/etc/centaur/ca";
/// The CA certificate the sandbox trusts (every trust variable points here).
pub const CA_INSIDE: &str = "/etc/centaur/trust/ca.crt";
/// The sandbox's workspace, its working directory.
pub const WORKSPACE: &str = "/workspace";
/// The sandbox's home.
pub const HOME: &str = "/home/agent";
/// The supervisor's directory in the sandbox pod (its socket, spool and turns): an emptyDir
/// of its own, so it survives nothing the pod does not.
pub const AGENT_DIR: &str = "/var/lib/centaur/agent";
/// The label naming the sandbox on every object of it.
pub const SANDBOX_LABEL: &str = "centaur.dev/sandbox";
/// The label with the hash of the deploy that made the object.
pub const DEPLOY_LABEL: &str = "centaur.dev/deploy";
/// The label with the thread the sandbox serves (a label-safe digest of its key).
pub const THREAD_LABEL: &str = "centaur.dev/thread";
/// `sandbox`, `gateway` or `parent`.
pub const ROLE_LABEL: &str = "centaur.dev/role";
/// `true` on a warm-pool member no thread has claimed.
pub const WARM_LABEL: &str = "centaur.dev/warm";

/// CPU, memory and scratch-disk limits of one pod (Kubernetes quantities: `500m`, `2Gi`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// CPU limit (the request is a tenth of it, at least `10m`, in the backend's config).
    pub cpu: String,
    /// Memory limit; also the request, so a sandbox is never killed for another's use.
    pub memory: String,
    /// Scratch disk (the emptyDir volumes and the container's writable layer).
    pub ephemeral_storage: String,
}

/// One sandbox, as the backend wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Its id: 1-32 of `a-z`, `0-9`, `-` (names every object: `centaur-<id>`).
    pub id: String,
    /// The namespace of every object.
    pub namespace: String,
    /// The thread it serves, kept in an annotation (thread keys are not label values).
    pub thread_key: String,
    /// A label-safe digest of the thread key (`centaur.dev/thread`), empty for a warm member.
    pub thread_label: String,
    /// The deploy hash (`centaur.dev/deploy`): a pool member from another deploy is evicted.
    pub deploy: String,
    /// A warm-pool member not yet claimed.
    pub warm: bool,
    /// The sandbox image (the agent CLIs, a shell, git).
    pub image: String,
    /// The gateway image (`centaur-gateway`).
    pub gateway_image: String,
    /// The thread's workspace claim (a PersistentVolumeClaim of this size): the sandbox
    /// pod's workspace and home live there and outlive the pod; `None`, emptyDirs that go
    /// with it.
    pub workspace: Option<WorkspaceClaim>,
    /// The gateway's `--route NAME=HOST:PORT` arguments: the control plane's API, which
    /// its address guard would refuse (`centaur.internal`).
    pub routes: Vec<String>,
    /// The sandbox container's command: the supervisor (`centaur sandbox supervise --pod`),
    /// which runs the harness it is given and which the server reaches through exec.
    pub command: Vec<String>,
    /// Extra environment: placeholders only (the real values are in the gateway's Secret).
    pub env: Vec<(String, String)>,
    /// The sandbox's user and group (never 0).
    pub uid: i64,
    /// The sandbox's limits.
    pub resources: Resources,
    /// The gateway's limits.
    pub gateway_resources: Resources,
    /// A RuntimeClass (gVisor, Kata) for the sandbox pod.
    pub runtime_class: Option<String>,
    /// Labels of the control plane's pods: they alone may call the gateway's management API.
    pub control_plane_labels: BTreeMap<String, String>,
    /// The control plane's namespace, when it is not the sandbox's.
    pub control_plane_namespace: Option<String>,
}

/// A thread's workspace on a PersistentVolumeClaim (`sandbox.kubernetes.workspace_storage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceClaim {
    /// Its size (`10Gi`).
    pub size: String,
    /// Its StorageClass; `None`, the cluster's default.
    pub storage_class: Option<String>,
}

/// What the gateway pod is given: its files and its environment.
#[derive(Clone, PartialEq, Eq)]
pub struct GatewayFiles {
    /// The policy (the gateway's own format, listeners placed for the pod).
    pub policy: String,
    /// The CA certificate (PEM); the sandbox trusts it.
    pub ca_cert: String,
    /// The CA key (PEM); only the gateway pod mounts it.
    pub ca_key: String,
    /// The gateway's environment: the real credentials and the management token.
    pub env: Vec<(String, String)>,
}

impl std::fmt::Debug for GatewayFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("GatewayFiles")
            .field("policy", &self.policy.len())
            .field("ca_key", &"(hidden)")
            .field("env", &names)
            .finish()
    }
}

/// The object every other one is owned by (its uid is known once it exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Its name (`centaur-<id>`).
    pub name: String,
    /// Its uid, from the API server.
    pub uid: String,
}

/// Why a spec cannot be rendered. Every problem is reported, not only the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sandbox's objects cannot be made: {}", .0.join("; "))]
pub struct SpecError(pub Vec<String>);

/// The environment variables the sandbox pod gets from the backend; a spec may not set them.
pub fn reserved_env() -> Vec<&'static str> {
    let mut v = vec![
        "CENTAUR_SANDBOX",
        "CENTAUR_GATEWAY",
        "CENTAUR_PROXY",
        "HOME",
    ];
    v.extend(CA_VARS);
    v
}

impl Spec {
    /// The parent's name, also the sandbox pod's.
    pub fn name(&self) -> String {
        format!("centaur-{}", self.id)
    }

    /// The thread's workspace claim's name: one per thread, whatever its sandbox.
    pub fn claim_name(&self) -> String {
        format!("centaur-ws-{}", self.thread_label)
    }

    /// The thread's workspace claim, when it has one: labelled with the thread, owned by no
    /// sandbox (deleting a sandbox keeps it), so the next sandbox of the thread mounts the
    /// same files.
    pub fn workspace_claim(&self) -> Option<Value> {
        let w = self.workspace.as_ref()?;
        let mut spec = json!({
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": w.size}},
        });
        if let Some(class) = &w.storage_class {
            spec["storageClassName"] = json!(class);
        }
        let mut labels = BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_string(),
                "centaur".to_string(),
            ),
            (
                "app.kubernetes.io/part-of".to_string(),
                "centaur".to_string(),
            ),
            (ROLE_LABEL.to_string(), "workspace".to_string()),
        ]);
        labels.insert(THREAD_LABEL.into(), self.thread_label.clone());
        Some(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": self.claim_name(),
                "namespace": self.namespace,
                "labels": labels,
                "annotations": {"centaur.dev/thread-key": self.thread_key},
            },
            "spec": spec,
        }))
    }

    /// The gateway's objects' name (pod, Service, ConfigMap).
    pub fn gateway_name(&self) -> String {
        format!("centaur-{}-gateway", self.id)
    }

    fn labels(&self, role: &str) -> BTreeMap<String, String> {
        let mut l: BTreeMap<String, String> = [
            ("app.kubernetes.io/managed-by", "centaur"),
            ("app.kubernetes.io/part-of", "centaur"),
            (SANDBOX_LABEL, self.id.as_str()),
            (DEPLOY_LABEL, self.deploy.as_str()),
            (ROLE_LABEL, role),
            (WARM_LABEL, if self.warm { "true" } else { "false" }),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if !self.thread_label.is_empty() {
            l.insert(THREAD_LABEL.into(), self.thread_label.clone());
        }
        l
    }

    /// The labels that select the sandbox pod (and nothing else).
    pub fn sandbox_selector(&self) -> BTreeMap<String, String> {
        self.selector("sandbox")
    }

    /// The labels that select the gateway pod (and nothing else).
    pub fn gateway_selector(&self) -> BTreeMap<String, String> {
        self.selector("gateway")
    }

    fn selector(&self, role: &str) -> BTreeMap<String, String> {
        [(SANDBOX_LABEL, self.id.as_str()), (ROLE_LABEL, role)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn metadata(&self, name: String, role: &str, owner: Option<&Owner>) -> Value {
        let mut m = json!({
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(role),
            "annotations": {"centaur.dev/thread-key": self.thread_key},
        });
        if let Some(o) = owner {
            m["ownerReferences"] = json!([{
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": o.name,
                "uid": o.uid,
                "controller": true,
            }]);
        }
        m
    }

    /// Every object after the parent, in creation order (see the module above).
    pub fn owned(
        &self,
        owner: &Owner,
        files: &GatewayFiles,
        gateway_ip: Ipv4Addr,
    ) -> Result<Vec<Value>, SpecError> {
        self.check()?;
        let [ca, env] = self.secrets(owner, files);
        let [np_sandbox, np_gateway] = self.network_policies(owner)?;
        Ok(vec![
            self.service(owner),
            ca,
            env,
            self.gateway_config(owner, files),
            np_sandbox,
            np_gateway,
            self.gateway_pod(owner),
            self.sandbox_pod(owner, gateway_ip),
        ])
    }

    /// 1. The parent ConfigMap: owns every other object, so deleting it removes them all.
    pub fn parent(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": self.metadata(self.name(), "parent", None),
            "data": {"thread-key": self.thread_key, "deploy": self.deploy},
        })
    }

    /// 2. The gateway's Service: DNS, HTTP, HTTPS and the tunnel for the sandbox, the
    ///    management API for the control plane.
    pub fn service(&self, owner: &Owner) -> Value {
        let p = Ports::default();
        let port = |name: &str, proto: &str, n: u16| json!({"name": name, "protocol": proto, "port": n, "targetPort": n});
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self.metadata(self.gateway_name(), "gateway", Some(owner)),
            "spec": {
                "type": "ClusterIP",
                "selector": self.gateway_selector(),
                "ports": [
                    port("dns-udp", "UDP", p.dns),
                    port("dns-tcp", "TCP", p.dns),
                    port("http", "TCP", p.http),
                    port("https", "TCP", p.https),
                    port("tunnel", "TCP", p.tunnel),
                    port("management", "TCP", MANAGEMENT_PORT),
                ],
            },
        })
    }

    /// 3. The gateway's two Secrets: `<gateway>-ca` (mounted as files) and `<gateway>-env`
    ///    (its environment). Neither is mounted into the sandbox pod.
    pub fn secrets(&self, owner: &Owner, files: &GatewayFiles) -> [Value; 2] {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let env: BTreeMap<&str, String> = files
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), b64(v)))
            .collect();
        let secret = |suffix: &str, data: Value| {
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": self.metadata(format!("{}-{suffix}", self.gateway_name()), "gateway", Some(owner)),
                "type": "Opaque",
                "data": data,
            })
        };
        [
            secret(
                "ca",
                json!({"ca.crt": b64(&files.ca_cert), "ca.key": b64(&files.ca_key)}),
            ),
            secret("env", json!(env)),
        ]
    }

    /// 4. The gateway's ConfigMap: its policy, and the CA certificate the sandbox trusts.
    pub fn gateway_config(&self, owner: &Owner, files: &GatewayFiles) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": self.metadata(self.gateway_name(), "gateway", Some(owner)),
            "data": {"policy.yaml": files.policy, "ca.crt": files.ca_cert},
        })
    }

    /// 5. The two NetworkPolicies (`netpol`'s cluster rendering), labelled and owned.
    pub fn network_policies(&self, owner: &Owner) -> Result<[Value; 2], SpecError> {
        let model =
            Model::new(&self.id, Ports::default()).map_err(|e| SpecError(vec![e.to_string()]))?;
        let cluster = Cluster {
            namespace: self.namespace.clone(),
            sandbox_labels: self.sandbox_selector(),
            gateway_labels: self.gateway_selector(),
            control_plane: (!self.control_plane_labels.is_empty()).then(|| ControlPlane {
                labels: self.control_plane_labels.clone(),
                namespace: self
                    .control_plane_namespace
                    .clone()
                    .filter(|ns| *ns != self.namespace),
                management_port: MANAGEMENT_PORT,
            }),
        };
        let [mut s, mut g] = netpol::network_policies(&model, &cluster);
        for (p, role) in [(&mut s, "sandbox"), (&mut g, "gateway")] {
            let name = p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            p["metadata"] = self.metadata(name, role, Some(owner));
        }
        Ok([s, g])
    }
}

#[path = "check.rs"]
mod check;
pub use check::{dns_label, label_value, quantity};

#[path = "pods.rs"]
mod pods;

#[cfg(test)]
#[path = "objects_tests.rs"]
mod tests;
