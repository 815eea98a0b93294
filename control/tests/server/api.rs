//! The API through a real listener, with clients nobody here wrote: Python httpx, httpx-sse
//! and requests (client.py), and `curl -N`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness::{self, Setup};

fn counting() -> Setup {
    Setup::new(
        &[(
            "counting",
            "[python3, /run/centaur/test-agents/counting.py]",
        )],
        "limits:\n  max_body: 1MiB\n",
    )
}

/// Invariant 7 (durable before acknowledged) as a client sees it: idempotent writes, event
/// replay from any id by query or `Last-Event-ID`, terminal states; bad input refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_drive_the_whole_api() {
    if !harness::root_or_skip("python_clients_drive_the_whole_api") {
        return;
    }
    let setup = counting();
    let key = setup.key("tester", "agent");
    let weak = setup.key("weak", "tools:search");
    let server = setup.start().await;
    let run = tokio::process::Command::new(harness::python())
        .arg(harness::repo().join("control/tests/server/client.py"))
        .args([&server.base, &key, &weak])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), run)
        .await
        .unwrap_or_else(|_| panic!("client.py hung; server log:\n{}", server.log()))
        .unwrap();
    let log = server.log();
    let modes = file_modes(&setup.data());
    harness::stop_sandboxes(&setup.data()).await;
    assert!(
        out.status.success(),
        "client.py failed:\n{}\n{}\nserver log:\n{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
    // Invariant 3's neighbour: what the server keeps is root's alone; the sandbox user can
    // traverse to its workdir and list nothing.
    for (path, mode) in modes {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let want = match name.as_str() {
            "data" | "sandboxes" | "threads" => 0o711,
            n if n.starts_with("rt_") => 0o711,
            // A thread's directory (a hash of its key).
            n if n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()) => 0o711,
            "work" | "home" => 0o700,
            "centaur.db" | "spool" | "turns" | "spec.json" | "supervisor.log" => 0o600,
            _ => continue,
        };
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
    }
}

/// The mode of every file and directory under the data directory (two levels into sandboxes
/// and threads).
fn file_modes(data: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = vec![
        data.to_path_buf(),
        data.join("centaur.db"),
        data.join("sandboxes"),
        data.join("threads"),
    ];
    for parent in ["sandboxes", "threads"] {
        for rt in std::fs::read_dir(data.join(parent)).unwrap().flatten() {
            out.push(rt.path());
            for f in std::fs::read_dir(rt.path()).unwrap().flatten() {
                out.push(f.path());
            }
        }
    }
    out.into_iter()
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?.permissions().mode() & 0o7777;
            Some((p, m))
        })
        .collect()
}

/// `curl -N` follows an execution's events live and the stream ends at its terminal state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_follows_an_execution_to_its_end() {
    if !harness::root_or_skip("curl_follows_an_execution_to_its_end") {
        return;
    }
    let setup = counting();
    let key = setup.key("tester", "agent");
    let server = setup.start().await;
    let auth = format!("Authorization: Bearer {key}");
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-X",
            "POST",
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
        ])
        .args([
            "-d",
            r#"{"thread_key":"curl:1","message":"steps=4 pause=0.1 hello"}"#,
        ])
        .arg(format!("{}/agent/execute", server.base))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let exe = v["execution_id"].as_str().unwrap().to_string();
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new("curl")
        .args(["-sSN", "--max-time", "60", "-H", &auth])
        .arg(format!(
            "{}/agent/threads/curl:1/events?execution_id={exe}",
            server.base
        ))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    harness::stop_sandboxes(&setup.data()).await;
    assert!(out.status.success(), "{text}");
    assert!(
        started.elapsed().as_secs() < 30,
        "the stream ended by itself"
    );
    let frames: Vec<&str> = text
        .split("\n\n")
        .filter(|f| f.starts_with("id: "))
        .collect();
    assert!(
        frames.len() >= 8,
        "queued, running, init, 4 steps, result, completed: {text}"
    );
    assert!(frames.last().unwrap().contains("event: execution_state"));
    assert!(frames.last().unwrap().contains("\"status\":\"completed\""));
    let result = frames
        .iter()
        .find(|f| f.contains("\"type\": \"result\""))
        .unwrap();
    assert!(
        result.contains("data: {\"type\": \"result\", \"subtype\": \"success\""),
        "verbatim: {result}"
    );
}
