//! The harness adapters on recorded real output: each fixture in `tests/fixtures/harness/`
//! is what the CLI printed (Claude Code 2.1.197, Codex 0.171.0, pi 0.73.1) against the
//! fake model API (`tests/fakes/models.py`), unedited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use control::harness::{self, End};
use serde_json::Value;

struct Seen {
    events: Vec<Value>,
    ends: Vec<End>,
    /// The last result text before each end, as the worker keeps it.
    answers: Vec<Option<String>>,
    thread: Option<String>,
}

fn run(kind: &str, fixture: &str) -> Seen {
    let h = harness::adapter(kind).unwrap();
    let path = format!(
        "{}/tests/fixtures/harness/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let mut seen = Seen {
        events: Vec::new(),
        ends: Vec::new(),
        answers: Vec::new(),
        thread: None,
    };
    let mut answer = None;
    for line in text.lines() {
        let r = harness::read(h, line);
        seen.events
            .extend(r.agent.iter().map(|e| serde_json::from_str(e).unwrap()));
        answer = r.result.or(answer);
        seen.thread = r.thread.or(seen.thread.take());
        if let Some(end) = r.end {
            let a = match &end {
                End::Completed(Some(t)) => Some(t.clone()),
                _ => answer.take(),
            };
            seen.answers.push(a);
            seen.ends.push(end);
            answer = None;
        }
    }
    seen
}

fn of<'a>(s: &'a Seen, t: &str) -> Vec<&'a Value> {
    s.events.iter().filter(|e| e["type"] == t).collect()
}

fn tool_uses(s: &Seen) -> Vec<&Value> {
    s.events
        .iter()
        .filter(|e| e["type"] == "assistant")
        .flat_map(|e| e["message"]["content"].as_array().unwrap())
        .filter(|b| b["type"] == "tool_use")
        .collect()
}

#[test]
fn claude_code_two_turns_with_a_tool_call() {
    let s = run("claude-code", "claude-two-turns.jsonl");
    assert_eq!(s.ends.len(), 2);
    assert_eq!(s.answers, [Some("DONE:hi".into()), Some("second".into())]);
    assert_eq!(
        s.thread.as_deref(),
        Some("197b4d55-234a-4f86-94f0-c253e676494a")
    );
    let init = of(&s, "system");
    assert_eq!(init[0]["subtype"], "init");
    assert_eq!(
        init[0]["session_id"],
        "197b4d55-234a-4f86-94f0-c253e676494a"
    );
    let uses = tool_uses(&s);
    assert_eq!(uses.len(), 1);
    assert_eq!(uses[0]["name"], "Bash");
    assert_eq!(
        uses[0]["input"]["command"],
        "echo hi > note.txt && cat note.txt"
    );
    let tool = of(&s, "tool");
    assert_eq!(tool[0]["content"][0]["tool_use_id"], uses[0]["id"]);
    assert_eq!(tool[0]["content"][0]["content"], "hi");
    assert_eq!(tool[0]["content"][0]["is_error"], false);
    let results = of(&s, "result");
    assert_eq!(results[0]["text"], "DONE:hi");
    let usage = of(&s, "usage");
    assert_eq!(usage.len(), 2);
    assert!(usage[0]["usage"]["input_tokens"].as_i64().unwrap() > 0);
    assert!(usage[0]["cost_usd"].as_f64().unwrap() > 0.0);
}

#[test]
fn claude_code_subagents_become_subagent_events() {
    let s = run("claude-code", "claude-subagent.jsonl");
    let sub = of(&s, "subagent");
    let status: Vec<&str> = sub.iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(status, ["started", "working", "completed"]);
    assert!(
        sub.iter()
            .all(|e| e["subagent_id"] == sub[0]["subagent_id"])
    );
    assert_eq!(sub[0]["name"], "general-purpose");
    let uses = tool_uses(&s);
    assert_eq!(uses[0]["name"], "Agent");
    // The subagent's own tool call is marked with its parent.
    let nested: Vec<&Value> = of(&s, "assistant")
        .into_iter()
        .filter(|e| !e["parent_tool_use_id"].is_null())
        .collect();
    assert_eq!(nested.len(), 1);
    assert_eq!(nested[0]["parent_tool_use_id"], uses[0]["id"]);
    assert_eq!(
        s.ends,
        [End::Completed(Some(s.answers[0].clone().unwrap()))]
    );
    assert!(
        s.answers[0]
            .as_deref()
            .unwrap()
            .starts_with("DONE:DONE:sub")
    );
}

#[test]
fn claude_code_errors_end_the_turn_and_a_refused_key_is_an_auth_failure() {
    let s = run("claude-code", "claude-auth-retry.jsonl");
    assert!(matches!(
        &s.ends[0],
        End::Failed { reason: "harness_auth_failed", error } if error.contains("401")
    ));
    let s = run("claude-code", "claude-resume-failed.jsonl");
    assert!(matches!(
        &s.ends[0],
        End::Failed { reason: "harness_error", error } if error.contains("No conversation found")
    ));
    assert_eq!(of(&s, "result")[0]["is_error"], true);
}

#[test]
fn codex_items_map_onto_the_canonical_types() {
    let s = run("codex", "codex-two-turns.jsonl");
    assert_eq!(s.ends, [End::Completed(None), End::Completed(None)]);
    assert_eq!(s.answers, [Some("DONE:hi".into()), Some("second".into())]);
    assert_eq!(
        s.thread.as_deref(),
        Some("01a22a07-9e82-7ba0-bd29-069702fe71bf")
    );
    let cmd = of(&s, "command_execution");
    assert_eq!(cmd.len(), 1);
    assert_eq!(cmd[0]["aggregated_output"], "hi\n");
    assert_eq!(cmd[0]["exit_code"], 0);
    // Codex's item "error" (unknown model metadata) is a warning, not an error.
    assert!(of(&s, "error").is_empty());
    assert_eq!(of(&s, "system")[1]["subtype"], "warning");
    let usage = of(&s, "usage");
    assert_eq!(usage.len(), 2);
    assert_eq!(usage[0]["authoritative"], true);
    assert_eq!(usage[0]["usage"]["output_tokens"], 20);
}

#[test]
fn codex_retries_do_not_end_the_turn_and_a_refused_key_is_an_auth_failure() {
    let s = run("codex", "codex-auth-failed.jsonl");
    assert_eq!(s.ends.len(), 1);
    assert!(matches!(
        &s.ends[0],
        End::Failed {
            reason: "harness_auth_failed",
            ..
        }
    ));
    let retries = of(&s, "system")
        .into_iter()
        .filter(|e| e["subtype"] == "api_retry")
        .count();
    assert_eq!(retries, 5);
}

#[test]
fn pi_rpc_two_turns_with_a_tool_call() {
    let s = run("pi", "pi-two-turns.jsonl");
    assert_eq!(s.answers, [Some("DONE:hi".into()), Some("second".into())]);
    let uses = tool_uses(&s);
    assert_eq!(uses.len(), 1);
    assert_eq!(uses[0]["name"], "bash");
    assert_eq!(
        uses[0]["input"]["command"],
        "echo hi > note.txt && cat note.txt"
    );
    let tool = of(&s, "tool");
    assert_eq!(tool[0]["content"][0]["tool_use_id"], uses[0]["id"]);
    assert_eq!(tool[0]["content"][0]["content"], "hi\n");
    assert_eq!(of(&s, "result")[1]["text"], "second");
    assert!(!of(&s, "usage").is_empty());
    // Deltas are not repeated in the canonical stream.
    assert!(s.events.iter().all(|e| e["type"] != "message_update"));
}

#[test]
fn pi_model_errors_end_the_turn() {
    let s = run("pi", "pi-auth-failed.jsonl");
    assert!(matches!(
        &s.ends[0],
        End::Failed { reason: "harness_auth_failed", error } if error == "401 invalid api key"
    ));
    assert_eq!(of(&s, "error")[0]["error"], "401 invalid api key");
}

#[test]
fn garbage_and_unknown_types_are_kept() {
    let h = harness::adapter("claude-code").unwrap();
    let r = harness::read(h, "Segmentation fault (core dumped)");
    let e: Value = serde_json::from_str(&r.agent[0]).unwrap();
    assert_eq!(
        (e["type"].as_str(), e["subtype"].as_str()),
        (Some("system"), Some("raw_stdout"))
    );
    assert_eq!(e["text"], "Segmentation fault (core dumped)");
    assert!(r.end.is_none());
    let r = harness::read(h, r#"{"type":"rate_limit_event","x":1}"#);
    let e: Value = serde_json::from_str(&r.agent[0]).unwrap();
    assert_eq!(e["type"], "rate_limit_event");
    let long = "é".repeat(5000);
    let r = harness::read(h, &long);
    assert!(r.agent[0].len() < 5000);
}

#[test]
fn a_session_is_found_by_its_transcript_file() {
    let home = tempfile::tempdir().unwrap();
    let id = "197b4d55-234a-4f86-94f0-c253e676494a";
    assert!(!harness::session_exists(home.path(), id));
    let todos = home.path().join(".claude/todos");
    std::fs::create_dir_all(&todos).unwrap();
    std::fs::write(todos.join(format!("{id}-agent.json")), "[]").unwrap();
    assert!(
        !harness::session_exists(home.path(), id),
        "not a transcript"
    );
    let p = home.path().join(".claude/projects/-tmp-work");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join(format!("{id}.jsonl")), "{}").unwrap();
    assert!(harness::session_exists(home.path(), id));
    assert!(!harness::session_exists(home.path(), "../etc"));
    // pi's session is a path in the home.
    let pi = "/tmp/home/.pi/agent/sessions/centaur.jsonl";
    assert!(!harness::session_exists(home.path(), pi));
    std::fs::create_dir_all(home.path().join(".pi/agent/sessions")).unwrap();
    std::fs::write(home.path().join(".pi/agent/sessions/centaur.jsonl"), "").unwrap();
    assert!(harness::session_exists(home.path(), pi));
}
