//! Tools through a real server: the shipped github and http_fetch tools against a fake of
//! their origins, an author's tools beside them, driven with Python `requests`
//! (tools_client.py); then the credential boundary scanned for a canary token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::{self, Setup};

/// The real GitHub token: it must reach the fake GitHub and nothing the tool can see.
pub const CANARY: &str = "ghp_CANARYrealTOKEN0123456789abcdef";

/// An author's tools: `probe` (concurrency, hangs, crashes, context), `broken` (a syntax
/// error) and `needs_secret` (a required secret without a value).
fn author_tools(dir: &Path) {
    let write = |p: &str, text: &str| {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "probe/pyproject.toml",
        "[tool.centaur]\ndescription = 'A probe.'\nmodule = 'probe'\ntimeout_s = 2\nhosts = ['api.github.com']\nsecrets = [{name = 'GITHUB_TOKEN', header = 'Authorization'}]\n",
    );
    write(
        "probe/probe.py",
        r#"import json
import os
import threading
import time
import urllib.request

from centaur_sdk import current_session_context, secret

BARRIERS = {}
LOCK = threading.Lock()


class Client:
    def meet(self, n: int) -> str:
        """Returns once n calls are here at the same time."""
        with LOCK:
            barrier = BARRIERS.setdefault(n, threading.Barrier(n))
        barrier.wait(timeout=10)
        return "met"

    def hang(self) -> None:
        """Never answers in time."""
        time.sleep(60)

    def crash(self) -> None:
        """Kills its worker."""
        os._exit(3)

    def echo(self, text: str) -> str:
        """Says it back."""
        return text

    def context(self) -> dict:
        """What the SDK knows of the call."""
        return current_session_context()

    def replaced(self) -> dict:
        """Calls GitHub with the placeholder secret() gives; the gateway swaps in the token."""
        held = secret("GITHUB_TOKEN")
        req = urllib.request.Request(
            "https://api.github.com/search/issues?q=probe",
            headers={"Authorization": f"Bearer {held}"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            found = json.loads(r.read())
        return {"held": held, "title": found["items"][0]["title"]}
"#,
    );
    write(
        "broken/pyproject.toml",
        "[tool.centaur]\nmodule = 'broken'\n",
    );
    write("broken/broken.py", "class Client:\n    def oops(self)\n");
    write(
        "needs_secret/pyproject.toml",
        "[tool.centaur]\nmodule = 'x'\nhosts = ['api.needs.test']\nsecrets = ['NEEDED_KEY']\n",
    );
}

/// The fake GitHub and web page behind the tools' gateways.
pub struct Origins {
    dir: tempfile::TempDir,
    port: u64,
    _child: tokio::process::Child,
}

impl Origins {
    pub async fn start() -> Origins {
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(harness::python())
            .arg(harness::repo().join("control/tests/fakes/github.py"))
            .arg(dir.path())
            .arg(CANARY)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let first = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .next_line()
            .await
            .unwrap()
            .unwrap();
        let port = serde_json::from_str::<Value>(&first).unwrap()["port"]
            .as_u64()
            .unwrap();
        Origins {
            dir,
            port,
            _child: child,
        }
    }

    /// `tools.env` (the canary token) and `tools-base.yaml` (the fake's names pinned, its CA
    /// trusted) in the server's config folder.
    pub fn write_files(&self, d: &Path) {
        std::fs::write(d.join("tools.env"), format!("GITHUB_TOKEN={CANARY}\n")).unwrap();
        std::fs::write(
            d.join("tools-base.yaml"),
            format!(
                "proxy:\n  upstream_allow_cidrs: [127.0.0.1/32]\nupstream:\n  hosts: {{api.github.com: '127.0.0.1:{p}', example.com: '127.0.0.1:{p}'}}\n  ca_files: ['{}/ca.pem']\n",
                self.dir.path().display(),
                p = self.port
            ),
        )
        .unwrap();
    }
}

/// Every file under `dir` that contains `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// The environments of the running tool workers, by tool name.
fn worker_environments() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let env = String::from_utf8_lossy(&env).replace('\0', "\n");
        if let Some(name) = env
            .lines()
            .find_map(|l| l.strip_prefix("CENTAUR_TOOL_NAME="))
        {
            out.push((name.to_string(), env.clone()));
        }
    }
    out
}

/// Invariant 1 (no real credential in a sandbox) for tools, and the tools API end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_serve_agents_and_never_hold_a_real_credential() {
    if !harness::root_or_skip("tools_serve_agents_and_never_hold_a_real_credential") {
        return;
    }
    let rig = Origins::start().await;
    let setup = Setup::new(
        &[("unused", "[\"true\"]")],
        &format!(
            "tools:\n  dirs: ['{}', author]\n  secrets_from: tools.env\n  base_policy: tools-base.yaml\n",
            harness::repo().join("tools").display()
        ),
    );
    let d = setup.dir.path();
    let author = d.join("author");
    author_tools(&author);
    harness::chmod(&author, 0o755);
    rig.write_files(d);
    let all = setup.key("all-tools", "tools:*");
    let github = setup.key("github-only", "tools:github");
    let agent = setup.key("agent-only", "agent");
    let server = setup.start().await;
    let run = tokio::process::Command::new(harness::python())
        .arg(harness::repo().join("control/tests/server/tools_client.py"))
        .args([&server.base, &all, &github, &agent])
        .arg(&author)
        .arg(harness::repo())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .unwrap_or_else(|_| panic!("tools_client.py hung; server log:\n{}", server.log()))
        .unwrap();
    assert!(
        out.status.success(),
        "tools_client.py failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));

    // The tool workers' environments hold placeholders, never the token.
    let envs = worker_environments();
    let gh: Vec<&String> = envs
        .iter()
        .filter(|(n, _)| n == "github")
        .map(|(_, e)| e)
        .collect();
    assert!(!gh.is_empty(), "the github worker runs: {envs:?}");
    for e in &gh {
        assert!(
            e.contains("GITHUB_TOKEN=centaur-injected-by-gateway"),
            "{e}"
        );
    }
    for (name, e) in &envs {
        assert!(
            !e.contains(CANARY),
            "tool {name}'s environment holds the real token"
        );
    }
    // The real token reached the fake GitHub, on every request the tool made to it.
    let requests = std::fs::read_to_string(rig.dir.path().join("requests.jsonl")).unwrap();
    let to_github: Vec<Value> = requests
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["host"] == "api.github.com")
        .collect();
    assert!(to_github.len() >= 5, "{requests}");
    for r in &to_github {
        assert_eq!(r["authorization"], format!("Bearer {CANARY}"), "{r}");
    }
    // http_fetch's gateway refused api.github.com, and said so in its audit log.
    let audit = std::fs::read_to_string(setup.data().join("audit/tool-http_fetch.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("api.github.com") && l.contains("\"reject\"")),
        "{audit}"
    );
    let log = server.log();
    assert_eq!(server.stop().await, 0, "{log}");
    // Nothing the tools or the server kept holds the token: files (workdirs, audit logs,
    // the store, the SDK), the author's folder, the server's log (the workers' stderr).
    assert_eq!(
        files_containing(&setup.data(), CANARY.as_bytes()),
        Vec::<String>::new()
    );
    assert_eq!(
        files_containing(&author, CANARY.as_bytes()),
        Vec::<String>::new()
    );
    assert!(!log.contains(CANARY), "the server log holds the token");
    assert!(
        log.contains("tool broken: skipped") && log.contains("SyntaxError"),
        "{log}"
    );
    // The shutdown stopped this server's workers (other tests' servers may run their own).
    assert!(
        !worker_environments().iter().any(|(n, _)| n == "probe"),
        "tool workers outlived the server"
    );
}

/// Waits until the server has loaded github and http_fetch.
async fn both_ready(server: &crate::harness::Server) {
    for _ in 0..300 {
        let log = server.log();
        if log.contains("tool github: ready") && log.contains("tool http_fetch: ready") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the tools never loaded: {}", server.log());
}

/// A server killed with `kill -9` leaves its tool workers' sandboxes (their owner is gone);
/// the next server removes them before it starts its own, and serves the tools again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_servers_tool_sandboxes_are_removed_by_the_next() {
    if !harness::root_or_skip("a_killed_servers_tool_sandboxes_are_removed_by_the_next") {
        return;
    }
    let rig = Origins::start().await;
    let setup = Setup::new(
        &[("unused", "[\"true\"]")],
        &format!(
            "tools:\n  dirs: ['{}']\n  secrets_from: tools.env\n  base_policy: tools-base.yaml\n",
            harness::repo().join("tools").display()
        ),
    );
    rig.write_files(setup.dir.path());
    let key = setup.key("tools", "tools:*");
    let server = setup.start().await;
    both_ready(&server).await;
    server.kill9().await;
    // The workers read the end of their stdin and exit; their sandboxes stay, ownerless.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let orphans: Vec<String> = sandbox::local::runs()
        .into_iter()
        .filter(|r| !r.alive)
        .map(|r| r.id)
        .collect();
    assert!(
        orphans.len() >= 2,
        "the two workers' sandboxes: {orphans:?}"
    );
    let server = setup.start().await;
    both_ready(&server).await;
    let left: Vec<String> = sandbox::local::runs().into_iter().map(|r| r.id).collect();
    for id in &orphans {
        assert!(
            !left.contains(id),
            "sandbox {id} outlived its server's restart"
        );
    }
    let out = crate::calls::call(
        &server,
        &key,
        "POST",
        "/tools/github/search_issues",
        Some(serde_json::json!({"query": "again"})),
    )
    .await;
    assert_eq!(out["result"][0]["title"], "found: again is:issue", "{out}");
    assert_eq!(server.stop().await, 0);
}
