//! A sandbox's objects in a real cluster (kube-rs): created by server-side apply in the
//! order of the module above, removed by deleting the parent (the garbage collector takes
//! the rest), repaired by applying again, found again by their labels.
//!
//! A failure halfway through creation, **or the caller giving up** (the future dropped),
//! deletes the parent and with it whatever was created: nothing is left behind (the seed's
//! #365). Applying again repairs a sandbox whose objects were deleted (#798).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value;

use super::objects::{
    DEPLOY_LABEL, GatewayFiles, Owner, ROLE_LABEL, SANDBOX_LABEL, Spec, SpecError, THREAD_LABEL,
    WARM_LABEL,
};

/// The field manager of every apply: the objects' fields are ours, and a second apply with
/// the same manager is a no-op or an update, never a conflict.
pub const FIELD_MANAGER: &str = "centaur";

/// A cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable credentials (kubeconfig or in-cluster).
    #[error("kubernetes credentials: {0}")]
    Config(String),
    /// The spec cannot make valid objects.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The API server refused or failed a call.
    #[error("{what}: {source}")]
    Api {
        /// Which call, on which object.
        what: String,
        /// What the API server said.
        source: kube::Error,
    },
    /// A pod did not become ready in time.
    #[error("{what} was not ready within {secs} s (phase {phase})")]
    NotReady {
        /// The pod.
        what: String,
        /// How long we waited.
        secs: u64,
        /// Its last phase.
        phase: String,
    },
    /// The API server's answer lacked a field it always sets.
    #[error("{0}")]
    Answer(String),
}

/// A sandbox that exists in the cluster, as its parent says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The sandbox's id.
    pub id: String,
    /// Its thread label (empty for an unclaimed warm member).
    pub thread: String,
    /// The deploy that made it.
    pub deploy: String,
    /// An unclaimed warm member.
    pub warm: bool,
}

/// What [`Cluster::create`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The parent (owner of everything else).
    pub owner: Owner,
    /// The gateway Service's address: the sandbox's resolver and proxy.
    pub gateway_ip: Ipv4Addr,
}

/// One namespace of one cluster.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    namespace: String,
    /// How long a pod may take to become ready.
    pub ready_timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// The IPv4 address a Service was given (`spec.clusterIP`).
fn cluster_ip(service: &DynamicObject) -> Option<Ipv4Addr> {
    service.data["spec"]["clusterIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
}

fn resource(kind: &str) -> ApiResource {
    match kind {
        "NetworkPolicy" => ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("networking.k8s.io", "v1", kind),
            "networkpolicies",
        ),
        _ => ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", kind)),
    }
}

/// The kinds a sandbox is made of (for the reaper's sweep).
const KINDS: [&str; 5] = ["Pod", "Service", "Secret", "ConfigMap", "NetworkPolicy"];

impl Cluster {
    /// Connects with `kubeconfig` (its current context), or with the pod's service account
    /// when there is none; `namespace` defaults to the kubeconfig context's, else the pod's.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        namespace: Option<&str>,
    ) -> Result<Cluster, ClusterError> {
        let config = match kubeconfig {
            Some(p) => {
                let kc = Kubeconfig::read_from(p)
                    .map_err(|e| ClusterError::Config(format!("{}: {e}", p.display())))?;
                Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| ClusterError::Config(format!("{}: {e}", p.display())))?
            }
            None => Config::incluster().map_err(|e| {
                ClusterError::Config(format!(
                    "not in a cluster and no kubeconfig given (sandbox.kubernetes.kubeconfig): {e}"
                ))
            })?,
        };
        let namespace = namespace.map_or(config.default_namespace.clone(), str::to_string);
        let client = Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))?;
        Ok(Cluster {
            client,
            namespace,
            ready_timeout: Duration::from_secs(120),
        })
    }

    /// The namespace sandboxes go to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The API client.
    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    fn api(&self, kind: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &resource(kind))
    }

    async fn apply(&self, obj: &Value) -> Result<DynamicObject, ClusterError> {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        self.api(kind)
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await
            .map_err(|source| ClusterError::Api {
                what: format!("apply {kind} {name}"),
                source,
            })
    }

    /// Creates the sandbox `spec` describes, or brings an existing one back to it (a
    /// missing gateway object is made again, the CA and the credentials unchanged when
    /// `files` gives the same ones). `files` gets the gateway Service's address (the
    /// policy's DNS answer). Returns once both pods are ready. When this call made the
    /// parent, any failure, or this future being dropped first, deletes everything it made;
    /// a failed repair of an existing sandbox leaves it for the caller to retry or delete.
    pub async fn create(
        &self,
        spec: &Spec,
        files: impl FnOnce(Ipv4Addr) -> GatewayFiles,
    ) -> Result<Created, ClusterError> {
        spec.check()?;
        // The thread's workspace first: it belongs to the thread, not to this sandbox, and
        // stays whatever happens to the sandbox.
        if let Some(claim) = spec.workspace_claim() {
            self.apply(&claim).await?;
        }
        let existed = self.get("ConfigMap", &spec.name()).await?.is_some();
        let parent = self.apply(&spec.parent()).await?;
        let mut undo = Undo {
            cluster: (!existed).then(|| self.clone()),
            name: spec.name(),
        };
        let result = self.create_owned(spec, &parent, files).await;
        undo.cluster = None;
        if result.is_err() && !existed {
            let _ = self.delete_object("ConfigMap", &spec.name()).await;
        }
        result
    }

    async fn create_owned(
        &self,
        spec: &Spec,
        parent: &DynamicObject,
        files: impl FnOnce(Ipv4Addr) -> GatewayFiles,
    ) -> Result<Created, ClusterError> {
        let owner = Owner {
            name: spec.name(),
            uid: parent
                .metadata
                .uid
                .clone()
                .ok_or_else(|| ClusterError::Answer("the parent has no uid".into()))?,
        };
        let service = self.apply(&spec.service(&owner)).await?;
        let gateway_ip = cluster_ip(&service).ok_or_else(|| {
            ClusterError::Answer("the gateway Service has no IPv4 clusterIP".into())
        })?;
        let files = files(gateway_ip);
        let objects = spec.owned(&owner, &files, gateway_ip)?;
        // A sandbox pod that resolves through an older gateway address (its Service was
        // deleted and made again) is replaced: its DNS is fixed at creation.
        if let Some(old) = self.get("Pod", &spec.name()).await? {
            let ns = &old.data["spec"]["dnsConfig"]["nameservers"][0];
            if ns.as_str() != Some(&gateway_ip.to_string()) {
                self.delete_object("Pod", &spec.name()).await?;
            }
        }
        // Everything but the Service (applied above) and the sandbox pod, in order.
        for obj in &objects[1..objects.len() - 1] {
            self.apply(obj).await?;
        }
        self.wait_ready(&spec.gateway_name()).await?;
        if let Some(pod) = objects.last() {
            self.apply(pod).await?;
        }
        self.wait_ready(&spec.name()).await?;
        Ok(Created { owner, gateway_ip })
    }

    /// Hands the warm sandbox `spec.id` to the thread `spec` names: its parent is applied
    /// again with the thread's labels, and its gateway's ConfigMap and env Secret with the
    /// thread's policy and variables (what a restarted gateway pod starts from; the
    /// variables the Secret held, its management key among them, stay unless `files`
    /// gives them anew; the CA stays). `files` gets the gateway Service's address. The
    /// running gateway is told separately (its management API): a pod's environment is
    /// fixed at its start. Returns the Service's address.
    pub async fn retarget(
        &self,
        spec: &Spec,
        files: impl FnOnce(Ipv4Addr) -> GatewayFiles,
    ) -> Result<Ipv4Addr, ClusterError> {
        spec.check()?;
        let missing = |what: &str| ClusterError::Answer(format!("sandbox {}: no {what}", spec.id));
        let parent = self
            .get("ConfigMap", &spec.name())
            .await?
            .ok_or_else(|| missing("parent"))?;
        let owner = Owner {
            name: spec.name(),
            uid: parent.metadata.uid.ok_or_else(|| missing("parent uid"))?,
        };
        let gw = spec.gateway_name();
        let service = self
            .get("Service", &gw)
            .await?
            .ok_or_else(|| missing("Service"))?;
        let gateway_ip =
            cluster_ip(&service).ok_or_else(|| missing("IPv4 clusterIP on its gateway Service"))?;
        let config = self
            .get("ConfigMap", &gw)
            .await?
            .ok_or_else(|| missing("gateway ConfigMap"))?;
        let secret = self
            .get("Secret", &format!("{gw}-env"))
            .await?
            .ok_or_else(|| missing("gateway env Secret"))?;
        let mut files = files(gateway_ip);
        files.ca_cert = config.data["data"]["ca.crt"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let given: BTreeSet<String> = files.env.iter().map(|(k, _)| k.clone()).collect();
        if let Some(data) = secret.data["data"].as_object() {
            use base64::Engine as _;
            for (k, v) in data {
                let value = v
                    .as_str()
                    .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                    .and_then(|v| String::from_utf8(v).ok());
                if let (false, Some(value)) = (given.contains(k), value) {
                    files.env.push((k.clone(), value));
                }
            }
        }
        let [_, env] = spec.secrets(&owner, &files);
        for obj in [spec.parent(), env, spec.gateway_config(&owner, &files)] {
            self.apply(&obj).await?;
        }
        Ok(gateway_ip)
    }

    async fn get(&self, kind: &str, name: &str) -> Result<Option<DynamicObject>, ClusterError> {
        self.api(kind)
            .get_opt(name)
            .await
            .map_err(|source| ClusterError::Api {
                what: format!("get {kind} {name}"),
                source,
            })
    }

    /// Waits until pod `name` has the Ready condition.
    async fn wait_ready(&self, name: &str) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + self.ready_timeout;
        let mut phase = String::from("unknown");
        loop {
            if let Some(pod) = self.get("Pod", name).await? {
                let st = &pod.data["status"];
                phase = st["phase"].as_str().unwrap_or("unknown").to_string();
                let condition = st["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
                if condition.is_some_and(|c| c["status"] == "True") {
                    return Ok(());
                }
                // What the kubelet says keeps it from ready, if anything.
                if let Some(why) = condition.and_then(|c| c["message"].as_str()) {
                    phase = format!("{phase}: {why}");
                }
                if st["phase"] == "Failed" || st["phase"] == "Succeeded" {
                    break;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ClusterError::NotReady {
            what: format!("pod {name}"),
            secs: self.ready_timeout.as_secs(),
            phase,
        })
    }

    async fn delete_object(&self, kind: &str, name: &str) -> Result<bool, ClusterError> {
        match self
            .api(kind)
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(source) => Err(ClusterError::Api {
                what: format!("delete {kind} {name}"),
                source,
            }),
        }
    }

    /// Deletes sandbox `id`: its parent, and (background propagation) everything it owns.
    /// Returns false when it did not exist.
    pub async fn delete(&self, id: &str) -> Result<bool, ClusterError> {
        self.delete_object("ConfigMap", &format!("centaur-{id}"))
            .await
    }

    /// Every sandbox in the namespace, by its parent.
    pub async fn members(&self) -> Result<Vec<Member>, ClusterError> {
        let lp = ListParams::default().labels(&format!(
            "app.kubernetes.io/managed-by=centaur,{ROLE_LABEL}=parent"
        ));
        let list = self
            .api("ConfigMap")
            .list(&lp)
            .await
            .map_err(|source| ClusterError::Api {
                what: "list sandboxes".into(),
                source,
            })?;
        Ok(list
            .items
            .iter()
            .filter_map(|o| {
                let l = o.metadata.labels.as_ref()?;
                Some(Member {
                    id: l.get(SANDBOX_LABEL)?.clone(),
                    thread: l.get(THREAD_LABEL).cloned().unwrap_or_default(),
                    deploy: l.get(DEPLOY_LABEL).cloned().unwrap_or_default(),
                    warm: l.get(WARM_LABEL).is_some_and(|w| w == "true"),
                })
            })
            .collect())
    }

    /// Deletes every sandbox whose id is not in `keep`, and every centaur object of a
    /// sandbox not in `keep` that has no parent any more (left by a crash between calls, or
    /// by hand); returns what it deleted, as `Kind/name`.
    pub async fn reap(&self, keep: &BTreeSet<String>) -> Result<Vec<String>, ClusterError> {
        let mut reaped = Vec::new();
        let mut parents = BTreeSet::new();
        for m in self.members().await? {
            if keep.contains(&m.id) {
                parents.insert(m.id);
            } else if self.delete(&m.id).await? {
                reaped.push(format!("ConfigMap/centaur-{}", m.id));
            }
        }
        let lp = ListParams::default().labels(&format!(
            "app.kubernetes.io/managed-by=centaur,{ROLE_LABEL}!=parent"
        ));
        for kind in KINDS {
            let list = self
                .api(kind)
                .list(&lp)
                .await
                .map_err(|source| ClusterError::Api {
                    what: format!("list {kind}"),
                    source,
                })?;
            for o in list.items {
                let id = o
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SANDBOX_LABEL));
                let Some(name) = o.metadata.name.as_deref() else {
                    continue;
                };
                // A kept sandbox's objects stay even when its parent was not listed: it
                // may be being created right now (its parent made after the list).
                if id.is_none_or(|id| !parents.contains(id) && !keep.contains(id))
                    && self.delete_object(kind, name).await?
                {
                    reaped.push(format!("{kind}/{name}"));
                }
            }
        }
        Ok(reaped)
    }
}

/// Deletes a half-made sandbox's parent unless disarmed (the creation finished): on an
/// error return and when the creating future is dropped alike.
struct Undo {
    cluster: Option<Cluster>,
    name: String,
}

impl Drop for Undo {
    fn drop(&mut self) {
        let Some(cluster) = self.cluster.take() else {
            return;
        };
        let name = std::mem::take(&mut self.name);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = cluster.delete_object("ConfigMap", &name).await;
            });
        }
    }
}
