//! Credentials the gateway computes or fetches and places in request bodies and headers:
//! `hmac_sign` checked by Python's own `hmac`, and a Vault KV v2 source feeding a `match_body`
//! replace. Bodies are read whole within the limit, never forwarded truncated.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::common;

use common::{API, CANARY, Env, Fake, allow_test_domains, ann, get, json, python, run};

/// hmac_sign: the signature over timestamp, method, path with query and body verifies with
/// Python's own `hmac`; bodies over the limit are 413 (never signed truncated); chunked
/// bodies need the opt-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_signature_verifies_independently_and_bodies_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let api_key = dir.path().join("api");
    // A base64 key, as exchanges hand them out.
    std::fs::write(&key, "c2VjcmV0LWM0bjRyeS1rZXk=").unwrap();
    std::fs::write(&api_key, "ak-c4n4ry-123").unwrap();
    let t = format!(
        "{}  - name: hmac_sign
    config:
      timestamp: {{format: unix_millis}}
      signature:
        algorithm: sha256
        key_encoding: base64
        output_encoding: base64
        message: '{{{{.Timestamp}}}}{{{{.Method}}}}{{{{.PathWithQuery}}}}{{{{.Body}}}}'
      credentials:
        secret: {{type: file, path: {}}}
        key: {{type: file, path: {}}}
      headers:
        - {{name: X-CB-ACCESS-KEY, value: '{{{{.Credentials.key}}}}'}}
        - {{name: X-CB-ACCESS-SIGNATURE, value: '{{{{.Signature}}}}'}}
        - {{name: X-CB-ACCESS-TIMESTAMP, value: '{{{{.Timestamp}}}}'}}
      rules: [{{host: {API}, paths: ['/orders/*']}}]
",
        allow_test_domains(),
        key.display(),
        api_key.display()
    );
    let env = Env::start(common::Opts {
        transforms: Some(t),
        proxy_extra: "  max_request_body_bytes: 4096\n".into(),
        ..common::Opts::default()
    })
    .await;
    let body = r#"{"product_id":"BTC-USD","side":"buy","size":"0.01"}"#;
    let (code, resp) = get(
        &env,
        &format!("https://{API}/orders/new?client=1"),
        &["-H", "Content-Type: application/json", "--data-raw", body],
    )
    .await;
    assert_eq!(code, 200, "{resp}");
    let seen = env.origin.seen().pop().unwrap();
    let h = &seen["headers"];
    assert_eq!(h["x-cb-access-key"], "ak-c4n4ry-123");
    let verify = "
import base64, hashlib, hmac, sys
ts, method, pwq, body, sig = sys.argv[1:6]
key = base64.b64decode('c2VjcmV0LWM0bjRyeS1rZXk=')
mac = hmac.new(key, (ts + method + pwq + body).encode(), hashlib.sha256).digest()
print('ok' if hmac.compare_digest(base64.b64encode(mac).decode(), sig) else 'bad')
";
    let pwq = format!(
        "{}?{}",
        seen["path"].as_str().unwrap(),
        seen["query"].as_str().unwrap()
    );
    let out = run(
        &python(),
        &[
            "-c".into(),
            verify.into(),
            h["x-cb-access-timestamp"].as_str().unwrap().into(),
            "POST".into(),
            pwq,
            seen["body"].as_str().unwrap().into(),
            h["x-cb-access-signature"].as_str().unwrap().into(),
        ],
        &[],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{seen:#}"
    );
    assert_eq!(seen["body"], body, "the body is forwarded whole");
    // Scrubbed in the echo: the API key went on the wire, the client sees a placeholder.
    assert!(
        !resp.contains(CANARY) && resp.contains("[centaur:key]"),
        "{resp}"
    );
    // Not signed: a path outside the rule.
    get(&env, &format!("https://{API}/public"), &[]).await;
    assert!(env.origin.seen().pop().unwrap()["headers"]["x-cb-access-signature"].is_null());
    // Over the body limit: 413, nothing sent.
    let before = env.origin.seen().len();
    let big = "x".repeat(5000);
    let (code, resp) = get(
        &env,
        &format!("https://{API}/orders/big"),
        &["--http1.1", "--data-raw", &big],
    )
    .await;
    assert_eq!(code, 413, "{resp}");
    assert_eq!(json(&resp)["reason"], "body_too_large");
    // Chunked without the opt-in: 400.
    let (code, resp) = get(
        &env,
        &format!("https://{API}/orders/chunked"),
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--http1.1",
            "--data-raw",
            "abc",
        ],
    )
    .await;
    assert_eq!(code, 400, "{resp}");
    assert_eq!(json(&resp)["reason"], "chunked_body_not_allowed");
    assert_eq!(env.origin.seen().len(), before);
    let r = env.record(|r| r["path"] == "/orders/big").await;
    assert_eq!(r["status_code"], 413);
    env.stop().await;
}

/// A Vault KV v2 source feeds a replace; `match_body` swaps inside a buffered body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_source_and_body_replacement() {
    let fake = Fake::start(3600);
    let token = fake.path("vault-token");
    std::fs::write(&token, "hvs.c4n4ry-vault-token\n").unwrap();
    let t = format!(
        "{}  - name: secrets
    config:
      secrets:
        - source: {{type: vault, address: 'https://vault.test:{}', path: team/openai, field: api_key, token_file: {token}, ttl: 1m}}
          rules: [{{host: {API}}}]
          replace: {{proxy_value: OPENAI_PH, match_headers: [Authorization], match_body: true}}
",
        allow_test_domains(),
        fake.port
    );
    let env = Env::start(fake.opts(t)).await;
    let (code, resp) = get(
        &env,
        &format!("https://{API}/v1/chat"),
        &[
            "-H",
            "Authorization: Bearer OPENAI_PH",
            "--data-raw",
            "{\"key\":\"OPENAI_PH\"}",
        ],
    )
    .await;
    assert_eq!(code, 200, "{resp}");
    let seen = env.origin.seen().pop().unwrap();
    assert_eq!(
        seen["headers"]["authorization"],
        "Bearer sk-c4n4ry-from-vault"
    );
    assert_eq!(seen["body"], "{\"key\":\"sk-c4n4ry-from-vault\"}");
    assert!(
        resp.contains("OPENAI_PH"),
        "echo scrubbed back to the placeholder: {resp}"
    );
    let v = fake.seen("vault");
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["token_ok"], true);
    let r = env.record(|r| r["path"] == "/v1/chat").await;
    assert_eq!(
        ann(&r, "secrets")["swapped"][0],
        serde_json::json!({"secret": "vault:secret/team/openai#api_key", "locations": ["header:authorization", "body"]})
    );
    env.stop().await;
}

/// A 1Password Connect source (the seed's `op://…` references), read from a local fake of the
/// Connect API by titles, cached for its `ttl`; a section-qualified reference picks that
/// section's field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_password_connect_source_by_titles_and_section() {
    let fake = Fake::start(3600);
    let token = fake.path("op-token");
    std::fs::write(&token, "op-connect-c4n4ry-token\n").unwrap();
    let src = |r: &str| {
        format!(
            "{{type: 1password_connect, secret_ref: '{r}', connect_host: 'https://vault.test:{}', token_file: {token}, ttl: 1m}}",
            fake.port,
            token = token
        )
    };
    let t = format!(
        "{}  - name: secrets
    config:
      secrets:
        - source: {}
          rules: [{{host: {API}, paths: ['/v1/*']}}]
          replace: {{proxy_value: ANTHROPIC_API_KEY, match_headers: [x-api-key], require: true}}
        - source: {}
          rules: [{{host: {API}, paths: ['/staging/*']}}]
          replace: {{proxy_value: ANTHROPIC_API_KEY, match_headers: [x-api-key], require: true}}
",
        allow_test_domains(),
        src("op://ai-agents/anthropic/credential"),
        src("op://ai-agents/anthropic/staging/credential"),
    );
    let env = Env::start(fake.opts(t)).await;
    for _ in 0..2 {
        let url = format!("https://{API}/v1/messages");
        let (code, resp) = get(&env, &url, &["-H", "x-api-key: ANTHROPIC_API_KEY"]).await;
        assert_eq!(code, 200, "{resp}");
    }
    let seen = env.origin.seen();
    assert!(
        seen.iter()
            .all(|s| s["headers"]["x-api-key"] == "sk-ant-c4n4ry-from-1password")
    );
    let (code, _) = get(
        &env,
        &format!("https://{API}/staging/messages"),
        &["-H", "x-api-key: ANTHROPIC_API_KEY"],
    )
    .await;
    assert_eq!(code, 200);
    let last = env.origin.seen().pop().unwrap();
    assert_eq!(last["headers"]["x-api-key"], "sk-ant-c4n4ry-staging");
    let calls = fake.seen("op_connect");
    assert_eq!(
        calls.len(),
        6,
        "vault, item, item body per reference; cached after: {calls:#?}"
    );
    assert!(calls.iter().all(|c| c["token_ok"] == true));
    assert_eq!(calls[0]["filter"], "name eq \"ai-agents\"");
    let r = env.record(|r| r["path"] == "/staging/messages").await;
    assert_eq!(
        ann(&r, "secrets")["swapped"][0]["secret"],
        "op://ai-agents/anthropic/staging/credential"
    );
    env.stop().await;
}

/// `aws_sm` and `aws_ssm`: the gateway reads a Secrets Manager secret (a JSON key of it) and a
/// Parameter Store value with its own AWS credentials from its environment; the fake checks
/// every request's SigV4 signature with botocore's signer. A missing secret refuses the
/// request that requires it, naming the source and never a value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_secrets_manager_and_parameter_store_sources() {
    let fake = Fake::start(3600);
    let src = |kind: &str| {
        format!(
            "{kind}, region: eu-west-1, endpoint: 'https://aws.test:{}'",
            fake.port
        )
    };
    let t = format!(
        "  - name: allowlist
    config: {{domains: [{API}]}}
  - name: secrets
    config:
      secrets:
        - source: {{{}, json_key: api_key}}
          rules: [{{host: {API}, paths: ['/sm']}}]
          inject: {{header: x-api-key}}
        - source: {{{}}}
          rules: [{{host: {API}, paths: ['/ssm']}}]
          inject: {{header: x-api-key}}
        - source: {{{}}}
          rules: [{{host: {API}, paths: ['/missing']}}]
          inject: {{header: x-api-key, require: true}}
",
        src("type: aws_sm, secret_id: prod/openai"),
        src("type: aws_ssm, name: /team/anthropic"),
        src("type: aws_sm, secret_id: prod/nothing-here"),
    );
    let policy = common::ProcPolicy {
        transforms: Some(&t),
        pins: vec![("aws.test".into(), format!("127.0.0.1:{}", fake.port))],
        ca_files: vec![fake.path("fake-ca.pem")],
        ..Default::default()
    };
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIAGATEWAY000000001".to_string()),
        ("AWS_SECRET_ACCESS_KEY", format!("gw-secret-{CANARY}-aws")),
        ("AWS_SESSION_TOKEN", format!("gw-session-{CANARY}")),
    ];
    let p = common::Proc::start_with("{file: {path: DIR/audit.jsonl}}", policy, &env).await;
    let proxy = format!("http://{}", p.tunnel);
    let ca = p.path("ca.crt").display().to_string();
    let get = |path: &str| {
        let url = format!("https://{API}{path}");
        let args = [
            "-s",
            "--cacert",
            &ca,
            "--proxy",
            &proxy,
            "-w",
            "\n%{http_code}",
            &url,
        ]
        .map(String::from);
        async move {
            let out = run("curl", &args, &[]).await;
            String::from_utf8_lossy(&out.stdout).to_string()
        }
    };
    assert!(get("/sm").await.ends_with("200"));
    assert!(get("/ssm").await.ends_with("200"));
    let seen = p.origin.seen();
    assert_eq!(seen[0]["headers"]["x-api-key"], "sk-c4n4ry-from-aws-sm");
    assert_eq!(seen[1]["headers"]["x-api-key"], "sk-ant-c4n4ry-from-ssm");
    let missing = get("/missing").await;
    assert!(missing.ends_with("403"), "{missing}");
    assert!(missing.contains("secret_unavailable"), "{missing}");
    assert_eq!(p.origin.seen().len(), 2, "the refused request was not sent");
    let calls = fake.seen("aws");
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert!(calls.iter().all(|c| c["verified"] == true), "{calls:#?}");
    assert!(calls.iter().all(|c| c["region"] == "eu-west-1"));
    assert_eq!(calls[0]["service"], "secretsmanager");
    assert_eq!(calls[1]["service"], "ssm");
    assert_eq!(calls[1]["request"]["WithDecryption"], true);
    // The log names the failing source and the AWS error, never a value.
    let log = p.log_with("ResourceNotFoundException").await;
    assert!(log.contains("aws_sm:prod/nothing-here"), "{log}");
    assert!(log.contains("ResourceNotFoundException"), "{log}");
    common::assert_no_canary("the gateway's log", &log);
    p.records();
}
