//! Invariant 8 (bounded untrusted input): malformed handshakes and requests get a clear
//! refusal and an audit record, and the gateway keeps serving everyone else.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::common;

use std::time::Duration;

use common::{API, Env, Opts, curl, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn openssl(env: &Env, args: &[&str]) -> String {
    let mut a: Vec<String> = vec![
        "s_client".into(),
        "-connect".into(),
        env.https().to_string(),
        "-CAfile".into(),
        env.ca(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    let out = run(
        "sh",
        &[
            "-c".into(),
            format!("echo | timeout 10 openssl {}", a.join(" ")),
        ],
        &[],
    )
    .await;
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hellos_without_or_with_bad_sni_are_refused_with_alerts() {
    let env = Env::start(Opts::default()).await;
    let out = openssl(&env, &["-noservername"]).await;
    assert!(
        out.contains("unrecognized name") || out.contains("alert number 112"),
        "{out}"
    );
    env.record(|r| r["reason"] == "tls_sni_missing").await;
    let out = openssl(&env, &["-servername", "api.test:443"]).await;
    assert!(out.contains("alert"), "{out}");
    env.record(|r| r["reason"] == "tls_client_hello_invalid" || r["reason"] == "tls_sni_invalid")
        .await;
    // A good one negotiates h2 by ALPN and verifies against our CA.
    let out = openssl(&env, &["-servername", API, "-alpn", "h2"]).await;
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_that_never_completes_times_out_and_is_recorded() {
    let env = Env::start(Opts::default()).await;
    let mut s = TcpStream::connect(env.https()).await.unwrap();
    // A TLS record header promising 512 bytes, then silence.
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the gateway must close the connection (client_header_timeout is 2s)"
    );
    env.record(|r| r["reason"] == "tls_client_hello_timeout")
        .await;
    // Everyone else is still served.
    let mut args = env.to_https(API);
    args.push(format!("https://{API}/still-up"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(curl(&env, &args).await.0, 200);
    env.stop().await;
}

async fn raw_http(env: &Env, request: &[u8]) -> String {
    let mut s = TcpStream::connect(env.addrs.http.unwrap()).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_requests_are_refused_and_recorded() {
    let env = Env::start(Opts::default()).await;
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: plain.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    assert!(
        raw_http(&env, huge.as_bytes())
            .await
            .starts_with("HTTP/1.1 431")
    );
    env.record(|r| r["reason"] == "http_headers_too_large")
        .await;
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: plain.test\r\n{many}\r\n");
    let resp = raw_http(&env, many.as_bytes()).await;
    assert!(
        resp.starts_with("HTTP/1.1 431") || resp.starts_with("HTTP/1.1 400"),
        "{resp}"
    );
    let bad_line = raw_http(&env, b"GET / HTTP/9.9 extra\r\nHost: plain.test\r\n\r\n").await;
    assert!(
        bad_line.starts_with("HTTP/1.1 400") || bad_line.starts_with("HTTP/1.1 505"),
        "{bad_line}"
    );
    let ctl = raw_http(
        &env,
        b"GET / HTTP/1.1\r\nHost: plain.test\r\nX-A: a\x01b\r\n\r\n",
    )
    .await;
    assert!(ctl.starts_with("HTTP/1.1 400"), "{ctl}");
    let bad_chunk = raw_http(
        &env,
        b"POST /x HTTP/1.1\r\nHost: plain.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    )
    .await;
    assert!(
        !bad_chunk.contains("\"path\":\"/x\"")
            || bad_chunk.is_empty()
            || bad_chunk.starts_with("HTTP/1.1 400"),
        "{bad_chunk}"
    );
    // Content-Length and Transfer-Encoding together: never two readings of one body.
    let smuggle = raw_http(&env, b"POST /cl-te HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: plain.test\r\n\r\n").await;
    assert!(
        !smuggle.contains("/smuggled") || smuggle.starts_with("HTTP/1.1 400"),
        "{smuggle}"
    );
    // Records are written off the request path: wait for them.
    let malformed = |recs: &[serde_json::Value]| {
        recs.iter()
            .filter(|r| r["reason"] == "http_malformed")
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut records = env.audit(0).await;
    while malformed(&records) < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        records = env.audit(0).await;
    }
    assert!(malformed(&records) >= 2, "{records:#?}");
    // A request head that never ends (slowloris): the connection is closed after
    // client_header_timeout (hyper closes without a 408) and the attempt is recorded.
    let mut s = TcpStream::connect(env.addrs.http.unwrap()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: pla").await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "connection must be closed by the gateway");
    env.record(|r| r["reason"] == "client_header_timeout").await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_socks5_handshakes_get_protocol_errors() {
    let env = Env::start(Opts::default()).await;
    // Greeting without the no-auth method.
    let mut s = TcpStream::connect(env.tunnel()).await.unwrap();
    s.write_all(&[5, 1, 2]).await.unwrap();
    let mut r = [0u8; 2];
    s.read_exact(&mut r).await.unwrap();
    assert_eq!(r, [5, 0xff]);
    env.record(|r| r["reason"] == "socks_no_acceptable_auth")
        .await;
    // Bad version in the request.
    let mut s = TcpStream::connect(env.tunnel()).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    s.read_exact(&mut r).await.unwrap();
    s.write_all(&[4, 1, 0, 1, 127, 0, 0, 1, 0, 80])
        .await
        .unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[1], 1);
    env.record(|r| r["reason"] == "socks_bad_version").await;
    // BIND is not supported.
    let mut s = TcpStream::connect(env.tunnel()).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    s.read_exact(&mut r).await.unwrap();
    s.write_all(&[5, 2, 0, 1, 127, 0, 0, 1, 0, 80])
        .await
        .unwrap();
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[1], 7);
    // An IP literal target is judged by the policy (no CIDR rule → 0x02).
    let mut s = TcpStream::connect(env.tunnel()).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    s.read_exact(&mut r).await.unwrap();
    s.write_all(&[5, 1, 0, 1, 169, 254, 169, 254, 0, 80])
        .await
        .unwrap();
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[1], 2);
    env.record(|r| r["host"] == "169.254.169.254:80" && r["reason"] == "not_allowlisted")
        .await;
    env.stop().await;
}

/// Reads one response (head and a `content-length` body) from a keep-alive connection.
async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
    }
}

/// A CONNECT tunnel to the plain origin, its 200 read.
async fn tunnel_to_plain(env: &Env) -> TcpStream {
    let mut s = TcpStream::connect(env.tunnel()).await.unwrap();
    s.write_all(b"CONNECT plain.test:80 HTTP/1.1\r\nHost: plain.test:80\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    s
}

/// Waits for the gateway to close `s` (failing with `what` if it does not `within`), and
/// returns how long that took.
async fn closed_within(s: &mut TcpStream, within: Duration, what: &str) -> Duration {
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(within, s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "{what}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_are_timed_but_not_the_rest_between_requests_nor_tunnel_traffic() {
    let env = Env::start(Opts::default()).await;
    let mut s = TcpStream::connect(env.addrs.http.unwrap()).await.unwrap();
    let get = b"GET /first HTTP/1.1\r\nHost: plain.test\r\n\r\n";
    s.write_all(get).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // Quiet for longer than client_header_timeout (2 s), well within idle_timeout (90 s): the
    // connection is idle, not a slow request head.
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.write_all(b"GET /second HTTP/1.1\r\nHost: plain.test\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // A third head that starts and never ends is cut after client_header_timeout, and
    // recorded like a first one.
    s.write_all(b"GET /third HTTP/1.1\r\nHost: pla")
        .await
        .unwrap();
    let secs8 = Duration::from_secs(8);
    let took = closed_within(&mut s, secs8, "the gateway must close the connection").await;
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    env.record(|r| r["reason"] == "client_header_timeout").await;

    // Through a CONNECT tunnel: an upload that takes twice client_header_timeout, with
    // nothing coming back meanwhile, is tunnel traffic on the outer connection, not a late
    // head.
    let mut s = tunnel_to_plain(&env).await;
    s.write_all(b"POST /up HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 4\r\n\r\n")
        .await
        .unwrap();
    for b in b"body" {
        tokio::time::sleep(Duration::from_secs(1)).await;
        s.write_all(&[*b]).await.unwrap();
    }
    let up = read_response(&mut s).await;
    assert!(
        up.starts_with("HTTP/1.1 200") && up.contains(r#""body":"body""#),
        "{up}"
    );
    // The connection served inside the tunnel first reads the one byte the tunnel sniffed:
    // a `P` alone must not pass for the HTTP/2 preface (which has no head deadline), so a
    // slow head there is cut and recorded by the inner connection.
    s.write_all(b"POST /slow HTTP/1.1\r\nHost: pla")
        .await
        .unwrap();
    closed_within(
        &mut s,
        secs8,
        "the gateway must close the tunnel's connection",
    )
    .await;
    env.record(|r| r["reason"] == "client_header_timeout" && r["tunnel"] == "plain.test:80")
        .await;
    env.stop().await;
}

/// A slow answer is not idleness, through a CONNECT tunnel either: the request in flight on
/// the connection inside the tunnel keeps the outer connection's idle timeout from cutting
/// it, while a tunnel that carries nothing is still closed after `idle_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_through_a_tunnel_outlasts_idle_timeout_and_a_quiet_tunnel_does_not() {
    let env = Env::start(Opts {
        proxy_extra: "  idle_timeout: 2s\n".into(),
        ..Opts::default()
    })
    .await;
    let proxy = format!("http://{}", env.tunnel());
    // HTTPS inside the tunnel (intercepted), then plain HTTP inside it: each answer comes
    // after twice idle_timeout, with no byte either way meanwhile. HTTP/1.1: over HTTP/2 the
    // gateway's keep-alive pings would move bytes (both were cut before the fix).
    for url in [
        format!("https://{API}/delay/4000"),
        "http://plain.test/delay/4000".to_string(),
    ] {
        let args = ["--http1.1", "--proxytunnel", "--proxy", &proxy, &url];
        let (code, body, err) = curl(&env, &args).await;
        assert_eq!(code, 200, "{url}: {err}");
        assert!(body.contains("/delay/4000"), "{url}: {body}");
    }
    // A tunnel that carries nothing after its first request is closed after idle_timeout.
    let mut s = tunnel_to_plain(&env).await;
    s.write_all(b"GET /quiet HTTP/1.1\r\nHost: plain.test\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    let took = closed_within(
        &mut s,
        Duration::from_secs(10),
        "a quiet tunnel must be closed",
    )
    .await;
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    env.stop().await;
}
