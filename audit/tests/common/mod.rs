//! A synthetic audit log written through the real writer, with a simple model of what is in
//! it, so tests can compare query answers with the model's.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};

use audit::{Action, AuditLog, Record, Transform};
use policy::{AuditConfig, AuditFile};

pub const HOSTS: [&str; 3] = ["a.example.com", "b.example.com", "api.openai.com"];

/// The model of record `i` of gateway `g`.
pub struct Model {
    pub ts: String,
    pub host: &'static str,
    pub action: &'static str,
    pub reason: &'static str,
    pub status: u16,
    pub method: &'static str,
    pub path: String,
    pub duration_ms: f64,
    pub secret: Option<&'static str>,
    pub sandbox: String,
}

pub fn model(g: u8, i: u64) -> Model {
    let base = time::macros::datetime!(2026-03-01 12:00 UTC);
    let t = base + time::Duration::milliseconds(i as i64 * 10 + i64::from(g) * 5);
    let host = HOSTS[(i % 3) as usize];
    let (action, reason, status) = match i % 10 {
        0 => ("reject", "not_allowlisted", 403),
        1 => ("error", "upstream_connect_failed", 502),
        _ => ("allow", "allowed", 200),
    };
    Model {
        ts: audit::format_ts(t),
        host,
        action,
        reason,
        status,
        method: if i.is_multiple_of(4) { "POST" } else { "GET" },
        path: format!("/v1/x/{}", i % 7),
        duration_ms: (i % 100) as f64,
        secret: (host == "api.openai.com" && action == "allow").then_some("OPENAI_KEY"),
        sandbox: format!("gw-{g}"),
    }
}

pub fn record(m: &Model) -> Record {
    let mut r = Record::start("https", "10.0.0.2:4000".into());
    r.ts = m.ts.clone();
    r.host = m.host.into();
    r.method = Some(m.method.into());
    r.path = Some(m.path.clone());
    r.status_code = Some(m.status);
    r.reason = m.reason;
    r.duration_ms = m.duration_ms;
    r.bytes_in = 10;
    r.bytes_out = 100;
    r.action = match m.action {
        "reject" => Action::Reject,
        "error" => Action::Error,
        _ => Action::Allow,
    };
    if let Some(s) = m.secret {
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
                    secret: s.into(),
                }],
            }),
        });
    }
    r
}

pub fn config(dir: &Path, g: u8, max_bytes: Option<u64>) -> AuditConfig {
    AuditConfig {
        stdout: false,
        file: Some(AuditFile {
            path: dir.join("audit.jsonl").display().to_string(),
            max_bytes,
            max_age: None,
            keep: None,
            compress: false,
        }),
        sandbox: [("sandbox_id".to_string(), format!("gw-{g}"))].into(),
        ..AuditConfig::default()
    }
}

/// Writes records `from..to` of gateway `g` into `dir` through the real writer.
pub async fn write(dir: &Path, g: u8, from: u64, to: u64, max_bytes: Option<u64>) {
    let log = AuditLog::spawn(&config(dir, g, max_bytes)).await.unwrap();
    for i in from..to {
        log.emit(record(&model(g, i))).await;
    }
    log.flush().await;
}

/// The audit files in `dir`, sorted by name.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    testkit::audit_files(dir)
}
