//! `sandbox.backend` and `sandbox.kubernetes`: where threads' sandboxes run.
//!
//! ```yaml
//! sandbox:
//!   backend: kubernetes            # or local (the default)
//!   kubernetes:
//!     namespace: centaur-sandboxes # default: the server pod's own namespace
//!     image: registry.example.com/centaur/sandbox:1.0
//!     gateway_image: registry.example.com/centaur/gateway:1.0
//!     kubeconfig: ~/.kube/config   # default: in-cluster credentials
//!     api: centaur.centaur.svc:8700  # this server as gateway pods reach it (centaur.internal)
//!     workspace_storage: 10Gi      # each thread's workspace and home on a claim (kept)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sandbox::kubernetes::objects::{Resources, WorkspaceClaim, dns_label, label_value, quantity};
use serde::Deserialize;

/// Where sandboxes run.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// This machine: namespaces, nftables, cgroups (needs root).
    #[default]
    Local,
    /// A Kubernetes cluster: a sandbox pod and its own gateway pod per thread.
    Kubernetes,
}

/// `sandbox.kubernetes:`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The namespace of every sandbox object (default: the server pod's own, else `default`).
    pub namespace: Option<String>,
    /// The sandbox image (the agent CLIs). Required.
    pub image: Option<String>,
    /// The gateway image (`centaur-gateway`). Required.
    pub gateway_image: Option<String>,
    /// A kubeconfig file; without it, the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// The sandbox's user (default 1001; never 0).
    pub uid: Option<i64>,
    /// The sandbox's CPU limit (default `2`).
    pub cpu: Option<String>,
    /// The sandbox's memory (default `4Gi`).
    pub memory: Option<String>,
    /// The sandbox's scratch disk: workspace and writable layer (default `10Gi`).
    pub ephemeral_storage: Option<String>,
    /// The gateway's CPU limit (default `500m`).
    pub gateway_cpu: Option<String>,
    /// The gateway's memory (default `256Mi`).
    pub gateway_memory: Option<String>,
    /// A RuntimeClass for sandbox pods (gVisor, Kata).
    pub runtime_class: Option<String>,
    /// Labels of the server's own pods: gateways accept management calls only from them
    /// (default `app.kubernetes.io/name: centaur`).
    #[serde(default)]
    pub control_plane_labels: BTreeMap<String, String>,
    /// The server's own namespace, when sandboxes go to another (default: the same).
    pub control_plane_namespace: Option<String>,
    /// Each thread's workspace and home on a PersistentVolumeClaim of this size, kept when
    /// its sandbox pod is replaced; without it they go with the pod.
    pub workspace_storage: Option<String>,
    /// The StorageClass of those claims (default: the cluster's).
    pub storage_class: Option<String>,
    /// This server's API as the sandboxes' gateway pods reach it, `HOST:PORT` (its
    /// Service): where `centaur.internal` (tools, MCP) goes. Without it, threads on
    /// Kubernetes have no `centaur.internal`.
    pub api: Option<String>,
}

/// `sandbox.kubernetes`, checked and defaulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// See [`KubernetesConfig::namespace`]; `None` means the pod's own.
    pub namespace: Option<String>,
    /// See [`KubernetesConfig::image`].
    pub image: String,
    /// See [`KubernetesConfig::gateway_image`].
    pub gateway_image: String,
    /// See [`KubernetesConfig::kubeconfig`].
    pub kubeconfig: Option<PathBuf>,
    /// See [`KubernetesConfig::uid`].
    pub uid: i64,
    /// The sandbox pod's limits.
    pub resources: Resources,
    /// The gateway pod's limits.
    pub gateway_resources: Resources,
    /// See [`KubernetesConfig::runtime_class`].
    pub runtime_class: Option<String>,
    /// See [`KubernetesConfig::control_plane_labels`].
    pub control_plane_labels: BTreeMap<String, String>,
    /// See [`KubernetesConfig::control_plane_namespace`].
    pub control_plane_namespace: Option<String>,
    /// See [`KubernetesConfig::api`].
    pub api: Option<String>,
    /// See [`KubernetesConfig::workspace_storage`].
    pub workspace: Option<WorkspaceClaim>,
}

/// Where sandboxes run, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// This machine.
    Local,
    /// A cluster.
    Kubernetes(Box<KubernetesSettings>),
}

/// Checks `backend` and its section, reporting every problem into `errors`.
pub fn settle(
    kind: BackendKind,
    k: Option<KubernetesConfig>,
    base: &Path,
    errors: &mut Vec<String>,
) -> Backend {
    match (kind, k) {
        (BackendKind::Local, None) => Backend::Local,
        (BackendKind::Local, Some(_)) => {
            errors.push(
                "sandbox.kubernetes is set but sandbox.backend is local (add `backend: kubernetes`)"
                    .into(),
            );
            Backend::Local
        }
        (BackendKind::Kubernetes, None) => {
            errors.push(
                "sandbox.backend is kubernetes but sandbox.kubernetes is missing (it needs image and gateway_image)"
                    .into(),
            );
            Backend::Local
        }
        (BackendKind::Kubernetes, Some(k)) => Backend::Kubernetes(Box::new(k.settle(base, errors))),
    }
}

impl KubernetesConfig {
    fn settle(self, base: &Path, errors: &mut Vec<String>) -> KubernetesSettings {
        let at = "sandbox.kubernetes";
        let names = [
            ("namespace", &self.namespace, "a namespace"),
            (
                "control_plane_namespace",
                &self.control_plane_namespace,
                "a namespace",
            ),
            ("runtime_class", &self.runtime_class, "a RuntimeClass"),
            ("storage_class", &self.storage_class, "a StorageClass"),
        ];
        for (key, v, what) in names {
            if let Some(v) = v.as_deref().filter(|n| !dns_label(n)) {
                errors.push(format!("{at}.{key}: {v:?} is not {what} name"));
            }
        }
        let mut image = |v: Option<String>, key: &str| match v {
            Some(i) if !i.is_empty() && !i.contains(char::is_whitespace) => i,
            Some(i) => {
                errors.push(format!("{at}.{key}: {i:?} is not an image reference"));
                i
            }
            None => {
                errors.push(format!("{at}.{key} is required"));
                String::new()
            }
        };
        let (img, gw_img) = (
            image(self.image, "image"),
            image(self.gateway_image, "gateway_image"),
        );
        let uid = self.uid.unwrap_or(1001);
        if uid <= 0 {
            errors.push(format!("{at}.uid: {uid} would be root (or is invalid)"));
        }
        let mut q = |v: Option<String>, key: &str, default: &str| {
            let v = v.unwrap_or_else(|| default.to_string());
            if !quantity(&v) {
                errors.push(format!(
                    "{at}.{key}: {v:?} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)"
                ));
            }
            v
        };
        let resources = Resources {
            cpu: q(self.cpu, "cpu", "2"),
            memory: q(self.memory, "memory", "4Gi"),
            ephemeral_storage: q(self.ephemeral_storage, "ephemeral_storage", "10Gi"),
        };
        let gateway_resources = Resources {
            cpu: q(self.gateway_cpu, "gateway_cpu", "500m"),
            memory: q(self.gateway_memory, "gateway_memory", "256Mi"),
            ephemeral_storage: "512Mi".into(),
        };
        check_api(self.api.as_deref(), errors);
        let workspace = workspace(self.workspace_storage, self.storage_class.clone(), errors);
        let labels = control_plane_labels(self.control_plane_labels, errors);
        KubernetesSettings {
            namespace: self.namespace,
            image: img,
            gateway_image: gw_img,
            kubeconfig: self
                .kubeconfig
                .map(|p| if p.is_absolute() { p } else { base.join(p) }),
            uid,
            resources,
            gateway_resources,
            runtime_class: self.runtime_class,
            control_plane_labels: labels,
            control_plane_namespace: self.control_plane_namespace,
            api: self.api,
            workspace,
        }
    }
}

/// `sandbox.kubernetes.workspace_storage` and `storage_class`.
fn workspace(
    size: Option<String>,
    storage_class: Option<String>,
    errors: &mut Vec<String>,
) -> Option<WorkspaceClaim> {
    let at = "sandbox.kubernetes";
    let Some(size) = size else {
        if storage_class.is_some() {
            errors.push(format!(
                "{at}.storage_class is set but workspace_storage is not (add workspace_storage: 10Gi)"
            ));
        }
        return None;
    };
    if !quantity(&size) {
        errors.push(format!(
            "{at}.workspace_storage: {size:?} is not a Kubernetes quantity (e.g. 10Gi)"
        ));
    }
    Some(WorkspaceClaim {
        size,
        storage_class,
    })
}

/// `sandbox.kubernetes.api`: `HOST:PORT`.
fn check_api(api: Option<&str>, errors: &mut Vec<String>) {
    let Some(api) = api else { return };
    let ok = api.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if !ok {
        errors.push(format!(
            "sandbox.kubernetes.api: {api:?} is not HOST:PORT (the server's Service, e.g. centaur.centaur.svc:8700)"
        ));
    }
}

/// `sandbox.kubernetes.control_plane_labels`, defaulted and checked.
fn control_plane_labels(
    mut labels: BTreeMap<String, String>,
    errors: &mut Vec<String>,
) -> BTreeMap<String, String> {
    if labels.is_empty() {
        labels.insert("app.kubernetes.io/name".into(), "centaur".into());
    }
    for (k, v) in &labels {
        if k.is_empty() || !label_value(v) {
            errors.push(format!(
                "sandbox.kubernetes.control_plane_labels: {k}={v:?} is not a label"
            ));
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Backend, Vec<String>> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct S {
            #[serde(default)]
            backend: BackendKind,
            kubernetes: Option<KubernetesConfig>,
        }
        let s: S = serde_saphyr::from_str(yaml).map_err(|e| vec![e.to_string()])?;
        let mut errors = Vec::new();
        let b = settle(
            s.backend,
            s.kubernetes,
            Path::new("/etc/centaur"),
            &mut errors,
        );
        if errors.is_empty() {
            Ok(b)
        } else {
            Err(errors)
        }
    }

    #[test]
    fn the_issue_config_shape_is_accepted_with_defaults() {
        let b = check(
            "backend: kubernetes\nkubernetes:\n  namespace: agents\n  image: sb:1\n  gateway_image: gw:1\n  kubeconfig: kube.yaml\n",
        )
        .unwrap();
        let Backend::Kubernetes(k) = b else {
            panic!("{b:?}")
        };
        assert_eq!(k.namespace.as_deref(), Some("agents"));
        assert_eq!(k.kubeconfig, Some(PathBuf::from("/etc/centaur/kube.yaml")));
        assert_eq!(k.uid, 1001);
        assert_eq!(k.resources.memory, "4Gi");
        assert_eq!(k.control_plane_labels["app.kubernetes.io/name"], "centaur");
        assert_eq!(check("").unwrap(), Backend::Local);
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        let errs = check(
            "backend: kubernetes\nkubernetes:\n  namespace: Bad_NS\n  gateway_image: 'a b'\n  uid: 0\n  memory: lots\n  runtime_class: '-x'\n  api: centaur.svc\n  storage_class: fast\n",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 8, "{errs:#?}");
        for want in [
            "namespace",
            "image is required",
            "gateway_image",
            "uid: 0",
            "memory",
            "runtime_class",
            "api: \"centaur.svc\" is not HOST:PORT",
            "storage_class is set but workspace_storage is not",
        ] {
            assert!(errs.iter().any(|e| e.contains(want)), "{want}: {errs:#?}");
        }
        let errs = check("backend: kubernetes\n").unwrap_err();
        assert!(
            errs[0].contains("sandbox.kubernetes is missing"),
            "{errs:?}"
        );
        let errs = check("kubernetes: {image: a, gateway_image: b}\n").unwrap_err();
        assert!(errs[0].contains("backend is local"), "{errs:?}");
        let errs = check("backend: nomad\n").unwrap_err();
        assert!(errs[0].contains("nomad"), "{errs:?}");
    }
}
