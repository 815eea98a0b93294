//! `centaur server` with `sandbox.backend: kubernetes`, against the fake API server and its
//! kubelet (sandbox/tests/fakes/): a thread's turn makes its sandbox's objects by
//! server-side apply, its harness runs in the sandbox pod under the pod's supervisor, and
//! every turn and output line goes through the pod's exec API. A server killed with
//! `kill -9` mid-turn is followed by a new one that reattaches to the same pod and finishes
//! the turn, which reaches the harness once; releasing the thread deletes its objects but
//! not its workspace claim, and its next turn runs in a new pod on the same files.
//! What a real cluster adds is a known gap (deploy/README.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use testkit::kube::FakeApi;

use crate::calls::{call, execute, turn, wait_end};
use crate::harness::{self, CENTAUR, Setup, free_port};

const IMAGE: &str = "centaur-sandbox:test";
pub(crate) const GATEWAY_IMAGE: &str = "centaur-gateway:test";

/// What `GET /tools` through a sandbox's gateway answers when the gateway injected a token
/// the server accepts (the test servers configure no tools).
pub(crate) const ACCEPTED: &str =
    "-> 404 {\"code\":\"NOT_FOUND\",\"message\":\"no tools are configured";

/// Where the server listens: the fake kubelet puts this address on the host's loopback and
/// links each gateway pod to it (the server's Service, as `sandbox.kubernetes.api` names it).
pub(crate) const HOST: &str = "10.250.255.1";

/// The image's programs: this build's `centaur` and the counting agent.
fn image(dir: &Path) -> PathBuf {
    let bin = dir.join("image");
    std::fs::create_dir_all(&bin).unwrap();
    let gateway = Path::new(CENTAUR).with_file_name("centaur-gateway");
    assert!(
        gateway.exists(),
        "build the workspace first (cargo build --workspace): no centaur-gateway beside centaur"
    );
    for (src, name) in [
        (PathBuf::from(CENTAUR), "centaur"),
        (gateway, "centaur-gateway"),
        (
            harness::repo().join("control/tests/server/agents/counting.py"),
            "counting.py",
        ),
    ] {
        if std::fs::hard_link(&src, bin.join(name)).is_err() {
            std::fs::copy(&src, bin.join(name)).unwrap();
        }
    }
    harness::chmod(&bin, 0o755);
    bin
}

fn setup(fake: &FakeApi, port: u16) -> Setup {
    setup_with(
        fake,
        port,
        GATEWAY_IMAGE,
        "    workspace_storage: 1Gi\n",
        "",
    )
}

/// A server config on the fake: `gateway_image`, with `kubernetes` lines added to
/// `sandbox.kubernetes` and `sandbox` lines to `sandbox`.
pub(crate) fn setup_with(
    fake: &FakeApi,
    port: u16,
    gateway_image: &str,
    kubernetes: &str,
    sandbox: &str,
) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    harness::chmod(dir.path(), 0o711);
    let bin = image(dir.path());
    fake.control("image", &json!({"image": IMAGE, "bin": bin}));
    // The gateway pods run the real centaur-gateway with the policy, CA and environment the
    // server rendered for them, ready when their /readyz answers.
    for image in [GATEWAY_IMAGE, gateway_image] {
        fake.control(
            "image",
            &json!({"image": image, "bin": bin, "entrypoint": ["centaur-gateway"]}),
        );
    }
    let settings = dir.path().join("settings.json");
    std::fs::write(&settings, "{\"demo\": true}\n").unwrap();
    let config = dir.path().join("server.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {HOST}:{port}\nlimits:\n  lease: 3s\nsandbox:\n{sandbox}  backend: kubernetes\n  kubernetes:\n    \
             namespace: agents\n    image: {IMAGE}\n    gateway_image: {gateway_image}\n    kubeconfig: {}\n    \
             api: {HOST}:{port}\n{kubernetes}\
             harnesses:\n  counting:\n    command: [python3, /image/bin/counting.py]\n    \
             home_files: {{\".config/demo/settings.json\": {}}}\n  \
             resuming: {{kind: claude-code, command: [python3, /image/bin/counting.py]}}\n\
             default_harness: counting\n",
            fake.kubeconfig().display(),
            settings.display()
        ),
    )
    .unwrap();
    Setup {
        dir,
        config,
        database_url: None,
        env: Vec::new(),
    }
}

/// The contents of `path` in every thread workspace claim of the fake.
fn in_workspace(fake: &FakeApi, path: &str) -> Vec<String> {
    std::fs::read_dir(fake.dir().join("claims"))
        .map(|d| {
            d.flatten()
                .filter_map(|c| std::fs::read_to_string(c.path().join("work").join(path)).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Releases the thread and waits until its sandbox's objects are gone.
async fn release(fake: &FakeApi, server: &harness::Server, key: &str, thread: &str) {
    let r = call(
        server,
        key,
        "POST",
        &format!("/agent/threads/{thread}/release"),
        Some(json!({})),
    )
    .await;
    assert!(r.is_object(), "{r}");
    let mut left = fake.objects(None);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = fake.objects(None);
    }
    assert!(left.is_empty(), "{left:?}\n{}", server.log());
}

/// The fake cluster and a server on it with a key: (fake, setup, key, port, server).
async fn cluster_and_server() -> (FakeApi, Setup, String, u16, harness::Server) {
    let fake = FakeApi::start(&harness::repo());
    let port = free_port();
    let setup = setup(&fake, port);
    let key = setup.key("tester", "agent");
    let server = setup.start_on(&format!("{HOST}:{port}")).await;
    (fake, setup, key, port, server)
}

fn execs(fake: &FakeApi) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r["path"].as_str().unwrap_or_default().ends_with("/exec"))
        .count()
}

/// Invariant 3 (no real credential in the sandbox) for `centaur.internal` on Kubernetes: the
/// gateway pod is started with the route to this server (`--route`, from
/// `sandbox.kubernetes.api`) and holds the thread's token in its env Secret, a token this
/// server accepts; the spec the sandbox pod's supervisor keeps has no token.
fn internal_route(fake: &FakeApi, server: &harness::Server, port: u16) {
    use base64::Engine as _;
    let made = fake.objects(None);
    let gw = made
        .iter()
        .find_map(|o| o.strip_prefix("Pod/").filter(|n| n.ends_with("-gateway")))
        .expect("a gateway pod");
    let (ok, text) = fake.kubectl(&["get", "pod", gw, "-o", "json"]);
    assert!(ok, "{text}");
    let pod: serde_json::Value = serde_json::from_str(&text).unwrap();
    let args = &pod["spec"]["containers"][0]["args"];
    assert_eq!(args[3], "--route", "{args}");
    assert_eq!(args[4], format!("centaur.internal={HOST}:{port}"));
    // The real gateway runs in that pod, with the server's policy, the CA, the route and the
    // environment it was given.
    let log = std::fs::read_to_string(fake.dir().join(format!("pods/agents_{gw}.log")))
        .unwrap_or_default();
    assert!(
        log.contains("internal route") && log.contains("gateway listening"),
        "{log}"
    );
    // Its audit records name the thread.
    let (ok, text) = fake.kubectl(&["get", "configmap", gw, "-o", "json"]);
    assert!(ok, "{text}");
    let cm: serde_json::Value = serde_json::from_str(&text).unwrap();
    let policy: serde_json::Value =
        serde_json::from_str(cm["data"]["policy.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(
        policy["audit"]["sandbox"]["thread_key"], "k8s:1",
        "{policy}"
    );
    assert_eq!(policy["audit"]["output"], "stdout");
    let (ok, text) = fake.kubectl(&["get", "secret", &format!("{gw}-env"), "-o", "json"]);
    assert!(ok, "{text}");
    let secret: serde_json::Value = serde_json::from_str(&text).unwrap();
    let b64 = secret["data"]["CENTAUR_THREAD_TOKEN"]
        .as_str()
        .expect("the token");
    let token = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap();
    let status = |key: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {key}"))
            .arg(format!("{}/tools", server.base))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_ne!(
        status(&token),
        "401",
        "the server knows the gateway's token"
    );
    assert_eq!(status("not-a-token"), "401");
    // The supervisor's copy of the harness's spec, inside the pod: no token.
    let mut specs = 0;
    for d in std::fs::read_dir(fake.dir().join("pods"))
        .unwrap()
        .flatten()
    {
        if let Ok(text) = std::fs::read_to_string(d.path().join("volumes/agent/spec.json")) {
            specs += 1;
            assert!(!text.contains(&token), "the token is in the pod: {text}");
            assert!(text.contains("CENTAUR_API_URL"), "{text}");
        }
    }
    assert_eq!(specs, 1);
}

/// Invariant 7 (durable before acknowledged) on Kubernetes, and the backend's life cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_runs_in_its_sandbox_pod_across_a_kill_9_and_keeps_its_workspace_across_pods() {
    if !harness::root_or_skip("a_thread_runs_in_its_sandbox_pod") {
        return;
    }
    let (fake, setup, key, port, server) = cluster_and_server().await;
    let listen = format!("{HOST}:{port}");

    let e = turn(
        &server,
        &key,
        "k8s:1",
        "counting",
        "steps=2 pause=0.1 hello",
    )
    .await;
    assert_eq!(e["status"], "completed", "{e}\n{}", server.log());
    assert_eq!(e["result_text"], "steps=2 pause=0.1 hello");
    let made = fake.objects(None);
    let pods: Vec<&String> = made.iter().filter(|o| o.starts_with("Pod/")).collect();
    assert_eq!(pods.len(), 2, "a sandbox pod and its gateway pod: {made:?}");
    let calls = execs(&fake);
    assert!(
        calls >= 3,
        "launch, turn and attach went through exec ({calls})"
    );
    internal_route(&fake, &server, port);
    // End to end: the harness in the pod calls centaur.internal; its gateway pod injects the
    // thread's token and routes the call to this server, which accepts it (invariant 3: the
    // pod never holds the token).
    // (No tools are configured: the server says so only to a caller it authenticated; a
    // call without the token gets 401.)
    let e = turn(&server, &key, "k8s:1", "counting", "steps=0 fetch=/tools").await;
    let text = e["result_text"].as_str().unwrap_or_default();
    assert!(text.contains(ACCEPTED), "{text}\n{}", server.log());
    // The harness's home files, written into the pod's home (on the thread's claim) before
    // its launch.
    let homes: Vec<String> = std::fs::read_dir(fake.dir().join("claims"))
        .unwrap()
        .flatten()
        .filter_map(|c| {
            std::fs::read_to_string(c.path().join("home/.config/demo/settings.json")).ok()
        })
        .collect();
    assert_eq!(homes, ["{\"demo\": true}\n"]);

    // kill -9 mid-turn; the next server reattaches to the same pod. The turn carries an
    // attachment, written into the pod's workspace through its supervisor.
    let doc = json!({"type": "document", "name": "notes.txt",
        "source": {"type": "base64", "media_type": "text/plain", "data": "YXR0YWNoZWQgd29yZHMK"}});
    let parts = json!([{"type": "text", "text": "steps=6 pause=0.3 again"}, doc]);
    let id = execute(
        &server,
        &key,
        json!({"thread_key": "k8s:1", "message": {"parts": parts}}),
    )
    .await;
    for _ in 0..100 {
        let e = call(
            &server,
            &key,
            "GET",
            &format!("/agent/executions/{id}"),
            None,
        )
        .await;
        if e["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill9().await;
    let server = setup.start_on(&listen).await;
    let e = wait_end(&server, &key, "k8s:1", &id).await;
    assert_eq!(e["status"], "completed", "{e}\n{}", server.log());
    let text = e["result_text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("steps=6 pause=0.3 again | [Attachment: attachments/1-notes.txt"),
        "the turn reached the harness once, with its attachment named: {e}"
    );
    assert_eq!(
        in_workspace(&fake, "attachments/1-notes.txt"),
        ["attached words\n"]
    );
    assert_eq!(fake.objects(None), made, "the same sandbox, no new objects");

    // Releasing the thread deletes its sandbox's objects, not its workspace: the next turn
    // runs in a new pod on the same files.
    release(&fake, &server, &key, "k8s:1").await;
    let e = turn(&server, &key, "k8s:1", "counting", "third").await;
    assert_eq!(e["status"], "completed", "{e}\n{}", server.log());
    let log = in_workspace(&fake, "turns.log");
    assert_eq!(log.len(), 1, "one workspace: {log:?}");
    assert_eq!(
        log[0].lines().count(),
        4,
        "every turn in the kept workspace: {log:?}"
    );
    release(&fake, &server, &key, "k8s:1").await;
    let (ok, pvcs) = fake.kubectl(&["get", "pvc", "-o", "name"]);
    assert!(ok, "{pvcs}");
    assert_eq!(pvcs.lines().count(), 1, "the thread's claim stays: {pvcs}");
    assert!(
        std::fs::read_dir(setup.data().join("sandboxes"))
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("rt_")),
        "the runtime's marker is gone"
    );
    // This fake's pods only (their command lines name its directory).
    let out = std::process::Command::new("pgrep")
        .args([
            "-f",
            &format!("{}.*sandbox supervise --pod", fake.dir().display()),
        ])
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "a pod's supervisor outlived its pod");
    server.stop().await;
}

/// Invariant 7 at the worst moment of a cold start on Kubernetes: the server is killed with
/// `kill -9` while its thread's sandbox is half made (objects applied, pods not ready). The
/// next server deletes that sandbox, makes a new one and runs the turn; nothing of the first
/// is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_while_a_sandbox_is_made_leaves_nothing_behind() {
    if !harness::root_or_skip("a_server_killed_while_a_sandbox_is_made") {
        return;
    }
    let (fake, setup, key, port, server) = cluster_and_server().await;
    let listen = format!("{HOST}:{port}");
    fake.control("hold", &json!({"prefix": "centaur-rt-"}));
    let id = execute(
        &server,
        &key,
        json!({"thread_key": "k8s:half", "message": "steps=1 pause=0.1 once"}),
    )
    .await;
    let mut first = Vec::new();
    for _ in 0..200 {
        first = fake.objects(None);
        if first.iter().any(|o| o.starts_with("Pod/")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        first.iter().any(|o| o.starts_with("Pod/")),
        "the sandbox was never half made: {first:?}\n{}",
        server.log()
    );
    server.kill9().await;
    fake.control("hold", &json!({}));

    let server = setup.start_on(&listen).await;
    let e = wait_end(&server, &key, "k8s:half", &id).await;
    assert_eq!(e["status"], "completed", "{e}\n{}", server.log());
    assert_eq!(e["result_text"], "steps=1 pause=0.1 once");
    let now = fake.objects(None);
    let pods: Vec<&String> = now.iter().filter(|o| o.starts_with("Pod/")).collect();
    assert_eq!(pods.len(), 2, "one sandbox: {now:?}");
    let old: Vec<&String> = first.iter().filter(|o| now.contains(o)).collect();
    assert!(old.is_empty(), "left of the half-made sandbox: {old:?}");
    release(&fake, &server, &key, "k8s:half").await;
    server.stop().await;
}

/// A thread's CLI session outlives its pod on the thread's claim: after its sandbox is
/// released, the next pod resumes the session when its home has it (the turn goes as it
/// is), and replays the transcript when it does not (the turn comes with the earlier ones).
/// The counting agent keeps a session file in its home and speaks Claude Code's stream-json,
/// so the `claude-code` adapter resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_on_the_claim_is_resumed_by_the_next_pod_and_replayed_once_gone() {
    if !harness::root_or_skip("a_session_on_the_claim_is_resumed") {
        return;
    }
    let (fake, _setup, key, _port, server) = cluster_and_server().await;
    let thread = "k8s:resume";
    let e = turn(&server, &key, thread, "resuming", "first").await;
    assert_eq!(e["status"], "completed", "{e}\n{}", server.log());
    release(&fake, &server, &key, thread).await;

    let e = turn(&server, &key, thread, "resuming", "second").await;
    assert_eq!(e["status"], "completed", "{e}\n{}", server.log());
    assert_eq!(e["result_text"], "second", "resumed: no transcript");
    release(&fake, &server, &key, thread).await;

    // The session files gone from the claim: the next pod replays the transcript.
    let mut removed = 0;
    for c in std::fs::read_dir(fake.dir().join("claims"))
        .unwrap()
        .flatten()
    {
        if let Ok(d) = std::fs::read_dir(c.path().join("home/.counting")) {
            for f in d.flatten() {
                std::fs::remove_file(f.path()).unwrap();
                removed += 1;
            }
        }
    }
    // (Each pod has its own PID namespace, so its agent's pid, and session id, repeat.)
    assert!(removed >= 1, "the session file is on the claim");
    let e = turn(&server, &key, thread, "resuming", "third").await;
    assert_eq!(e["status"], "completed", "{e}\n{}", server.log());
    let text = e["result_text"].as_str().unwrap_or_default();
    assert!(
        text.contains("first") && text.contains("second") && text.ends_with("third"),
        "the transcript came with the turn: {text}"
    );
    release(&fake, &server, &key, thread).await;
    server.stop().await;
}
