//! Credential transforms end to end, with curl as the sandbox's client: the real value reaches
//! the origin only where the policy says; the client and the audit log only ever see
//! placeholders and names (invariant 3).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::common;

use common::{API, Env, Opts, curl, json};

const REAL: &str = "sk-c4n4ry-5f1e9c";
const REAL_INJECT: &str = "inj-c4n4ry-77aa";
const PH: &str = "PLACEHOLDER_KEY";

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let inj = dir.path().join("inj.json");
    std::fs::write(&key, REAL).unwrap();
    std::fs::write(&inj, format!("{{\"token\": \"{REAL_INJECT}\"}}")).unwrap();
    let transforms = format!(
        "{}  - name: secrets
    config:
      secrets:
        - source: {{type: file, path: {key}}}
          rules: [{{host: {API}}}]
          replace: {{proxy_value: {PH}, match_headers: [Authorization], match_query: true, match_path: true}}
        - source: {{type: file, path: {inj}, json_key: token}}
          rules: [{{host: other.test}}]
          inject: {{header: X-Api-Key, formatter: 'Token {{{{ .Value }}}}'}}
        - source: {{type: file, path: {key}}}
          rules: [{{host: paths.example}}]
          replace: {{proxy_value: {PH}, require: true}}
",
        common::default_allowlist(),
        key = key.display(),
        inj = inj.display(),
    );
    let env = Env::start(Opts {
        transforms: Some(transforms),
        ..Opts::default()
    })
    .await;
    std::mem::forget(dir);
    env
}

fn via(env: &Env, host: &str, url: &str) -> Vec<String> {
    let mut a = env.to_https(host);
    a.push(url.into());
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_swaps_only_in_declared_places_and_scrubs_the_echo() {
    let env = env().await;
    let mut args = via(
        &env,
        API,
        &format!("https://{API}/v1/{PH}/x?key={PH}&other=1"),
    );
    args.extend([
        "-H".into(),
        format!("Authorization: Bearer {PH}"),
        "-H".into(),
        format!("X-Not-Declared: {PH}"),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body, err) = curl(&env, &args).await;
    assert_eq!(code, 200, "{err}");
    // What the origin received: the real value in the header, query and path.
    let seen = env.origin.seen().pop().unwrap();
    assert_eq!(seen["headers"]["authorization"], format!("Bearer {REAL}"));
    assert_eq!(
        seen["query"],
        format!("key={REAL}&other=1"),
        "query order kept"
    );
    assert_eq!(seen["path"], format!("/v1/{REAL}/x"));
    assert_eq!(
        seen["headers"]["x-not-declared"], PH,
        "not a declared header"
    );
    // What the client got back: the origin echoed everything, scrubbed to placeholders.
    assert!(
        !body.contains(REAL),
        "real value leaked to the client: {body}"
    );
    assert_eq!(
        json(&body)["headers"]["authorization"],
        format!("Bearer {PH}")
    );
    let r = env.record(|r| r["host"] == API).await;
    let t = &r["request_transforms"][1];
    assert_eq!(t["name"], "secrets");
    assert_eq!(
        t["annotations"]["swapped"][0]["locations"],
        serde_json::json!(["header:authorization", "path", "query"])
    );
    assert!(
        r["response_transforms"][0]["annotations"]["scrubbed"]
            .as_u64()
            .unwrap_or(0)
            >= 3,
        "{r:#}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_payloads_are_decoded_swapped_and_reencoded() {
    let env = env().await;
    let mut args = via(&env, API, &format!("https://{API}/basic"));
    args.extend(["-u".into(), format!("user:{PH}")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body, _) = curl(&env, &args).await;
    assert_eq!(code, 200);
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("user:{REAL}"));
    assert_eq!(
        env.origin.seen().pop().unwrap()["headers"]["authorization"],
        format!("Basic {expected}")
    );
    // The echo carries the re-encoded credential; the client gets its own placeholder form.
    assert!(!body.contains(&expected), "{body}");
    let sent = base64::engine::general_purpose::STANDARD.encode(format!("user:{PH}"));
    assert!(body.contains(&sent), "{body}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inject_sets_the_header_and_require_refuses_without_a_placeholder() {
    let env = env().await;
    let mut args = via(&env, "other.test", "https://other.test/inject");
    args.extend(["-H".into(), "X-Api-Key: client-supplied".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body, _) = curl(&env, &args).await;
    assert_eq!(code, 200);
    assert_eq!(
        env.origin.seen().pop().unwrap()["headers"]["x-api-key"],
        format!("Token {REAL_INJECT}")
    );
    assert!(!body.contains(REAL_INJECT), "{body}");
    // A placeholder sent to a host it is not bound to passes unchanged.
    let mut args = via(&env, "other.test", "https://other.test/unbound");
    args.extend(["-H".into(), format!("Authorization: Bearer {PH}")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&env, &args).await;
    assert_eq!(
        env.origin.seen().pop().unwrap()["headers"]["authorization"],
        format!("Bearer {PH}")
    );
    // require: true and no placeholder → 403 before anything is sent upstream.
    let before = env.origin.seen().len();
    let args = via(&env, "paths.example", "https://paths.example/ok/x");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body, _) = curl(&env, &args).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(json(&body)["reason"], "secret_placeholder_missing");
    assert_eq!(env.origin.seen().len(), before);
    let r = env
        .record(|r| r["reason"] == "secret_placeholder_missing")
        .await;
    assert_eq!(r["rejected_by"], "secrets");
    env.stop().await;
}

/// Invariant 3 canary: after traffic that used every secret, no audit line holds a value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_ever_reaches_the_audit_log() {
    let env = env().await;
    for (host, url) in [
        (API, format!("https://{API}/c?key={PH}")),
        ("other.test", "https://other.test/c".to_string()),
    ] {
        let mut args = via(&env, host, &url);
        args.extend(["-H".into(), format!("Authorization: Bearer {PH}")]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(curl(&env, &args).await.0, 200);
    }
    let records = env.audit(2).await;
    let text = std::fs::read_to_string(env.path("audit.jsonl")).unwrap();
    assert!(records.len() >= 2);
    assert!(
        !text.contains(REAL) && !text.contains(REAL_INJECT),
        "{text}"
    );
    assert!(text.contains("\"secret\":"), "names are recorded: {text}");
    env.stop().await;
}

/// An origin that ignores `Accept-Encoding: identity`: it echoes the request's Authorization
/// header gzip-compressed, or plain on `/identity`.
async fn gzip_echo_origin() -> String {
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; 8192];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let auth = head
                .lines()
                .find_map(|l| l.strip_prefix("authorization: "))
                .unwrap_or("")
                .to_string();
            let (coding, body) = if head.starts_with("GET /identity ") {
                ("identity", auth.into_bytes())
            } else {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                gz.write_all(auth.as_bytes()).unwrap();
                ("gzip", gz.finish().unwrap())
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-encoding: {coding}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.write_all(&body).await;
        }
    });
    addr
}

/// Regression (invariant 3): an upstream that answered a request carrying a real key with a
/// gzip body slipped the key past the scrubber, which reads bytes as sent. Such a response is
/// now withheld (502 `upstream_encoding_unscrubbable`); an identity body is scrubbed as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_response_the_scrubber_cannot_read_is_withheld() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, REAL).unwrap();
    let origin = gzip_echo_origin().await;
    let transforms = format!(
        "{}  - name: secrets
    config:
      secrets:
        - source: {{type: file, path: {key}}}
          rules: [{{host: gz.test}}]
          replace: {{proxy_value: {PH}, match_headers: [Authorization]}}
",
        common::default_allowlist(),
        key = key.display(),
    );
    let env = Env::start(Opts {
        transforms: Some(transforms),
        pins: vec![("gz.test".into(), origin)],
        ..Opts::default()
    })
    .await;
    let http = env.addrs.http.unwrap();
    let get = |path: &str| {
        vec![
            "--connect-to".to_string(),
            format!("gz.test:80:{}:{}", http.ip(), http.port()),
            "-H".into(),
            format!("Authorization: Bearer {PH}"),
            format!("http://gz.test{path}"),
        ]
    };
    let args = get("/identity");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body, _) = curl(&env, &args).await;
    assert_eq!(
        (code, body.as_str()),
        (200, format!("Bearer {PH}").as_str())
    );
    let args = get("/gzip");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body, _) = curl(&env, &args).await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(json(&body)["reason"], "upstream_encoding_unscrubbable");
    let rec = env.record(|r| r["path"] == "/gzip").await;
    assert_eq!(rec["reason"], "upstream_encoding_unscrubbable");
    env.stop().await;
}

/// A streamed response to a request that carried a real value is scrubbed without delaying
/// it: each server-sent event reaches the client when the origin sends it, not when the next
/// one arrives (the scrubber holds back only a tail that could begin a secret; invariant 3
/// keeps the value itself out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrubbed_sse_events_arrive_as_they_are_sent() {
    let env = env().await;
    let times = common::sse_arrival_times(&env, &format!("Bearer {PH}")).await;
    // The origin sends one event every 300 ms.
    let gaps = [times[1] - times[0], times[2] - times[1]];
    assert!(
        gaps.iter().all(|g| (0.2..0.4).contains(g)),
        "events were held back: {times:?}"
    );
    // The real value went on the wire, so the response was scrubbed.
    let r = env.record(|r| r["host"] == API).await;
    let t = &r["request_transforms"][1];
    assert_eq!(t["name"], "secrets", "{r:#}");
    assert_eq!(
        t["annotations"]["swapped"][0]["locations"],
        serde_json::json!(["header:authorization"]),
        "{r:#}"
    );
    env.stop().await;
}
