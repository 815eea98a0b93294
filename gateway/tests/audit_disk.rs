//! The audit trail on a real full disk (a small tmpfs, filled to 8 KiB from the top): invariant 4 — in `strict` mode no
//! client receives a response whose record is not on disk, and while the file cannot be
//! written requests are refused before they reach the origin; in both modes the failure is
//! visible (`/readyz`, metrics, one log line per incident) and the gateway writes again, with
//! an intact chain, once there is room.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Proc, json, python};
use serde_json::Value;

/// A tmpfs of 1 MiB, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "centaur-audit-test"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs failed");
        SmallDisk { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Fills the disk but for `free` bytes with a file of its own, which `make_room` removes.
    fn fill_leaving(&self, free: usize) {
        let total = 1024 * 1024;
        let used: usize = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len().div_ceil(4096) as usize * 4096)
            .sum();
        let filler = vec![b'x'; total - used - free];
        std::fs::write(self.path("filler"), filler).unwrap();
    }

    fn make_room(&self) {
        std::fs::remove_file(self.path("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// One outcome per request, as `probe.py` saw it.
fn probe(p: &Proc, prefix: &str, n: usize) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/probe.py");
    let out = Command::new(python())
        .arg(script)
        .arg(format!("http://{}", p.tunnel))
        .arg(p.path("ca.crt"))
        .args([prefix, &n.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(json)
        .collect()
}

fn with(outcomes: &[Value], outcome: &str) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| o["outcome"] == outcome)
        .map(|o| o["path"].as_str().unwrap().to_string())
        .collect()
}

/// The records in the audit files on `disk`.
fn records(disk: &SmallDisk) -> Vec<Value> {
    testkit::audit_files(disk.dir.path())
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            // A batch writer may be in the middle of a line: complete lines only.
            let done = text.rfind('\n').map_or("", |i| &text[..i]);
            done.lines().map(json).collect::<Vec<_>>()
        })
        .filter(|v| v.get("kind").is_none())
        .collect()
}

async fn get(addr: &str, path: &str) -> (u16, String) {
    let out = common::run(
        "curl",
        &[
            "-s",
            "-w",
            "\n%{http_code}",
            &format!("http://{addr}{path}"),
        ]
        .map(String::from),
        &[],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits until `/readyz` answers `status`.
async fn ready_becomes(p: &Proc, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if get(&p.metrics, "/readyz").await.0 == status {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz never became {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

const FAILED: &str = "records are not being written until the sink recovers";
const RECOVERED: &str = "the sinks write again";

/// Fills the disk under `p`'s audit file, sends 60 requests, checks the failure is visible,
/// makes room and checks the gateway writes again with its chain intact. Returns the
/// outcomes while the disk was full.
async fn full_then_room(p: &Proc, disk: &SmallDisk) -> Vec<Value> {
    disk.fill_leaving(8 * 1024);
    let full = probe(p, "full", 60);
    ready_becomes(p, 503).await;
    let (_, reason) = get(&p.metrics, "/readyz").await;
    assert!(reason.contains("audit trail cannot be written"), "{reason}");
    let (_, m) = get(&p.metrics, "/metrics").await;
    assert_eq!(metric(&m, "centaur_gateway_audit_failing"), 1);
    assert_eq!(metric(&m, "centaur_gateway_audit_incidents_total"), 1);
    assert!(metric(&m, "centaur_gateway_audit_write_errors_total") > 0);
    // One line for the incident, not one per record.
    assert_eq!(count(&p.log(), FAILED), 1, "{}", p.log());

    disk.make_room();
    ready_becomes(p, 200).await;
    let after = probe(p, "after", 20);
    assert_eq!(with(&after, "ok").len(), 20, "{after:?}");
    common::assert_recorded(&records(disk), &with(&after, "ok"));
    let (_, m) = get(&p.metrics, "/metrics").await;
    assert_eq!(metric(&m, "centaur_gateway_audit_failing"), 0);
    assert_eq!(count(&p.log(), RECOVERED), 1, "{}", p.log());
    // Records the disk refused were taken off the chain: what is in the file verifies.
    let v = audit::read::verify::verify(&testkit::audit_files(disk.dir.path())).unwrap();
    assert!(v.problem.is_none(), "{:?}", v.problem);
    full
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_on_a_full_disk_releases_nothing_unrecorded_and_refuses_until_there_is_room() {
    if !common::root_or_skip("strict_on_a_full_disk") {
        return;
    }
    let disk = SmallDisk::mount();
    let audit = format!(
        "{{file: {{path: {}}}, durability: strict}}",
        disk.path("audit.jsonl").display()
    );
    let p = Proc::start(&audit, &[]).await;
    let full = full_then_room(&p, &disk).await;
    let (ok, cut, refused) = (
        with(&full, "ok"),
        with(&full, "cut"),
        with(&full, "refused"),
    );
    assert!(!ok.is_empty(), "nothing was written before the disk filled");
    assert!(
        !refused.is_empty(),
        "the full disk refused nothing: {full:?}"
    );
    assert_eq!(ok.len() + cut.len() + refused.len(), 60, "{full:?}");
    common::assert_recorded(&records(&disk), &ok);
    // Refused before the origin: it saw only what was served or cut, and none of those
    // came after the first refusal.
    let seen: Vec<String> = p
        .origin
        .seen()
        .iter()
        .map(|s| s["path"].as_str().unwrap().to_string())
        .filter(|s| s.starts_with("/full-"))
        .collect();
    assert_eq!(seen.len(), ok.len() + cut.len(), "origin saw {seen:?}");
    let first_refused = full.iter().position(|o| o["outcome"] == "refused").unwrap();
    assert!(
        full[first_refused..]
            .iter()
            .all(|o| o["outcome"] == "refused"),
        "{full:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_on_a_full_disk_keeps_serving_and_says_so() {
    if !common::root_or_skip("batch_on_a_full_disk") {
        return;
    }
    let disk = SmallDisk::mount();
    let audit = format!(
        "{{file: {{path: {}}}, sync_interval: 10ms}}",
        disk.path("audit.jsonl").display()
    );
    let p = Proc::start(&audit, &[]).await;
    let full = full_then_room(&p, &disk).await;
    // `batch` chose availability: every request was served, and the gap is on record in
    // the metrics and the log rather than in the file.
    assert_eq!(with(&full, "ok").len(), 60, "{full:?}");
}
