//! Resource exhaustion (invariants 5 and 8): the `centaur-gateway` binary, run as its own
//! process so its memory can be read, under slowloris, a flood of TLS handshakes with new
//! server names, a DNS query flood, slow readers of large responses and 10,000 idle
//! connections. After each, the gateway's RSS is
//! bounded, a normal client is still served, and the refusals are audited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::process::{Child, Command};

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Gw {
    child: Child,
    http: SocketAddr,
    https: SocketAddr,
    dns: SocketAddr,
    audit: std::path::PathBuf,
}

impl Gw {
    async fn start(dir: &Path, origin: SocketAddr) -> Gw {
        common::test_ca(dir);
        let (http, https, dns) = (free_port(), free_port(), free_port());
        let audit = dir.join("audit.jsonl");
        let yaml = format!(
            "dns: {{listen: '127.0.0.1:{dns}', proxy_ip: 127.0.0.1}}
proxy:
  http_listen: 127.0.0.1:{http}
  https_listen: 127.0.0.1:{https}
  client_header_timeout: 2s
  tls_handshake_timeout: 2s
  max_connections: 12000
  upstream_allow_cidrs: [127.0.0.1/32]
tls: {{ca_cert: {d}/ca.crt, ca_key: {d}/ca.key, cert_cache_size: 100}}
upstream:
  hosts: {{plain.test: '{origin}'}}
audit: {{output: {a}}}
transforms:
{t}",
            d = dir.display(),
            a = audit.display(),
            t = common::allow_test_domains(),
        );
        let config = dir.join("gateway.yaml");
        std::fs::write(&config, yaml).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_centaur-gateway"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let gw = Gw {
            child,
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            https: SocketAddr::from(([127, 0, 0, 1], https)),
            dns: SocketAddr::from(([127, 0, 0, 1], dns)),
            audit,
        };
        for _ in 0..100 {
            if TcpStream::connect(gw.http).await.is_ok() {
                return gw;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway did not start");
    }

    /// Resident memory of the gateway process, in KiB.
    fn rss_kib(&self) -> u64 {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// A normal request through the transparent HTTP listener; its status.
    async fn control(&self) -> u16 {
        let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(self.http))
            .await
            .expect("the control client could not connect in time")
            .unwrap();
        s.write_all(b"GET /control HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out)
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_leave_memory_bounded_and_other_clients_served() {
    gateway::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let origin = testkit::Origin::http().await.unwrap();
    let gw = Gw::start(dir.path(), origin.addr).await;
    assert_eq!(gw.control().await, 200);
    let base = gw.rss_kib();
    eprintln!("baseline RSS: {base} KiB");

    // Slowloris: 100 connections send a header byte every 100 ms, forever. The header
    // deadline is total, not per byte: each is cut off after about 2 s.
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..100 {
        let addr = gw.http;
        slow.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let head = b"GET / HTTP/1.1\r\nHost: plain.test\r\nX-Slow: ".repeat(100);
            for b in head {
                if s.write_all(&[b]).await.is_err() {
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("a trickling client was never cut off");
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.control().await, 200, "served during slowloris");
    for t in slow {
        let cut = t.await.unwrap() - started;
        assert!(cut < Duration::from_secs(6), "cut off after {cut:?}");
    }
    assert!(common::count_reason_in(&gw.audit, "client_header_timeout", 100).await >= 100);

    // A flood of TLS handshakes, each with a new allowed server name: the first 100 (the
    // burst) and then 20 a second get a leaf, the rest are refused and audited as
    // `leaf_rate_limited`; the cache keeps at most 100 and names it holds are still served.
    let ca = rustls_pemfile::certs(&mut &std::fs::read(dir.path().join("ca.crt")).unwrap()[..])
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca[0].clone()).unwrap();
    let tls = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let connector = tokio_rustls::TlsConnector::from(tls);
    let mut done = 0;
    let flood = Instant::now();
    for batch in 0..40 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..50 {
            let (connector, addr) = (connector.clone(), gw.https);
            set.spawn(async move {
                let name = format!("flood-{batch}-{i}.test");
                let tcp = TcpStream::connect(addr).await.unwrap();
                let server = rustls::pki_types::ServerName::try_from(name).unwrap();
                connector.connect(server, tcp).await.is_ok()
            });
        }
        done += set.join_all().await.into_iter().filter(|ok| *ok).count();
    }
    let secs = flood.elapsed().as_secs_f64();
    let most = 100 + (20.0 * (secs + 1.0)) as usize;
    assert!(
        (100..=most).contains(&done),
        "{done} leaves in {secs:.1}s (at most {most})"
    );
    let limited = common::count_reason_in(&gw.audit, "leaf_rate_limited", 2000 - done).await;
    assert!(limited >= 2000 - done, "every refusal audited: {limited}");
    let after_tls = gw.rss_kib();
    eprintln!("RSS after 2,000 handshakes with new names: {after_tls} KiB");
    assert_eq!(gw.control().await, 200, "served after the handshake flood");
    assert!(
        after_tls < base + 32 * 1024,
        "the leaf cache is not bounded: {base} -> {after_tls} KiB"
    );

    // A DNS flood: 20,000 queries as fast as one socket sends them.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0u32..20_000 {
        let mut q = vec![(i >> 8) as u8, i as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let label = format!("n{i}");
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
        q.extend_from_slice(&[4, b't', b'e', b's', b't', 0, 0, 1, 0, 1]);
        let _ = sock.send_to(&q, gw.dns).await;
    }
    let mut buf = [0u8; 512];
    let probe = [
        0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, b'p', b'r', b'o', b'b', b'e', 4, b't', b'e',
        b's', b't', 0, 0, 1, 0, 1,
    ];
    let answered = async {
        loop {
            sock.send_to(&probe, gw.dns).await.unwrap();
            let deadline = tokio::time::sleep(Duration::from_millis(200));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    r = sock.recv_from(&mut buf) => {
                        let (n, _) = r.unwrap();
                        if n > 2 && buf[..2] == [0xbe, 0xef] {
                            return;
                        }
                    }
                    _ = &mut deadline => break,
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), answered)
        .await
        .expect("DNS still answers after the flood");
    let after_dns = gw.rss_kib();
    eprintln!("RSS after the DNS flood: {after_dns} KiB");
    assert!(
        after_dns < after_tls + 16 * 1024,
        "{after_tls} -> {after_dns} KiB"
    );
    assert_eq!(gw.control().await, 200, "served after the DNS flood");

    // Slow readers: 20 clients ask for 100 MiB each and read nothing for 3 s. The gateway
    // holds no more than its buffers: it reads from upstream only as fast as each client.
    let mut readers = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(gw.http).await.unwrap();
        s.write_all(b"GET /bytes/104857600 HTTP/1.1\r\nHost: plain.test\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 1024];
        let _ = s.read(&mut first).await.unwrap();
        readers.push(s);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let slow_read = gw.rss_kib();
    eprintln!("RSS with 20 stalled 100 MiB downloads: {slow_read} KiB");
    assert!(
        slow_read < after_dns + 32 * 1024,
        "responses are buffered for slow readers: {after_dns} -> {slow_read} KiB"
    );
    assert_eq!(gw.control().await, 200, "served beside the slow readers");
    drop(readers);

    // 10,000 idle connections: all accepted, each costing little, and a normal client is
    // still served while they are open.
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        match TcpStream::connect(gw.http).await {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connection {} failed: {e} (raise ulimit -n)", idle.len()),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = gw.rss_kib();
    eprintln!("RSS with 10,000 idle connections: {held} KiB");
    assert_eq!(
        gw.control().await,
        200,
        "served beside 10,000 idle connections"
    );
    // About 12.5 KiB each in this debug build (the connection's task and hyper's state).
    assert!(
        held - after_dns < 10_000 * 16,
        "more than 16 KiB per idle connection: {after_dns} -> {held} KiB"
    );
    drop(idle);
}
