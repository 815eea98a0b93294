//! Minted credentials, checked against implementations nobody here wrote: google-auth inside
//! the sandbox with a dummy key, PyJWT verifying the assertions the gateway signs, and oauthlib
//! serving the OAuth grants. The sandbox side only ever holds stubs (invariant 3).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::common;

use std::time::Duration;

use common::{
    API, Env, Fake, allow_test_domains, ann, assert_no_canary, curl, get, json, last_auth, python,
    run,
};

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
        allow_test_domains(),
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
    assert_eq!(v["client_token"], gateway::exchange::proxy::STUB_TOKEN);
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
        allow_test_domains(),
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
        allow_test_domains(),
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
    assert_eq!(
        json(&body)["access_token"],
        gateway::exchange::proxy::STUB_TOKEN
    );
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

/// gcp_id_token: the origin receives an ID token for the declared audience, minted from the
/// real key (PyJWT verified the assertion and its `target_audience` at the fake token
/// endpoint), and google-auth's own verifier accepts it against the fake's published keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_id_token_is_minted_for_its_audience_and_google_auth_verifies_it() {
    let fake = Fake::start(3600);
    let audience = "https://billing-abc123-uc.a.run.app";
    let t = format!(
        "{}  - name: gcp_id_token
    config:
      keyfile_path: {}
      audience: {audience}
      header: X-Serverless-Authorization
      rules: [{{host: {API}}}]
",
        allow_test_domains(),
        fake.path("sa.json")
    );
    let env = Env::start(fake.opts(t)).await;
    let mut args = env.to_https(API);
    args.push(format!("https://{API}/invoke"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body, err) = common::curl(&env, &args).await;
    assert_eq!(code, 200, "{err}");
    assert!(
        body.contains("[centaur:gcp_id_token]"),
        "scrubbed in the echo: {body}"
    );
    let seen = env.origin.seen().pop().unwrap();
    let token = seen["headers"]["x-serverless-authorization"]
        .as_str()
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_else(|| panic!("{seen}"))
        .to_string();
    assert!(seen["headers"]["authorization"].is_null(), "{seen}");
    let minted = fake.seen("google");
    assert_eq!(minted[0]["verified"], true);
    assert_eq!(minted[0]["claims"]["target_audience"], audience);
    assert!(minted[0]["claims"].get("scope").is_none());
    let script = "
import json, sys, requests
from google.oauth2 import id_token
from google.auth.transport.requests import Request
s = requests.Session()
s.verify = sys.argv[3]
print(json.dumps(id_token.verify_token(sys.argv[1], Request(session=s), audience=sys.argv[2], certs_url=sys.argv[4])))
";
    let certs = format!("https://127.0.0.1:{}/google/certs", fake.port);
    let out = run(
        &python(),
        &[
            "-c".into(),
            script.into(),
            token,
            audience.into(),
            fake.path("fake-ca.pem"),
            certs,
        ],
        &[("REQUESTS_CA_BUNDLE", fake.path("fake-ca.pem"))],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(claims["aud"], audience);
    assert_eq!(claims["iss"], "https://accounts.google.com");
    let r = env.record(|r| r["path"] == "/invoke").await;
    assert_eq!(
        ann(&r, "gcp_id_token")["injected"],
        serde_json::json!(["header:x-serverless-authorization"])
    );
    env.stop().await;
}
