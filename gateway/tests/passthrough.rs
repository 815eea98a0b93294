//! `tls.mode: sni-only`: HTTPS passes through untouched, judged by its server name. curl
//! verifies the origin's own certificate (the gateway's CA does not verify it: nothing was
//! intercepted), a denied name gets a TLS alert and a record, the connection goes to the
//! name's port 443 through the guard, and credentials are never put on what the gateway
//! cannot read (the `check` warning says so).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::common;

use std::time::Duration;

use common::{API, CANARY, Env, curl};

fn policy(key_file: &str) -> String {
    format!(
        "  - name: allowlist
    config: {{domains: [{API}, other.test]}}
  - name: secrets
    config:
      secrets:
        - source: {{type: file, path: {key_file}}}
          rules: [{{host: {API}}}]
          inject: {{header: x-api-key}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_only_passes_tls_through_by_name_and_never_terminates_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, format!("sk-{CANARY}")).unwrap();
    let env = Env::start(common::Opts {
        transforms: Some(policy(&key.display().to_string())),
        tls_extra: "mode: sni-only".into(),
        ..common::Opts::default()
    })
    .await;
    let origin_ca = env.path("origin-ca.pem").display().to_string();
    let proxy = format!("http://{}", env.tunnel());

    // Through a CONNECT tunnel, to the name's port 443 (pinned to the origin here): the
    // certificate is the origin's own.
    let (code, body, err) = curl(
        &env,
        &[
            "--cacert",
            &origin_ca,
            "--proxy",
            &proxy,
            &format!("https://{API}/through?q=1"),
        ],
    )
    .await;
    assert_eq!(code, 200, "{err}");
    assert!(body.contains("/through"), "{body}");
    // The injected key is nowhere: the gateway never saw inside the connection.
    let seen = env.origin.seen().pop().unwrap();
    assert!(seen["headers"]["x-api-key"].is_null(), "{seen:#}");
    // With only the gateway's CA trusted, verification fails: no leaf was made.
    let (code, _, err) = curl(
        &env,
        &["--proxy", &proxy, &format!("https://{API}/intercepted")],
    )
    .await;
    assert_eq!(code, 0, "the gateway terminated TLS: {err}");
    assert!(err.contains("certificate"), "{err}");

    // The transparent listener, by SNI.
    let mut args = env.to_https("other.test");
    args.extend(["--cacert".into(), origin_ca.clone()]);
    args.push("https://other.test/transparent".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = curl(&env, &args).await;
    assert_eq!(code, 200, "{err}");

    // A name the policy does not allow: a TLS alert, and a record naming it.
    let mut args = env.to_https("denied.test");
    args.push("https://denied.test/".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = curl(&env, &args).await;
    assert_eq!(code, 0);
    assert!(err.contains("alert") || err.contains("SSL"), "{err}");
    let denied = env.record(|r| r["host"] == "denied.test").await;
    assert_eq!(denied["reason"], "not_allowlisted");

    let rec = env
        .record(|r| r["mode"] == "sni-only" && r["listener"] == "https")
        .await;
    assert_eq!(rec["action"], "allow");
    assert_eq!(rec["host"], "other.test");
    assert_eq!(rec["upstream"], env.origin.addr.to_string());
    assert!(rec["bytes_in"].as_u64().unwrap() > 200, "{rec}");
    assert!(rec["bytes_out"].as_u64().unwrap() > 500, "{rec}");
    assert!(rec["tls"].is_null(), "nothing was terminated: {rec}");
    env.stop().await;
}

/// Invariant 8 (bounded untrusted input): a passed-through connection that goes quiet both
/// ways, on the transparent listener or inside a CONNECT tunnel, does not hold a slot until
/// `max_connections` pushes back; it ends after `tunnel_idle_timeout`, with its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_through_connection_that_goes_quiet_is_closed_after_tunnel_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "unused").unwrap();
    let env = Env::start(common::Opts {
        transforms: Some(policy(&key.display().to_string())),
        tls_extra: "mode: sni-only".into(),
        proxy_extra: "  tunnel_idle_timeout: 2s\n".into(),
        ..common::Opts::default()
    })
    .await;
    let origin_ca = env.path("origin-ca.pem").display().to_string();
    let (https, tunnel) = (env.https().to_string(), env.tunnel().to_string());
    // On the transparent listener, and through a CONNECT tunnel (an open tunnel is its
    // connection's request in flight, so only the passthrough's own timeout can end it).
    let ways = [
        ("https", vec!["-connect", &https]),
        (
            "tunnel",
            vec!["-connect", "other.test:443", "-proxy", &tunnel],
        ),
    ];
    for (listener, way) in ways {
        // openssl completes the handshake with the origin through the gateway, then waits on
        // a stdin that never sends: only the gateway can end the connection.
        let started = std::time::Instant::now();
        let args = [
            "s_client",
            "-servername",
            "other.test",
            "-CAfile",
            &origin_ca,
        ];
        let mut client = common::spawn_piped("openssl", &[&args[..], &way].concat());
        let stdin = client.stdin.take();
        let out = tokio::time::timeout(Duration::from_secs(15), client.wait_with_output())
            .await
            .expect("the quiet connection was never closed");
        let out = out.unwrap();
        let elapsed = started.elapsed();
        drop(stdin);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Verify return code: 0 (ok)"),
            "{listener}: {text}"
        );
        assert!(
            elapsed >= Duration::from_millis(1900),
            "{listener}: closed early: {elapsed:?}"
        );
        let rec = env
            .record(|r| r["mode"] == "sni-only" && r["listener"] == listener)
            .await;
        assert_eq!(rec["host"], "other.test");
        assert_eq!(
            rec["error"], "closed: no traffic for tunnel_idle_timeout",
            "{rec}"
        );
        assert!(rec["bytes_in"].as_u64().unwrap() > 200, "{rec}");
        assert!(rec["bytes_out"].as_u64().unwrap() > 500, "{rec}");
    }
    env.stop().await;
}

#[test]
fn check_warns_that_credentials_do_not_apply_to_passed_through_https() {
    let yaml = format!(
        "dns: {{enabled: false}}\ntls: {{mode: sni-only}}\ntransforms:\n{}",
        policy("/run/secrets/key")
    );
    let config = policy::Config::parse(&yaml).unwrap();
    assert!(config.tls.sni_only);
    let warnings: Vec<String> = config.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("credential transforms") && w.contains("plain HTTP only")),
        "{warnings:?}"
    );
    let bad = policy::Config::parse("dns: {enabled: false}\ntls: {mode: passthrough}\n")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("unknown mode `passthrough`"), "{bad}");
}
