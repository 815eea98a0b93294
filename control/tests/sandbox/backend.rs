//! The runner as a library: `LocalBackend` starts a typed `SandboxSpec`, hands back the
//! command's stdin and stdout, reports its status, stops it on request, and says what happened
//! as events, in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::Duration;

use control::runner::local::LocalBackend;
use control::runner::{SandboxBackend, SandboxEvent, SandboxSpec, Status, Stdio, spec};
use sandbox::local::Limits;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::harness::root_or_skip;

/// A spec for `script` under the deny-everything policy, as nobody, in a fresh workdir.
fn spec_for(script: &str, dir: &std::path::Path) -> SandboxSpec {
    let (policy, policy_name) = spec::load_policy(None).unwrap();
    std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    SandboxSpec {
        command: ["sh", "-c", script].map(OsString::from).to_vec(),
        policy,
        policy_name,
        secrets: spec::load_secrets(None).unwrap(),
        uid: 65534,
        gid: 65534,
        workdir: dir.to_path_buf(),
        mounts: vec![],
        env: vec![],
        limits: Limits {
            memory: Some(256 << 20),
            pids: Some(64),
            cpus: None,
        },
        audit: Some(dir.join("audit.jsonl")),
        labels: BTreeMap::from([("test".into(), "backend".into())]),
        stdio: Stdio::Piped,
    }
}

/// Attach, status, stop and the event order of one run.
#[tokio::test(flavor = "multi_thread")]
async fn a_piped_sandbox_answers_on_its_stdio_and_stops_on_request() {
    if !root_or_skip("a_piped_sandbox_answers_on_its_stdio_and_stops_on_request") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = "while read line; do echo \"got $line\"; done";
    let mut running = LocalBackend
        .start(spec_for(script, dir.path()))
        .await
        .unwrap();
    let mut stdin = running.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::new(running.stdout.take().expect("piped stdout")).lines();
    stdin.write_all(b"turn one\n").await.unwrap();
    let line = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
        .await
        .expect("no answer on stdout")
        .unwrap();
    assert_eq!(line.as_deref(), Some("got turn one"));
    assert_eq!(running.status(), Status::Running);
    running.stopper().stop(Duration::ZERO);
    let mut events = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(30), running.events.recv())
        .await
        .expect("the run did not end after a stop")
    {
        events.push(e);
    }
    let code = running.wait().await.unwrap();
    assert_ne!(code, 0, "a stopped command does not exit 0");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            SandboxEvent::Warning(_) => "warning",
            SandboxEvent::Started { .. } => "started",
            SandboxEvent::Exited { .. } => "exited",
            SandboxEvent::Removed { .. } => "removed",
        })
        .filter(|k| *k != "warning")
        .collect();
    assert_eq!(kinds, ["started", "exited", "removed"], "{events:#?}");
    let SandboxEvent::Removed { id, removed } = events.last().unwrap() else {
        unreachable!()
    };
    assert!(!removed.is_empty(), "nothing was removed");
    assert!(
        !std::path::Path::new("/run/centaur/sandbox")
            .join(id)
            .exists(),
        "the run directory outlived the run"
    );
}

/// A command that cannot start still removes its sandbox, and says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_cannot_start_leaves_nothing_behind() {
    if !root_or_skip("a_command_that_cannot_start_leaves_nothing_behind") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec_for("true", dir.path());
    spec.command = vec![OsString::from("/nonexistent/agent")];
    let mut running = LocalBackend.start(spec).await.unwrap();
    let mut removed = None;
    while let Some(e) = running.events.recv().await {
        if let SandboxEvent::Removed { id, .. } = e {
            removed = Some(id);
        }
    }
    let code = running.wait().await.unwrap();
    assert_eq!(
        code, 1,
        "bwrap reports a command it cannot exec with status 1"
    );
    let id = removed.expect("no Removed event");
    assert!(
        !std::path::Path::new("/run/centaur/sandbox")
            .join(id)
            .exists()
    );
}
