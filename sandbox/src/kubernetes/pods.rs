//! The two pods of a sandbox (steps 5 and 6 of `objects.rs`): its own gateway, and the
//! sandbox itself.

use std::net::Ipv4Addr;

use netpol::Ports;
use serde_json::{Value, json};

use super::{
    AGENT_DIR, CA_DIR, CA_INSIDE, CA_VARS, GATEWAY_UID, HOME, MANAGEMENT_PORT, METRICS_PORT, Owner,
    POLICY_FILE, Resources, SYSTEM_BUNDLES, Spec, WORKSPACE,
};

impl Spec {
    /// 6. The gateway pod: `centaur-gateway run` on the mounted policy, not root, nothing
    ///    writable but its scratch directory, low ports through the namespaced
    ///    `ip_unprivileged_port_start` sysctl rather than a capability.
    pub fn gateway_pod(&self, owner: &Owner) -> Value {
        let p = Ports::default();
        let cport = |name: &str, proto: &str, n: u16| json!({"name": name, "protocol": proto, "containerPort": n});
        let gw = self.gateway_name();
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self.metadata(gw.clone(), "gateway", Some(owner)),
            "spec": {
                "restartPolicy": "Always",
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": GATEWAY_UID,
                    "runAsGroup": GATEWAY_UID,
                    // The CA Secret's files are root's: without fsGroup the gateway's user
                    // could not read its key.
                    "fsGroup": GATEWAY_UID,
                    "seccompProfile": {"type": "RuntimeDefault"},
                    "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
                },
                "containers": [{
                    "name": "gateway",
                    "image": self.gateway_image,
                    "args": self.gateway_args(),
                    "envFrom": [{"secretRef": {"name": format!("{gw}-env")}}],
                    "ports": [
                        cport("dns-udp", "UDP", p.dns),
                        cport("dns-tcp", "TCP", p.dns),
                        cport("http", "TCP", p.http),
                        cport("https", "TCP", p.https),
                        cport("tunnel", "TCP", p.tunnel),
                        cport("management", "TCP", MANAGEMENT_PORT),
                        cport("metrics", "TCP", METRICS_PORT),
                    ],
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": METRICS_PORT}, "periodSeconds": 2},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": METRICS_PORT}, "periodSeconds": 10},
                    "resources": limits(&self.gateway_resources),
                    "securityContext": container_security(),
                    "volumeMounts": [
                        {"name": "policy", "mountPath": "/etc/centaur/gateway", "readOnly": true},
                        {"name": "ca", "mountPath": CA_DIR, "readOnly": true},
                        {"name": "scratch", "mountPath": "/var/lib/centaur"},
                    ],
                }],
                "volumes": [
                    {"name": "policy", "configMap": {"name": gw, "items": [{"key": "policy.yaml", "path": "policy.yaml"}]}},
                    {"name": "ca", "secret": {"secretName": format!("{gw}-ca"), "defaultMode": 0o440}},
                    {"name": "scratch", "emptyDir": {"sizeLimit": "256Mi"}},
                ],
            },
        })
    }

    /// The sandbox pod `spec` with its workspace and home on the thread's claim, when it has
    /// one.
    fn on_claim(&self, spec: &mut Value) {
        if self.workspace.is_none() {
            return;
        }
        // The workspace and the home live on the thread's claim (subPaths), not in
        // emptyDirs that go with the pod.
        let volumes = spec["volumes"].as_array_mut();
        if let Some(v) = volumes {
            v.retain(|v| v["name"] != "workspace" && v["name"] != "home");
            v.insert(
                0,
                json!({"name": "thread", "persistentVolumeClaim": {"claimName": self.claim_name()}}),
            );
        }
        // The kubelet makes a missing subPath as root's 0755 folder, which the sandbox's
        // user could not write: they are made first, as that user.
        spec["initContainers"] = json!([{
            "name": "workspace",
            "image": self.image,
            "command": ["mkdir", "-p", "/thread/work", "/thread/home"],
            "resources": limits(&self.resources),
            "securityContext": container_security(),
            "volumeMounts": [{"name": "thread", "mountPath": "/thread"}],
        }]);
    }

    /// A mount of the workspace or the home: its emptyDir, or its folder of the thread's
    /// claim.
    fn workspace_mount(&self, path: &str, sub: &str) -> Value {
        match &self.workspace {
            Some(_) => json!({"name": "thread", "mountPath": path, "subPath": sub}),
            None => {
                let name = if sub == "work" { "workspace" } else { "home" };
                json!({"name": name, "mountPath": path})
            }
        }
    }

    /// The gateway container's arguments: its policy and routes.
    fn gateway_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["run", "--config", POLICY_FILE].map(String::from).to_vec();
        for r in &self.routes {
            args.extend(["--route".to_string(), r.clone()]);
        }
        args
    }

    /// 7. The sandbox pod: not root, every capability dropped, `RuntimeDefault` seccomp, no
    ///    service-account token, no Service variables, a read-only root filesystem except the
    ///    workspace, the home and `/tmp`; its only resolver is its gateway's Service
    ///    (`gateway_ip`), and its environment holds the spec's placeholders, the gateway's
    ///    address and the CA trust variables only. Its command is the supervisor, whose
    ///    directory is an emptyDir of its own ([`AGENT_DIR`]).
    pub fn sandbox_pod(&self, owner: &Owner, gateway_ip: Ipv4Addr) -> Value {
        let mut env: Vec<Value> = vec![
            json!({"name": "CENTAUR_SANDBOX", "value": self.id}),
            json!({"name": "CENTAUR_GATEWAY", "value": gateway_ip.to_string()}),
            json!({"name": "CENTAUR_PROXY", "value": format!("http://{gateway_ip}:{}", Ports::default().tunnel)}),
            json!({"name": "HOME", "value": HOME}),
        ];
        env.extend(
            CA_VARS
                .iter()
                .map(|v| json!({"name": v, "value": CA_INSIDE})),
        );
        env.extend(self.env.iter().map(|(k, v)| json!({"name": k, "value": v})));
        let mut mounts = vec![
            self.workspace_mount(WORKSPACE, "work"),
            self.workspace_mount(HOME, "home"),
            json!({"name": "tmp", "mountPath": "/tmp"}),
            json!({"name": "agent", "mountPath": AGENT_DIR}),
            json!({"name": "trust", "mountPath": "/etc/centaur/trust", "readOnly": true}),
        ];
        // The system bundles too, so a tool that reads no variable trusts only the gateway.
        mounts.extend(SYSTEM_BUNDLES.iter().take(1).map(
            |b| json!({"name": "trust", "mountPath": b, "subPath": "ca.crt", "readOnly": true}),
        ));
        let mut spec = json!({
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "hostname": "sandbox",
            "dnsPolicy": "None",
            "dnsConfig": {"nameservers": [gateway_ip.to_string()], "searches": [], "options": [{"name": "ndots", "value": "1"}]},
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": self.uid,
                "runAsGroup": self.uid,
                "fsGroup": self.uid,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "sandbox",
                "image": self.image,
                "command": self.command,
                "tty": false,
                "workingDir": WORKSPACE,
                "env": env,
                "resources": limits(&self.resources),
                "securityContext": container_security(),
                "volumeMounts": mounts,
            }],
            "volumes": [
                {"name": "workspace", "emptyDir": {"sizeLimit": self.resources.ephemeral_storage}},
                {"name": "home", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "agent", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "trust", "configMap": {"name": self.gateway_name(), "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            ],
        });
        if let Some(rc) = &self.runtime_class {
            spec["runtimeClassName"] = json!(rc);
        }
        self.on_claim(&mut spec);
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self.metadata(self.name(), "sandbox", Some(owner)),
            "spec": spec,
        })
    }
}

fn container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "privileged": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": {"drop": ["ALL"]},
    })
}

fn limits(r: &Resources) -> Value {
    json!({
        "limits": {"cpu": r.cpu, "memory": r.memory, "ephemeral-storage": r.ephemeral_storage},
        "requests": {"cpu": "10m", "memory": r.memory, "ephemeral-storage": "64Mi"},
    })
}
