//! SSRF and destination bypasses (invariants 1 and 2), run in a network namespace and mount
//! namespace of their own: the only interface is `lo`, so a bug can send no packet anywhere.
//!
//! Inside, `lo` also carries a "private" (10.1.2.3), a "metadata" (169.254.169.254) and a
//! "public" (203.0.113.10) address. Canary listeners on every private address count the
//! connections they get, and must get none; the public origin must be reached (the positive
//! control). A DNS server of the test's own answers the names, rebinding included.
//!
//! The policy is as permissive as a policy can be: every name under `allowed.test`,
//! `localhost`, and every IPv4 and IPv6 address. What stops each case is the address guard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Env, Opts, run};
use hickory_proto::op::Message;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const PUBLIC: &str = "203.0.113.10";
const PRIVATE: &str = "10.1.2.3";
const METADATA: &str = "169.254.169.254";
const INSIDE: &str = "CENTAUR_SSRF_NETNS";

/// Runs [`inside_the_namespace`] under `unshare --net --mount`. Needs root (CI runs as root).
#[test]
fn ssrf_cases_run_in_an_isolated_network_namespace() {
    if !common::root_or_skip("ssrf_cases_run_in_an_isolated_network_namespace") {
        return;
    }
    let out = std::process::Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "ssrf::inside_the_namespace",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(INSIDE, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("1 passed"),
        "the inner test did not run:\n{text}"
    );
}

/// Connections each canary address received.
#[derive(Default)]
struct Canaries(Vec<(SocketAddr, Arc<AtomicUsize>)>);

impl Canaries {
    async fn listen(&mut self, addr: SocketAddr) {
        let l = TcpListener::bind(addr).await.unwrap();
        let n = Arc::new(AtomicUsize::new(0));
        let count = n.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nLEAKED")
                    .await;
            }
        });
        self.0.push((addr, n));
    }

    fn hit(&self) -> Vec<(SocketAddr, usize)> {
        self.0
            .iter()
            .map(|(a, n)| (*a, n.load(Ordering::SeqCst)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// The public origin: `/redirect` answers 302 to loopback, anything else 200 `public`. Every
/// answer closes the connection, so each request makes (and resolves) a new one.
async fn public_origin() -> Arc<AtomicUsize> {
    let l = TcpListener::bind((PUBLIC, 80)).await.unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let resp = if head.starts_with("GET /redirect ") {
                    "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                } else {
                    "HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\npublic"
                };
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    n
}

/// A DNS server for the test's names. `rebind.allowed.test` answers public first, loopback
/// after; `mixed.allowed.test` answers one public and one private address.
async fn dns_server() {
    let sock = UdpSocket::bind("127.0.0.1:53").await.unwrap();
    let rebinds = AtomicUsize::new(0);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(query) = q.queries.first() else {
                continue;
            };
            let name = query.name().to_ascii().to_ascii_lowercase();
            let name = name.trim_end_matches('.');
            let qtype = query.query_type();
            let ips: Vec<&str> = match (name, qtype) {
                ("public.allowed.test", RecordType::A) => vec![PUBLIC],
                ("loop.allowed.test", RecordType::A) => vec!["127.0.0.1"],
                ("meta.allowed.test", RecordType::A) => vec![METADATA],
                ("private.allowed.test", RecordType::A) => vec![PRIVATE],
                ("mixed.allowed.test", RecordType::A) => vec![PUBLIC, PRIVATE],
                ("v6loop.allowed.test", RecordType::AAAA) => vec!["::1"],
                ("mapped.allowed.test", RecordType::AAAA) => vec!["::ffff:10.1.2.3"],
                ("nat64.allowed.test", RecordType::AAAA) => vec!["64:ff9b::a01:203"],
                ("sixto4.allowed.test", RecordType::AAAA) => vec!["2002:a01:203::1"],
                ("rebind.allowed.test", RecordType::A) => {
                    match rebinds.fetch_add(1, Ordering::SeqCst) {
                        0 => vec![PUBLIC],
                        _ => vec!["127.0.0.1"],
                    }
                }
                _ => vec![],
            };
            let mut resp = Message::response(q.metadata.id, q.metadata.op_code);
            resp.metadata.recursion_desired = q.metadata.recursion_desired;
            resp.metadata.recursion_available = true;
            resp.add_queries(q.queries.clone());
            for ip in ips {
                let rdata = match ip.parse::<IpAddr>().unwrap() {
                    IpAddr::V4(v4) => RData::A(A(v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                };
                resp.add_answer(Record::from_rdata(query.name().clone(), 0, rdata));
            }
            let _ = sock.send_to(&resp.to_vec().unwrap(), peer).await;
        }
    });
}

async fn sh(cmd: &str) {
    let out = run("sh", &["-c".into(), cmd.into()], &[]).await;
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends raw bytes on `s` and reads the answer until the peer closes or falls silent.
async fn exchange(s: &mut TcpStream, raw: &[u8]) -> String {
    let _ = s.write_all(raw).await;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(3), s.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
        if find_end(&out) {
            break;
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Whether `out` holds a complete response head and its `content-length` body.
fn find_end(out: &[u8]) -> bool {
    let text = String::from_utf8_lossy(out);
    let Some(head_end) = text.find("\r\n\r\n") else {
        return false;
    };
    let len = text[..head_end]
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    out.len() >= head_end + 4 + len
}

fn status(text: &str) -> u16 {
    text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn reason(text: &str) -> &str {
    text.lines()
        .find_map(|l| l.strip_prefix("x-centaur-reason: "))
        .unwrap_or("")
}

/// One plain-HTTP request with this `Host` on the transparent listener.
async fn via_host(env: &Env, host: &str, path: &str) -> String {
    let mut s = TcpStream::connect(env.addrs.http.unwrap()).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    exchange(&mut s, req.as_bytes()).await
}

/// A SOCKS5 CONNECT with the given address bytes (type, address, port); the reply code.
async fn socks(env: &Env, addr: &[u8]) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(env.tunnel()).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut hello = [0u8; 2];
    s.read_exact(&mut hello).await.unwrap();
    let mut req = vec![5, 1, 0];
    req.extend_from_slice(addr);
    s.write_all(&req).await.unwrap();
    let mut reply = [0u8; 10];
    let code = match s.read_exact(&mut reply).await {
        Ok(_) => reply[1],
        Err(_) => 0xff,
    };
    (s, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by ssrf_cases_run_in_an_isolated_network_namespace, inside its namespace"]
async fn inside_the_namespace() {
    assert!(
        std::env::var_os(INSIDE).is_some(),
        "run through ssrf_cases_run_in_an_isolated_network_namespace"
    );
    // Refuse to run anywhere but a fresh namespace: its only interface is a down `lo`.
    let links = run("ip", &["-o".into(), "link".into()], &[]).await;
    let links = String::from_utf8_lossy(&links.stdout).to_string();
    assert_eq!(links.lines().count(), 1, "not a fresh namespace: {links}");
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    sh(&format!(
        "ip link set lo up && ip addr add {PRIVATE}/32 dev lo && ip addr add {METADATA}/32 dev lo \
         && ip addr add {PUBLIC}/32 dev lo && mount --bind {} /etc/resolv.conf",
        resolv.display()
    ))
    .await;
    dns_server().await;
    let public = public_origin().await;
    let mut canaries = Canaries::default();
    for ip in ["127.0.0.1", "::1", PRIVATE] {
        for port in [22, 80, 443] {
            canaries
                .listen(SocketAddr::new(ip.parse().unwrap(), port))
                .await;
        }
    }
    for port in [80, 443] {
        canaries
            .listen(SocketAddr::new(METADATA.parse().unwrap(), port))
            .await;
    }

    let env = Env::start(Opts {
        allow_loopback: false,
        proxy_extra: "  upstream_deny_cidrs: [127.0.0.0/8, '::1/128', 169.254.0.0/16, \
                      10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 0.0.0.0/8, \
                      'fc00::/7', 'fe80::/10']\n"
            .into(),
        transforms: Some(
            "  - name: allowlist
    config:
      domains: ['*.allowed.test', localhost]
      cidrs: [0.0.0.0/0, '::/0']
"
            .into(),
        ),
        ..Opts::default()
    })
    .await;

    // The positive control: the public origin is reachable by name.
    let ok = via_host(&env, "public.allowed.test", "/").await;
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(ok.ends_with("public"), "{ok}");

    // IP literals in every spelling, and names that resolve to denied addresses.
    let denied = [
        "2130706433",
        "0177.0.0.1",
        "0x7f.1",
        "127.1",
        "127.0.0.1.",
        "0x7f000001",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::]",
        "[0:0:0:0:0:0:0:1]",
        "localhost",
        "localhost.",
        "LocalHost",
        "169.254.169.254",
        "0xa9fea9fe",
        "0251.0376.0251.0376",
        "10.1.2.3",
        "167838211",
        "loop.allowed.test",
        "LOOP.Allowed.Test.",
        "meta.allowed.test",
        "private.allowed.test",
        "v6loop.allowed.test",
        "mapped.allowed.test",
        "nat64.allowed.test",
        "sixto4.allowed.test",
        "mixed.allowed.test",
    ];
    for host in denied {
        let resp = via_host(&env, host, "/").await;
        assert_eq!(status(&resp), 403, "Host: {host}: {resp}");
        assert_eq!(reason(&resp), "upstream_address_denied", "Host: {host}");
    }
    // A port in the Host header changes nothing.
    let resp = via_host(&env, "0x7f.1:22", "/").await;
    assert_eq!(reason(&resp), "upstream_address_denied", "{resp}");

    // DNS rebinding: the first answer is public and is served; the second is loopback and
    // is refused, because every new connection resolves and checks afresh.
    let first = via_host(&env, "rebind.allowed.test", "/").await;
    assert_eq!(status(&first), 200, "{first}");
    let second = via_host(&env, "rebind.allowed.test", "/").await;
    assert_eq!(reason(&second), "upstream_address_denied", "{second}");

    // CONNECT to literal addresses and non-HTTP ports: whatever the tunnel carries, nothing
    // reaches the address. SSH bytes are no protocol the gateway speaks; HTTP is refused by
    // the guard.
    for target in [
        "127.0.0.1:22",
        "0x7f.1:22",
        "[::1]:22",
        "2130706433:443",
        "10.1.2.3:443",
        "169.254.169.254:80",
        "loop.allowed.test:443",
    ] {
        let mut s = TcpStream::connect(env.tunnel()).await.unwrap();
        let head = exchange(
            &mut s,
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
        )
        .await;
        if status(&head) != 200 {
            continue;
        }
        let after = exchange(&mut s, b"SSH-2.0-OpenSSH_9.6\r\n").await;
        assert!(!after.contains("LEAKED"), "CONNECT {target}: {after}");
        let mut s = TcpStream::connect(env.tunnel()).await.unwrap();
        exchange(
            &mut s,
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
        )
        .await;
        let resp = exchange(
            &mut s,
            format!("GET / HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(
            reason(&resp),
            "upstream_address_denied",
            "CONNECT {target}: {resp}"
        );
    }

    // SOCKS5 with an IPv4, an IPv6 and a domain target that spells an address.
    let mut name = vec![3, 6];
    name.extend_from_slice(b"0x7f.1");
    for (addr, host) in [
        (vec![1, 127, 0, 0, 1], "127.0.0.1"),
        (
            vec![4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            "[::1]",
        ),
        (name, "0x7f.1"),
    ] {
        let mut with_port = addr.clone();
        with_port.extend_from_slice(&80u16.to_be_bytes());
        let (mut s, code) = socks(&env, &with_port).await;
        if code != 0 {
            continue;
        }
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let resp = exchange(&mut s, req.as_bytes()).await;
        assert_eq!(
            reason(&resp),
            "upstream_address_denied",
            "SOCKS {addr:?}: {resp}"
        );
    }

    // Redirects are never followed: the client gets the 302, and its next request, to
    // loopback, is judged afresh and refused.
    let proxy = format!("http://{}", env.tunnel());
    let out = run(
        "curl",
        &[
            "-s".into(),
            "-L".into(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code} %{num_redirects}".into(),
            "-x".into(),
            proxy,
            "http://public.allowed.test/redirect".into(),
        ],
        &[],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403 1");

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(canaries.hit(), vec![], "a denied address was reached");
    assert!(
        public.load(Ordering::SeqCst) >= 3,
        "the public origin served"
    );
    // Every refusal is audited with its reason.
    let refused = env
        .count_reason("upstream_address_denied", denied.len())
        .await;
    assert!(refused >= denied.len(), "{refused} refusals audited");
    env.stop().await;
}
