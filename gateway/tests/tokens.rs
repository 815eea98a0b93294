//! Minted and signed credentials, checked against implementations nobody here wrote:
//! google-auth inside the sandbox with a dummy key, PyJWT verifying the assertions the gateway
//! signs, oauthlib serving the OAuth grants, Python's `hmac` checking signatures, and a Vault
//! KV v2 fake. The sandbox side only ever holds stubs and placeholders (invariant 3).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{API, CANARY, Env, Fake, assert_no_canary, curl, json, python, run};
use serde_json::Value;

fn allow() -> String {
    "  - name: allowlist\n    config: {domains: ['*.test']}\n".into()
}

fn via(env: &Env, url: &str, extra: &[&str]) -> Vec<String> {
    let mut a = env.to_https(API);
    a.push(url.into());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

async fn get(env: &Env, url: &str, extra: &[&str]) -> (u16, String) {
    let args = via(env, url, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body, err) = curl(env, &args).await;
    assert!(code != 0, "{err}");
    (code, body)
}

/// The annotations of transform `name` in a record.
fn ann(record: &Value, name: &str) -> Value {
    record["request_transforms"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .map(|t| t["annotations"].clone())
        .unwrap_or_else(|| panic!("no {name} transform in {record:#}"))
}

fn last_auth(env: &Env) -> Value {
    env.origin.seen().pop().unwrap()["headers"]["authorization"].clone()
}

/// gcp_auth end to end: google-auth with a dummy key completes its token dance against the
/// gateway's stub, then its API call reaches the origin with the token minted from the real
/// key, whose JWT assertion PyJWT verified at the fake token endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_auth_with_a_dummy_key_gets_the_real_token_on_the_wire() {
    let fake = Fake::start(3600);
    let t = format!(
        "{}  - name: gcp_auth
    config:
      keyfile_path: {}
      scopes: [https://www.googleapis.com/auth/cloud-platform]
      subject: admin@example.com
      rules: [{{host: {API}}}]
",
        allow(),
        fake.path("sa.json")
    );
    let env = Env::start(fake.opts(t)).await;
    let script = "
import json, sys
from google.oauth2 import service_account
from google.auth.transport.requests import AuthorizedSession
creds = service_account.Credentials.from_service_account_file(
    sys.argv[1], scopes=['https://www.googleapis.com/auth/cloud-platform'])
s = AuthorizedSession(creds)
out = []
for i in range(2):
    r = s.get('https://api.test/storage/v1/b?project=p')
    out.append({'status': r.status_code, 'auth': r.json()['headers'].get('authorization')})
print(json.dumps({'calls': out, 'client_token': creds.token}))
";
    let tunnel = format!("http://{}", env.tunnel());
    let out = run(
        &python(),
        &["-c".into(), script.into(), fake.path("sa-dummy.json")],
        &[
            ("HTTPS_PROXY", tunnel.clone()),
            ("https_proxy", tunnel),
            ("REQUESTS_CA_BUNDLE", env.ca()),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_canary("the sandbox's output", &stdout);
    let v = json(&stdout);
    // The client only ever held the stub; what it saw echoed back is scrubbed.
    assert_eq!(v["client_token"], gateway::proxy::STUB_TOKEN);
    assert_eq!(v["calls"][0]["status"], 200);
    assert_eq!(v["calls"][1]["auth"], "Bearer [centaur:gcp_auth]");
    // The origin saw the real token, minted once for both calls.
    let minted = fake.seen("google");
    assert_eq!(minted.len(), 1, "{minted:#?}");
    let m = &minted[0];
    assert_eq!(
        last_auth(&env),
        format!("Bearer {}", m["token"].as_str().unwrap())
    );
    // PyJWT verified the assertion with the real key's public half; the claims are right.
    assert_eq!(m["verified"], true, "{m:#}");
    assert_eq!(
        m["grant_type"],
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );
    assert_eq!(m["kid"], "kid-real");
    let c = &m["claims"];
    assert_eq!(c["iss"], "real@centaur-test.iam.gserviceaccount.com");
    assert_eq!(c["scope"], "https://www.googleapis.com/auth/cloud-platform");
    assert_eq!(c["sub"], "admin@example.com");
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        3600
    );
    // Audit: the stubbed token request, and the annotated API calls.
    let stub = env.record(|r| r["host"] == "oauth2.googleapis.com").await;
    assert_eq!(stub["reason"], "stubbed");
    assert_eq!(
        ann(&stub, "gcp_auth")["stubbed"],
        "oauth2_token_endpoint",
        "{stub:#}"
    );
    let recs = env.audit(3).await;
    let call = recs.iter().find(|r| r["host"] == API).unwrap();
    let g = call["request_transforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "gcp_auth")
        .unwrap();
    assert_eq!(
        g["annotations"]["service_account"],
        "real@centaur-test.iam.gserviceaccount.com"
    );
    env.stop().await;
}

/// A gcp_auth whose key cannot mint fails closed: 403 with a sanitised reason, nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_auth_mint_failure_is_a_403_with_a_sanitised_reason() {
    let fake = Fake::start(3600);
    let t = format!(
        "{}  - name: gcp_auth
    config:
      keyfile_path: {}
      scopes: [s]
      rules: [{{host: {API}}}]
",
        allow(),
        fake.path("sa-dummy.json") // token_uri is the real Google: unpinned, unreachable here
    );
    let env = Env::start(fake.opts(t)).await;
    let (code, body) = get(&env, &format!("https://{API}/x"), &[]).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(json(&body)["reason"], "token_unavailable");
    assert!(env.origin.seen().is_empty());
    let r = env.record(|r| r["host"] == API).await;
    assert_eq!(r["rejected_by"], "gcp_auth");
    let a = ann(&r, "gcp_auth");
    assert_eq!(a["rejected"], "token_unavailable", "{r:#}");
    assert!(
        a["error"].as_str().unwrap().starts_with("token_endpoint"),
        "{a}"
    );
    env.stop().await;
}

fn oauth(fake: &Fake, grant_fields: &str, require: bool) -> String {
    format!(
        "{}  - name: oauth_token
    config:
      tokens:
        - token_endpoint: https://token.test:{}/oauth/token
          scopes: [read]
          require: {require}
          rules: [{{host: {API}}}]
{grant_fields}",
        allow(),
        fake.port
    )
}

fn file(fake: &Fake, name: &str, value: &str) -> String {
    let p = fake.path(name);
    std::fs::write(&p, value).unwrap();
    format!("{{type: file, path: {p}}}")
}

/// client_credentials against oauthlib: minted once for a burst of concurrent requests,
/// refreshed ahead of expiry in the background, stubbed for the sandbox's own token requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_single_flight_refresh_ahead_and_stub() {
    let fake = Fake::start(2);
    let fields = format!(
        "          grant: client_credentials
          client_id: {}
          client_secret: {}
          token_endpoint_headers: {{X-Tenant: {}}}
",
        file(&fake, "cid", "client-1"),
        file(&fake, "cs", "cs-c4n4ry-secret"),
        file(&fake, "tenant", "acme")
    );
    let env = Env::start(fake.opts(oauth(&fake, &fields, true))).await;
    // Eight requests at once: one mint.
    let urls: Vec<String> = (0..8).map(|i| format!("https://{API}/burst/{i}")).collect();
    let burst: Vec<_> = urls.iter().map(|u| get(&env, u, &[])).collect();
    for (code, _) in futures_util::future::join_all(burst).await {
        assert_eq!(code, 200);
    }
    let mints = fake.seen("oauth");
    assert_eq!(mints.len(), 1, "single flight: {mints:#?}");
    assert_eq!(mints[0]["grant"], "client_credentials");
    let first = format!("Bearer {}", mints[0]["token"].as_str().unwrap());
    assert_eq!(last_auth(&env), first);
    let req = &fake.seen("oauth_request")[0];
    assert_eq!(req["x_tenant"], "acme", "token endpoint headers are sent");
    // Past three quarters of the 2 s lifetime: the old token is still served while a
    // background refresh mints the next; the request does not wait for it.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    get(&env, &format!("https://{API}/late"), &[]).await;
    assert_eq!(last_auth(&env), first);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fake.seen("oauth").len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no background refresh"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    get(&env, &format!("https://{API}/after"), &[]).await;
    let second = format!(
        "Bearer {}",
        fake.seen("oauth")[1]["token"].as_str().unwrap()
    );
    assert_eq!(last_auth(&env), second);
    // The sandbox's own token request to the endpoint is answered by the stub.
    let args = [
        "--connect-to".to_string(),
        format!(
            "token.test:{}:{}:{}",
            fake.port,
            env.https().ip(),
            env.https().port()
        ),
        "-d".into(),
        "grant_type=client_credentials".into(),
        format!("https://token.test:{}/oauth/token", fake.port),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body, err) = curl(&env, &args).await;
    assert_eq!(code, 200, "{body} {err}");
    assert_eq!(json(&body)["access_token"], gateway::proxy::STUB_TOKEN);
    assert_eq!(
        fake.seen("oauth_request").len(),
        2,
        "the stub sent nothing upstream"
    );
    env.stop().await;
}

/// refresh_token (with rotation) and password grants, each against oauthlib.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_and_password_grants() {
    let fake = Fake::start(1);
    let fields = format!(
        "          grant: refresh_token
          refresh_token: {}
          client_id: {}
          client_secret: {}
",
        file(&fake, "rt", "rt-c4n4ry-1"),
        file(&fake, "cid", "client-1"),
        file(&fake, "cs", "cs-c4n4ry-secret"),
    );
    let env = Env::start(fake.opts(oauth(&fake, &fields, true))).await;
    assert_eq!(get(&env, &format!("https://{API}/a"), &[]).await.0, 200);
    // The token expires; the next mint must use the rotated refresh token (oauthlib issues
    // a new one each time and this fake accepts both, so check what was sent instead).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get(&env, &format!("https://{API}/b"), &[]).await.0, 200);
    let mints = fake.seen("oauth");
    assert_eq!(mints.len(), 2, "{mints:#?}");
    assert!(mints.iter().all(|m| m["grant"] == "refresh_token"));
    assert_eq!(
        last_auth(&env),
        format!("Bearer {}", mints[1]["token"].as_str().unwrap())
    );
    env.stop().await;

    let fields = format!(
        "          grant: password
          username: {}
          password: {}
          client_id: {}
          client_secret: {}
",
        file(&fake, "user", "alice"),
        file(&fake, "pw", "pw-c4n4ry-alice"),
        file(&fake, "cid", "client-1"),
        file(&fake, "cs", "cs-c4n4ry-secret"),
    );
    let env = Env::start(fake.opts(oauth(&fake, &fields, true))).await;
    assert_eq!(get(&env, &format!("https://{API}/p"), &[]).await.0, 200);
    let m = fake.seen("oauth").pop().unwrap();
    assert_eq!(m["grant"], "password");
    assert_eq!(
        last_auth(&env),
        format!("Bearer {}", m["token"].as_str().unwrap())
    );
    env.stop().await;
}

/// jwt_bearer: the assertion verifies with PyJWT against the private key's public half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bearer_assertion_verifies_with_pyjwt() {
    let fake = Fake::start(3600);
    let fields = format!(
        "          grant: jwt_bearer
          audience: https://api.test/
          issuer: {}
          subject: {}
          private_key: {{type: file, path: {}}}
",
        file(&fake, "iss", "svc-issuer"),
        file(&fake, "sub", "user-42").replace('}', ", ttl: 100ms}"),
        fake.path("jwt-key.pem"),
    );
    let env = Env::start(fake.opts(oauth(&fake, &fields, true))).await;
    assert_eq!(get(&env, &format!("https://{API}/j"), &[]).await.0, 200);
    let m = fake.seen("jwt_bearer").pop().unwrap();
    assert_eq!(m["verified"], true, "{m:#}");
    assert_eq!(m["claims"]["iss"], "svc-issuer");
    assert_eq!(m["claims"]["sub"], "user-42");
    assert_eq!(m["claims"]["scope"], "read");
    assert_eq!(
        last_auth(&env),
        format!("Bearer {}", m["token"].as_str().unwrap())
    );
    // A credential source rotates (re-read after its ttl): the next token is minted from the
    // new value, long before the old token expires.
    std::fs::write(fake.path("sub"), "user-43").unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    get(&env, &format!("https://{API}/stale"), &[]).await; // served; re-reads the source
    tokio::time::sleep(Duration::from_millis(100)).await;
    get(&env, &format!("https://{API}/rotated"), &[]).await;
    let mints = fake.seen("jwt_bearer");
    assert_eq!(mints.len(), 2, "{mints:#?}");
    assert_eq!(mints[1]["claims"]["sub"], "user-43");
    let rotated = mints[1]["token"].as_str().unwrap();
    assert_eq!(last_auth(&env), format!("Bearer {rotated}"));
    env.stop().await;
}

/// A token endpoint that is down: by default the request goes on without a token (as the
/// reference does); with `require: true` it is a 502 and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_down_fails_open_by_default_and_closed_with_require() {
    let fake = Fake::start(3600);
    fake.down(true).await;
    let fields = |fake: &Fake| {
        format!(
            "          grant: client_credentials
          client_id: {}
          client_secret: {}
",
            file(fake, "cid", "client-1"),
            file(fake, "cs", "cs-c4n4ry-secret"),
        )
    };
    let env = Env::start(fake.opts(oauth(&fake, &fields(&fake), false))).await;
    let (code, _) = get(&env, &format!("https://{API}/open"), &[]).await;
    assert_eq!(code, 200);
    assert!(last_auth(&env).is_null(), "forwarded without a token");
    let r = env.record(|r| r["path"] == "/open").await;
    let a = ann(&r, "oauth_token");
    assert_eq!(a["skipped"], "token_unavailable");
    assert_eq!(a["error"], "token_endpoint_http_503");
    env.stop().await;

    let env = Env::start(fake.opts(oauth(&fake, &fields(&fake), true))).await;
    let before = env.origin.seen().len();
    let (code, body) = get(&env, &format!("https://{API}/closed"), &[]).await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(json(&body)["reason"], "token_unavailable");
    assert_eq!(env.origin.seen().len(), before);
    // Back up: after the failure back-off the next request mints.
    fake.down(false).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(get(&env, &format!("https://{API}/again"), &[]).await.0, 200);
    env.stop().await;
}

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
        allow(),
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
        allow(),
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
