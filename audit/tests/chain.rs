//! Tamper evidence (DESIGN.md invariant 4: the audit record is complete and trustworthy):
//! a log written through the real writer, across rotations and a restart, is tampered with in
//! each way and `verify` must name the first bad record; a torn final line is not tampering.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};

use audit::read::verify::{Verdict, verify};

/// A log of 600 records over several files: 400 records, a restart, 200 more.
async fn log() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::write(dir.path(), 0, 0, 400, Some(16 * 1024)).await;
    common::write(dir.path(), 0, 400, 600, Some(16 * 1024)).await;
    dir
}

fn copy(src: &Path) -> tempfile::TempDir {
    let dst = tempfile::tempdir().unwrap();
    for f in common::files(src) {
        std::fs::copy(&f, dst.path().join(f.file_name().unwrap())).unwrap();
    }
    dst
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn put(p: &Path, lines: &[String]) {
    std::fs::write(p, lines.join("\n") + "\n").unwrap();
}

/// A rotated file in the middle of the chain.
fn middle(dir: &Path) -> PathBuf {
    let f = common::files(dir);
    f[f.len() / 2].clone()
}

fn broken(v: &Verdict, kind: &str, file: &Path, line: u64) {
    let p = v
        .problem
        .as_ref()
        .unwrap_or_else(|| panic!("no problem found; expected {kind}"));
    assert_eq!(
        (p.kind, p.file.as_path(), p.line),
        (kind, file, line),
        "{}",
        p.message
    );
}

#[tokio::test]
async fn an_untouched_log_verifies_across_rotations_and_a_restart() {
    let dir = log().await;
    let files = common::files(dir.path());
    assert!(files.len() > 4, "{files:?}");
    let v = verify(&files).unwrap();
    assert!(v.problem.is_none(), "{:?}", v.problem);
    assert_eq!(
        (v.records, v.first_seq, v.last_seq),
        (600, Some(1), Some(600))
    );
    // The restart closed the old live file with a `recovered` footer and continued the chain.
    let recovered = files
        .iter()
        .filter(|f| {
            lines(f)
                .last()
                .is_some_and(|l| l.contains("\"reason\":\"recovered\""))
        })
        .count();
    assert_eq!(recovered, 1);
    // Order of the arguments does not matter.
    let mut rev = files.clone();
    rev.reverse();
    assert!(verify(&rev).unwrap().problem.is_none());
}

/// Copies the log, edits the lines of a file in the middle, and verifies the copy. Returns
/// the verdict, the copy, the edited file and the file after it.
fn tamper(
    src: &Path,
    edit: impl FnOnce(&mut Vec<String>),
) -> (Verdict, tempfile::TempDir, PathBuf, PathBuf) {
    let d = copy(src);
    let files = common::files(d.path());
    let f = middle(d.path());
    let next = files
        .iter()
        .skip_while(|x| **x != f)
        .nth(1)
        .unwrap()
        .clone();
    let mut l = lines(&f);
    edit(&mut l);
    put(&f, &l);
    (verify(&files).unwrap(), d, f, next)
}

#[tokio::test]
async fn each_kind_of_tampering_is_named_at_the_first_bad_record() {
    let dir = log().await;
    let src = dir.path();

    let (v, _d, f, _) = tamper(src, |l| {
        l[3] = l[3].replacen("\"duration_ms\":", "\"duration_ms\":1", 1);
    });
    broken(&v, "changed", &f, 4);

    let (v, _d, f, _) = tamper(src, |l| {
        l.remove(5);
    });
    broken(&v, "missing", &f, 6);

    let (v, _d, f, _) = tamper(src, |l| l.swap(4, 5));
    broken(&v, "reordered", &f, 5);

    // A record replayed.
    let (v, _d, f, _) = tamper(src, |l| {
        let again = l[2].clone();
        l.insert(6, again);
    });
    broken(&v, "inserted", &f, 7);

    // A forged record with a correct hash of its own, inserted: its successor no longer links.
    let (v, _d, f, _) = tamper(src, |l| {
        let prev: serde_json::Value = serde_json::from_str(&l[4]).unwrap();
        let prev_hash = audit::chain::Hash::parse(prev["hash"].as_str().unwrap()).unwrap();
        let mut forged: serde_json::Value = serde_json::from_str(&l[5]).unwrap();
        forged.as_object_mut().unwrap().remove("hash");
        forged["host"] = "innocent.example".into();
        forged["prev_hash"] = prev_hash.to_string().into();
        let mut bytes = serde_json::to_vec(&forged).unwrap();
        audit::chain::seal(&mut bytes, &prev_hash);
        l.insert(5, String::from_utf8(bytes).unwrap());
    });
    broken(&v, "inserted", &f, 7);

    // A rotated file cut short: its last records and its footer are gone.
    let (v, _d, _, next) = tamper(src, |l| l.truncate(l.len() - 3));
    broken(&v, "truncated", &next, 1);

    // Records cut from the end of a rotated file, footer kept.
    let mut n = 0;
    let (v, _d, f, _) = tamper(src, |l| {
        let footer = l.pop().unwrap();
        l.pop();
        l.push(footer);
        n = l.len() as u64;
    });
    broken(&v, "missing", &f, n);

    // An edited file header.
    let (v, _d, f, _) = tamper(src, |l| l[0] = l[0].replacen("\"ts\":\"2", "\"ts\":\"1", 1));
    broken(&v, "changed", &f, 1);

    // A whole file missing in the middle.
    let d = copy(src);
    let f = middle(d.path());
    let next = common::files(d.path())
        .into_iter()
        .skip_while(|x| *x != f)
        .nth(1)
        .unwrap();
    std::fs::remove_file(&f).unwrap();
    broken(
        &verify(&common::files(d.path())).unwrap(),
        "missing_file",
        &next,
        1,
    );
}

#[tokio::test]
async fn a_torn_final_line_is_reported_and_is_not_tampering() {
    let dir = log().await;
    let files = common::files(dir.path());
    let live = files.iter().find(|f| f.ends_with("audit.jsonl")).unwrap();
    let mut text = std::fs::read_to_string(live).unwrap();
    text.push_str("{\"ts\":\"2026-03-01T12:00:06.000000000Z\",\"id\":\"ab");
    std::fs::write(live, text).unwrap();
    let v = verify(&files).unwrap();
    assert!(v.problem.is_none(), "{:?}", v.problem);
    assert_eq!(v.records, 600);
    assert!(
        v.notes.iter().any(|n| n.contains("torn final line")),
        "{:?}",
        v.notes
    );

    // After a restart the torn line is closed off and stays visible, still not tampering.
    common::write(dir.path(), 0, 600, 610, Some(16 * 1024)).await;
    let v = verify(&common::files(dir.path())).unwrap();
    assert!(v.problem.is_none(), "{:?}", v.problem);
    assert_eq!(v.records, 610);
    assert!(
        v.notes.iter().any(|n| n.contains("closed off")),
        "{:?}",
        v.notes
    );
}

#[tokio::test]
async fn a_file_that_is_not_an_audit_log_is_named() {
    let dir = log().await;
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, "hello\n").unwrap();
    let mut files = common::files(dir.path());
    files.push(other.clone());
    broken(&verify(&files).unwrap(), "not_audit", &other, 1);
}
