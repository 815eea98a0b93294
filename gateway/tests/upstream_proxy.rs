//! `proxy.upstream_proxy` with squid as the corporate proxy: HTTPS and plain-HTTP upstreams
//! are tunnelled through squid's CONNECT (its access rules apply: a tunnel it refuses is
//! 502 `upstream_proxy_error`), `no_proxy` hosts go direct, and the address guard checks the
//! proxy's address (invariant 2: a proxy in a denied range is refused).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{API, Env, curl, json};

/// Squid on 127.0.0.2, in the foreground, with its own directory.
struct Squid {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Squid {
    /// A free port on 127.0.0.2 for squid to listen on.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.2:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Squid on `port`; `rules` are `http_access` lines placed before `http_access allow all`.
    fn start(port: u16, rules: &str) -> Squid {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Squid drops root for its own user, which must write its logs here.
        std::process::Command::new("chmod")
            .args(["777"])
            .arg(d)
            .status()
            .unwrap();
        let conf = format!(
            "http_port 127.0.0.2:{port}
pid_filename none
pinger_enable off
cache deny all
access_log stdio:{d}/access.log
cache_log {d}/cache.log
cache_store_log none
shutdown_lifetime 0 seconds
{rules}
http_access allow all
",
            d = d.display()
        );
        std::fs::write(d.join("squid.conf"), conf).unwrap();
        let squid = ["/usr/sbin/squid", "squid"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists() || *p == "squid")
            .unwrap();
        let child = Command::new(squid)
            .args(["-N", "-f"])
            .arg(d.join("squid.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("squid could not run: run scripts/install-deps");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.2", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "squid did not start: {}",
                std::fs::read_to_string(d.join("cache.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Squid {
            child,
            port,
            _dir: dir,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.2:{}", self.port)
    }
}

fn addr(port: u16) -> String {
    format!("127.0.0.2:{port}")
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn env_with(squid_port: u16, allow: &str, no_proxy: &str) -> Env {
    let url = format!("http://{}", addr(squid_port));
    Env::start(common::Opts {
        allow_loopback: false,
        proxy_extra: format!(
            "  upstream_allow_cidrs: [{allow}]
  upstream_proxy: {{http_proxy: '{url}', https_proxy: '{url}', no_proxy: '{no_proxy}'}}
"
        ),
        ..common::Opts::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_go_through_squid_and_the_guard_checks_the_proxy() {
    let port = Squid::free_port();
    let env = env_with(port, "127.0.0.1/32, 127.0.0.2/32", "other.test").await;
    // Squid refuses tunnels to the plain-HTTP origin's port: its own rules decide.
    let squid = Squid::start(
        port,
        &format!(
            "acl plain_origin port {}\nhttp_access deny CONNECT plain_origin",
            env.plain.addr.port()
        ),
    );
    let proxy = format!("http://{}", env.tunnel());

    let (code, body, err) = curl(
        &env,
        &["--proxy", &proxy, &format!("https://{API}/through-squid")],
    )
    .await;
    assert_eq!(code, 200, "{err}");
    assert!(body.contains("/through-squid"), "{body}");
    let rec = env.record(|r| r["path"] == "/through-squid").await;
    assert_eq!(rec["upstream"], squid.addr(), "connected to squid: {rec}");

    // no_proxy: straight to the origin.
    let (code, _, err) = curl(&env, &["--proxy", &proxy, "https://other.test/direct"]).await;
    assert_eq!(code, 200, "{err}");
    let rec = env.record(|r| r["path"] == "/direct").await;
    assert_eq!(rec["upstream"], env.origin.addr.to_string());

    // Plain HTTP goes through squid's CONNECT too, and squid's refusal is ours to report.
    let (code, body, _) = curl(
        &env,
        &["--proxy", &proxy, "http://plain.test/refused-by-squid"],
    )
    .await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(json(&body)["reason"], "upstream_proxy_error");
    assert!(env.plain.seen().is_empty(), "squid let it through");
    env.stop().await;

    // The same proxy in a range the guard denies: refused before anything is sent.
    let env = env_with(port, "127.0.0.1/32", "").await;
    let (code, body) = common::get(&env, &format!("https://{API}/guarded"), &[]).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(json(&body)["reason"], "upstream_address_denied");
    env.stop().await;
}
