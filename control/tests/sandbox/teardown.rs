//! After a normal exit, SIGTERM, or `kill -9` of `centaur` followed by `centaur sandbox gc`,
//! nothing of the run remains: namespace, veth, nftables table, cgroup, address slot, run
//! directory, processes.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use crate::harness::{Sandboxed, root_or_skip};

/// What of run `id` still exists.
fn remains(id: &str) -> Vec<String> {
    let mut left = Vec::new();
    let paths = [
        format!("/run/netns/centaur-{id}"),
        format!("/sys/class/net/cs{id}"),
        format!("/run/centaur/sandbox/{id}"),
        format!("/sys/fs/cgroup/pids/centaur/{id}"),
        format!("/sys/fs/cgroup/memory/centaur/{id}"),
        format!("/sys/fs/cgroup/centaur/{id}"),
    ];
    left.extend(paths.into_iter().filter(|p| Path::new(p).exists()));
    let table = std::process::Command::new("nft")
        .args(["list", "table", "inet", &format!("centaur_{id}")])
        .output();
    if table.is_ok_and(|t| t.status.success()) {
        left.push(format!("nftables table centaur_{id}"));
    }
    if let Ok(slots) = std::fs::read_dir("/run/centaur/sandbox/slots") {
        for s in slots.flatten() {
            if std::fs::read_link(s.path()).is_ok_and(|t| t == Path::new(id)) {
                left.push(format!("slot {}", s.path().display()));
            }
        }
    }
    left
}

#[tokio::test(flavor = "multi_thread")]
async fn a_normal_exit_leaves_nothing() {
    if !root_or_skip("a_normal_exit_leaves_nothing") {
        return;
    }
    let s = Sandboxed::new().await;
    let out = s.run(&[], "sleep 1 & echo started").await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.id.is_empty());
    assert_eq!(remains(&out.id), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_command_and_removes_everything() {
    if !root_or_skip("sigterm_stops_the_command_and_removes_everything") {
        return;
    }
    let s = Sandboxed::new().await;
    let run = s
        .spawn(
            &[],
            "trap 'echo got-term >&2; exit 3' TERM; echo ready; sleep 60 & wait",
        )
        .await;
    let id = run.id.clone();
    assert!(
        !remains(&id).is_empty(),
        "the run has resources while it runs"
    );
    let (code, _, stderr) = run.stop().await;
    assert_eq!(
        code, 3,
        "the command's own exit status after its TERM handler"
    );
    assert!(stderr.contains("got-term"), "{stderr}");
    assert!(
        stderr.contains(&format!("centaur: sandbox {id} exited with 3")),
        "{stderr}"
    );
    assert_eq!(remains(&id), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_then_gc_leaves_nothing() {
    if !root_or_skip("kill_9_then_gc_leaves_nothing") {
        return;
    }
    let s = Sandboxed::new().await;
    let mut run = s.spawn(&[], "echo ready; exec sleep 60").await;
    let id = run.id.clone();
    run.signal("KILL");
    let _ = run.child.wait().await;
    // The sandboxed process dies with its parent; the resources stay behind.
    let pids = format!("/sys/fs/cgroup/pids/centaur/{id}/cgroup.procs");
    for _ in 0..100 {
        if std::fs::read_to_string(&pids).map_or(true, |p| p.trim().is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = remains(&id);
    assert!(
        left.iter().any(|r| r.contains("netns")) && left.iter().any(|r| r.contains("nftables")),
        "{left:?}"
    );
    let ls = std::process::Command::new(env!("CARGO_BIN_EXE_centaur"))
        .args(["sandbox", "ls"])
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.lines().any(|l| l.starts_with(&id) && l.contains("gone")),
        "{ls}"
    );
    let gc = std::process::Command::new(env!("CARGO_BIN_EXE_centaur"))
        .args(["sandbox", "gc"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&gc.stdout);
    assert!(gc.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{id}: removed"))),
        "{text}"
    );
    assert_eq!(remains(&id), Vec::<String>::new());
}

/// `gc` (which every server runs on its reaper's round) and a sandbox being made by another
/// process at that moment: a run directory whose owner file is not written yet is left
/// alone; one left so by a maker that died is removed once it is a minute old. Before, gc
/// removed it at once, and the other process's new sandbox failed ("owner: No such file or
/// directory", seen in CI).
#[test]
fn gc_leaves_a_run_directory_being_made_and_removes_an_abandoned_one() {
    if !root_or_skip("gc_leaves_a_run_directory_being_made") {
        return;
    }
    let gc = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_centaur"))
            .args(["sandbox", "gc"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    std::fs::create_dir_all("/run/centaur/sandbox").unwrap();
    let dir = Path::new("/run/centaur/sandbox").join(format!(".{:08x}.new", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    gc();
    assert!(dir.exists(), "a directory being made was removed");
    // A minute later with still no owner: its maker died before writing it.
    let old = std::time::SystemTime::now() - Duration::from_secs(120);
    std::fs::File::open(&dir)
        .unwrap()
        .set_modified(old)
        .unwrap();
    gc();
    assert!(!dir.exists(), "an abandoned one stayed");
}
