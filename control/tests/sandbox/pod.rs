//! A thread's harness in a Kubernetes sandbox pod, reached only through the pod's exec API:
//! the pod's command is `centaur sandbox supervise --pod`, and every call of the server's
//! supervisor client is one `centaur sandbox relay` exec'd in the pod. The API server is the
//! fake (sandbox/tests/fakes/kube_api.py) with its kubelet (kubelet.py), which runs the
//! sandbox pod's container as a local process under bubblewrap, with the pod's volumes, user,
//! environment and working directory, and serves exec over the `v5.channel.k8s.io` WebSocket
//! that kube-rs speaks. What a real kubelet and pod network add is a known gap (README).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use control::supervisor::pod::{PodDialer, command};
use control::supervisor::{Client, Output, SupervisorError, SupervisorSpec};
use sandbox::kubernetes::cluster::Cluster;
use sandbox::kubernetes::objects::{GatewayFiles, Resources, Spec};
use serde_json::Value;
use testkit::kube::FakeApi;

use super::harness::{repo, root_or_skip};

const IMAGE: &str = "centaur-sandbox:test";
const GATEWAY_IMAGE: &str = "centaur-gateway:test";

/// The fake API server with its kubelet running this build's `centaur` as the sandbox image.
struct Fake {
    api: FakeApi,
}

impl Fake {
    fn start() -> Fake {
        let api = FakeApi::start(&repo());
        let bin = Path::new(env!("CARGO_BIN_EXE_centaur")).parent().unwrap();
        api.control("image", &serde_json::json!({"image": IMAGE, "bin": bin}));
        // The gateway pod runs the real centaur-gateway, with its rendered policy, CA and
        // environment, and is ready when its /readyz answers.
        assert!(
            bin.join("centaur-gateway").exists(),
            "build the workspace first (cargo build --workspace): no centaur-gateway beside centaur"
        );
        api.control(
            "image",
            &serde_json::json!({"image": GATEWAY_IMAGE, "bin": bin, "entrypoint": ["centaur-gateway"]}),
        );
        Fake { api }
    }

    async fn cluster(&self) -> Cluster {
        Cluster::connect(Some(&self.api.kubeconfig()), Some("agents"))
            .await
            .unwrap()
    }

    /// The exec requests the fake served: each one's `command` values.
    fn execs(&self) -> Vec<String> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r["path"].as_str().unwrap_or_default().ends_with("/exec"))
            .map(|r| r["query"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The pod's container log (the supervisor's stderr).
    fn log(&self, pod: &str) -> String {
        std::fs::read_to_string(self.api.dir().join(format!("pods/agents_{pod}.log")))
            .unwrap_or_default()
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
        image: IMAGE.into(),
        gateway_image: GATEWAY_IMAGE.into(),
        workspace: None,
        routes: vec![],
        command: command(),
        env: vec![("GITHUB_TOKEN".into(), "placeholder-github".into())],
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

/// A gateway policy placed as the server places it in a pod, and a fresh CA.
fn files(ip: std::net::Ipv4Addr) -> GatewayFiles {
    let dir = tempfile::tempdir().unwrap();
    gateway::ca::init(
        dir.path(),
        &gateway::ca::CaInit {
            name: "pod test CA".into(),
            algorithm: gateway::ca::CaAlgorithm::EcdsaP256,
            validity: Duration::from_secs(86400),
            permitted: vec![],
        },
    )
    .unwrap();
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    GatewayFiles {
        policy: format!(
            "dns: {{listen: '0.0.0.0:53', proxy_ip: {ip}}}\n\
             proxy: {{https_listen: '0.0.0.0:443', http_listen: '0.0.0.0:80', tunnel_listen: '0.0.0.0:1080'}}\n\
             tls: {{ca_cert: /etc/centaur/ca/ca.crt, ca_key: /etc/centaur/ca/ca.key}}\n\
             metrics: {{listen: '0.0.0.0:9090'}}\naudit: {{output: stdout}}\n"
        ),
        ca_cert: read("ca.crt"),
        ca_key: read("ca.key"),
        env: vec![],
    }
}

/// A harness that answers each turn with what it sees of its pod.
const HARNESS: &str = r#"
import json, os, socket, sys, urllib.error, urllib.request

def net():
    # Through its gateway (by the Service address the pod was given), and anywhere else.
    req = urllib.request.Request("http://" + os.environ["CENTAUR_GATEWAY"] + "/probe",
                                 headers={"Host": "blocked.example"})
    try:
        gateway = urllib.request.urlopen(req, timeout=5).status
    except urllib.error.HTTPError as e:
        gateway = e.code
    except OSError as e:
        gateway = str(e)
    try:
        socket.create_connection(("10.96.0.1", 443), timeout=2)
        elsewhere = "connected"
    except OSError as e:
        elsewhere = type(e).__name__
    print(json.dumps({"turn": "net", "gateway": gateway, "elsewhere": elsewhere}), flush=True)

for line in sys.stdin:
    if line.strip() == "net":
        net()
        continue
    try:
        open("/centaur-was-here", "w")
        root_writable = True
    except OSError:
        root_writable = False
    with open("note", "a") as f:
        f.write(line)
    print(json.dumps({"turn": line.strip(), "cwd": os.getcwd(), "uid": os.getuid(),
        "greeting": os.environ.get("GREETING"), "token": os.environ.get("GITHUB_TOKEN"),
        "home": os.environ.get("HOME"), "root_writable": root_writable}), flush=True)
"#;

fn launch_spec() -> SupervisorSpec {
    SupervisorSpec {
        command: vec!["python3".into(), "-c".into(), HARNESS.into()],
        policy: None,
        secrets_from: None,
        uid: 1001,
        gid: 1001,
        env: vec![("GREETING".into(), "hello from the spec".into())],
        mounts: vec![],
        labels: vec![],
        audit: "/dev/null".into(),
        memory: None,
        workdir: Some("/workspace".into()),
        home: None,
        internal: None,
    }
}

async fn until_state(client: &Client, want: &str) {
    let mut last = None;
    for _ in 0..300 {
        match client.status().await {
            Ok(s) if s["state"] == want => return,
            other => last = Some(format!("{other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the pod's supervisor never became {want}: {last:?}");
}

async fn next_line(a: &mut control::supervisor::Attached) -> (i64, Value) {
    match tokio::time::timeout(Duration::from_secs(20), a.next()).await {
        Ok(Some(Output::Line(seq, text))) => (seq, serde_json::from_str(&text).unwrap()),
        other => panic!("no line: {other:?}"),
    }
}

/// This fake's processes running `what` (the kubelet's bubblewrap command lines name the
/// fake's directory; other tests' pods run beside these).
fn pattern(fake: &Fake, what: &str) -> String {
    format!("{}.*{what}", fake.api.dir().display())
}

fn relays(fake: &Fake) -> usize {
    let out = Command::new("pgrep")
        .args(["-f", &pattern(fake, "sandbox relay")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Invariant 1 (the sandbox's only way out is its gateway) as far as the fake's pod network
/// models the NetworkPolicies: the harness's request reaches its real gateway pod, which
/// denies and audits it, and nothing else is reachable. Invariant 3 (the sandbox holds
/// placeholders only): the harness in the pod sees the pod's
/// placeholder and the spec's environment, runs as the pod's user in its workspace on a
/// read-only root. Its turns and output go through exec alone; a turn repeated after a
/// "server restart" (a new API client) is not written twice, and output is read again from
/// any line. A relay never outlives its exec stream. `stop` ends the container; deleting
/// the sandbox leaves no process.
#[tokio::test(flavor = "multi_thread")]
async fn a_harness_in_a_sandbox_pod_is_driven_through_exec_and_reattached_after_a_restart() {
    if !root_or_skip("a_harness_in_a_sandbox_pod_is_driven_through_exec") {
        return;
    }
    let fake = Fake::start();
    let cluster = fake.cluster().await;
    let s = spec("pod-1");
    let pod = s.name();
    if let Err(e) = cluster.create(&s, files).await {
        panic!(
            "{e}; the pod's log: {}; the gateway's: {}",
            fake.log(&pod),
            fake.log(&s.gateway_name())
        );
    }
    // The gateway pod runs the real gateway: it read its policy and CA key and listens.
    let gw_log = fake.log(&s.gateway_name());
    assert!(gw_log.contains("gateway listening"), "{gw_log}");
    let client = Client::remote(
        format!("pod {pod}"),
        Arc::new(PodDialer::new(cluster.clone(), &pod)),
    );
    until_state(&client, "warm").await;
    assert!(
        client.turn("t0", "too early").await.is_err(),
        "a warm supervisor took a turn"
    );
    // Home files go in before the launch; a path out of the home is refused.
    client
        .put_home(".pi/agent/models.json", b"{}")
        .await
        .unwrap();
    let out = client.put_home("../escape", b"x").await.unwrap_err();
    assert!(
        out.to_string().contains("not a plain relative path"),
        "{out}"
    );
    let early = client.put("1-notes.txt", b"early").await.unwrap_err();
    assert!(
        early.to_string().contains("once its harness runs"),
        "{early}"
    );
    client.launch(&launch_spec()).await.unwrap();
    until_state(&client, "running").await;
    // An attachment through exec lands in the pod's workspace, the pod user's; a name that
    // is not a plain file name is refused.
    client
        .put("1-notes.txt", b"attached words\n")
        .await
        .unwrap();
    let bad = client.put("../escape", b"x").await.unwrap_err();
    assert!(bad.to_string().contains("not a plain file name"), "{bad}");
    let mut found = Vec::new();
    for d in std::fs::read_dir(fake.api.dir().join("pods"))
        .unwrap()
        .flatten()
    {
        let f = d.path().join("volumes/workspace/attachments/1-notes.txt");
        if let Ok(meta) = std::fs::metadata(&f) {
            use std::os::unix::fs::MetadataExt as _;
            found.push((std::fs::read_to_string(&f).unwrap(), meta.uid()));
        }
    }
    assert_eq!(found, [("attached words\n".to_string(), 1001)]);
    let homes: Vec<String> = std::fs::read_dir(fake.api.dir().join("pods"))
        .unwrap()
        .flatten()
        .filter_map(|d| {
            std::fs::read_to_string(d.path().join("volumes/home/.pi/agent/models.json")).ok()
        })
        .collect();
    assert_eq!(homes, ["{}"]);
    let again = client.launch(&launch_spec()).await.unwrap_err();
    assert!(again.to_string().contains("not a warm one"), "{again}");

    assert_eq!(client.turn("t1", "first").await.unwrap(), 1);
    let mut a = client.attach(1).await.unwrap();
    let (seq, first) = next_line(&mut a).await;
    assert_eq!(seq, 1);
    assert_eq!(first["turn"], "first");
    assert_eq!(first["cwd"], "/workspace");
    assert_eq!(first["uid"], 1001);
    assert_eq!(first["greeting"], "hello from the spec");
    assert_eq!(first["token"], "placeholder-github");
    assert_eq!(first["home"], "/home/agent");
    assert_eq!(first["root_writable"], false);
    drop(a);

    // The server restarts: a new API client, a new supervisor client, the same pod.
    drop(client);
    drop(cluster);
    let cluster = fake.cluster().await;
    let client = Client::remote(
        format!("pod {pod}"),
        Arc::new(PodDialer::new(cluster.clone(), &pod)),
    );
    assert_eq!(
        client.turn("t1", "first").await.unwrap(),
        1,
        "a repeated turn"
    );
    assert_eq!(client.turn("t2", "second").await.unwrap(), 2);
    let mut a = client.attach(2).await.unwrap();
    let (seq, second) = next_line(&mut a).await;
    assert_eq!((seq, second["turn"].as_str()), (2, Some("second")));
    // The pod's only way out is its gateway pod (the NetworkPolicy's rule, as the fake's
    // pod network has it): a request there is the policy's to decide (no allowlist: 403)
    // and audited in the gateway's log; any other address is unreachable.
    assert_eq!(client.turn("t-net", "net").await.unwrap(), 3);
    let mut n = client.attach(3).await.unwrap();
    let (_, probe) = next_line(&mut n).await;
    assert_eq!(probe["gateway"], 403, "{probe}");
    assert_ne!(probe["elsewhere"], "connected", "{probe}");
    let mut audited = String::new();
    for _ in 0..50 {
        audited = fake.log(&s.gateway_name());
        if audited.contains("blocked.example") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(audited.contains("blocked.example"), "{audited}");
    drop(n);
    // kill -9 of the relay under a live attach ends that stream, nothing else.
    let killed = Command::new("pkill")
        .args(["-9", "-f", &pattern(&fake, "sandbox relay")])
        .status()
        .unwrap();
    assert!(killed.success(), "no relay to kill");
    // (It may still hand over the line it had read before the kill.)
    loop {
        match tokio::time::timeout(Duration::from_secs(20), a.next()).await {
            Ok(None) => break,
            Ok(Some(Output::Line(3, _))) => {}
            other => panic!("the attach outlived its relay: {other:?}"),
        }
    }
    let mut a = client.attach(2).await.unwrap();
    assert_eq!(next_line(&mut a).await.1["turn"], "second");
    let mut all = client.attach(1).await.unwrap();
    assert_eq!(next_line(&mut all).await.1["turn"], "first");
    let status = client.status().await.unwrap();
    assert_eq!(status["lines"], 3, "{status}");
    assert!(relays(&fake) >= 2, "the two attaches run a relay each");
    drop(a);
    drop(all);
    let mut left = relays(&fake);
    for _ in 0..100 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = relays(&fake);
    }
    assert_eq!(left, 0, "a relay outlived its exec stream");

    // Every call went through exec, each a relay to the supervisor's socket.
    let execs = fake.execs();
    assert!(execs.len() >= 10, "{execs:?}");
    assert!(
        execs.iter().all(|q| q.contains("command=relay")
            && q.contains("%2Fvar%2Flib%2Fcentaur%2Fagent%2Fsock")
            && q.contains("stdin=true")),
        "{execs:?}"
    );

    client.stop().await.unwrap();
    // The supervisor exits just after its answer, and the container with it.
    let mut gone = client.status().await;
    for _ in 0..100 {
        if gone.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        gone = client.status().await;
    }
    assert!(
        matches!(gone, Err(SupervisorError::Gone { .. })),
        "{gone:?}"
    );
    assert!(
        fake.log(&pod).is_empty() || !fake.log(&pod).contains("panicked"),
        "{}",
        fake.log(&pod)
    );
    assert!(cluster.delete(&s.id).await.unwrap());
    let out = Command::new("pgrep")
        .args(["-f", &pattern(&fake, "sandbox supervise --pod")])
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
