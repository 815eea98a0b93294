//! Threads' sandboxes on Kubernetes (`sandbox.backend: kubernetes`): a runtime is a sandbox
//! pod, its own gateway pod and the objects around them (`sandbox::kubernetes`), and its
//! supervisor is the sandbox pod's command, reached through the pod's exec API
//! ([`crate::supervisor::pod`]). The runtime's directory under `DATA/sandboxes` stays, as a
//! marker: its presence is what counting, idle suspension and the reaper see, as on the
//! local backend, and its `turns` file the time of the last turn.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sandbox::kubernetes::cluster::Cluster;
use sandbox::kubernetes::objects::{CA_DIR, GatewayFiles, MANAGEMENT_PORT, METRICS_PORT, Spec};
use serde_json::{Value, json};

use crate::runner::gateway_config::{self, open_transforms};
use crate::runner::internal;
use crate::server::backend::KubernetesSettings;
use crate::store::Assignment;
use crate::supervisor::pod::{PodDialer, command};
use crate::supervisor::{Client, SupervisorSpec};

mod warm;

/// The variable the sandbox gateway's management key is read from (its env Secret).
const MANAGEMENT_KEY_VAR: &str = "CENTAUR_MANAGEMENT_KEY";

/// One namespace of one cluster, with the settings every sandbox is made from.
#[derive(Debug)]
pub(super) struct Kube {
    cluster: Cluster,
    settings: KubernetesSettings,
    /// Labels every object (`centaur.dev/deploy`): this version and these images.
    deploy: String,
}

/// The sandbox id of a runtime (a DNS label: `rt_0123…` → `rt-0123…`).
pub(super) fn sandbox_id(runtime_id: &str) -> String {
    runtime_id.to_ascii_lowercase().replace('_', "-")
}

impl Kube {
    /// Connects with the configured kubeconfig, or the pod's service account.
    pub(super) async fn connect(settings: &KubernetesSettings) -> Result<Kube, String> {
        let cluster = Cluster::connect(
            settings.kubeconfig.as_deref(),
            settings.namespace.as_deref(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let d = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            format!(
                "{} {} {}",
                env!("CARGO_PKG_VERSION"),
                settings.image,
                settings.gateway_image
            )
            .as_bytes(),
        );
        let deploy = d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Kube {
            cluster,
            settings: settings.clone(),
            deploy,
        })
    }

    /// The supervisor of a runtime, through its pod; `dir` is the runtime's marker.
    pub(super) fn client(&self, dir: &Path, runtime_id: &str) -> Client {
        let pod = format!("centaur-{}", sandbox_id(runtime_id));
        Client::remote(dir, Arc::new(PodDialer::new(self.cluster.clone(), pod)))
    }

    /// Whether a thread's home outlives its pods (`sandbox.kubernetes.workspace_storage`).
    pub(super) fn keeps_home(&self) -> bool {
        self.settings.workspace.is_some()
    }

    /// Whether sandboxes get `centaur.internal` (`sandbox.kubernetes.api` is set).
    pub(super) fn routes_api(&self) -> bool {
        self.settings.api.is_some()
    }

    /// Creates the runtime's sandbox (its gateway from `gateway`), writes `home` (the
    /// harness's home files: path under the home, bytes) and launches `launch` in it; with
    /// `resume` (a CLI session id, and the spec to launch instead when the pod's home does
    /// not have it), `launch` resumes that session. Returns whether it did. On any failure
    /// everything made is deleted.
    pub(super) async fn start(
        &self,
        dir: &Path,
        a: &Assignment,
        launch: &SupervisorSpec,
        resume: Option<(&str, &SupervisorSpec)>,
        gateway: &GatewayInputs,
        home: &[(String, Vec<u8>)],
    ) -> Result<(Client, bool), String> {
        let made = self.create(dir, a, gateway, false).await;
        let client = self.client(dir, &a.runtime_id);
        let launched = match made {
            Ok(()) => self.launch(&client, launch, resume, home).await,
            Err(e) => Err(e),
        };
        match launched {
            Ok(resumed) => Ok((client, resumed)),
            Err(e) => {
                self.delete(&a.runtime_id).await;
                Err(e)
            }
        }
    }

    /// Makes the objects of `a`'s sandbox: with `warm`, a pool member for no thread yet
    /// (`g` empty: every request denied until a claim's policy arrives).
    async fn create(
        &self,
        dir: &Path,
        a: &Assignment,
        g: &GatewayInputs,
        warm: bool,
    ) -> Result<(), String> {
        let Rendered {
            mut doc,
            config,
            mut env,
        } = self.render(a, g)?;
        let (ca_cert, ca_key) = ca(dir)?;
        env.push((
            MANAGEMENT_KEY_VAR.into(),
            format!("{:032x}", rand::random::<u128>()),
        ));
        let spec = self.spec(a, &config, warm);
        let files = move |ip: Ipv4Addr| GatewayFiles {
            policy: {
                doc["dns"]["proxy_ip"] = json!(ip.to_string());
                doc.to_string()
            },
            ca_cert,
            ca_key,
            env,
        };
        self.cluster
            .create(&spec, files)
            .await
            .map(|_| ())
            .map_err(|e| format!("the sandbox's objects: {e}"))
    }

    /// The gateway's side of `a`'s sandbox: its policy (the DNS answer still to place), that
    /// policy checked, and the real values of its variables (the thread's token among them).
    fn render(&self, a: &Assignment, g: &GatewayInputs) -> Result<Rendered, String> {
        let text = match &g.policy {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                policy::Config::parse_placed(&text).map_err(|e| format!("{}: {e}", p.display()))?;
                Some(text)
            }
            None => None,
        };
        let base = match (&self.settings.api, &g.token) {
            (Some(_), Some(_)) => internal::route_doc(text.as_deref())?,
            _ => open_transforms(text.as_deref()).map(|(d, t)| restore(d, t))?,
        };
        // Checked with a stand-in address first: the real one is known only once the
        // gateway's Service exists.
        let mut doc = pod_policy(base, Ipv4Addr::UNSPECIFIED);
        label_audit(&mut doc, a);
        let config = policy::Config::parse(&doc.to_string())
            .map_err(|e| format!("the sandbox gateway's policy: {e}"))?;
        let mut env = gateway_env(&config, g.secrets_from.as_deref())?;
        if let Some(token) = &g.token {
            env.push((internal::TOKEN_VAR.into(), token.clone()));
        }
        Ok(Rendered { doc, config, env })
    }

    /// The objects' description for `a`'s sandbox.
    fn spec(&self, a: &Assignment, config: &policy::Config, warm: bool) -> Spec {
        let k = &self.settings;
        Spec {
            id: sandbox_id(&a.runtime_id),
            namespace: self.cluster.namespace().to_string(),
            thread_key: a.thread_key.clone(),
            thread_label: if warm {
                String::new()
            } else {
                crate::server::paths::thread_hash(&a.thread_key)
            },
            deploy: self.deploy.clone(),
            warm,
            image: k.image.clone(),
            gateway_image: k.gateway_image.clone(),
            workspace: k.workspace.clone(),
            // Fixed when the gateway pod starts: a warm member has the route its thread's
            // policy (and token) will use.
            routes: k
                .api
                .iter()
                .map(|api| format!("{}={api}", internal::HOST))
                .collect(),
            command: command(),
            env: gateway_config::placeholders(config),
            uid: k.uid,
            resources: k.resources.clone(),
            gateway_resources: k.gateway_resources.clone(),
            runtime_class: k.runtime_class.clone(),
            control_plane_labels: k.control_plane_labels.clone(),
            control_plane_namespace: k.control_plane_namespace.clone(),
        }
    }

    /// The namespace of its sandboxes.
    pub(super) fn namespace(&self) -> &str {
        self.cluster.namespace()
    }

    /// The deploy hash of every sandbox this server makes (version and images).
    pub(super) fn deploy(&self) -> &str {
        &self.deploy
    }

    /// Waits for the pod's supervisor to answer, gives it the home files, then the harness
    /// (see [`Kube::start`]); whether it resumed a session.
    async fn launch(
        &self,
        client: &Client,
        launch: &SupervisorSpec,
        resume: Option<(&str, &SupervisorSpec)>,
        home: &[(String, Vec<u8>)],
    ) -> Result<bool, String> {
        self.wait_warm(client).await?;
        for (path, bytes) in home {
            client
                .put_home(path, bytes)
                .await
                .map_err(|e| format!("home_files: {path}: {e}"))?;
        }
        let (spec, resumed) = match resume {
            Some((id, without)) => {
                if client.session(id).await.map_err(|e| e.to_string())? {
                    (launch, true)
                } else {
                    (without, false)
                }
            }
            None => (launch, false),
        };
        client.launch(spec).await.map_err(|e| e.to_string())?;
        Ok(resumed)
    }

    /// Waits until the pod's supervisor is warm (ready for its harness).
    async fn wait_warm(&self, client: &Client) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.cluster.ready_timeout;
        // The pod is ready once its container started; its supervisor answers a moment
        // later (not at all, then `starting`, then `warm`).
        loop {
            let late = tokio::time::Instant::now() > deadline;
            match client.status().await {
                Ok(s) if s["state"] == "warm" => return Ok(()),
                Ok(s) if s["state"] != "starting" => {
                    return Err(format!(
                        "the sandbox pod's supervisor is {}: {}",
                        s["state"], s["error"]
                    ));
                }
                Ok(_) if late => {
                    return Err("the sandbox pod's supervisor did not get ready".into());
                }
                Err(e) if late => {
                    return Err(format!("the sandbox pod's supervisor does not answer: {e}"));
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Deletes a runtime's sandbox (its parent; the garbage collector takes the rest).
    pub(super) async fn delete(&self, runtime_id: &str) {
        if let Err(e) = self.cluster.delete(&sandbox_id(runtime_id)).await {
            tracing::warn!("deleting sandbox {runtime_id}: {e}");
        }
    }

    /// Deletes every sandbox in the namespace that none of `runtimes` owns.
    pub(super) async fn reap(&self, runtimes: &BTreeSet<String>) -> Vec<String> {
        let keep = runtimes.iter().map(|r| sandbox_id(r)).collect();
        match self.cluster.reap(&keep).await {
            Ok(reaped) => reaped,
            Err(e) => {
                tracing::warn!("reaping sandboxes: {e}");
                Vec::new()
            }
        }
    }
}

/// A new CA for the sandbox's gateway, made in the runtime's marker and removed from it once
/// read: (certificate, key).
fn ca(dir: &Path) -> Result<(String, String), String> {
    let ca = dir.join("ca");
    let _ = std::fs::remove_dir_all(&ca);
    gateway::ca::init(
        &ca,
        &gateway::ca::CaInit {
            name: "Centaur sandbox CA".into(),
            algorithm: gateway::ca::CaAlgorithm::EcdsaP256,
            validity: Duration::from_secs(7 * 86400),
            permitted: vec![],
        },
    )
    .map_err(|e| format!("the sandbox's CA: {e}"))?;
    let read =
        |f: &str| std::fs::read_to_string(ca.join(f)).map_err(|e| format!("the sandbox's CA: {e}"));
    let pair = (read("ca.crt")?, read("ca.key")?);
    // The key lives in the gateway's Secret only.
    let _ = std::fs::remove_dir_all(&ca);
    Ok(pair)
}

/// The real values of every variable the policy reads: from `secrets` (a .env file), else
/// this process's environment. A variable with no value is left out (the gateway says so).
fn gateway_env(
    config: &policy::Config,
    secrets: Option<&Path>,
) -> Result<Vec<(String, String)>, String> {
    let file = crate::runner::spec::load_secret_map(secrets).map_err(|e| e.to_string())?;
    Ok(gateway_config::env_vars(config)
        .into_iter()
        .filter_map(|var| {
            let value = match file.get(&var) {
                Some(v) => String::from_utf8_lossy(v.expose()).into_owned(),
                None => std::env::var(&var).ok()?,
            };
            Some((var, value))
        })
        .collect())
}

/// What [`Kube::render`] gives.
struct Rendered {
    doc: Value,
    config: policy::Config,
    env: Vec<(String, String)>,
}

/// What a sandbox's gateway pod is made from: the server's policy and secrets files, and
/// the thread's token for `centaur.internal` (when `sandbox.kubernetes.api` is set). Kept
/// apart from the harness's spec, which goes into the pod.
#[derive(Debug, Default)]
pub(super) struct GatewayInputs {
    /// `sandbox.policy`.
    pub policy: Option<std::path::PathBuf>,
    /// `sandbox.secrets_from`.
    pub secrets_from: Option<std::path::PathBuf>,
    /// The thread's sandbox token, which the gateway injects for `centaur.internal`.
    pub token: Option<String>,
}

/// Puts back the transforms [`open_transforms`] took out (an array, or none); anything else
/// is left for the parser to refuse.
fn restore(mut doc: Value, transforms: Vec<Value>) -> Value {
    if doc["transforms"].is_array() || doc["transforms"].is_null() {
        doc["transforms"] = Value::Array(transforms);
    }
    doc
}

/// The sandbox gateway's policy: the file as written (its transforms, secrets, limits), with
/// the pod's listeners, its Service's address as the DNS answer, the CA mounted from its
/// Secret, the management and metrics listeners the control plane and probes use, and the
/// audit on stdout (the pod's log).
fn pod_policy(mut doc: Value, gateway_ip: Ipv4Addr) -> Value {
    let ports = netpol::Ports::default();
    let any = |port: u16| format!("0.0.0.0:{port}");
    doc["dns"] = json!({"listen": any(ports.dns), "proxy_ip": gateway_ip.to_string()});
    doc["proxy"] = json!({
        "https_listen": any(ports.https),
        "http_listen": any(ports.http),
        "tunnel_listen": any(ports.tunnel),
    });
    doc["tls"] =
        json!({"ca_cert": format!("{CA_DIR}/ca.crt"), "ca_key": format!("{CA_DIR}/ca.key")});
    doc["management"] = json!({"listen": any(MANAGEMENT_PORT), "api_key_env": MANAGEMENT_KEY_VAR});
    doc["metrics"] = json!({"listen": any(METRICS_PORT)});
    // The file's audit settings (durability, OTLP…) stay; the records go to stdout.
    let mut audit = doc["audit"].take();
    if !audit.is_object() {
        audit = json!({});
    }
    if let Some(a) = audit.as_object_mut() {
        for k in ["output", "stdout", "file"] {
            a.remove(k);
        }
        a.insert("output".into(), json!("stdout"));
    }
    doc["audit"] = audit;
    doc
}

/// Labels every audit record of the sandbox's gateway with the thread and runtime (as the
/// local backend does).
fn label_audit(doc: &mut Value, a: &Assignment) {
    doc["audit"]["sandbox"] = json!({
        "runtime_id": a.runtime_id,
        "sandbox_id": sandbox_id(&a.runtime_id),
    });
    // A warm member's records name no thread until one claims it.
    if !a.thread_key.is_empty() {
        doc["audit"]["sandbox"]["thread_key"] = json!(a.thread_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(text: Option<&str>, ip: Ipv4Addr) -> Result<Value, String> {
        let (d, t) = open_transforms(text)?;
        Ok(pod_policy(restore(d, t), ip))
    }

    #[test]
    fn the_pod_policy_is_a_valid_gateway_policy_with_the_pods_listeners() {
        let text = "transforms:\n  - name: allowlist\n    config: {domains: [api.example.test]}\n\
                    dns:\n  listen: 127.0.0.1:5353\n";
        let doc = placed(Some(text), Ipv4Addr::new(10, 96, 0, 7)).unwrap();
        let c = policy::Config::parse(&doc.to_string()).unwrap();
        assert_eq!(c.dns.proxy_ip, Some(Ipv4Addr::new(10, 96, 0, 7)));
        assert_eq!(c.dns.listen, Some("0.0.0.0:53".parse().unwrap()));
        assert_eq!(c.proxy.https_listen, Some("0.0.0.0:443".parse().unwrap()));
        assert_eq!(c.tls.ca_key.as_deref(), Some("/etc/centaur/ca/ca.key"));
        assert!(format!("{c:?}").contains("api.example.test"));
        // The file's audit settings stay, its destination does not.
        let audited = placed(
            Some("audit: {durability: strict, output: /var/log/x.jsonl}\n"),
            Ipv4Addr::LOCALHOST,
        )
        .unwrap();
        assert_eq!(
            audited["audit"],
            json!({"durability": "strict", "output": "stdout"})
        );
        // No policy: every request denied, with the pod's listeners.
        let none = placed(None, Ipv4Addr::new(10, 96, 0, 7)).unwrap();
        assert!(policy::Config::parse(&none.to_string()).is_ok(), "{none}");
        // With the route: centaur.internal allowed and its token injected, nothing more.
        let routed = pod_policy(
            internal::route_doc(Some(text)).unwrap(),
            Ipv4Addr::LOCALHOST,
        );
        let c = policy::Config::parse(&routed.to_string()).unwrap();
        assert_eq!(c.policy.secrets.len(), 2);
        assert!(format!("{c:?}").contains(internal::TOKEN_VAR));
        // Bad input stays bad: refused here, or by the gateway's parser with its reason.
        assert!(placed(Some("3"), Ipv4Addr::UNSPECIFIED).is_err());
        let bad = placed(Some("transforms: 3"), Ipv4Addr::UNSPECIFIED).unwrap();
        let e = policy::Config::parse(&bad.to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains("transforms"), "{e}");
    }

    #[test]
    fn runtime_ids_become_dns_labels() {
        assert_eq!(sandbox_id("rt_00ff12ab34cd56ef"), "rt-00ff12ab34cd56ef");
    }
}
