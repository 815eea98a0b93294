//! `centaur audit` as a user runs it: output formats, errors a user can act on (a file that
//! is not an audit log, a corrupt line, an unknown field, a bad time), `verify` exit codes,
//! and `tail -f` following a rotation.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use audit::{Action, AuditLog, Record};
use policy::{AuditConfig, AuditFile};

fn centaur(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_centaur"))
        .arg("audit")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn write(path: &Path, hosts: &[&str]) {
    let cfg = AuditConfig {
        stdout: false,
        file: Some(AuditFile {
            path: path.display().to_string(),
            max_bytes: None,
            max_age: None,
            keep: None,
            compress: false,
        }),
        ..AuditConfig::default()
    };
    let log = AuditLog::spawn(&cfg).await.unwrap();
    for (i, h) in hosts.iter().enumerate() {
        let mut r = Record::start("https", "10.0.0.9:1000".into());
        r.host = h.to_string();
        r.method = Some("GET".into());
        r.path = Some(format!("/p/{i}"));
        r.status_code = Some(if h.starts_with("deny") { 403 } else { 200 });
        r.action = if h.starts_with("deny") {
            Action::Reject
        } else {
            Action::Allow
        };
        r.reason = if h.starts_with("deny") {
            "not_allowlisted"
        } else {
            "allowed"
        };
        log.emit(r).await;
    }
    log.flush().await;
}

#[tokio::test]
async fn query_stats_and_verify_with_errors_a_user_can_act_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    write(&log, &["a.test", "deny.test", "b.test", "a.test"]).await;
    let glob = format!("{}/audit.jsonl*", dir.path().display());

    let (code, out, err) = centaur(&["query", &glob, "--host", "a.*", "-o", "table"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert!(
        rows[0].starts_with("TS") && rows[0].contains("STATUS"),
        "{out}"
    );
    assert_eq!(rows.len(), 3, "{out}");

    let (code, out, _) = centaur(&[
        "query",
        &glob,
        "--action",
        "deny",
        "-o",
        "csv",
        "--fields",
        "host,reason",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (0, "host,reason\ndeny.test,not_allowlisted\n")
    );

    let (code, out, _) = centaur(&["stats", &glob]);
    assert_eq!(code, 0);
    assert!(out.starts_with("4 records (3 allowed, 1 denied"), "{out}");
    assert!(
        out.contains("DENIES BY REASON") && out.contains("not_allowlisted"),
        "{out}"
    );

    let (code, out, _) = centaur(&["verify", &glob]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("OK: 4 records in 1 file(s), seq 1..=4; head "),
        "{out}"
    );

    // Unknown fields and bad values are refused with what would be accepted.
    let (code, _, err) = centaur(&["query", &glob, "--where", "durations > 5"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown field `durations`") && err.contains("duration_ms"),
        "{err}"
    );
    let (code, _, err) = centaur(&["query", &glob, "--fields", "ts,nope"]);
    assert!(
        code == 2 && err.contains("unknown field `nope`") && err.contains("known fields"),
        "{err}"
    );
    let (code, _, err) = centaur(&["query", &glob, "--since", "yesterday"]);
    assert!(
        code == 2 && err.contains("`yesterday` is not a time"),
        "{err}"
    );
    let (code, _, err) = centaur(&["query", "/nonexistent/x.jsonl"]);
    assert!(code == 2 && err.contains("no such file"), "{err}");

    // A corrupt line is reported with file:line and the rest is still read; a file that is
    // not an audit log is named and skipped.
    let mut text = std::fs::read_to_string(&log).unwrap();
    let second = text.match_indices('\n').nth(1).unwrap().0;
    text.insert_str(second + 1, "{\"ts\": oops\n");
    std::fs::write(&log, text).unwrap();
    std::fs::write(dir.path().join("audit.jsonl.notes"), "hello\n").unwrap();
    let (code, out, err) = centaur(&["query", &glob, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(
        err.contains(&format!("{}:3: not a valid record", log.display())),
        "{err}"
    );
    assert!(err.contains("audit.jsonl.notes: not an audit log"), "{err}");

    // The same corruption is a break for verify, with exit status 1.
    let (code, out, _) = centaur(&["verify", &log.display().to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("BROKEN at {}:3 (corrupt)", log.display())),
        "{out}"
    );
}

#[tokio::test]
async fn tail_follows_new_records_across_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    write(&log, &["one.test", "two.test"]).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_centaur"))
        .args([
            "audit", "tail", "-f", "-n", "1", "-o", "json", "--host", "*.test",
        ])
        .arg(&log)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = |rx: &std::sync::mpsc::Receiver<String>| {
        let v: serde_json::Value =
            serde_json::from_str(&rx.recv_timeout(Duration::from_secs(10)).unwrap()).unwrap();
        v["host"].as_str().unwrap().to_string()
    };
    assert_eq!(next(&rx), "two.test");
    // A new writer on the same path moves the old file aside (rotation) and starts a new one.
    let start = Instant::now();
    write(&log, &["three.test", "other.example", "four.test"]).await;
    assert_eq!(next(&rx), "three.test");
    assert_eq!(next(&rx), "four.test");
    assert!(start.elapsed() < Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
}
