//! Codex (`codex exec --json`): one `codex exec` per turn, resumed by thread id, run by the
//! bridge (`centaur sandbox codex-bridge`, in the sandbox) that keeps the thread's process
//! model the same as the other harnesses': one long-lived process, one line per turn.
//!
//! Current Codex ignores `OPENAI_BASE_URL`; when the harness's environment sets it, the
//! adapter names a provider of its own with that base URL (`env_key` `OPENAI_API_KEY`, the
//! Responses API) instead.

use serde_json::{Value, json};

use super::adapter::{End, Harness, Launch, Turn, base, failed, text};

/// The Codex adapter.
pub struct Codex;

impl Harness for Codex {
    fn kind(&self) -> &'static str {
        "codex"
    }

    fn command(&self, launch: &Launch) -> Vec<String> {
        let mut c = vec![
            launch.centaur.clone(),
            "sandbox".into(),
            "codex-bridge".into(),
        ];
        if let Some(id) = &launch.resume {
            c.extend(["--resume".to_string(), id.clone()]);
        }
        c.push("--".into());
        c.extend(base(launch, "codex"));
        c.extend(
            [
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--dangerously-bypass-approvals-and-sandbox",
                // Side traffic: analytics, the plugin catalogue, model discovery (which
                // carries the key to chatgpt.com).
                "-c",
                "analytics.enabled=false",
                "--disable",
                "plugins",
                "--disable",
                "api_key_model_discovery",
            ]
            .map(String::from),
        );
        if let Some(url) = launch.env.get("OPENAI_BASE_URL") {
            let q = |s: &str| Value::from(s).to_string();
            for kv in [
                "model_provider=\"centaur\"".to_string(),
                "model_providers.centaur.name=\"centaur\"".to_string(),
                format!("model_providers.centaur.base_url={}", q(url)),
                "model_providers.centaur.env_key=\"OPENAI_API_KEY\"".to_string(),
                "model_providers.centaur.wire_api=\"responses\"".to_string(),
            ] {
                c.extend(["-c".to_string(), kv]);
            }
        }
        if let Some(url) = &launch.mcp {
            // The thread's tools, as the MCP server `centaur` (streamable HTTP).
            let url = Value::from(url.as_str()).to_string();
            c.extend(["-c".to_string(), format!("mcp_servers.centaur.url={url}")]);
        }
        c.extend(launch.args.iter().cloned());
        c
    }

    fn turn_line(&self, turn: &Turn) -> String {
        json!({"type": "turn", "prompt": turn.plain()}).to_string()
    }

    fn steer_line(&self, turn: &Turn) -> String {
        json!({"type": "steer", "prompt": turn.plain()}).to_string()
    }

    fn interrupt_line(&self) -> Option<String> {
        Some(json!({"type": "interrupt"}).to_string())
    }

    fn normalize(&self, v: &Value, out: &mut Vec<Value>) {
        let item = &v["item"];
        match (v["type"].as_str().unwrap_or(""), item["type"].as_str()) {
            ("thread.started", _) => out.push(json!({
                "type": "system", "subtype": "init", "session_id": v["thread_id"],
            })),
            ("item.started", Some("mcp_tool_call" | "function_call" | "custom_tool_call" | "web_search")) => {
                out.push(json!({"type": "assistant", "message": {"content": [{
                    "type": "tool_use", "id": item["id"],
                    "name": item["tool"].as_str().or(item["name"].as_str()).or(item["type"].as_str()),
                    "input": item.get("arguments").or(item.get("query")).cloned().unwrap_or(Value::Null),
                }]}}));
            }
            ("item.completed", Some("agent_message")) => out.push(json!({
                "type": "assistant", "message": {"content": [{"type": "text", "text": item["text"]}]},
            })),
            ("item.completed", Some("reasoning")) => {
                out.push(json!({"type": "reasoning", "text": item["text"]}));
            }
            ("item.completed", Some("command_execution")) => out.push(json!({
                "type": "command_execution", "command": item["command"],
                "aggregated_output": item["aggregated_output"], "exit_code": item["exit_code"],
                "status": item["status"],
            })),
            ("item.completed", Some("file_change")) => out.push(json!({
                "type": "file_change", "changes": item["changes"], "status": item["status"],
            })),
            ("item.completed", Some("mcp_tool_call" | "function_call" | "custom_tool_call" | "web_search")) => {
                let is_error = item["status"] == "failed" || !item["error"].is_null();
                let content = if is_error { &item["error"] } else { &item["result"] };
                out.push(json!({"type": "tool", "content": [{
                    "tool_use_id": item["id"], "content": super::adapter::content_text(content),
                    "is_error": is_error,
                }]}));
            }
            // A non-fatal item error (a warning, such as unknown model metadata).
            ("item.completed", Some("error")) => out.push(json!({
                "type": "system", "subtype": "warning", "message": item["message"],
            })),
            ("turn.completed", _) => out.push(json!({
                "type": "usage", "usage": v["usage"], "authoritative": true,
            })),
            ("turn.failed", _) => out.push(json!({"type": "error", "error": failure(v)})),
            ("error", _) => {
                let m = text(v, "message").unwrap_or_default();
                if m.starts_with("Reconnecting") {
                    out.push(json!({"type": "system", "subtype": "api_retry", "message": m}));
                } else {
                    out.push(json!({"type": "error", "error": m}));
                }
            }
            _ => out.push(v.clone()),
        }
    }

    fn turn_end(&self, v: &Value) -> Option<End> {
        match v["type"].as_str()? {
            "turn.completed" => Some(End::Completed(None)),
            "turn.failed" => Some(failed(failure(v))),
            _ => None,
        }
    }

    fn result_text(&self, v: &Value) -> Option<String> {
        (v["type"] == "item.completed" && v["item"]["type"] == "agent_message")
            .then(|| text(&v["item"], "text"))
            .flatten()
    }

    fn thread_id(&self, v: &Value) -> Option<String> {
        (v["type"] == "thread.started")
            .then(|| text(v, "thread_id"))
            .flatten()
    }
}

fn failure(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .or(v["error"].as_str())
        .unwrap_or("the turn failed")
        .to_string()
}
