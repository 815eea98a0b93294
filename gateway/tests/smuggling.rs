//! Request smuggling and parser differentials (RFC 9112), invariants 1 and 8: each case is
//! sent as raw bytes to the transparent HTTP listener, bound for an origin that records every
//! request it receives with a strict parser of its own. A case passes when the gateway refuses
//! it (4xx) or forwards exactly the requests a strict reading gives, each normalised: one
//! framing header, never a second request hidden in a body.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Env, Opts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the recording origin read it: the head, then the body bytes.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A plain-HTTP origin that reads requests strictly (CRLF lines, one framing header, chunked
/// bodies decoded) and answers each with `200 ok`.
async fn recorder() -> (String, Log) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let log = Log::default();
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s, seen.clone()));
        }
    });
    (addr, log)
}

async fn serve(mut s: TcpStream, log: Log) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = find(&buf, b"\r\n\r\n") else {
            if !read_more(&mut s, &mut buf).await {
                return;
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end + 4);
        let lower = head.to_ascii_lowercase();
        let body = if lower.contains("\r\ntransfer-encoding: chunked") {
            match chunked(&mut s, &mut buf).await {
                Some(b) => b,
                None => return,
            }
        } else {
            let n = lower
                .split("\r\n")
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < n {
                if !read_more(&mut s, &mut buf).await {
                    return;
                }
            }
            buf.drain(..n).collect()
        };
        log.lock().unwrap().push(Seen { head, body });
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if s.write_all(ok).await.is_err() {
            return;
        }
    }
}

async fn chunked(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            match find(buf, b"\r\n") {
                Some(i) => break i,
                None if read_more(s, buf).await => continue,
                None => return None,
            }
        };
        let size = std::str::from_utf8(&buf[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        while buf.len() < size + 2 {
            if !read_more(s, buf).await {
                return None;
            }
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
        if size == 0 {
            return Some(body);
        }
    }
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match tokio::time::timeout(Duration::from_secs(3), s.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends `raw` on a fresh connection; returns the first status code (0 when none).
async fn send(env: &Env, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(env.addrs.http.unwrap()).await.unwrap();
    let _ = s.write_all(raw).await;
    // Read until the gateway closes or falls silent: the write side stays open, as a
    // client waiting for its answers keeps it.
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(700), s.read(&mut chunk)).await
    {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

/// What a case may do: be refused (4xx), or reach the origin as exactly these paths.
fn judge(name: &str, code: u16, text: &str, seen: &[Seen], paths: &[&str]) {
    if (400..500).contains(&code) {
        assert!(seen.is_empty(), "{name}: refused yet forwarded {seen:#?}");
        return;
    }
    let got: Vec<&str> = seen
        .iter()
        .filter_map(|r| r.head.split(' ').nth(1))
        .collect();
    assert_eq!(
        got, paths,
        "{name}: answered {code} ({text:?}) and forwarded {seen:#?}"
    );
    for r in seen {
        let lower = r.head.to_ascii_lowercase();
        let framing = lower.matches("\r\ncontent-length:").count()
            + lower.matches("\r\ntransfer-encoding:").count();
        assert!(
            framing <= 1,
            "{name}: two framing headers forwarded: {r:#?}"
        );
        assert!(!r.head.contains('\n') || !r.head.replace("\r\n", "").contains('\n'));
        assert_eq!(lower.matches("\r\nhost:").count(), 1, "{name}: {r:#?}");
        assert!(
            !String::from_utf8_lossy(&r.body).contains("/smuggled"),
            "{name}: a request rode in a body: {r:#?}"
        );
    }
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: raw.test\r\n\r\n";

fn cases() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let post = |headers: &str, body: &str| {
        format!("POST /a HTTP/1.1\r\nHost: raw.test\r\n{headers}\r\n{body}")
    };
    let chunked_smuggle = format!("0\r\n\r\n{SMUGGLED}");
    vec![
        // RFC 9112 §6.1: a proxy may read both as chunked, drop Content-Length and close the
        // connection after answering, so the bytes after the chunked body are never a request.
        (
            "cl_and_te",
            post(
                "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                &chunked_smuggle,
            ),
            vec!["/a"],
        ),
        (
            "duplicate_cl",
            post("Content-Length: 4\r\nContent-Length: 40\r\n", "abcd"),
            vec![],
        ),
        (
            "comma_cl",
            post("Content-Length: 4, 40\r\n", "abcd"),
            vec![],
        ),
        (
            "te_upper",
            post("Transfer-Encoding: CHUNKED\r\n", "4\r\nabcd\r\n0\r\n\r\n"),
            vec!["/a"],
        ),
        (
            "te_space",
            post("Transfer-Encoding:  chunked \r\n", "4\r\nabcd\r\n0\r\n\r\n"),
            vec!["/a"],
        ),
        (
            "te_chunked_identity",
            post("Transfer-Encoding: chunked, identity\r\n", &chunked_smuggle),
            vec![],
        ),
        (
            "te_vertical_tab",
            post(
                "Transfer-Encoding:\x0bchunked\r\nContent-Length: 4\r\n",
                &chunked_smuggle,
            ),
            vec![],
        ),
        (
            "te_twice",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "4\r\nabcd\r\n0\r\n\r\n",
            ),
            vec!["/a"],
        ),
        (
            "te_xchunked",
            post("Transfer-Encoding: xchunked\r\n", &chunked_smuggle),
            vec![],
        ),
        (
            "obs_fold",
            "GET /a HTTP/1.1\r\nHost: raw.test\r\nX-A: a\r\n b\r\n\r\n".into(),
            vec![],
        ),
        (
            "bare_cr",
            "GET /a HTTP/1.1\r\nHost: raw.test\r\nX-A: a\rb\r\n\r\n".into(),
            vec![],
        ),
        (
            "bad_chunk_size",
            post("Transfer-Encoding: chunked\r\n", "zz\r\nabcd\r\n0\r\n\r\n"),
            vec![],
        ),
        (
            "oversize_chunk_size",
            post(
                "Transfer-Encoding: chunked\r\n",
                "fffffffffffffffffff\r\nabcd\r\n0\r\n\r\n",
            ),
            vec![],
        ),
        (
            "chunk_extension",
            post(
                "Transfer-Encoding: chunked\r\n",
                "4;name=value\r\nabcd\r\n0\r\n\r\n",
            ),
            vec!["/a"],
        ),
        (
            "nul_in_value",
            "GET /a HTTP/1.1\r\nHost: raw.test\r\nX-A: a\0b\r\n\r\n".into(),
            vec![],
        ),
        (
            "space_before_colon",
            "GET /a HTTP/1.1\r\nHost: raw.test\r\nX-A : b\r\n\r\n".into(),
            vec![],
        ),
        (
            "ctl_in_name",
            "GET /a HTTP/1.1\r\nHost: raw.test\r\nX\x01A: b\r\n\r\n".into(),
            vec![],
        ),
        (
            "two_hosts",
            "GET /a HTTP/1.1\r\nHost: raw.test\r\nHost: other.test\r\n\r\n".into(),
            vec![],
        ),
        (
            "absolute_form_vs_host",
            "GET http://raw.test/a HTTP/1.1\r\nHost: other.test\r\n\r\n".into(),
            vec![],
        ),
        // RFC 9112 §2.2 lets a recipient accept a bare LF as a line end; what is forwarded is
        // rebuilt with CRLF (judge checks).
        (
            "bare_lf",
            "GET /a HTTP/1.1\nHost: raw.test\nX-A: b\n\n".into(),
            vec!["/a"],
        ),
        (
            "pipelined_after_body",
            format!("{}{SMUGGLED}", post("Content-Length: 4\r\n", "abcd")),
            vec!["/a", "/smuggled"],
        ),
    ]
}

/// Invariants 1 and 8: no smuggling case yields two readings of one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_parser_differentials_are_refused_or_normalised() {
    let (addr, log) = recorder().await;
    let env = Env::start(Opts {
        pins: vec![("raw.test".into(), addr)],
        ..Opts::default()
    })
    .await;
    for (name, raw, paths) in cases() {
        log.lock().unwrap().clear();
        let (code, text) = send(&env, raw.as_bytes()).await;
        // Let a forwarded request arrive before judging.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen = log.lock().unwrap().clone();
        judge(name, code, &text, &seen, &paths);
    }
    env.stop().await;
}

/// Regression: a malformed chunk size in the client's streamed body was answered 502
/// `upstream_error`, blaming the upstream for the client's bytes. It is the client's fault: 400
/// `body_read_failed`, recorded as a rejection, and nothing reaches the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunk_size_is_the_clients_400_not_an_upstream_502() {
    let (addr, log) = recorder().await;
    let env = Env::start(Opts {
        pins: vec![("raw.test".into(), addr)],
        ..Opts::default()
    })
    .await;
    let raw = "POST /chunky HTTP/1.1\r\nHost: raw.test\r\nTransfer-Encoding: chunked\r\n\r\n\
               4\r\nabcd\r\nzz\r\nabcd\r\n0\r\n\r\n";
    let (code, text) = send(&env, raw.as_bytes()).await;
    assert_eq!(code, 400, "{text}");
    let rec = env.record(|r| r["path"] == "/chunky").await;
    assert_eq!(rec["reason"], "body_read_failed", "{rec:#}");
    assert_eq!(rec["action"], "reject", "{rec:#}");
    assert!(log.lock().unwrap().is_empty());
    env.stop().await;
}
