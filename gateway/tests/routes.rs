//! `centaur-gateway run --route NAME=HOST:PORT`: the one way to send a name to an address
//! the deny ranges refuse (a control plane's API on loopback or a cluster address), given by
//! whoever starts the gateway and never by its policy file. Protects invariant 1 (the
//! sandbox's only way out is its gateway's policy): without the flag the same request is
//! refused, and a route does not open the name's other addresses.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::Origin;

/// A gateway process (killed on drop) and its CONNECT listener.
struct Gateway {
    child: Child,
    tunnel: String,
    /// Its log up to the line that says it listens.
    started: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path, routes: &[String]) -> Gateway {
    let yaml = format!(
        "dns: {{enabled: false}}\nmetrics: {{listen: '127.0.0.1:0'}}\nproxy: {{tunnel_listen: '127.0.0.1:0'}}\n\
         tls: {{ca_cert: {d}/ca.crt, ca_key: {d}/ca.key}}\n\
         upstream: {{ca_files: [{d}/origin-ca.pem]}}\n\
         transforms:\n  - name: allowlist\n    config: {{domains: [api.internal, localhost]}}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("gateway.yaml"), yaml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_centaur-gateway"))
        .args(["run", "--config"])
        .arg(dir.join("gateway.yaml"))
        .args(routes.iter().flat_map(|r| ["--route", r.as_str()]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        seen.push_str(&line);
        seen.push('\n');
        if let Some(t) = line.split("tunnel=Some(").nth(1) {
            let tunnel = t.split(')').next().unwrap().to_string();
            return Gateway {
                child,
                tunnel,
                started: seen,
            };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the gateway did not start:\n{seen}");
}

async fn get(g: &Gateway, dir: &std::path::Path, url: &str) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg("--cacert")
        .arg(dir.join("ca.crt"))
        .args(["-x", &format!("http://{}", g.tunnel), url])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_route_given_at_start_reaches_a_loopback_api_and_nothing_else_does() {
    gateway::install_crypto();
    let origin = Origin::https(&["api.internal"], false).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    crate::common::test_ca(dir.path());
    std::fs::write(dir.path().join("origin-ca.pem"), &origin.ca_pem).unwrap();

    // Without the route: the name does not resolve to the loopback origin.
    let plain = start(dir.path(), &[]);
    let code = get(&plain, dir.path(), "https://api.internal/without").await;
    assert_ne!(code, "200", "reached without a route");
    drop(plain);
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());

    // With it: the name reaches exactly the routed address.
    let routed = start(
        dir.path(),
        &[format!("api.internal=127.0.0.1:{}", origin.addr.port())],
    );
    let code = get(&routed, dir.path(), "https://api.internal/with").await;
    assert_eq!(code, "200");
    let paths: Vec<String> = origin
        .seen()
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_string))
        .collect();
    assert_eq!(paths, ["/with"]);
    // Other loopback names stay refused: the route opens one name, not the range.
    let code = get(&routed, dir.path(), "https://localhost/").await;
    assert_ne!(code, "200");
    assert!(
        routed.started.contains("internal route"),
        "{}",
        routed.started
    );
}

#[test]
fn a_malformed_route_is_refused_at_start_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::test_ca(dir.path());
    std::fs::write(dir.path().join("origin-ca.pem"), "").unwrap();
    std::fs::write(
        dir.path().join("gateway.yaml"),
        format!(
            "dns: {{enabled: false}}\nmetrics: {{listen: '127.0.0.1:0'}}\nproxy: {{tunnel_listen: '127.0.0.1:0'}}\ntls: {{ca_cert: {d}/ca.crt, ca_key: {d}/ca.key}}\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    for (route, why) in [
        ("api.internal", "expected NAME=HOST:PORT"),
        ("api.internal=no-port", "cannot resolve no-port"),
        ("bad name!=127.0.0.1:1", "the name"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_centaur-gateway"))
            .args(["run", "--config"])
            .arg(dir.path().join("gateway.yaml"))
            .args(["--route", route])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{route}");
        assert!(err.contains(why), "{route}: {err}");
    }
}
