//! The audit trail of a running `centaur-gateway` process: `kill -9` under load in each
//! durability mode (invariant 4: one record per request, and nothing a client received goes
//! unrecorded in `strict`), and the OTLP export as a real OpenTelemetry receiver decodes it.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, assert_no_canary, json, python};
use serde_json::Value;

/// Runs the load script against `p` for `for_how_long`, then kills the gateway with SIGKILL
/// while the load is still running; returns the paths whose responses the clients received.
fn load_then_kill(p: &mut Proc, for_how_long: Duration) -> Vec<String> {
    let out = p.path("received.txt");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/load.py");
    let mut load = Command::new(python())
        .arg(script)
        .arg(format!("http://{}", p.tunnel))
        .arg(p.path("ca.crt"))
        .arg("8")
        .arg(&out)
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Wait until the load is really flowing before the clock starts.
    while std::fs::read_to_string(&out).map_or(0, |s| s.lines().count()) < 50 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no load got through"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(for_how_long);
    p.kill9();
    let status = load.wait().unwrap();
    assert!(status.success());
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_kill_9_under_load_loses_no_record_of_a_received_response() {
    // Small files so that rotation happens under load too.
    let mut p = Proc::start(
        "{file: {path: DIR/audit.jsonl, max_size: 256KiB}, durability: strict}",
        &[],
    )
    .await;
    let received = load_then_kill(&mut p, Duration::from_millis(1500));
    assert!(received.len() > 100, "only {} responses", received.len());
    common::assert_recorded(&p.records(), &received);
    assert!(p.audit_files().len() > 1, "no rotation happened under load");
    let v = audit::read::verify::verify(&p.audit_files()).unwrap();
    assert!(v.problem.is_none(), "{:?}", v.problem);
    assert_eq!(v.records as usize, p.records().len());
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_kill_9_leaves_a_chain_that_verifies_up_to_the_last_complete_record() {
    let mut p = Proc::start("{file: {path: DIR/audit.jsonl}}", &[]).await;
    let received = load_then_kill(&mut p, Duration::from_millis(1000));
    let records = p.records();
    assert!(!records.is_empty());
    // Batch mode may lose what was still queued in the process, never more than was sent.
    assert!(records.len() <= received.len() + 64);
    let v = audit::read::verify::verify(&p.audit_files()).unwrap();
    assert!(v.problem.is_none(), "{:?} {:?}", v.problem, v.notes);
    assert_eq!(v.records as usize, records.len());

    // Restart on the same files: the crashed file is closed off and the chain continues.
    let dir = p.dir.path().to_path_buf();
    let before = v.last_seq.unwrap();
    let mut again = Command::new(env!("CARGO_BIN_EXE_centaur-gateway"))
        .args(["run", "--config"])
        .arg(dir.join("gateway.yaml"))
        .env("API_KEY", "x")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.audit_files().len() < 2 {
        assert!(Instant::now() < deadline, "no new file after restart");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = again.kill();
    let _ = again.wait();
    let v = audit::read::verify::verify(&p.audit_files()).unwrap();
    assert!(v.problem.is_none(), "{:?}", v.problem);
    assert_eq!(v.last_seq, Some(before));
}

/// Starts the OTLP receiver; returns it and its port.
fn receiver(dir: &Path) -> (Child, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/otlp.py");
    let mut child = Command::new(python())
        .arg(script)
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = json(&line)["port"]
        .as_u64()
        .expect("receiver did not start") as u16;
    (child, port)
}

async fn exported(dir: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(dir.join("logs.jsonl")).unwrap_or_default();
        let v: Vec<Value> = text.lines().map(json).collect();
        if v.len() >= n || Instant::now() > deadline {
            assert_no_canary("an OTLP export", &text);
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn attr<'a>(rec: &'a Value, key: &str) -> &'a Value {
    rec["record"]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_export_decodes_with_the_opentelemetry_bindings_in_both_encodings() {
    for protocol in ["http/protobuf", "http/json"] {
        let rdir = tempfile::tempdir().unwrap();
        let (mut rx, port) = receiver(rdir.path());
        let p = Proc::start(
            "{file: {path: DIR/audit.jsonl}, sandbox: {sandbox_id: s-otlp}}",
            &[
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("http://127.0.0.1:{port}"),
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.into()),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "authorization=Bearer%20t0k".into(),
                ),
                ("OTEL_SERVICE_NAME", "gw-under-test".into()),
            ],
        )
        .await;
        let proxy = format!("http://{}", p.tunnel);
        let ca = p.path("ca.crt").display().to_string();
        for url in ["https://api.test/ok", "https://denied.test/"] {
            let _ = common::run(
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "--cacert",
                    &ca,
                    "--proxy",
                    &proxy,
                    url,
                ]
                .map(String::from),
                &[],
            )
            .await;
        }
        // The request inside the tunnel, the tunnel, and the refused CONNECT.
        let logs = exported(rdir.path(), 3).await;
        assert_eq!(logs.len(), 3, "{protocol}: {logs:?}");
        let allow = logs
            .iter()
            .find(|l| attr(l, "method")["stringValue"] == "GET")
            .unwrap();
        assert_eq!(
            allow["content_type"],
            if protocol == "http/json" {
                "application/json"
            } else {
                "application/x-protobuf"
            }
        );
        assert_eq!(allow["auth"], "Bearer t0k");
        assert_eq!(allow["resource"]["service.name"], "gw-under-test");
        assert_eq!(allow["resource"]["centaur.sandbox.sandbox_id"], "s-otlp");
        assert_eq!(allow["record"]["body"]["stringValue"], "request");
        assert_eq!(allow["record"]["severityText"], "INFO");
        assert_eq!(attr(allow, "host")["stringValue"], "api.test");
        assert_eq!(attr(allow, "status_code")["intValue"], "200");
        assert!(
            attr(allow, "remote_addr")["stringValue"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
        assert!(attr(allow, "duration_ms")["doubleValue"].as_f64().is_some());
        assert_eq!(attr(allow, "seq")["intValue"], "1");
        let transforms = &attr(allow, "request_transforms")["arrayValue"]["values"];
        assert!(
            transforms.to_string().contains("\"secrets\""),
            "{transforms}"
        );
        let deny = logs
            .iter()
            .find(|l| attr(l, "action")["stringValue"] == "reject")
            .unwrap();
        assert_eq!(deny["record"]["severityText"], "WARN");
        assert_eq!(attr(deny, "reason")["stringValue"], "not_allowlisted");
        // The timestamp is the request's start, as in the JSON record.
        let file_ts = p.records()[0]["ts"].as_str().unwrap().to_string();
        let ns: u128 = allow["record"]["timeUnixNano"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(ns > 1_700_000_000_000_000_000, "{ns} for {file_ts}");
        let _ = rx.kill();
        let _ = rx.wait();
    }
}
