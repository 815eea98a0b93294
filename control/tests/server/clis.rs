//! Real agent CLIs (Claude Code, Codex, pi, installed by scripts/install-deps into .node) as
//! harnesses of `centaur server`, each in its thread's sandbox, against the fake model API
//! (`tests/fakes/models.py`) reached only through the sandbox's gateway. Invariant 1 (the
//! sandbox never holds a real credential): the fake sees the real key, while the sandbox's
//! environment, its files and every event hold only the placeholder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::calls::{agent_events, call, events, execute, turn, wait_end};
use crate::harness::{self, Setup};

const REAL_KEY: &str = "sk-real-0b7e51c4d2a9";
const PLACEHOLDER: &str = "sk-placeholder-centaur";

/// The fake model API on the host, reached as `model.test`.
pub struct Models {
    dir: tempfile::TempDir,
    port: u16,
    _child: Child,
}

impl Models {
    pub async fn start() -> Models {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(harness::python())
            .arg(harness::repo().join("control/tests/fakes/models.py"))
            .arg(dir.path())
            .arg(REAL_KEY)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next_line().await.unwrap().unwrap_or_default();
        let v: Value = serde_json::from_str(&first).unwrap();
        Models {
            port: v["port"].as_u64().unwrap() as u16,
            dir,
            _child: child,
        }
    }

    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// The gateway policy: only model.test, where the placeholders become the real key.
fn policy(m: &Models) -> String {
    format!(
        "proxy:\n  upstream_allow_cidrs: [127.0.0.1/32]
upstream:\n  hosts: {{model.test: '127.0.0.1:{port}'}}\n  ca_files: [{d}/ca.pem]
transforms:
  - name: allowlist
    config: {{domains: [model.test]}}
  - name: secrets
    config:
      secrets:
        - source: {{type: env, var: ANTHROPIC_API_KEY}}
          rules: [{{host: model.test}}]
          replace: {{proxy_value: {PLACEHOLDER}, match_headers: [x-api-key]}}
        - source: {{type: env, var: OPENAI_API_KEY}}
          rules: [{{host: model.test}}]
          replace: {{proxy_value: {PLACEHOLDER}, match_headers: [Authorization]}}
",
        port = m.port,
        d = m.dir.path().display()
    )
}

/// A server config with the three CLIs (from .node, mounted at /run/centaur/cli).
pub fn setup(m: &Models, extra: &str) -> Setup {
    let node = harness::repo().join(".node");
    assert!(
        node.join("node_modules/.bin/claude").exists(),
        "run scripts/install-deps first (no .node/node_modules/.bin/claude)"
    );
    let s = Setup::new(&[("unused", "[\"true\"]")], "");
    let d = s.dir.path();
    std::fs::write(d.join("policy.yaml"), policy(m)).unwrap();
    std::fs::write(
        d.join("secrets.env"),
        format!("ANTHROPIC_API_KEY={REAL_KEY}\nOPENAI_API_KEY={REAL_KEY}\n"),
    )
    .unwrap();
    std::fs::write(
        d.join("pi-models.json"),
        json!({"providers": {"fake": {
            "baseUrl": "https://model.test/v1", "api": "openai-completions",
            "apiKey": "OPENAI_API_KEY",
            "compat": {"supportsDeveloperRole": false, "supportsReasoningEffort": false},
            "models": [{"id": "fake-model", "name": "Fake", "contextWindow": 128000, "maxTokens": 4096}],
        }}})
        .to_string(),
    )
    .unwrap();
    let bin = "/run/centaur/cli/node_modules/.bin";
    let yaml = format!(
        r#"sandbox:
  policy: policy.yaml
  secrets_from: secrets.env
  mounts: ['{node}:/run/centaur/cli']
  memory: 2GiB
harnesses:
  claude:
    kind: claude-code
    command: ["{bin}/claude"]
    env: {{ANTHROPIC_BASE_URL: "https://model.test"}}
  codex:
    kind: codex
    command: ["{bin}/codex"]
    args: ["-m", "fake-model"]
    env: {{OPENAI_BASE_URL: "https://model.test/v1"}}
  claude-chatty:
    kind: claude-code
    command: ["{bin}/claude"]
    env: {{ANTHROPIC_BASE_URL: "https://model.test", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: ""}}
  pi:
    kind: pi
    command: ["{bin}/pi"]
    args: ["--provider", "fake", "--model", "fake-model"]
    home_files: {{".pi/agent/models.json": "pi-models.json"}}
default_harness: claude
{extra}"#,
        node = node.display()
    );
    std::fs::write(&s.config, yaml).unwrap();
    s
}

/// Every file under `dir` (recursively) that holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file()
                && std::fs::read(e.path())
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                found.push(e.path());
            }
        }
    }
    found
}

/// Every audit record of the data directory's sandboxes.
fn audit_records(data: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(data.join("audit")).unwrap().flatten() {
        let text = std::fs::read_to_string(f.path()).unwrap_or_default();
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v.get("host").is_some()),
        );
    }
    out
}

/// Kills every supervisor of the data directory (`kill -9`): the thread's sandboxes are gone.
async fn kill_sandboxes(data: &Path) {
    for e in std::fs::read_dir(data.join("sandboxes"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(pid) = std::fs::read_to_string(e.path().join("pid")) {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid.trim()])
                .status();
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = tokio::task::spawn_blocking(sandbox::local::gc).await;
}

async fn two_turns(name: &str) {
    if !harness::root_or_skip(name) {
        return;
    }
    let models = Models::start().await;
    let setup = setup(&models, "");
    let key = setup.key("tester", "agent");
    let server = setup.start().await;
    let thread = format!("cli:{name}");
    let which = name.split('_').next().unwrap();

    // Turn 1: a shell command in the workspace, through the model's tool call.
    let e1 = turn(
        &server,
        &key,
        &thread,
        which,
        &format!("RUN:echo made-by-{which} > note.txt && env > env.txt && cat note.txt"),
    )
    .await;
    assert_eq!(e1["status"], "completed", "{e1}\n{}", server.log());
    assert_eq!(e1["result_text"], format!("DONE:made-by-{which}"), "{e1}");
    assert!(e1["agent_thread_id"].is_string(), "{e1}");
    let work = std::fs::read_dir(setup.data().join("threads"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let note = std::fs::read_to_string(work.join("work/note.txt")).unwrap();
    assert_eq!(
        note.trim(),
        format!("made-by-{which}"),
        "the command really ran"
    );
    let env = std::fs::read_to_string(work.join("work/env.txt")).unwrap();
    assert!(env.contains(PLACEHOLDER), "{env}");

    // The sandbox goes (kill -9 of its supervisor): turn 2 runs in a new one, resuming.
    kill_sandboxes(&setup.data()).await;
    let e2 = turn(&server, &key, &thread, which, "SAY:second answer").await;
    assert_eq!(e2["status"], "completed", "{e2}\n{}", server.log());
    assert_eq!(e2["result_text"], "second answer");
    assert_eq!(
        e2["agent_thread_id"], e1["agent_thread_id"],
        "the same session"
    );

    // The canonical stream: the tool call, its result, the answer.
    let all = events(&server, &key, &thread, None).await;
    let ev1 = agent_events(&events(&server, &key, &thread, e1["execution_id"].as_str()).await);
    let tool_use = ev1.iter().any(|e| {
        e["type"] == "assistant"
            && e["message"]["content"]
                .as_array()
                .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_use"))
    });
    let tool_result = ev1.iter().any(|e| {
        (e["type"] == "tool" && e.to_string().contains("made-by-"))
            || (e["type"] == "command_execution"
                && e["aggregated_output"]
                    .as_str()
                    .unwrap_or("")
                    .contains("made-by-"))
    });
    assert!(tool_use || which == "codex", "a tool_use: {ev1:#?}");
    assert!(tool_result, "the tool's result: {ev1:#?}");
    assert!(
        ev1.iter()
            .any(|e| e["type"] == "system" && e["subtype"] == "init")
            || which == "pi",
        "system init: {ev1:#?}"
    );
    assert!(ev1.iter().any(|e| e["type"] == "usage"), "{ev1:#?}");
    assert!(all.iter().any(|(k, _, _)| k == "output"));

    // Turn 2's model request carried turn 1's history; turn 1's, the platform's message.
    let reqs = models.requests();
    assert!(
        reqs[0].to_string().contains("(platform: cli)"),
        "{}",
        reqs[0]
    );
    let last = reqs.last().unwrap().to_string();
    assert!(last.contains("made-by-"), "turn 2 saw turn 1: {last}");
    // The fake saw the real key on every model call, never the placeholder.
    for r in &reqs {
        let auth = format!("{} {}", r["x-api-key"], r["authorization"]);
        assert!(auth.contains(REAL_KEY), "{auth}");
        assert!(!auth.contains(PLACEHOLDER), "{auth}");
    }
    // No side traffic: every request the gateway saw went to the model API (or, Claude Code,
    // to the control plane's MCP server the harness registers), allowed. A CLI may hang up on
    // a streamed answer once it has read what it needs (Codex did, once, on a busy CI
    // machine): that request was allowed and answered 200, and is recorded `client_cancel`.
    let audit = audit_records(&setup.data());
    assert!(!audit.is_empty());
    for r in &audit {
        let ours = r["host"] == "centaur.internal" && r["path"] == "/mcp";
        assert!(r["host"] == "model.test" || ours, "{r}");
        match r["action"].as_str() {
            Some("allow") => {}
            Some("client_cancel") => assert_eq!(r["status_code"], 200, "{r}"),
            _ => panic!("not allowed: {r}"),
        }
    }
    // Nothing the sandbox holds or the events carry has the real key.
    assert!(files_holding(&work, REAL_KEY).is_empty());
    for (_, _, raw) in &all {
        assert!(
            !raw.contains(REAL_KEY),
            "an event holds the real key: {raw}"
        );
    }
    harness::stop_sandboxes(&setup.data()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_two_turns_across_a_sandbox_restart() {
    two_turns("claude_code_two_turns_across_a_sandbox_restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_two_turns_across_a_sandbox_restart() {
    two_turns("codex_two_turns_across_a_sandbox_restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pi_two_turns_across_a_sandbox_restart() {
    two_turns("pi_two_turns_across_a_sandbox_restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_is_replayed_from_the_transcript() {
    if !harness::root_or_skip("a_lost_session_is_replayed_from_the_transcript") {
        return;
    }
    let models = Models::start().await;
    let setup = setup(&models, "");
    let key = setup.key("tester", "agent");
    let server = setup.start().await;
    let e1 = turn(
        &server,
        &key,
        "cli:lost",
        "claude",
        "RUN:echo lost-and-found",
    )
    .await;
    assert_eq!(e1["result_text"], "DONE:lost-and-found", "{e1}");
    // The sandbox goes, and with it the thread's home (its session files).
    kill_sandboxes(&setup.data()).await;
    for t in std::fs::read_dir(setup.data().join("threads"))
        .unwrap()
        .flatten()
    {
        std::fs::remove_dir_all(t.path().join("home/.claude")).unwrap();
    }
    let e2 = turn(&server, &key, "cli:lost", "claude", "SAY:still here").await;
    assert_eq!(e2["result_text"], "still here", "{e2}\n{}", server.log());
    assert_ne!(
        e2["agent_thread_id"], e1["agent_thread_id"],
        "a new session"
    );
    let last = models.requests().last().unwrap().to_string();
    assert!(last.contains("could not be resumed"), "{last}");
    assert!(
        last.contains("DONE:lost-and-found"),
        "turn 1's answer replayed: {last}"
    );
    assert!(
        last.contains("RUN:echo lost-and-found"),
        "turn 1's prompt replayed: {last}"
    );
    harness::stop_sandboxes(&setup.data()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_retried_once_on_a_fresh_sandbox() {
    if !harness::root_or_skip("a_refused_key_is_retried_once_on_a_fresh_sandbox") {
        return;
    }
    let models = Models::start().await;
    let setup = setup(&models, "");
    std::fs::write(
        setup.dir.path().join("secrets.env"),
        "ANTHROPIC_API_KEY=sk-revoked\nOPENAI_API_KEY=sk-revoked\n",
    )
    .unwrap();
    let key = setup.key("tester", "agent");
    let server = setup.start().await;
    let e = turn(&server, &key, "cli:revoked", "claude", "SAY:hello").await;
    assert_eq!(e["terminal_reason"], "harness_auth_failed", "{e}");
    assert!(e["error_text"].as_str().unwrap().contains("401"), "{e}");
    assert!(server.log().contains("retrying once on a fresh sandbox"));
    // Two sandboxes ran the turn: one audit log each.
    let audits = std::fs::read_dir(setup.data().join("audit"))
        .unwrap()
        .count();
    assert_eq!(audits, 2, "{}", server.log());
    harness::stop_sandboxes(&setup.data()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_interrupts_the_cli_and_its_sandbox_and_session_stay() {
    if !harness::root_or_skip("a_cancel_interrupts_the_cli") {
        return;
    }
    let models = Models::start().await;
    let setup = setup(&models, "");
    let key = setup.key("tester", "agent");
    let server = setup.start().await;
    for (n, which) in ["pi", "codex", "claude"].into_iter().enumerate() {
        let thread = format!("cancel:{which}");
        let first = turn(&server, &key, &thread, which, "SAY:before").await;
        assert_eq!(first["result_text"], "before", "{first}");
        // A turn whose model call never answers, cancelled once the model was asked.
        let asked = models.requests().len();
        let body = json!({"thread_key": thread, "harness": which, "message": "HANG"});
        let id = execute(&server, &key, body).await;
        for _ in 0..300 {
            if models.requests().len() > asked {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            models.requests().len() > asked,
            "{which} never asked the model"
        );
        let r = call(
            &server,
            &key,
            "POST",
            &format!("/agent/executions/{id}/cancel"),
            None,
        )
        .await;
        assert_eq!(r["ok"], true, "{r}");
        let e = wait_end(&server, &key, &thread, &id).await;
        assert_eq!(e["status"], "cancelled", "{which}: {e}");
        let after = turn(&server, &key, &thread, which, "SAY:after").await;
        assert_eq!(after["result_text"], "after", "{which}: {after}");
        assert_eq!(
            after["agent_thread_id"], first["agent_thread_id"],
            "{which}: same session"
        );
        // Interrupted, not stopped: one sandbox ran the thread (one audit log each).
        let audits = std::fs::read_dir(setup.data().join("audit"))
            .unwrap()
            .count();
        if audits != n + 1 {
            let all = events(&server, &key, &thread, None).await;
            let raw: Vec<&String> = all.iter().map(|(_, _, r)| r).collect();
            panic!(
                "{which}: {audits} sandboxes ran: {raw:#?}\n{}",
                server.log()
            );
        }
    }
    // Interrupted, not stopped: one sandbox per thread ran it all (one audit log each).
    let audits = std::fs::read_dir(setup.data().join("audit"))
        .unwrap()
        .count();
    assert_eq!(audits, 3, "{}", server.log());
    harness::stop_sandboxes(&setup.data()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centaur_ask_shows_the_tool_calls_then_the_answer() {
    if !harness::root_or_skip("centaur_ask_shows_the_tool_calls_then_the_answer") {
        return;
    }
    let models = Models::start().await;
    let setup = setup(&models, "");
    let key = setup.key("tester", "agent");
    let server = setup.start().await;
    for which in ["claude", "codex", "pi"] {
        let out = Command::new(harness::CENTAUR)
            .args(["ask", "--server", &server.base, "--harness", which])
            .arg(format!("RUN:echo asked-{which}"))
            .env("CENTAUR_API_KEY", &key)
            .output()
            .await
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{which}: {stdout}\n{stderr}");
        assert_eq!(stdout.trim(), format!("DONE:asked-{which}"), "{stderr}");
        // The tool call, then its result, before the answer.
        let call = stderr
            .find(&format!("echo asked-{which}"))
            .unwrap_or_else(|| panic!("{which}: no tool call shown: {stderr}"));
        let result = stderr[call..]
            .find(&format!("< asked-{which}"))
            .unwrap_or_else(|| panic!("{which}: no tool result shown: {stderr}"));
        assert!(result > 0);
    }
    harness::stop_sandboxes(&setup.data()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_is_a_file_in_the_workspace() {
    if !harness::root_or_skip("an_attachment_is_a_file_in_the_workspace") {
        return;
    }
    let models = Models::start().await;
    let setup = setup(&models, "");
    let key = setup.key("tester", "agent");
    let server = setup.start().await;
    // "attached words\n", base64.
    let doc = json!({"type": "document", "name": "notes.txt",
        "source": {"type": "base64", "media_type": "text/plain", "data": "YXR0YWNoZWQgd29yZHMK"}});
    let parts = json!([{"type": "text", "text": "RUN:cat attachments/1-notes.txt"}, doc]);
    let body = json!({"thread_key": "att:1", "harness": "pi", "message": {"parts": parts}});
    let id = execute(&server, &key, body).await;
    let e = wait_end(&server, &key, "att:1", &id).await;
    assert_eq!(e["result_text"], "DONE:attached words", "{e}");
    // The model was told where the file is.
    let first = models.requests()[0].to_string();
    assert!(
        first.contains("[Attachment: attachments/1-notes.txt"),
        "{first}"
    );
    // Data that is not base64 is refused.
    let bad = json!([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "!!"}}]);
    let r = call(
        &server,
        &key,
        "POST",
        "/agent/execute",
        Some(json!({"thread_key": "att:2", "message": {"parts": bad}})),
    )
    .await;
    assert_eq!(r["code"], "INVALID_FIELD", "{r}");
    harness::stop_sandboxes(&setup.data()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_traffic_left_on_is_refused_and_audited() {
    if !harness::root_or_skip("side_traffic_left_on_is_refused_and_audited") {
        return;
    }
    let models = Models::start().await;
    let setup = setup(&models, "");
    let key = setup.key("tester", "agent");
    let server = setup.start().await;
    // Claude Code with its side calls switched back on (the config overrides the adapter).
    let e = turn(&server, &key, "side:1", "claude-chatty", "SAY:chatty").await;
    assert_eq!(e["result_text"], "chatty", "{e}");
    // Its side calls run beside the turn: give them a few seconds to show up.
    let mut audit = audit_records(&setup.data());
    for _ in 0..50 {
        if audit.iter().any(|r| r["host"] == "api.anthropic.com") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        audit = audit_records(&setup.data());
    }
    let side: Vec<&Value> = audit
        .iter()
        .filter(|r| r["host"] != "model.test" && r["host"] != "centaur.internal")
        .collect();
    assert!(!side.is_empty(), "no side call was seen: {audit:#?}");
    for r in &side {
        assert_ne!(r["action"], "allow", "{r}");
    }
    assert!(
        side.iter().any(|r| r["host"] == "api.anthropic.com"),
        "{side:#?}"
    );
    for r in models.requests() {
        assert!(
            !r["path"].as_str().unwrap_or("").starts_with("/api/"),
            "{r}"
        );
    }
    harness::stop_sandboxes(&setup.data()).await;
}
