//! The generic stream-json harness: any command that reads one canonical user line per turn
//! on stdin and prints Claude Code's stream-json, ending each turn with a `result` line.

use serde_json::{Value, json};

use super::adapter::{End, Harness, Launch, Turn, text};
use super::claude::{anthropic_family, anthropic_result_text, anthropic_turn_end};

/// The generic adapter: the configured command as it is.
pub struct StreamJson;

impl Harness for StreamJson {
    fn kind(&self) -> &'static str {
        "stream-json"
    }

    fn command(&self, launch: &Launch) -> Vec<String> {
        let mut c = launch.command.clone().unwrap_or_default();
        c.extend(launch.args.iter().cloned());
        c
    }

    fn resumes(&self) -> bool {
        false
    }

    fn platform_message(&self) -> bool {
        // The caller speaks this protocol's turns itself: they arrive as sent.
        false
    }

    fn turn_line(&self, turn: &Turn) -> String {
        json!({"type": "user", "message": {"role": "user", "content": turn.blocks()}}).to_string()
    }

    fn steer_line(&self, turn: &Turn) -> String {
        let mut v: Value =
            json!({"type": "user", "message": {"role": "user", "content": turn.blocks()}});
        v["steer"] = json!(true);
        v.to_string()
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
            Some("system" | "result" | "assistant") => text(line, "session_id"),
            _ => None,
        }
    }
}
