//! Claude Code (`claude -p --input-format stream-json --output-format stream-json`): one
//! long-lived process per thread, one user line per turn, a `result` line ends it. Its output
//! family (Anthropic stream-json) is shared with the generic stream-json harness.

use serde_json::{Value, json};

use super::adapter::{End, Harness, Launch, Turn, base, content_text, failed, text};

/// The Claude Code adapter.
pub struct ClaudeCode;

impl Harness for ClaudeCode {
    fn kind(&self) -> &'static str {
        "claude-code"
    }

    fn command(&self, launch: &Launch) -> Vec<String> {
        let mut c = base(launch, "claude");
        c.extend(
            [
                "-p",
                "--input-format",
                "stream-json",
                "--output-format",
                "stream-json",
                "--verbose",
                "--dangerously-skip-permissions",
            ]
            .map(String::from),
        );
        if let Some(id) = &launch.resume {
            c.extend(["--resume".to_string(), id.clone()]);
        }
        if let Some(url) = &launch.mcp {
            // The thread's tools, as the MCP server `centaur` (tools mcp__centaur__TOOL__METHOD).
            let config = json!({"mcpServers": {"centaur": {"type": "http", "url": url}}});
            c.extend(["--mcp-config".to_string(), config.to_string()]);
        }
        c.extend(launch.args.iter().cloned());
        c
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        // Its side calls (feature flags, telemetry, the session title) go to
        // api.anthropic.com with the key, whatever the base URL: off.
        vec![("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into())]
    }

    fn turn_line(&self, turn: &Turn) -> String {
        json!({"type": "user", "message": {"role": "user", "content": turn.blocks()}}).to_string()
    }

    fn steer_line(&self, turn: &Turn) -> String {
        // A user line sent while a turn runs is folded into that turn.
        self.turn_line(turn)
    }

    fn interrupt_line(&self) -> Option<String> {
        // The Agent SDK's control request: the turn ends with an error result.
        Some(
            json!({"type": "control_request", "request_id": "centaur-interrupt", "request": {"subtype": "interrupt"}})
                .to_string(),
        )
    }

    fn normalize(&self, line: &Value, out: &mut Vec<Value>) {
        anthropic_family(line, out);
    }

    fn turn_end(&self, line: &Value) -> Option<End> {
        anthropic_turn_end(line)
    }

    fn result_text(&self, line: &Value) -> Option<String> {
        anthropic_result_text(line)
    }

    fn thread_id(&self, line: &Value) -> Option<String> {
        match line["type"].as_str() {
            Some("system") if line["subtype"] == "init" => text(line, "session_id"),
            Some("result") => text(line, "session_id"),
            _ => None,
        }
    }
}

/// Canonical events for one Anthropic-family (Claude Code, stream-json) line.
pub fn anthropic_family(v: &Value, out: &mut Vec<Value>) {
    match v["type"].as_str().unwrap_or("") {
        "system" => system(v, out),
        "assistant" => assistant(v, out),
        "user" => user(v, out),
        "result" => {
            let mut r =
                json!({"type": "result", "text": anthropic_result_text(v).unwrap_or_default()});
            if v["is_error"] == true {
                r["is_error"] = json!(true);
            }
            out.push(r);
            if v.get("usage").is_some_and(|u| !u.is_null()) {
                let mut u = json!({"type": "usage", "usage": v["usage"], "authoritative": true});
                if let Some(c) = v["total_cost_usd"].as_f64() {
                    u["cost_usd"] = json!(c);
                }
                out.push(u);
            }
        }
        "error" => out.push(json!({"type": "error", "error": error_text(v)})),
        // The answer to a control request (an interrupt): nothing for the stream.
        "control_response" => {}
        _ => out.push(v.clone()),
    }
}

fn system(v: &Value, out: &mut Vec<Value>) {
    let sub = v["subtype"].as_str().unwrap_or("");
    let task = || text(v, "task_id").unwrap_or_default();
    match sub {
        "init" => out.push(json!({
            "type": "system", "subtype": "init",
            "session_id": v["session_id"], "model": v["model"], "cwd": v["cwd"],
        })),
        "task_started" => out.push(json!({
            "type": "subagent", "status": "started", "subagent_id": task(),
            "name": v["subagent_type"], "summary": v["description"],
        })),
        "task_progress" => out.push(json!({
            "type": "subagent", "status": "working", "subagent_id": task(),
            "activity": v["description"],
        })),
        "task_notification" => {
            let failed = v["status"].as_str().is_some_and(|s| s != "completed");
            let mut e = json!({
                "type": "subagent",
                "status": if failed { "failed" } else { "completed" },
                "subagent_id": task(), "summary": v["summary"],
            });
            if failed {
                e["error"] = v["status"].clone();
            }
            out.push(e);
        }
        // The final state comes with task_notification.
        "task_updated" => {}
        _ => out.push(v.clone()),
    }
}

fn assistant(v: &Value, out: &mut Vec<Value>) {
    let m = &v["message"];
    let mut blocks = Vec::new();
    for b in m["content"].as_array().into_iter().flatten() {
        match b["type"].as_str() {
            Some("text") => blocks.push(json!({"type": "text", "text": b["text"]})),
            Some("tool_use") => blocks.push(json!({
                "type": "tool_use", "id": b["id"], "name": b["name"], "input": b["input"],
            })),
            Some("thinking") => {
                out.push(json!({"type": "reasoning", "text": b["thinking"]}));
            }
            _ => {}
        }
    }
    if blocks.is_empty() {
        return;
    }
    let mut e = json!({"type": "assistant", "message": {"content": blocks}});
    if let Some(model) = m["model"].as_str() {
        e["model"] = json!(model);
    }
    if !v["parent_tool_use_id"].is_null() {
        e["parent_tool_use_id"] = v["parent_tool_use_id"].clone();
    }
    out.push(e);
}

fn user(v: &Value, out: &mut Vec<Value>) {
    let results: Vec<Value> = v["message"]["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| {
            json!({
                "tool_use_id": b["tool_use_id"],
                "content": content_text(&b["content"]),
                "is_error": b["is_error"].as_bool().unwrap_or(false),
            })
        })
        .collect();
    if results.is_empty() {
        // The prompt echoed back (a subagent's): nothing new for the stream.
        return;
    }
    let mut e = json!({"type": "tool", "content": results});
    if !v["parent_tool_use_id"].is_null() {
        e["parent_tool_use_id"] = v["parent_tool_use_id"].clone();
    }
    out.push(e);
}

fn error_text(v: &Value) -> String {
    match &v["error"] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| v["error"].to_string(), str::to_string),
        _ => text(v, "message").unwrap_or_else(|| "the harness reported an error".into()),
    }
}

/// `result` and `error` end an Anthropic-family turn; a run of refused keys
/// (`api_retry` with 401/403) ends it as an authentication failure instead of retrying on.
pub fn anthropic_turn_end(v: &Value) -> Option<End> {
    match v["type"].as_str()? {
        "result" => {
            let is_error = v["is_error"] == true
                || v["subtype"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("error"));
            if !is_error {
                return Some(End::Completed(text(v, "result")));
            }
            let errors: Vec<&str> = v["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let msg = text(v, "result")
                .or_else(|| (!errors.is_empty()).then(|| errors.join("; ")))
                .or_else(|| text(v, "error"))
                .unwrap_or_else(|| "the harness reported an error".into());
            Some(failed(msg))
        }
        "error" => Some(failed(error_text(v))),
        "system"
            if v["subtype"] == "api_retry"
                && matches!(v["error_status"].as_i64(), Some(401 | 403)) =>
        {
            Some(End::Failed {
                reason: "harness_auth_failed",
                error: format!(
                    "the model API refused the key ({} {})",
                    v["error_status"],
                    v["error"].as_str().unwrap_or("")
                ),
            })
        }
        _ => None,
    }
}

/// `result.result`, or the last text block of a top-level assistant message.
pub fn anthropic_result_text(v: &Value) -> Option<String> {
    match v["type"].as_str()? {
        "result" => text(v, "result").or_else(|| text(v, "text")),
        "assistant" if v["parent_tool_use_id"].is_null() => v["message"]["content"]
            .as_array()?
            .iter()
            .rev()
            .find(|b| b["type"] == "text")
            .and_then(|b| b["text"].as_str().map(str::to_string)),
        _ => None,
    }
}
