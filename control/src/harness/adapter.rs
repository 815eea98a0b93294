//! The contract every harness adapter meets, and what the adapters share.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// What a thread's harness process is started with.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// The configured command, if any (else the kind's binary on PATH).
    pub command: Option<Vec<String>>,
    /// Extra arguments, appended.
    pub args: Vec<String>,
    /// The harness's environment as configured (sandbox-wide, then the harness's own).
    pub env: BTreeMap<String, String>,
    /// The CLI's session or thread id to resume, from an earlier runtime of the thread.
    pub resume: Option<String>,
    /// The `centaur` binary inside the sandbox (for adapters that need its bridge).
    pub centaur: String,
    /// The control plane's MCP server for the thread's tools, for CLIs that speak MCP.
    pub mcp: Option<String>,
}

/// How a line ended the turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The turn completed; the result text if the line carries it.
    Completed(Option<String>),
    /// The harness reported an error (`reason` is the execution's terminal reason).
    Failed {
        /// `harness_error` or `harness_auth_failed`.
        reason: &'static str,
        /// What the harness said.
        error: String,
    },
}

/// A harness adapter: how one kind of agent CLI is started, fed and read.
pub trait Harness: Sync {
    /// The kind's name in the config (`claude-code`, `codex`, `pi`, `stream-json`).
    fn kind(&self) -> &'static str;

    /// The thread's command line: the binary, the kind's flags, the configured arguments
    /// and, when resuming, the flags that resume `launch.resume`.
    fn command(&self, launch: &Launch) -> Vec<String>;

    /// Environment the adapter adds before the configured one (side traffic off, trust).
    fn env(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Whether the CLI keeps a session that a new process can resume by id.
    fn resumes(&self) -> bool {
        true
    }

    /// Whether a thread's first turn gets the platform's system message (the date, the
    /// thread, the platform) before it.
    fn platform_message(&self) -> bool {
        true
    }

    /// The session id the thread uses when the CLI lets us name it (else it is read from
    /// the output).
    fn fixed_session(&self) -> Option<&'static str> {
        None
    }

    /// The stdin line for a turn, from the turn's text and content blocks.
    fn turn_line(&self, turn: &Turn) -> String;

    /// The stdin line that steers a running turn with more input.
    fn steer_line(&self, turn: &Turn) -> String;

    /// The stdin line that interrupts the running turn (which then ends), if the kind has
    /// one; without it a cancel stops the sandbox.
    fn interrupt_line(&self) -> Option<String> {
        None
    }

    /// Canonical events for one parsed stdout line.
    fn normalize(&self, line: &Value, out: &mut Vec<Value>);

    /// Whether the line ends the turn, and how.
    fn turn_end(&self, line: &Value) -> Option<End>;

    /// Result text the line carries (the last one seen is the turn's answer).
    fn result_text(&self, line: &Value) -> Option<String>;

    /// The CLI's session or thread id, if the line names it.
    fn thread_id(&self, line: &Value) -> Option<String>;
}

/// One turn's input, in the canonical envelope (`{"type":"user","message":{"content":[…]}}`).
#[derive(Debug, Clone)]
pub struct Turn {
    /// The content blocks.
    pub content: Vec<Value>,
    /// Text put before the turn: the thread's transcript, when the CLI's session is lost.
    pub preamble: Option<String>,
}

impl Turn {
    /// Parses a turn line as stored (the canonical envelope).
    pub fn parse(line: &str, preamble: Option<String>) -> Turn {
        let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        let content = match &v["message"]["content"] {
            Value::Array(a) => a.clone(),
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            _ => Vec::new(),
        };
        Turn { content, preamble }
    }

    /// A turn of plain text.
    pub fn text(text: &str) -> Turn {
        Turn {
            content: vec![json!({"type": "text", "text": text})],
            preamble: None,
        }
    }

    /// The turn as text, for CLIs that take text only: text blocks as they are, other
    /// blocks as JSON; nothing at all becomes "continue".
    pub fn plain(&self) -> String {
        let mut parts: Vec<String> = self.preamble.iter().cloned().collect();
        for b in &self.content {
            match (b["type"].as_str(), b["text"].as_str()) {
                (Some("text"), Some(t)) => parts.push(t.to_string()),
                _ => parts.push(b.to_string()),
            }
        }
        let text = parts.join("\n\n");
        if text.trim().is_empty() {
            "continue".into()
        } else {
            text
        }
    }

    /// The content blocks with the preamble as a first text block.
    pub fn blocks(&self) -> Vec<Value> {
        let mut blocks: Vec<Value> = self
            .preamble
            .iter()
            .map(|p| json!({"type": "text", "text": p}))
            .collect();
        blocks.extend(self.content.iter().cloned());
        if blocks.is_empty() {
            blocks.push(json!({"type": "text", "text": "continue"}));
        }
        blocks
    }
}

/// The binary: the configured command, or `default` on PATH.
pub fn base(launch: &Launch, default: &str) -> Vec<String> {
    match &launch.command {
        Some(c) if !c.is_empty() => c.clone(),
        _ => vec![default.to_string()],
    }
}

/// Whether an error message is an authentication failure (the key was refused).
pub fn is_auth_failure(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("401")
        || m.contains("403 forbidden")
        || m.contains("authentication_error")
        || m.contains("authentication_failed")
        || m.contains("invalid api key")
        || m.contains("invalid x-api-key")
}

/// A failure, classified.
pub fn failed(error: String) -> End {
    End::Failed {
        reason: if is_auth_failure(&error) {
            "harness_auth_failed"
        } else {
            "harness_error"
        },
        error,
    }
}

/// A string field.
pub fn text(v: &Value, key: &str) -> Option<String> {
    v[key].as_str().map(str::to_string)
}

/// Text of a tool result's content: a string, or text blocks joined.
pub fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(|b| b["text"].as_str().or_else(|| b.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The event types an agent stream is expected to hold (the reference's allowlist); any
/// other is logged (and still kept).
pub const KNOWN_TYPES: &[&str] = &[
    "amp_raw_event",
    "assistant",
    "command_execution",
    "content_block_delta",
    "content_block_start",
    "content_block_stop",
    "error",
    "file_change",
    "message_delta",
    "message_start",
    "message_stop",
    "item.agentMessage.delta",
    "item.commandExecution.outputDelta",
    "item.completed",
    "item.fileChange.outputDelta",
    "item.fileChange.patchUpdated",
    "item.plan.delta",
    "item.reasoning.summaryPartAdded",
    "item.reasoning.summaryTextDelta",
    "item.reasoning.textDelta",
    "item.started",
    "item.updated",
    "reasoning",
    "result",
    "status",
    "subagent",
    "system",
    "thread.goal.cleared",
    "thread.goal.updated",
    "thread.started",
    "tool",
    "tool_result",
    "tool_use",
    "turn.done",
    "turn.completed",
    "turn.failed",
    "turn.plan.updated",
    "turn.started",
    "usage",
    "user",
];
