//! `centaur sandbox run` with real programs in real sandboxes: curl, Python requests, dig and
//! an agent CLI from npm, each reaching a local origin by name through the sandbox's own
//! gateway with only a placeholder credential, and everything else failing.
//!
//! Needs root (namespaces, nftables, cgroups). Without root these tests print SKIPPED and
//! pass, except under CI=true, where they fail.

mod backend;
mod harness;
mod pod;
mod teardown;

use harness::{REAL_KEY, Sandboxed, root_or_skip};

/// Invariants 1, 3 and 6: curl and Python requests reach the allowed origin by name with the
/// placeholder; the origin sees the real key; the sandbox sees the placeholder again.
#[tokio::test(flavor = "multi_thread")]
async fn curl_and_requests_reach_the_origin_by_name_with_the_placeholder_swapped() {
    if !root_or_skip("curl_and_requests_reach_the_origin_by_name") {
        return;
    }
    let s = Sandboxed::new().await;
    let out = s
        .run(&[], r#"
curl -sS -m 10 https://api.test/v1/models -H "Authorization: Bearer $API_KEY"; echo
/usr/bin/python3 -c '
import os, requests
r = requests.get("https://api.test/v1/python", headers={"Authorization": "Bearer " + os.environ["API_KEY"]}, timeout=10)
print("python", r.status_code, r.json()["headers"]["authorization"])
'
"#)
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    // The origin echoes what it got; the gateway turns the real value back into the
    // placeholder before the sandbox sees it.
    assert!(
        out.stdout
            .contains("\"authorization\":\"Bearer placeholder-api-key\""),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("python 200 Bearer placeholder-api-key"),
        "{out:?}"
    );
    assert!(!out.stdout.contains(REAL_KEY) && !out.stderr.contains(REAL_KEY));
    let seen = s.origin.seen();
    let paths: Vec<&str> = seen.iter().filter_map(|r| r["path"].as_str()).collect();
    assert_eq!(paths, ["/v1/models", "/v1/python"]);
    for r in &seen {
        assert_eq!(r["headers"]["authorization"], format!("Bearer {REAL_KEY}"));
    }
    let records = s.audit();
    let allowed: Vec<_> = records.iter().filter(|r| r["action"] == "allow").collect();
    assert_eq!(allowed.len(), 2, "{records:#?}");
    for r in allowed {
        assert_eq!(r["sandbox"]["sandbox_id"], out.id.as_str());
        assert_eq!(r["sandbox"]["suite"], "sandbox-tests");
        assert_eq!(r["host"], "api.test");
    }
}

/// Invariants 1, 2 and 6: a denied host, literal IPs, other ports, other resolvers and IPv6
/// all fail inside the sandbox; what reaches the gateway is refused and audited.
#[tokio::test(flavor = "multi_thread")]
async fn everything_but_the_policy_fails_inside() {
    if !root_or_skip("everything_but_the_policy_fails_inside") {
        return;
    }
    let s = Sandboxed::new().await;
    let out = s
        .run(&[], r#"
probe() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name=ok"; else echo "$name=failed"; fi; }
echo "denied_http=$(curl -s -m 5 -o /dev/null -w '%{http_code}' http://denied.test/)"
echo "denied_path=$(curl -s -m 5 -o /dev/null -w '%{http_code}' https://api.test/admin -H "Authorization: Bearer $API_KEY")"
probe denied_https curl -sS -m 5 https://denied.test/
probe literal_ip_https curl -sS -m 5 https://1.1.1.1/
echo "literal_ip_http=$(curl -s -m 5 -o /dev/null -w '%{http_code}' http://93.184.216.34/)"
probe foreign_dns dig +time=2 +tries=1 @8.8.8.8 example.com
probe gateway_other_port curl -sS -m 3 http://$CENTAUR_GATEWAY:22/
probe host_address curl -sS -m 3 http://$HOST_ADDR:$HOST_PORT/
probe raw_tcp /usr/bin/python3 -c 'import socket; socket.create_connection(("10.0.0.1", 5432), timeout=3)'
probe ipv6 curl -sS -m 3 -6 http://[2606:4700::1111]/
probe ipv6_loopback_host curl -sS -m 3 -6 http://[::1]:$HOST_PORT/
echo "dns_answer=$(dig +short +time=2 +tries=1 anything.example.org)"
"#)
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let want = [
        "denied_http=403".to_string(),
        "denied_path=403".into(),
        "denied_https=failed".into(),
        "literal_ip_https=failed".into(),
        "literal_ip_http=403".into(),
        "foreign_dns=failed".into(),
        "gateway_other_port=failed".into(),
        "host_address=failed".into(),
        "raw_tcp=failed".into(),
        "ipv6=failed".into(),
        "ipv6_loopback_host=failed".into(),
        format!("dns_answer={}", out.gateway),
    ];
    let got: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(got, want, "{out:?}");
    // The host-side listener never saw a connection from the sandbox.
    assert_eq!(s.host_listener_hits(), 0);
    let records = s.audit();
    let refused: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["action"] == "reject")
        .map(|r| {
            (
                r["host"].as_str().unwrap_or("-").to_string(),
                r["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for expect in [
        ("denied.test", "not_allowlisted"),
        ("api.test", "not_allowlisted"),
        ("93.184.216.34", "not_allowlisted"),
    ] {
        assert!(
            refused
                .iter()
                .any(|(h, r)| h == expect.0 && r.starts_with(expect.1)),
            "{expect:?} not in {refused:?}"
        );
    }
    // The HTTPS call to a literal IP reached the gateway (redirected) without a name.
    assert!(
        records.iter().any(|r| r["reason"] == "tls_sni_missing"),
        "{records:#?}"
    );
}

/// Invariants 3 and 6: the command sees placeholders only, no host files outside its mounts,
/// no host processes, no capabilities, and not the gateway's CA key.
#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_sees_only_placeholders_its_mounts_and_its_own_processes() {
    if !root_or_skip("the_sandbox_sees_only_placeholders") {
        return;
    }
    let s = Sandboxed::new().await;
    let secret_file = s.dir.path().join("host-secret.txt");
    std::fs::write(&secret_file, "host-only").unwrap();
    let script = format!(
        r#"
env
echo "uid=$(id -u)"
grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status
unshare -U true 2>&1 | head -1
echo "procs=$(ls /proc | grep -cE '^[0-9]+$')"
ps -eo comm= | sort | tr '\n' ' '; echo
cat {secret} 2>&1 | head -1
cat {env_file} 2>&1 | head -1
cat /etc/shadow 2>&1 | head -1
ls /run/centaur
echo "homes=$(ls -A /root | wc -l)+$(ls -A /home | wc -l)"
"#,
        secret = secret_file.display(),
        env_file = s.env_file.display(),
    );
    let out = s.run(&[], &script).await;
    assert_eq!(out.code, 0, "{out:?}");
    let o = &out.stdout;
    assert!(o.contains("\nAPI_KEY=placeholder-api-key\n"), "{o}");
    assert!(
        !o.contains(REAL_KEY),
        "the real key leaked into the sandbox:\n{o}"
    );
    assert!(o.contains("SSL_CERT_FILE=/run/centaur/ca.crt"));
    assert!(o.contains("NODE_EXTRA_CA_CERTS=/run/centaur/ca.crt"));
    assert!(o.contains("REQUESTS_CA_BUNDLE=/run/centaur/ca.crt"));
    // Nothing of the host's environment: only what the runner sets.
    let allowed = [
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "TERM",
        "LANG",
        "LC_ALL",
        "TZ",
        "PWD",
        "SHLVL",
        "CENTAUR_SANDBOX",
        "CENTAUR_GATEWAY",
        "CENTAUR_PROXY",
        "API_KEY",
        "HOST_ADDR",
        "HOST_PORT",
        "_",
    ];
    for line in o.lines().take_while(|l| !l.starts_with("uid=")) {
        let name = line.split('=').next().unwrap();
        assert!(
            allowed.contains(&name) || sandbox::local::bwrap::CA_VARS.contains(&name),
            "unexpected variable in the sandbox: {line}"
        );
    }
    assert!(o.contains("uid=65534"), "{o}");
    assert!(o.contains("CapEff:\t0000000000000000"), "{o}");
    assert!(o.contains("NoNewPrivs:\t1"), "{o}");
    // The seccomp filter is installed and refuses new namespaces.
    assert!(o.contains("Seccomp:\t2"), "{o}");
    assert!(o.contains("unshare failed: Operation not permitted"), "{o}");
    // bwrap's init, sh, and the commands of this script: never a host process.
    let ps = o
        .lines()
        .skip_while(|l| !l.starts_with("procs="))
        .nth(1)
        .unwrap();
    for comm in ps.split_whitespace() {
        assert!(["bwrap", "ps", "sh", "sort", "tr"].contains(&comm), "{ps}");
    }
    // Host /tmp (where the policy, the secrets file and this file live) is not mounted.
    assert!(
        o.contains("host-secret.txt: No such file or directory"),
        "{o}"
    );
    assert!(o.contains("secrets.env: No such file or directory"), "{o}");
    assert!(o.contains("/etc/shadow: Permission denied"), "{o}");
    assert!(o.contains("\nca.crt\n"), "only the CA certificate: {o}");
    assert!(!o.contains("ca.key"), "{o}");
    assert!(o.ends_with("\nhomes=0+0\n"), "homes are hidden: {o}");
}

/// stdout, stderr, stdin and the exit status pass through.
#[tokio::test(flavor = "multi_thread")]
async fn stdio_and_exit_status_pass_through() {
    if !root_or_skip("stdio_and_exit_status_pass_through") {
        return;
    }
    let s = Sandboxed::new().await;
    let out = s
        .run_with_stdin(
            &[],
            "read line; echo \"got $line\"; echo oops >&2; exit 7",
            "hello\n",
        )
        .await;
    assert_eq!(out.code, 7, "{out:?}");
    assert_eq!(out.stdout, "got hello\n");
    assert!(out.stderr.contains("oops"), "{out:?}");
    let killed = s.run(&[], "kill -KILL $$").await;
    assert_eq!(killed.code, 128 + 9, "{killed:?}");
}

/// Invariant 6: two sandboxes at once get distinct addresses and cannot reach each other or
/// each other's gateway.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_sandboxes_are_apart() {
    if !root_or_skip("concurrent_sandboxes_are_apart") {
        return;
    }
    let s = Sandboxed::new().await;
    let a = s.spawn(&[], "echo ready; sleep 30").await;
    let out = s
        .run(
            &[],
            &format!(
                r#"
probe() {{ name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name=ok"; else echo "$name=failed"; fi; }}
probe other_gateway_tunnel curl -sS -m 3 http://{ag}:1080/
probe other_gateway_dns dig +time=2 +tries=1 @{ag} example.com
probe other_sandbox /usr/bin/python3 -c 'import socket; socket.create_connection(("{asb}", 8080), timeout=3)'
echo "own=$CENTAUR_GATEWAY"
"#,
                ag = a.gateway,
                asb = a.sandbox,
            ),
        )
        .await;
    let a_gateway = a.gateway.clone();
    a.stop().await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_ne!(out.gateway, a_gateway);
    let got: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        got,
        [
            "other_gateway_tunnel=failed",
            "other_gateway_dns=failed",
            "other_sandbox=failed",
            &format!("own={}", out.gateway),
        ]
    );
}

/// An agent CLI that nobody here wrote (pi, from npm) runs in a sandbox against a fake
/// OpenAI API reached by name: the API gets the real key, the agent only ever held the
/// placeholder, and its answer reaches the terminal.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_cli_from_npm_works_with_only_a_placeholder() {
    if !root_or_skip("an_agent_cli_from_npm_works_with_only_a_placeholder") {
        return;
    }
    let pi = harness::repo().join(".node/node_modules/.bin/pi");
    assert!(
        pi.exists(),
        "{} missing: run scripts/install-deps",
        pi.display()
    );
    let llm = harness::FakeLlm::start().await;
    let s = Sandboxed::with_policy(&llm.policy()).await;
    let node = harness::repo().join(".node");
    let script = r#"
mkdir -p "$HOME/pi"
printf '{"providers":{"fake":{"baseUrl":"https://api.llm.test/v1","api":"openai-completions","apiKey":"%s","models":[{"id":"m"}]}}}' "$API_KEY" > "$HOME/pi/models.json"
echo "agent env: API_KEY=$API_KEY"
PI_CODING_AGENT_DIR="$HOME/pi" pi -p --provider fake --model m --no-session "Say pong"
"#;
    let path = format!("PATH={}/node_modules/.bin:/usr/bin:/bin", node.display());
    let ro = node.display().to_string();
    let out = s.run(&["--ro", &ro, "--env", &path], script).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("agent env: API_KEY=placeholder-api-key"),
        "{out:?}"
    );
    assert!(out.stdout.contains("pong from the fake LLM"), "{out:?}");
    assert!(!out.stdout.contains(REAL_KEY) && !out.stderr.contains(REAL_KEY));
    let seen = llm.requests();
    assert!(!seen.is_empty());
    for r in &seen {
        assert_eq!(r["path"], "/v1/chat/completions");
        assert_eq!(r["authorization"], format!("Bearer {REAL_KEY}"));
    }
}

/// Without root the runner says what it needs instead of running a weaker sandbox.
#[tokio::test(flavor = "multi_thread")]
async fn without_root_the_error_says_what_is_needed() {
    if !root_or_skip("without_root_the_error_says_what_is_needed") {
        return;
    }
    let out = tokio::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_centaur"))
        .args(["sandbox", "run", "--", "true"])
        .current_dir("/")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("local sandboxes need root"), "{err}");
    assert!(err.contains("CAP_NET_ADMIN"), "{err}");
}

/// Invariant 6 (DNS included): the sandbox has its own /etc/hosts, so no name the host lists
/// there resolves around the gateway's DNS.
#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_has_its_own_hosts_file() {
    if !root_or_skip("the_sandbox_has_its_own_hosts_file") {
        return;
    }
    let s = Sandboxed::new().await;
    let out = s.run(&[], "cat /etc/hosts; hostname").await;
    assert_eq!(out.code, 0, "{out:?}");
    let mut lines = out.stdout.lines();
    let name = out.stdout.lines().last().unwrap().to_string();
    assert_eq!(
        lines.next(),
        Some(format!("127.0.0.1 localhost {name}").as_str())
    );
    assert_eq!(
        lines.next(),
        Some("::1 localhost ip6-localhost ip6-loopback")
    );
    assert_eq!(
        lines.next(),
        Some(name.as_str()),
        "nothing else: {}",
        out.stdout
    );
}

/// `centaur demo --gateway` shows all five points and checks itself.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_shows_the_whole_idea() {
    if !root_or_skip("the_demo_shows_the_whole_idea") {
        return;
    }
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_centaur"))
        .args(["demo", "--gateway"])
        .env_remove("SUDO_UID")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "    -> HTTP 200",
        "    DEMO_API_KEY=demo-placeholder-key",
        "(the real key from secrets.env: yes)",
        "tlsv1 alert access denied",
        "\"host\":\"169.254.169.254\",\"reason\":\"not_allowlisted\"",
        "timed out",
        "DEMO_API_KEY swapped",
        "hash chain intact: 4 records",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    // Invariant 3: the real key (sk-live- and 32 hex digits) is never printed whole.
    for (i, _) in text.match_indices("sk-live-") {
        let rest = &text[i + 8..];
        let hex = rest.chars().take_while(char::is_ascii_hexdigit).count();
        assert!(hex < 32, "the real key was printed: {}", &text[i..]);
    }
    let kept = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("(files kept in "))
        .unwrap();
    let _ = std::fs::remove_dir_all(kept.trim_end_matches(')'));
}

/// `centaur demo`, the README's first command: the platform end to end, across a `kill -9` of
/// the server mid-turn, checking itself (invariants 3 and 7).
#[tokio::test(flavor = "multi_thread")]
async fn the_platform_demo_survives_a_kill_9_and_checks_itself() {
    if !root_or_skip("the_platform_demo_survives_a_kill_9_and_checks_itself") {
        return;
    }
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_centaur"))
        .arg("demo")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "-> 202 exe_",
        "(5) kill -9 ",
        "reconnecting with Last-Event-ID: ",
        "execution_state  completed",
        "uid=65534(nobody)",
        "(6) nothing lost, nothing repeated",
        "the API received `Authorization: Bearer sk-live-…` (the real key)",
        "DEMO_API_KEY swapped",
        "hash chain intact: 1 records",
        "released true",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    for (i, _) in text.match_indices("sk-live-") {
        let hex = text[i + 8..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .count();
        assert!(hex < 32, "the real key was printed: {}", &text[i..]);
    }
    let kept = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("(files kept in "))
        .unwrap();
    let _ = std::fs::remove_dir_all(kept.trim_end_matches(')'));
}
