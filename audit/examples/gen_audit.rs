//! Writes a synthetic audit log through the real writer, for benchmarks of `centaur audit`:
//! `cargo run --release -p audit --example gen_audit -- DIR RECORDS [MAX_FILE_MIB]`.
//! Records are 1 ms apart from 2026-01-01T00:00:00Z, over 60 hosts, with the mix of
//! outcomes, transforms and latencies of a busy gateway. Prints records/s written.

use std::time::Instant;

use audit::{Action, AuditLog, Record, Transform};
use policy::{AuditConfig, AuditFile};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!("usage: gen_audit DIR RECORDS [MAX_FILE_MIB]");
        std::process::exit(2);
    };
    let max_mib: u64 = args.get(3).and_then(|m| m.parse().ok()).unwrap_or(128);
    let cfg = AuditConfig {
        stdout: false,
        file: Some(AuditFile {
            path: format!("{dir}/audit.jsonl"),
            max_bytes: Some(max_mib << 20),
            max_age: None,
            keep: None,
            compress: false,
        }),
        sandbox: [("sandbox_id".to_string(), "bench-1".to_string())].into(),
        ..AuditConfig::default()
    };
    let log = AuditLog::spawn(&cfg).await?;
    let start = Instant::now();
    let base = time::macros::datetime!(2026-01-01 0:00 UTC);
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut r = Record::start(
            "https",
            format!("10.0.0.{}:{}", rng % 250, 30000 + rng % 30000).into(),
        );
        r.ts = audit::format_ts(base + time::Duration::milliseconds(i as i64));
        let host = rng % 60;
        r.host = match host {
            0..=9 => format!("api{host}.openai.com"),
            10..=19 => format!("svc{host}.github.com"),
            _ => format!("host{host}.example.net"),
        };
        r.sni = Some(r.host.as_str().into());
        r.method = Some(if rng.is_multiple_of(5) { "POST" } else { "GET" }.into());
        r.path = Some(format!("/v1/items/{}", rng % 1000));
        r.tls = Some(
            audit::TlsInfo {
                version: "TLSv1.3".into(),
                alpn: Some("h2".into()),
            }
            .into(),
        );
        r.duration_ms = ((rng % 100_000) as f64 / 100.0).round() / 10.0 + 0.2;
        r.bytes_in = rng % 4096;
        r.bytes_out = rng % 65536;
        match rng % 100 {
            0..=7 => {
                r.action = Action::Reject;
                r.status_code = Some(403);
                r.reason = "not_allowlisted";
                r.rejected_by = Some("allowlist");
            }
            8..=9 => {
                r.action = Action::Error;
                r.status_code = Some(502);
                r.reason = "upstream_connect_failed";
                r.error = Some("upstream connection failed".into());
            }
            _ => {
                r.action = Action::Allow;
                r.status_code = Some(200);
                r.reason = "allowed";
                r.upstream = Some("192.0.2.10:443".into());
                r.rule = Some(format!("transforms[0].rules[{}]", host).into());
                r.request_transforms.push(Transform {
                    name: "allowlist",
                    action: "allow",
                    rule: r.rule.clone(),
                    annotations: None,
                });
                if host < 10 {
                    r.request_transforms.push(Transform {
                        name: "secrets",
                        action: "allow",
                        rule: None,
                        annotations: Some(audit::Annotations::Secrets {
                            injected: vec![],
                            rejected: None,
                            secret_unavailable: vec![],
                            swapped: vec![audit::Placed {
                                locations: vec!["header:authorization".into()],
                                secret: "OPENAI_API_KEY".into(),
                            }],
                        }),
                    });
                }
            }
        }
        log.emit(r).await;
    }
    log.flush().await;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{n} records in {secs:.2} s ({:.0} records/s)",
        n as f64 / secs
    );
    Ok(())
}
