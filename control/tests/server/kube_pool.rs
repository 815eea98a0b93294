//! The warm pool on Kubernetes (`sandbox.warm_pool` with `sandbox.backend: kubernetes`),
//! against the fake API server and its kubelet: a member is claimed with its thread's
//! policy and the pool refills; a server of another deploy deletes the old members; a
//! member half made when its server was killed is deleted by the next server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use testkit::kube::FakeApi;

use crate::calls::{call, turn};
use crate::harness::{self, free_port};
use crate::kube::{ACCEPTED, GATEWAY_IMAGE, HOST, setup_with};

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
