//! `aws_auth`: a client signs with placeholder AWS keys using botocore's own signer (header
//! form and presigned URL); the gateway re-signs with the real keys, and botocore's signer,
//! given the real keys and the request the origin received, computes the same signature.
//! Invariant 3: the placeholder never reaches the origin, the secret key never leaves the
//! gateway (not on the wire, not in the audit trail or logs).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::common;

use std::path::Path;

use common::{API, CANARY, Env, allow_test_domains, get, json, python, run};
use serde_json::Value;

const KEY_ID: &str = "AKIAREALKEY000000001";
const TOKEN: &str = "FwoGZXIvYXdzEreal-session-token";

fn script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fakes/aws_sigv4.py")
        .display()
        .to_string()
}

/// Signs with placeholder keys and sends through the gateway; returns (status, body).
async fn send(
    env: &Env,
    url: &str,
    service: &str,
    region: &str,
    body: &str,
    presign: bool,
) -> Value {
    let mut args = vec![
        script(),
        "send".into(),
        format!("http://{}", env.tunnel()),
        env.ca(),
        url.into(),
        service.into(),
        region.into(),
        body.into(),
    ];
    if presign {
        args.push("--presign".into());
    }
    let out = run(&python(), &args, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&String::from_utf8_lossy(&out.stdout))
}

/// botocore's verdict on the request the origin last received.
async fn botocore_verifies(seen: &Value, secret: &str, token: &str) {
    let args = [
        script(),
        "verify".into(),
        KEY_ID.into(),
        secret.into(),
        token.into(),
        seen.to_string(),
    ];
    let out = run(&python(), &args, &[]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}\n{seen:#}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigv4_re_signed_with_real_keys_verifies_with_botocore() {
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("wJalr{CANARY}EXAMPLEKEY/real+secret");
    let file = |name: &str, value: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, value).unwrap();
        p.display().to_string()
    };
    let (id_f, secret_f, token_f) = (
        file("id", KEY_ID),
        file("secret", &secret),
        file("token", TOKEN),
    );
    let t = format!(
        "{}  - name: aws_auth
    config:
      access_key_id: {{type: file, path: {id_f}}}
      secret_access_key: {{type: file, path: {secret_f}}}
      unsigned_payload: true
      rules: [{{host: {API}, paths: ['/s3/*']}}]
  - name: aws_auth
    config:
      access_key_id: {{type: file, path: {id_f}}}
      secret_access_key: {{type: file, path: {secret_f}}}
      session_token: {{type: file, path: {token_f}}}
      allowed_regions: [eu-west-1, us-east-1]
      allowed_services: [sqs, s3]
      rules: [{{host: {API}}}]
",
        allow_test_domains()
    );
    let env = Env::start(common::Opts {
        transforms: Some(t),
        ..common::Opts::default()
    })
    .await;

    // SQS's JSON protocol: a POST with a body, a path segment needing the second encoding.
    let body = r#"{"QueueNamePrefix":"jobs"}"#;
    let url = format!("https://{API}/123456789012/my%20queue?b=2&a=x");
    let r = send(&env, &url, "sqs", "eu-west-1", body, false).await;
    assert_eq!(r["status"], 200, "{r}");
    let seen = env.origin.seen().pop().unwrap();
    let h = &seen["headers"];
    assert!(!seen.to_string().contains("PLACEHOLDER"), "{seen:#}");
    assert!(!seen.to_string().contains("placeholder"), "{seen:#}");
    assert_eq!(h["x-amz-security-token"], TOKEN);
    assert_eq!(seen["body"], body, "the body is forwarded whole");
    botocore_verifies(&seen, &secret, TOKEN).await;
    // The echo carried the real key id and token back: the client sees placeholders.
    let echoed = r["body"].as_str().unwrap();
    assert!(
        !echoed.contains(KEY_ID) && !echoed.contains(TOKEN),
        "{echoed}"
    );
    assert!(echoed.contains("[centaur:aws_access_key_id]"), "{echoed}");
    let rec = env
        .record(|r| r["path"] == "/123456789012/my%20queue")
        .await;
    let notes = common::ann(&rec, "aws_auth");
    assert_eq!(notes["service"], "sqs");
    assert_eq!(notes["region"], "eu-west-1");
    assert_eq!(
        notes["injected"],
        serde_json::json!([
            "authorization",
            "x-amz-date",
            "x-amz-content-sha256",
            "x-amz-security-token"
        ])
    );

    // S3 with a presigned URL: S3's path rules (no second encoding), the signature moved
    // from the query into headers, the payload unsigned (streamed, not read).
    let url = format!("https://{API}/s3/bucket/photo%20one.jpg?versionId=3");
    let r = send(&env, &url, "s3", "us-east-1", "-", true).await;
    assert_eq!(r["status"], 200, "{r}");
    let seen = env.origin.seen().pop().unwrap();
    assert_eq!(seen["query"], "versionId=3", "presign parameters dropped");
    assert_eq!(seen["headers"]["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
    assert!(seen["headers"]["x-amz-security-token"].is_null());
    botocore_verifies(&seen, &secret, "-").await;

    // The gates, and a request with no signature at all: refused, nothing sent.
    let before = env.origin.seen().len();
    let sts = format!("https://{API}/sts");
    let r = send(&env, &sts, "sts", "eu-west-1", "-", false).await;
    assert_eq!(r["status"], 403, "{r}");
    assert_eq!(
        json(r["body"].as_str().unwrap())["reason"],
        "service_not_allowed"
    );
    let r = send(&env, &sts, "sqs", "ap-south-1", "-", false).await;
    assert_eq!(r["status"], 403, "{r}");
    assert_eq!(
        json(r["body"].as_str().unwrap())["reason"],
        "region_not_allowed"
    );
    let (code, resp) = get(&env, &format!("https://{API}/unsigned"), &[]).await;
    assert_eq!(code, 400, "{resp}");
    assert_eq!(json(&resp)["reason"], "missing_sigv4");
    assert_eq!(env.origin.seen().len(), before);
    env.stop().await;
}
