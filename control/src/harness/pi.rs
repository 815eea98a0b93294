//! pi (`pi --mode rpc`): one long-lived process per thread; a turn is a `prompt` command on
//! stdin and ends at `agent_end`. The session file is named by us, in the thread's home, so
//! every process of the thread continues the same session.

use serde_json::{Value, json};

use super::adapter::{End, Harness, Launch, Turn, base, content_text, failed, text};

/// The pi adapter.
pub struct Pi;

/// The thread's pi session file, inside the sandbox.
pub const SESSION: &str = "/tmp/home/.pi/agent/sessions/centaur.jsonl";

impl Harness for Pi {
    fn kind(&self) -> &'static str {
        "pi"
    }

    fn command(&self, launch: &Launch) -> Vec<String> {
        let mut c = base(launch, "pi");
        c.extend(["--mode", "rpc", "--session", SESSION].map(String::from));
        c.extend(launch.args.iter().cloned());
        c
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        // No start-up network use (install ping, version check).
        vec![("PI_OFFLINE", "1".into())]
    }

    fn fixed_session(&self) -> Option<&'static str> {
        Some(SESSION)
    }

    fn turn_line(&self, turn: &Turn) -> String {
        json!({"type": "prompt", "message": turn.plain()}).to_string()
    }

    fn steer_line(&self, turn: &Turn) -> String {
        json!({"type": "steer", "message": turn.plain()}).to_string()
    }

    fn interrupt_line(&self) -> Option<String> {
        Some(json!({"type": "abort"}).to_string())
    }

    fn normalize(&self, v: &Value, out: &mut Vec<Value>) {
        match v["type"].as_str().unwrap_or("") {
            "session" => {
                out.push(json!({"type": "system", "subtype": "init", "session_id": v["id"]}))
            }
            "message_end" if v["message"]["role"] == "assistant" => assistant(&v["message"], out),
            "tool_execution_end" => out.push(json!({"type": "tool", "content": [{
                "tool_use_id": v["toolCallId"],
                "content": content_text(&v["result"]["content"]),
                "is_error": v["isError"].as_bool().unwrap_or(false),
            }]})),
            "agent_end" => out.push(json!({
                "type": "result",
                "text": last_text(&v["messages"]).unwrap_or_default(),
            })),
            "response" if v["success"] == false => out.push(json!({
                "type": "error",
                "error": text(v, "error").unwrap_or_else(|| format!("pi refused {}", v["command"])),
            })),
            // Deltas and bookkeeping: the finished message carries the same.
            "response"
            | "message_start"
            | "message_update"
            | "message_end"
            | "turn_start"
            | "turn_end"
            | "agent_start"
            | "tool_execution_start"
            | "tool_execution_update" => {}
            _ => out.push(v.clone()),
        }
    }

    fn turn_end(&self, v: &Value) -> Option<End> {
        match v["type"].as_str()? {
            "agent_end" => {
                let last = v["messages"]
                    .as_array()
                    .and_then(|m| m.iter().rev().find(|m| m["role"] == "assistant"));
                match last {
                    Some(m) if matches!(m["stopReason"].as_str(), Some("error" | "aborted")) => {
                        Some(failed(text(m, "errorMessage").unwrap_or_else(|| {
                            format!("the model call ended with {}", m["stopReason"])
                        })))
                    }
                    _ => Some(End::Completed(last_text(&v["messages"]))),
                }
            }
            "response" if v["success"] == false && v["command"] == "prompt" => Some(failed(
                text(v, "error").unwrap_or_else(|| "pi refused the prompt".into()),
            )),
            _ => None,
        }
    }

    fn result_text(&self, v: &Value) -> Option<String> {
        match v["type"].as_str()? {
            "message_end" if v["message"]["role"] == "assistant" => {
                block_text(&v["message"]["content"])
            }
            "agent_end" => last_text(&v["messages"]),
            _ => None,
        }
    }

    fn thread_id(&self, v: &Value) -> Option<String> {
        (v["type"] == "session").then(|| text(v, "id")).flatten()
    }
}

fn assistant(m: &Value, out: &mut Vec<Value>) {
    let mut blocks = Vec::new();
    for b in m["content"].as_array().into_iter().flatten() {
        match b["type"].as_str() {
            Some("text") => blocks.push(json!({"type": "text", "text": b["text"]})),
            Some("toolCall") => blocks.push(json!({
                "type": "tool_use", "id": b["id"], "name": b["name"], "input": b["arguments"],
            })),
            Some("thinking") => out.push(json!({"type": "reasoning", "text": b["thinking"]})),
            _ => {}
        }
    }
    if !blocks.is_empty() {
        out.push(json!({"type": "assistant", "model": m["model"], "message": {"content": blocks}}));
    }
    if matches!(m["stopReason"].as_str(), Some("error" | "aborted")) {
        out.push(json!({
            "type": "error",
            "error": text(m, "errorMessage").unwrap_or_else(|| format!("stopped: {}", m["stopReason"])),
        }));
    }
    if m["usage"].is_object() {
        out.push(json!({"type": "usage", "usage": m["usage"], "model": m["model"]}));
    }
}

/// The last text block of a content list.
fn block_text(content: &Value) -> Option<String> {
    content
        .as_array()?
        .iter()
        .rev()
        .find(|b| b["type"] == "text")
        .and_then(|b| b["text"].as_str().map(str::to_string))
}

/// The text of the last assistant message that has any.
fn last_text(messages: &Value) -> Option<String> {
    messages
        .as_array()?
        .iter()
        .rev()
        .filter(|m| m["role"] == "assistant")
        .find_map(|m| block_text(&m["content"]))
}
