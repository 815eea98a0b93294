//! The Kubernetes backend against a fake API server (tests/fakes/kube_api.py: HTTPS, bearer
//! token, discovery, server-side apply, watch, the garbage collector, pod readiness), with the
//! real kubectl (1.35, from scripts/install-deps) reading the same fake to show what exists.
//! There is no cluster here: what a real one would do beyond the documented API is a known
//! gap (README).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sandbox::kubernetes::cluster::{Cluster, ClusterError};
use sandbox::kubernetes::objects::{GatewayFiles, Resources, Spec};
use serde_json::{Value, json};
use testkit::kube::FakeApi;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The fake API server, killed on drop.
struct Fake {
    api: FakeApi,
}

impl Fake {
    fn start() -> Fake {
        Fake {
            api: FakeApi::start(&repo()),
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.api.kubeconfig()
    }

    async fn cluster(&self) -> Cluster {
        Cluster::connect(Some(&self.kubeconfig()), Some("agents"))
            .await
            .unwrap()
    }

    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        self.api.kubectl(args)
    }

    /// `kind/name` of every object of sandbox `id`, as kubectl lists them.
    fn objects_of(&self, id: &str) -> Vec<String> {
        self.api.objects(Some(&format!("centaur.dev/sandbox={id}")))
    }

    fn control(&self, what: &str, body: Value) {
        self.api.control(what, &body);
    }

    fn requests(&self) -> Vec<Value> {
        self.api.requests()
    }
}

fn spec(id: &str) -> Spec {
    Spec {
        id: id.into(),
        namespace: "agents".into(),
        thread_key: format!("api:{id}"),
        thread_label: format!("t-{id}"),
        deploy: "deploy-1".into(),
        warm: false,
        image: "sandbox:1".into(),
        gateway_image: "gateway:1".into(),
        workspace: None,
        routes: vec![],
        command: vec!["sleep".into(), "infinity".into()],
        env: vec![("GITHUB_TOKEN".into(), "GITHUB_TOKEN".into())],
        uid: 1001,
        resources: Resources {
            cpu: "1".into(),
            memory: "1Gi".into(),
            ephemeral_storage: "1Gi".into(),
        },
        gateway_resources: Resources {
            cpu: "200m".into(),
            memory: "64Mi".into(),
            ephemeral_storage: "256Mi".into(),
        },
        runtime_class: None,
        control_plane_labels: [("app.kubernetes.io/name".to_string(), "centaur".to_string())]
            .into(),
        control_plane_namespace: None,
    }
}

fn files(ip: std::net::Ipv4Addr) -> GatewayFiles {
    GatewayFiles {
        policy: format!("dns:\n  proxy_ip: {ip}\n"),
        ca_cert: "CERT".into(),
        ca_key: "KEY".into(),
        env: vec![("GITHUB_REAL".into(), "ghp_real".into())],
    }
}

const ALL: [&str; 9] = [
    "ConfigMap/centaur-sb-1",
    "ConfigMap/centaur-sb-1-gateway",
    "NetworkPolicy/centaur-gateway-sb-1",
    "NetworkPolicy/centaur-sandbox-sb-1",
    "Pod/centaur-sb-1",
    "Pod/centaur-sb-1-gateway",
    "Secret/centaur-sb-1-gateway-ca",
    "Secret/centaur-sb-1-gateway-env",
    "Service/centaur-sb-1-gateway",
];

/// Invariant 6: the NetworkPolicies exist before either pod, and the sandbox resolves
/// through its own gateway's Service; deleting the parent removes every object.
#[tokio::test]
async fn a_sandbox_is_applied_in_order_and_removed_with_its_parent() {
    let fake = Fake::start();
    let c = fake.cluster().await;
    let made = c.create(&spec("sb-1"), files).await.unwrap();
    assert_eq!(fake.objects_of("sb-1"), ALL);
    let applies: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r["method"] == "PATCH")
        .map(|r| {
            assert_eq!(r["content_type"], "application/apply-patch+yaml");
            assert!(
                r["query"]
                    .as_str()
                    .unwrap()
                    .contains("fieldManager=centaur"),
                "{r}"
            );
            let p = r["path"].as_str().unwrap();
            p.rsplit('/').take(2).collect::<Vec<_>>().join("<")
        })
        .collect();
    assert_eq!(
        applies,
        [
            "centaur-sb-1<configmaps",
            "centaur-sb-1-gateway<services",
            "centaur-sb-1-gateway-ca<secrets",
            "centaur-sb-1-gateway-env<secrets",
            "centaur-sb-1-gateway<configmaps",
            "centaur-sandbox-sb-1<networkpolicies",
            "centaur-gateway-sb-1<networkpolicies",
            "centaur-sb-1-gateway<pods",
            "centaur-sb-1<pods",
        ]
    );
    let (ok, pod) = fake.kubectl(&["get", "pod", "centaur-sb-1", "-o", "json"]);
    assert!(ok, "{pod}");
    let pod: Value = serde_json::from_str(&pod).unwrap();
    assert_eq!(
        pod["spec"]["dnsConfig"]["nameservers"],
        json!([made.gateway_ip.to_string()])
    );
    assert_eq!(pod["status"]["phase"], "Running");
    let (_, cm) = fake.kubectl(&[
        "get",
        "cm",
        "centaur-sb-1-gateway",
        "-o",
        "jsonpath={.data.policy\\.yaml}",
    ]);
    assert_eq!(cm.trim(), format!("dns:\n  proxy_ip: {}", made.gateway_ip));
    assert_eq!(c.members().await.unwrap().len(), 1);
    assert!(c.delete("sb-1").await.unwrap());
    assert!(fake.objects_of("sb-1").is_empty());
    assert!(
        !c.delete("sb-1").await.unwrap(),
        "a second delete finds nothing"
    );
}

/// The seed's #365: a failure halfway through creation deletes what was made.
#[tokio::test]
async fn a_failure_halfway_leaves_nothing_behind() {
    let fake = Fake::start();
    let c = fake.cluster().await;
    fake.control("fail", json!({"kind": "Pod", "name": "-gateway"}));
    let err = c.create(&spec("sb-1"), files).await.unwrap_err();
    assert!(
        err.to_string().contains("apply Pod centaur-sb-1-gateway"),
        "{err}"
    );
    assert!(
        fake.objects_of("sb-1").is_empty(),
        "{:?}",
        fake.objects_of("sb-1")
    );

    let mut c = c;
    c.ready_timeout = Duration::from_millis(800);
    fake.control("unready", json!({"name": "centaur-sb-1"}));
    let err = c.create(&spec("sb-1"), files).await.unwrap_err();
    assert!(matches!(err, ClusterError::NotReady { .. }), "{err}");
    assert!(
        err.to_string().contains("pod centaur-sb-1 was not ready"),
        "{err}"
    );
    assert!(fake.objects_of("sb-1").is_empty());
}

/// The seed's #365, cancellation included: a caller that gives up mid-creation leaves
/// nothing either.
#[tokio::test]
async fn a_creation_given_up_midway_leaves_nothing_behind() {
    let fake = Fake::start();
    let c = fake.cluster().await;
    fake.control("unready", json!({"name": "centaur-sb-1"}));
    let r = tokio::time::timeout(Duration::from_millis(700), c.create(&spec("sb-1"), files)).await;
    assert!(r.is_err(), "the sandbox pod never becomes ready");
    let mut left = fake.objects_of("sb-1");
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = fake.objects_of("sb-1");
    }
    assert!(left.is_empty(), "{left:?}");
}

/// The seed's #798: a reused sandbox whose gateway objects are missing is repaired by
/// applying again; a new gateway address replaces the sandbox pod (its DNS is fixed).
#[tokio::test]
async fn a_reused_sandbox_missing_gateway_objects_is_repaired() {
    let fake = Fake::start();
    let c = fake.cluster().await;
    let first = c.create(&spec("sb-1"), files).await.unwrap();
    let uid = |kind: &str, name: &str| {
        let (ok, t) = fake.kubectl(&["get", kind, name, "-o", "jsonpath={.metadata.uid}"]);
        assert!(ok, "{t}");
        t
    };
    let sandbox_uid = uid("pod", "centaur-sb-1");
    let (ok, t) = fake.kubectl(&[
        "delete",
        "pod/centaur-sb-1-gateway",
        "secret/centaur-sb-1-gateway-env",
        "networkpolicy/centaur-sandbox-sb-1",
    ]);
    assert!(ok, "{t}");
    assert_eq!(fake.objects_of("sb-1").len(), 6);
    let again = c.create(&spec("sb-1"), files).await.unwrap();
    assert_eq!(again, first, "same parent, same gateway address");
    assert_eq!(fake.objects_of("sb-1"), ALL);
    assert_eq!(
        uid("pod", "centaur-sb-1"),
        sandbox_uid,
        "the sandbox pod was kept"
    );

    let (ok, t) = fake.kubectl(&["delete", "service", "centaur-sb-1-gateway"]);
    assert!(ok, "{t}");
    let third = c.create(&spec("sb-1"), files).await.unwrap();
    assert_ne!(third.gateway_ip, first.gateway_ip);
    assert_ne!(
        uid("pod", "centaur-sb-1"),
        sandbox_uid,
        "the sandbox pod was replaced"
    );
    let (_, ns) = fake.kubectl(&[
        "get",
        "pod",
        "centaur-sb-1",
        "-o",
        "jsonpath={.spec.dnsConfig.nameservers[0]}",
    ]);
    assert_eq!(ns, third.gateway_ip.to_string());
}

/// The reaper deletes sandboxes no thread or pool member owns, and centaur objects whose
/// parent is gone; what is kept is untouched.
#[tokio::test]
async fn the_reaper_deletes_what_nothing_owns() {
    let fake = Fake::start();
    let c = fake.cluster().await;
    c.create(&spec("keep"), files).await.unwrap();
    let mut warm = spec("old");
    warm.warm = true;
    warm.thread_label.clear();
    warm.deploy = "deploy-0".into();
    c.create(&warm, files).await.unwrap();
    let stray = fake.api.dir().join("stray.json");
    std::fs::write(
        &stray,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "centaur-gone-gateway", "labels": {
            "app.kubernetes.io/managed-by": "centaur", "centaur.dev/sandbox": "gone", "centaur.dev/role": "gateway"}}})
        .to_string(),
    )
    .unwrap();
    let (ok, t) = fake.kubectl(&["create", "--validate=false", "-f", stray.to_str().unwrap()]);
    assert!(ok, "{t}");
    let mut members = c.members().await.unwrap();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(members.len(), 2);
    assert_eq!(
        (
            members[1].id.as_str(),
            members[1].warm,
            members[1].deploy.as_str()
        ),
        ("old", true, "deploy-0")
    );
    assert_eq!(members[0].thread, "t-keep");
    let reaped = c.reap(&BTreeSet::from(["keep".to_string()])).await.unwrap();
    assert_eq!(
        reaped,
        ["ConfigMap/centaur-old", "ConfigMap/centaur-gone-gateway"]
    );
    assert!(fake.objects_of("old").is_empty());
    assert!(fake.objects_of("gone").is_empty());
    assert_eq!(fake.objects_of("keep").len(), 9);
}

#[tokio::test]
async fn credentials_that_do_not_work_are_refused_clearly() {
    let fake = Fake::start();
    let text = std::fs::read_to_string(fake.kubeconfig()).unwrap();
    let bad = fake.api.dir().join("bad");
    std::fs::write(&bad, text.replace("t0ken", "wrong")).unwrap();
    let c = Cluster::connect(Some(&bad), Some("agents")).await.unwrap();
    let err = c.create(&spec("sb-1"), files).await.unwrap_err();
    assert!(
        err.to_string().contains("get ConfigMap centaur-sb-1"),
        "{err}"
    );
    assert!(err.to_string().contains("Unauthorized"), "{err}");
    let err = Cluster::connect(Some(Path::new("/nonexistent/kubeconfig")), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");
}

/// The objects are the `centaur` field manager's: kubectl's own server-side apply of a
/// changed policy conflicts with it (unless forced), and the next repair puts ours back.
#[tokio::test]
async fn the_objects_belong_to_the_centaur_field_manager() {
    let fake = Fake::start();
    let c = fake.cluster().await;
    let made = c.create(&spec("sb-1"), files).await.unwrap();
    let theirs = fake.api.dir().join("theirs.json");
    std::fs::write(
        &theirs,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "centaur-sb-1-gateway", "namespace": "agents"},
               "data": {"policy.yaml": "transforms: [{name: allowlist, config: {domains: ['*']}}]\n"}})
        .to_string(),
    )
    .unwrap();
    let file = theirs.to_str().unwrap();
    let (ok, t) = fake.kubectl(&["apply", "--server-side", "--validate=false", "-f", file]);
    assert!(!ok, "{t}");
    assert!(t.contains("conflict") && t.contains("centaur"), "{t}");
    let (ok, t) = fake.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--validate=false",
        "-f",
        file,
    ]);
    assert!(ok, "{t}");
    c.create(&spec("sb-1"), files).await.unwrap();
    let (_, policy) = fake.kubectl(&[
        "get",
        "cm",
        "centaur-sb-1-gateway",
        "-o",
        "jsonpath={.data.policy\\.yaml}",
    ]);
    assert_eq!(
        policy.trim(),
        format!("dns:\n  proxy_ip: {}", made.gateway_ip)
    );
}
