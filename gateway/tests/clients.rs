//! Real clients through the gateway: curl (transparent and CONNECT, h1 and h2, SOCKS5),
//! Python requests and httpx, a WebSocket client, SSE streaming.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::common;

use std::time::Duration;

use common::{API, Env, Opts, curl, json, python, run};

/// Invariants 1 and 4: an allowed request reaches the origin with one audit record naming
/// the rule, the SNI, the TLS parameters and the address actually connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_tls_h1_and_h2_reach_the_origin() {
    let env = Env::start(Opts::default()).await;
    for (flag, version) in [("--http1.1", "HTTP/1.1"), ("--http2", "HTTP/2.0")] {
        let mut args = env.to_https(API);
        args.extend([flag.to_string(), format!("https://{API}/v1/echo?x=1")]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, body, err) = curl(&env, &args).await;
        assert_eq!(code, 200, "{err}");
        let echo = json(&body);
        assert_eq!(echo["path"], "/v1/echo");
        assert_eq!(echo["query"], "x=1");
        let r = env
            .record(|r| {
                r["path"] == "/v1/echo"
                    && r["tls"]["alpn"]
                        == if version == "HTTP/2.0" {
                            "h2"
                        } else {
                            "http/1.1"
                        }
            })
            .await;
        assert_eq!(r["action"], "allow");
        assert_eq!(r["listener"], "https");
        assert_eq!(r["sni"], API);
        assert_eq!(r["status_code"], 200);
        assert_eq!(r["rule"], "transforms[0].config.domains[0]");
        assert_eq!(r["upstream"], env.origin.addr.to_string());
        assert_eq!(r["sandbox"]["sandbox_id"], "t1");
        assert!(r["bytes_out"].as_u64().unwrap() > 0);
    }
    env.stop().await;
}

/// Invariant 1: a host the policy does not name is refused before TLS completes, with an
/// access_denied alert and an audit record; no leaf is minted for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_tls_denied_host_gets_an_alert_and_a_record() {
    let env = Env::start(Opts::default()).await;
    let mut args = env.to_https("evil.example.com");
    args.push("https://evil.example.com/".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = curl(&env, &args).await;
    assert_eq!(code, 0);
    assert!(
        err.contains("alert access denied") || err.contains("access denied"),
        "{err}"
    );
    let r = env.record(|r| r["host"] == "evil.example.com").await;
    assert_eq!(
        (r["action"].as_str(), r["reason"].as_str()),
        (Some("reject"), Some("not_allowlisted"))
    );
    assert_eq!(r["rejected_by"], "allowlist");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_rules_and_sni_host_mismatch_are_enforced_per_request() {
    let env = Env::start(Opts::default()).await;
    let mut base = env.to_https("paths.example");
    base.push("https://paths.example/ok/fine".into());
    let args: Vec<&str> = base.iter().map(String::as_str).collect();
    assert_eq!(curl(&env, &args).await.0, 200);
    base.pop();
    base.push("https://paths.example/admin".into());
    let args: Vec<&str> = base.iter().map(String::as_str).collect();
    let (code, body, _) = curl(&env, &args).await;
    assert_eq!(code, 403);
    let b = json(&body);
    assert_eq!(
        (
            b["error"].as_str(),
            b["reason"].as_str(),
            b["host"].as_str()
        ),
        (
            Some("blocked by policy"),
            Some("not_allowlisted"),
            Some("paths.example")
        )
    );
    // Dot segments cannot escape a path rule.
    let mut dots = env.to_https("paths.example");
    dots.extend([
        "--path-as-is".into(),
        "https://paths.example/ok/../admin".into(),
    ]);
    let args: Vec<&str> = dots.iter().map(String::as_str).collect();
    assert_eq!(curl(&env, &args).await.0, 400);
    // SNI says api.test, Host says other.test: refused.
    let mut mismatch = env.to_https(API);
    mismatch.extend([
        "-H".into(),
        "Host: other.test".into(),
        format!("https://{API}/"),
    ]);
    let args: Vec<&str> = mismatch.iter().map(String::as_str).collect();
    let (code, body, _) = curl(&env, &args).await;
    assert_eq!(code, 400, "{body}");
    env.record(|r| r["reason"] == "sni_host_mismatch").await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnel_allows_and_refuses_before_dialling() {
    let env = Env::start(Opts::default()).await;
    let proxy = format!("http://{}", env.tunnel());
    let (code, body, err) =
        curl(&env, &["-x", &proxy, &format!("https://{API}/via/connect")]).await;
    assert_eq!(code, 200, "{err}");
    assert_eq!(json(&body)["path"], "/via/connect");
    let (code, _, err) = curl(&env, &["-x", &proxy, "https://denied.example.org/"]).await;
    assert_eq!(code, 0);
    assert!(err.contains("403"), "{err}");
    let r = env
        .record(|r| r["method"] == "CONNECT" && r["host"] == "denied.example.org:443")
        .await;
    assert_eq!(r["status_code"], 403);
    assert!(r.get("upstream").is_none(), "nothing was dialled");
    // The allowed tunnel has its own record beside the inner request's.
    env.record(|r| r["method"] == "CONNECT" && r["host"] == "api.test:443")
        .await;
    let inner = env.record(|r| r["path"] == "/via/connect").await;
    assert_eq!(inner["tunnel"], "api.test:443");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_and_plain_http_through_the_tunnel() {
    let env = Env::start(Opts::default()).await;
    let socks = format!("socks5h://{}", env.tunnel());
    let (code, body, err) = curl(&env, &["-x", &socks, &format!("https://{API}/via/socks")]).await;
    assert_eq!(code, 200, "{err}");
    assert_eq!(json(&body)["path"], "/via/socks");
    let (code, _, _) = curl(&env, &["-x", &socks, "https://nope.example.net/"]).await;
    assert_eq!(code, 0);
    env.record(|r| {
        r["method"] == "SOCKS5" && r["host"] == "nope.example.net:443" && r["action"] == "reject"
    })
    .await;
    // Absolute-form plain HTTP on the tunnel port (curl -x with an http:// URL).
    let proxy = format!("http://{}", env.tunnel());
    let (code, body, _) = curl(&env, &["-x", &proxy, "http://plain.test/plain"]).await;
    assert_eq!(code, 200);
    assert_eq!(json(&body)["path"], "/plain");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_and_httpx_through_https_proxy() {
    let env = Env::start(Opts::default()).await;
    let script = format!(
        r#"
import sys, requests, httpx
url = "https://{API}/py"
r = requests.post(url, json={{"a": 1}}, timeout=10)
assert r.status_code == 200, r.status_code
assert r.json()["body"] == '{{"a": 1}}', r.text
with httpx.Client(http2=True, timeout=10) as c:
    r = c.get(url + "/httpx")
    assert r.status_code == 200, r.status_code
    assert r.json()["path"] == "/py/httpx"
    d = c.get("https://denied.example.com/")
print("ok")
"#
    );
    let proxy = format!("http://{}", env.tunnel());
    let out = run(
        &python(),
        &["-c".into(), script],
        &[
            ("HTTPS_PROXY", proxy),
            ("REQUESTS_CA_BUNDLE", env.ca()),
            ("SSL_CERT_FILE", env.ca()),
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // httpx raises on the refused CONNECT: the script ends with ProxyError after the two
    // allowed requests succeeded.
    assert!(
        stderr.contains("ProxyError") || stderr.contains("403"),
        "{stderr}"
    );
    env.record(|r| r["method"] == "POST" && r["path"] == "/py")
        .await;
    env.record(|r| r["path"] == "/py/httpx").await;
    env.record(|r| r["host"] == "denied.example.com:443").await;
    env.stop().await;
}

/// An h2-speaking client in front of an HTTP/1.1-only upstream, and the reverse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_to_h1_origin() {
    let env = Env::start(Opts {
        h2: false,
        ..Opts::default()
    })
    .await;
    let mut args = env.to_https("h1.test");
    args.extend(["--http2".into(), "https://h1.test/x".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body, err) = curl(&env, &args).await;
    assert_eq!(code, 200, "{err}");
    assert_eq!(json(&body)["version"], "HTTP/1.1");
    let proxy = format!("http://{}", env.tunnel());
    let (code, body, _) = curl(&env, &["--http1.1", "-x", &proxy, "https://h1.test/y"]).await;
    assert_eq!(code, 200);
    assert_eq!(json(&body)["path"], "/y");
    env.stop().await;
}

/// Server-sent events are forwarded as they are produced, not buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_as_they_are_sent() {
    let env = Env::start(Opts::default()).await;
    let times = common::sse_arrival_times(&env, "").await;
    // The origin sends one event every 300 ms: each must arrive on its own, well within
    // 100 ms of being sent (the last at ~600 ms after the first).
    let gap1 = times[1] - times[0];
    let gap2 = times[2] - times[1];
    assert!(
        (0.2..0.4).contains(&gap1) && (0.2..0.4).contains(&gap2),
        "events were buffered: {times:?}"
    );
    env.stop().await;
}

/// WebSocket over HTTP/1.1 Upgrade passes through, echo and all, with the real status audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let ws_dir = tempfile::tempdir().unwrap();
    let d = ws_dir.path().display().to_string();
    write_ws_certs(ws_dir.path());
    // A real WebSocket server (python websockets) with its own self-signed certificate.
    let script = format!(
        r#"
import asyncio, ssl, sys, socket, subprocess, threading
from websockets.asyncio.server import serve
from websockets.sync.client import connect
d = "{d}"
ready, port = threading.Event(), []
async def echo(ws):
    async for m in ws:
        await ws.send("echo:" + m)
async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d + "/ws.crt", d + "/ws.key")
    async with serve(echo, "127.0.0.1", 0, ssl=ctx) as server:
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        await asyncio.Future()
threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
ready.wait(10)
print(port[0], flush=True)
gw_port, ca = sys.stdin.readline().split()
ctx = ssl.create_default_context(cafile=ca)
sock = socket.create_connection(("127.0.0.1", int(gw_port)))
with connect("wss://ws.test/chat", sock=sock, ssl=ctx, server_hostname="ws.test") as ws:
    ws.send("hello")
    print(ws.recv(timeout=5), flush=True)
"#
    );
    let mut child = common::spawn_piped(&python(), &["-c", &script]);
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port = lines.next_line().await.unwrap().expect("WS server port");
    let env = Env::start(Opts {
        pins: vec![("ws.test".into(), format!("127.0.0.1:{port}"))],
        ca_files: vec![format!("{d}/ws-ca.crt")],
        ..Opts::default()
    })
    .await;
    let line = format!("{} {}\n", env.https().port(), env.ca());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(line.as_bytes())
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
    let reply = reply.ok().and_then(Result::ok).flatten();
    if reply.as_deref() != Some("echo:hello") {
        use tokio::io::AsyncReadExt;
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err).await;
        panic!("WebSocket echo failed: {reply:?}\n{err}");
    }
    let _ = child.wait().await;
    let r = env.record(|r| r["path"] == "/chat").await;
    assert_eq!(
        r["status_code"], 101,
        "the upstream's real status is audited"
    );
    assert_eq!(r["action"], "allow");
    assert!(r["bytes_out"].as_u64().unwrap() > 0);
    env.stop().await;
}

/// A CA and a leaf for ws.test, for the Python WebSocket server.
fn write_ws_certs(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "ws test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["ws.test".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ws-ca.crt"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("ws.crt"), leaf.pem()).unwrap();
    std::fs::write(dir.join("ws.key"), key.serialize_pem()).unwrap();
}

/// Invariant 5: an upstream whose certificate does not verify is a 502, never a downgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_upstream_certificate_is_a_502() {
    // An origin whose CA the gateway does not trust.
    let rogue = testkit::Origin::https(&["rogue.test"], true).await.unwrap();
    let env = Env::start(Opts {
        pins: vec![("rogue.test".into(), rogue.addr.to_string())],
        ..Opts::default()
    })
    .await;
    let mut args = env.to_https("rogue.test");
    args.push("https://rogue.test/".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body, _) = curl(&env, &args).await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(json(&body)["reason"], "upstream_tls_error");
    let r = env.record(|r| r["host"] == "rogue.test").await;
    assert_eq!(
        (r["action"].as_str(), r["status_code"].as_u64()),
        (Some("error"), Some(502))
    );
    env.stop().await;
}

/// Invariant 2: loopback is denied even for a pinned, allowed name unless the policy names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_upstream_needs_an_explicit_allow() {
    let env = Env::start(Opts {
        allow_loopback: false,
        ..Opts::default()
    })
    .await;
    let mut args = env.to_https(API);
    args.push(format!("https://{API}/"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body, _) = curl(&env, &args).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(json(&body)["reason"], "upstream_address_denied");
    let (code, body, _) = curl(
        &env,
        &[
            "-x",
            &format!("http://{}", env.tunnel()),
            "https://denied-ip.test/",
        ],
    )
    .await;
    assert_eq!(code, 403, "metadata address via a pinned name: {body}");
    env.record(|r| r["reason"] == "upstream_address_denied" && r["host"] == "denied-ip.test")
        .await;
    env.stop().await;
}
