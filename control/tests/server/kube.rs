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
const GATEWAY_IMAGE: &str = "centaur-gateway:test";

/// What `GET /tools` through a sandbox's gateway answers when the gateway injected a token
/// the server accepts (the test servers configure no tools).
const ACCEPTED: &str = "-> 404 {\"code\":\"NOT_FOUND\",\"message\":\"no tools are configured";

/// Where the server listens: the fake kubelet puts this address on the host's loopback and
/// links each gateway pod to it (the server's Service, as `sandbox.kubernetes.api` names it).
const HOST: &str = "10.250.255.1";

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
fn setup_with(
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

/// `GET /agent/pool` until `done` holds; the pool.
async fn pool_until(
    fake: &FakeApi,
    server: &harness::Server,
    admin: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut p = serde_json::Value::Null;
    // Generous: a member is two pods, and CI machines are shared.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while tokio::time::Instant::now() < deadline {
        p = call(server, admin, "GET", "/agent/pool", None).await;
        if done(&p) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What the pods say (their Ready condition carries the kubelet's reason).
    let (_, pods) = fake.kubectl(&["get", "pods", "-o", "json"]);
    let pods: serde_json::Value = serde_json::from_str(&pods).unwrap_or_default();
    let states: Vec<String> = pods["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| format!("{} {}", p["metadata"]["name"], p["status"]))
        .collect();
    panic!(
        "the pool never got {what}: {p}\npods: {states:#?}\n{}",
        server.log()
    );
}

/// The ready members of this deploy.
fn ready_ids(p: &serde_json::Value) -> Vec<String> {
    p["members"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|m| m["state"] == "ready" && m["deploy_hash"] == p["deploy_hash"])
        .filter_map(|m| m["runtime_id"].as_str().map(str::to_string))
        .collect()
}

fn kube_json(fake: &FakeApi, args: &[&str]) -> serde_json::Value {
    let (ok, text) = fake.kubectl(args);
    assert!(ok, "{args:?}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// The warm pool on Kubernetes: a member (its two pods, a neutral policy, no thread) is made
/// ahead; a thread's first turn claims it: its gateway's objects and the running gateway
/// take the thread's policy and token (`PUT /v1/policy` inside the gateway pod, through
/// exec), its records name the thread, and the pool refills with a new member. A server of
/// another deploy (a new gateway image) deletes the old deploy's member at start-up and
/// makes its own (the reference's #171 left them running). Invariant 3: the token is in the
/// gateway's Secret, never in the sandbox pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pod_is_claimed_with_its_threads_policy_and_an_old_deploys_is_deleted() {
    if !harness::root_or_skip("a_warm_pod_is_claimed") {
        return;
    }
    let fake = FakeApi::start(&harness::repo());
    let port = free_port();
    let setup = setup_with(&fake, port, GATEWAY_IMAGE, "", "  warm_pool: 1\n");
    let key = setup.key("tester", "agent");
    let admin = setup.key("operator", "admin");
    let listen = format!("{HOST}:{port}");
    let server = setup.start_on(&listen).await;
    let p = pool_until(&fake, &server, &admin, "a ready member", |p| {
        ready_ids(p).len() == 1
    })
    .await;
    assert_eq!(p["scope"], "kubernetes:agents", "{p}");
    let member = ready_ids(&p).remove(0);
    let sid = member.replace('_', "-");
    let parent = format!("centaur-{sid}");
    let gateway = format!("{parent}-gateway");
    let cm = kube_json(&fake, &["get", "configmap", &parent, "-o", "json"]);
    assert_eq!(cm["metadata"]["labels"]["centaur.dev/warm"], "true", "{cm}");
    let gw = kube_json(&fake, &["get", "configmap", &gateway, "-o", "json"]);
    assert!(
        !gw["data"]["policy.yaml"]
            .as_str()
            .unwrap()
            .contains("k8s:warm"),
        "{gw}"
    );
    let pods_before = fake.objects(Some("centaur.dev/role in (sandbox,gateway)"));

    // The first turn claims the member: no new pod for the thread.
    let e = turn(
        &server,
        &key,
        "k8s:warm",
        "counting",
        "steps=1 pause=0 fetch=/tools",
    )
    .await;
    assert_eq!(e["status"], "completed", "{e}\n{}", server.log());
    let text = e["result_text"].as_str().unwrap_or_default();
    // The neutral policy refused centaur.internal (403); the thread's allows it and injects
    // the thread's token, which the server accepts.
    assert!(text.contains(ACCEPTED), "{text}\n{}", server.log());
    let cm = kube_json(&fake, &["get", "configmap", &parent, "-o", "json"]);
    assert_eq!(
        cm["metadata"]["labels"]["centaur.dev/warm"], "false",
        "{cm}"
    );
    assert_eq!(cm["data"]["thread-key"], "k8s:warm", "{cm}");
    let gw = kube_json(&fake, &["get", "configmap", &gateway, "-o", "json"]);
    let policy: serde_json::Value =
        serde_json::from_str(gw["data"]["policy.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(policy["audit"]["sandbox"]["thread_key"], "k8s:warm");
    let env = kube_json(
        &fake,
        &["get", "secret", &format!("{gateway}-env"), "-o", "json"],
    );
    for var in ["CENTAUR_THREAD_TOKEN", "CENTAUR_MANAGEMENT_KEY"] {
        assert!(env["data"][var].is_string(), "{var} in {env}");
    }
    // Invariant 3: the token went to the gateway pod only; the spec the claimed sandbox
    // pod's supervisor keeps has none.
    let token = {
        use base64::Engine as _;
        let b64 = env["data"]["CENTAUR_THREAD_TOKEN"].as_str().unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    };
    let specs: Vec<String> = std::fs::read_dir(fake.dir().join("pods"))
        .unwrap()
        .flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("volumes/agent/spec.json")).ok())
        .collect();
    assert!(!specs.is_empty(), "no sandbox pod's spec");
    for spec in specs {
        assert!(
            !spec.contains(&token),
            "the token is in a sandbox pod: {spec}"
        );
    }
    // The running gateway took the policy: its record of the call names the thread, and no
    // rule refused it.
    let log_file = fake.dir().join(format!("pods/agents_{gateway}.log"));
    let mut log = String::new();
    let mut record = None;
    for _ in 0..50 {
        log = std::fs::read_to_string(&log_file).unwrap_or_default();
        record = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["host"] == "centaur.internal");
        if record.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let record =
        record.unwrap_or_else(|| panic!("no record of centaur.internal ({text}) in\n{log}"));
    assert_eq!(record["sandbox"]["thread_key"], "k8s:warm", "{record}");
    assert_eq!(record["sandbox"]["runtime_id"], member.as_str(), "{record}");
    assert!(record["rejected_by"].is_null(), "{record}");
    let made = fake.objects(Some("centaur.dev/role in (sandbox,gateway)"));
    assert!(
        pods_before.iter().all(|o| made.contains(o)),
        "{pods_before:?} {made:?}"
    );
    // The pool refills with another member.
    let p = pool_until(&fake, &server, &admin, "a new member", |p| {
        ready_ids(p).iter().any(|m| *m != member)
    })
    .await;
    let second = ready_ids(&p).remove(0);
    server.stop().await;

    // Another deploy: the old member is deleted at start-up, a new one made.
    let next = "centaur-gateway:next";
    fake.control(
        "image",
        &json!({"image": next, "bin": setup.dir.path().join("image"), "entrypoint": ["centaur-gateway"]}),
    );
    let config = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(&setup.config, config.replace(GATEWAY_IMAGE, next)).unwrap();
    let server = setup.start_on(&listen).await;
    let p = pool_until(&fake, &server, &admin, "a member of the new deploy", |p| {
        ready_ids(p).iter().any(|m| *m != second)
    })
    .await;
    assert!(
        !p["members"].to_string().contains(&second),
        "the old deploy's member is forgotten: {p}"
    );
    let old = second.replace('_', "-");
    assert!(
        fake.objects(Some(&format!("centaur.dev/sandbox={old}")))
            .is_empty(),
        "the old deploy's member is deleted"
    );
    let r = call(
        &server,
        &key,
        "POST",
        "/agent/threads/k8s:warm/release",
        Some(json!({})),
    )
    .await;
    assert!(r.is_object(), "{r}");
    let mut left = vec![String::new()];
    for _ in 0..100 {
        left = fake.objects(Some(&format!("centaur.dev/sandbox={sid}")));
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left.is_empty(), "the thread's sandbox is deleted: {left:?}");
    server.stop().await;
}

/// Invariant 7 at a warm member's worst moment, and the leak of the reference's #171: the
/// server is killed with `kill -9` while a member is half made (its objects applied, its pods
/// held Pending). The next server deletes it at start-up and makes a new one; nothing of the
/// first is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_member_half_made_when_the_server_was_killed_is_deleted_at_the_next_start() {
    if !harness::root_or_skip("a_warm_member_half_made") {
        return;
    }
    let fake = FakeApi::start(&harness::repo());
    let port = free_port();
    let setup = setup_with(&fake, port, GATEWAY_IMAGE, "", "  warm_pool: 1\n");
    let admin = setup.key("operator", "admin");
    let listen = format!("{HOST}:{port}");
    fake.control("hold", &json!({"prefix": "centaur-rt-"}));
    let server = setup.start_on(&listen).await;
    let p = pool_until(&fake, &server, &admin, "a member being made", |p| {
        p["members"][0]["state"] == "starting"
    })
    .await;
    let first = p["members"][0]["runtime_id"]
        .as_str()
        .unwrap()
        .replace('_', "-");
    let selector = format!("centaur.dev/sandbox={first}");
    for _ in 0..200 {
        if fake
            .objects(Some(&selector))
            .iter()
            .any(|o| o.starts_with("Pod/"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let half = fake.objects(Some(&selector));
    assert!(
        half.iter().any(|o| o.starts_with("Pod/")),
        "the member was never half made: {half:?}\n{}",
        server.log()
    );
    server.kill9().await;
    fake.control("hold", &json!({}));

    let server = setup.start_on(&listen).await;
    let p = pool_until(&fake, &server, &admin, "a new ready member", |p| {
        ready_ids(p).len() == 1
    })
    .await;
    assert_ne!(ready_ids(&p)[0].replace('_', "-"), first);
    let mut left = half;
    for _ in 0..100 {
        left = fake.objects(Some(&selector));
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left.is_empty(), "left of the half-made member: {left:?}");
    server.stop().await;
}
