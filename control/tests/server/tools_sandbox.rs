//! Tools from inside a thread's sandbox: `centaur-tool` and the MCP SDK's client reach the
//! control plane at `http://centaur.internal` through the sandbox's own gateway, which adds
//! the thread's token; the sandbox never holds it, and it dies with the sandbox.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::calls::{call, events, turn};
use crate::harness::{self, Setup};
use crate::tools::Origins;

/// The file a turn's command wrote in its thread's workspace.
fn workspace_file(data: &Path, name: &str) -> String {
    for t in std::fs::read_dir(data.join("threads")).unwrap().flatten() {
        let p: PathBuf = t.path().join("work").join(name);
        if let Ok(text) = std::fs::read_to_string(&p) {
            return text;
        }
    }
    panic!("no thread wrote {name}");
}

/// The origins' files written, an agent key made, the server started with github loaded.
async fn start(setup: &Setup, rig: &Origins) -> (String, crate::harness::Server) {
    rig.write_files(setup.dir.path());
    let key = setup.key("agent", "agent");
    let server = setup.start().await;
    for _ in 0..300 {
        if server.log().contains("tool github: ready") {
            return (key, server);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("github never loaded: {}", server.log());
}

/// The thread's sandbox token, from its supervisor's spec (root's alone).
fn sandbox_token(data: &Path) -> String {
    let mut tokens = Vec::new();
    for s in std::fs::read_dir(data.join("sandboxes")).unwrap().flatten() {
        if let Ok(text) = std::fs::read_to_string(s.path().join("spec.json")) {
            let spec: Value = serde_json::from_str(&text).unwrap();
            tokens.push(spec["internal"]["token"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(tokens.len(), 1, "one sandbox");
    tokens.remove(0)
}

/// Invariant 1 (no real credential in a sandbox) for the control plane's own token: a
/// sandbox calls its allowed tools by `centaur-tool` and MCP, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_calls_its_tools_through_its_gateway_by_cli_and_mcp() {
    if !harness::root_or_skip("a_sandbox_calls_its_tools_through_its_gateway_by_cli_and_mcp") {
        return;
    }
    let rig = Origins::start().await;
    let repo = harness::repo();
    let setup = Setup::new(
        &[("scripted", "[python3, /run/centaur/builtin/scripted.py]")],
        &format!(
            "tools:\n  dirs: ['{}']\n  secrets_from: tools.env\n  base_policy: tools-base.yaml\n  threads: [{{threads: 'api:limited', allow: [github]}}]\n",
            repo.join("tools").display()
        ),
    );
    // The built-in agent, and the system Python's venv with the MCP SDK (scripts/install-deps),
    // mounted into every sandbox (the venv where it is: its scripts name that path).
    let venv = repo.join(".venv-sandbox");
    assert!(
        venv.join("bin/python").exists(),
        "run scripts/install-deps first (no .venv-sandbox)"
    );
    let yaml = std::fs::read_to_string(&setup.config).unwrap().replace(
        "/run/centaur/test-agents']",
        &format!(
            "/run/centaur/test-agents', '{}:/run/centaur/builtin', '{v}:{v}']",
            repo.join("control/src/server/agents").display(),
            v = venv.display(),
        ),
    );
    std::fs::write(&setup.config, yaml).unwrap();
    let (key, server) = start(&setup, &rig).await;
    // A key a user might paste into a conversation: from inside, it is overwritten.
    let admin = setup.key("leaked", "admin");

    // centaur-tool, typed flags, through the gateway: the fake GitHub got the real token.
    let e = turn(
        &server,
        &key,
        "api:all",
        "scripted",
        "run: centaur-tool github search_issues --query crash --limit 3",
    )
    .await;
    let text = e["result_text"].as_str().unwrap_or_default();
    assert!(
        text.contains("exited 0") && text.contains("found: crash is:issue"),
        "{e}\n{}",
        server.log()
    );
    // What the sandbox sees: the route and a placeholder; its token reaches tools only, and
    // replaces any key the sandbox sends.
    let e = turn(
        &server,
        &key,
        "api:all",
        "scripted",
        &format!(
            "run: env > env.txt; curl -s -o /dev/null -w '%{{http_code}}' -H 'X-Api-Key: {admin}' http://centaur.internal/agent/threads"
        ),
    )
    .await;
    assert!(e["result_text"].as_str().unwrap().contains(": 403"), "{e}");
    let env = workspace_file(&setup.data(), "env.txt");
    assert!(
        env.contains("CENTAUR_API_URL=http://centaur.internal"),
        "{env}"
    );
    assert!(
        env.contains("CENTAUR_THREAD_TOKEN=centaur-injected-by-gateway"),
        "{env}"
    );
    let token = sandbox_token(&setup.data());
    assert!(
        !env.contains(&token),
        "the sandbox's environment holds its token"
    );
    let all: Vec<String> = events(&server, &key, "api:all", None)
        .await
        .into_iter()
        .map(|(_, _, raw)| raw)
        .collect();
    assert!(
        !all.concat().contains(&token),
        "the thread's events hold the token"
    );
    // The token works while its sandbox is the thread's, and not a moment after.
    let listed = call(&server, &token, "GET", "/tools", None).await;
    assert!(listed["github"].is_object(), "{listed}");
    call(
        &server,
        &key,
        "POST",
        "/agent/threads/api:all/release",
        None,
    )
    .await;
    let refused = call(&server, &token, "GET", "/tools", None).await;
    assert_eq!(refused["code"], "UNAUTHORIZED", "{refused}");

    // A thread limited to github: MCP lists and calls github only; centaur-tool is refused.
    let e = turn(
        &server,
        &key,
        "api:limited",
        "scripted",
        &format!(
            "run: {}/bin/python /run/centaur/test-agents/mcp_tools.py > mcp.json",
            venv.display()
        ),
    )
    .await;
    assert!(
        e["result_text"].as_str().unwrap().contains("exited 0"),
        "{e}\n{}",
        server.log()
    );
    let mcp: Value = serde_json::from_str(&workspace_file(&setup.data(), "mcp.json")).unwrap();
    assert_eq!(mcp["server"], "centaur");
    assert_eq!(
        mcp["tools"],
        serde_json::json!([
            "github__comment",
            "github__read_file",
            "github__search_issues",
            "github__search_pull_requests"
        ])
    );
    // JSON objects have no order: the required list is sorted.
    assert_eq!(
        mcp["schema"]["required"],
        serde_json::json!(["path", "repo"])
    );
    assert!(
        mcp["found"]["text"]
            .as_str()
            .unwrap()
            .starts_with("# Hello"),
        "{mcp}"
    );
    assert_eq!(mcp["found_error"], false);
    assert!(
        mcp["refused"].as_str().unwrap().contains("unknown tool"),
        "{mcp}"
    );
    assert_eq!(mcp["bad_error"], true);
    assert!(
        mcp["bad"][0]
            .as_str()
            .unwrap()
            .contains("repo must be string"),
        "{mcp}"
    );
    let e = turn(
        &server,
        &key,
        "api:limited",
        "scripted",
        "run: centaur-tool http_fetch get --url https://example.com/page",
    )
    .await;
    assert!(
        e["result_text"].as_str().unwrap().contains("exited 2"),
        "{e}"
    );
    let said: String = events(&server, &key, "api:limited", None)
        .await
        .into_iter()
        .map(|(_, _, raw)| raw)
        .collect();
    assert!(said.contains("lacks the scope tools:http_fetch"), "{said}");
    harness::stop_sandboxes(&setup.data()).await;
    // The tool workers stop with the server (a dropped one is killed, leaving them to the next).
    assert_eq!(server.stop().await, 0);
}

/// A real agent CLI, with the thread's tools registered by its harness as the MCP server
/// `centaur`, lists them through its gateway and calls one natively when the fake model asks.
async fn cli_calls_a_tool_over_mcp(name: &str, harness_name: &str) {
    if !harness::root_or_skip(name) {
        return;
    }
    let models = crate::clis::Models::start().await;
    let rig = Origins::start().await;
    let setup = crate::clis::setup(
        &models,
        &format!(
            "tools:\n  dirs: ['{}']\n  secrets_from: tools.env\n  base_policy: tools-base.yaml\n",
            harness::repo().join("tools").display()
        ),
    );
    let (key, server) = start(&setup, &rig).await;
    let query = format!("from {harness_name}");
    let e = turn(
        &server,
        &key,
        &format!("api:{harness_name}-mcp"),
        harness_name,
        &format!(r#"MCP:mcp__centaur__github__search_issues {{"query": "{query}"}}"#),
    )
    .await;
    let text = e["result_text"].as_str().unwrap_or_default();
    let tools = models
        .requests()
        .last()
        .map(|r| r["body"]["tools"].to_string());
    assert!(
        text.starts_with("DONE:") && text.contains(&format!("found: {query} is:issue")),
        "{e}\nthe model was offered: {tools:?}\n{}",
        server.log()
    );
    harness::stop_sandboxes(&setup.data()).await;
    assert_eq!(server.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_calls_the_threads_tools_over_mcp() {
    cli_calls_a_tool_over_mcp("claude_code_calls_the_threads_tools_over_mcp", "claude").await;
}

/// Codex offers an MCP server's tools to the model as a namespace of functions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_calls_the_threads_tools_over_mcp() {
    cli_calls_a_tool_over_mcp("codex_calls_the_threads_tools_over_mcp", "codex").await;
}
