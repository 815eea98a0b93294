//! Harness adapters: how each kind of agent CLI runs as a thread's harness — its command
//! line, its stdin for a turn or a steer, and how its stdout lines end a turn and map onto
//! one canonical event stream (`agent` events beside the verbatim `output` lines).
//!
//! Kinds: `claude-code`, `codex` (through the in-sandbox bridge, [`bridge`]), `pi`, and the
//! generic `stream-json`. Normalisation follows the reference's canonical types
//! (`assistant` with text and `tool_use` blocks, `tool`, `reasoning`, `command_execution`,
//! `file_change`, `subagent`, `result`, `error`, `system` init, `usage`); a type outside
//! the reference's list is logged and kept.

pub mod adapter;
pub mod bridge;
pub mod claude;
pub mod codex;
pub mod describe;
pub mod pi;
pub mod stream_json;

use std::path::Path;

use serde_json::{Value, json};

pub use adapter::{End, Harness, Launch, Turn};

/// The kinds a config may name.
pub const KINDS: [&str; 4] = ["claude-code", "codex", "pi", "stream-json"];

/// The adapter of a kind.
pub fn adapter(kind: &str) -> Option<&'static dyn Harness> {
    Some(match kind {
        "claude-code" => &claude::ClaudeCode,
        "codex" => &codex::Codex,
        "pi" => &pi::Pi,
        "stream-json" => &stream_json::StreamJson,
        _ => return None,
    })
}

/// One stdout line read through an adapter.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Read {
    /// Its canonical events, as JSON text.
    pub agent: Vec<String>,
    /// Whether (and how) it ended the turn.
    pub end: Option<End>,
    /// Result text it carries.
    pub result: Option<String>,
    /// The CLI's session or thread id it names.
    pub thread: Option<String>,
}

/// The longest raw (non-JSON) line kept whole in its `system` event.
const RAW_KEEP: usize = 4096;

/// Reads one stdout line: a line that is not a JSON object becomes
/// `system{subtype:"raw_stdout"}`.
pub fn read(h: &dyn Harness, line: &str) -> Read {
    let v: Value = match serde_json::from_str(line) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            let mut end = line.len().min(RAW_KEEP);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            return Read {
                agent: vec![
                    json!({"type": "system", "subtype": "raw_stdout", "text": &line[..end]})
                        .to_string(),
                ],
                ..Read::default()
            };
        }
    };
    let mut events = Vec::new();
    h.normalize(&v, &mut events);
    for e in &mut events {
        // A field the line did not have is left out, not sent as null.
        if let Value::Object(m) = e {
            m.retain(|_, v| !v.is_null());
        }
        let t = e["type"].as_str().unwrap_or("");
        if !adapter::KNOWN_TYPES.contains(&t) {
            tracing::warn!(
                kind = h.kind(),
                event_type = t,
                "stdout_unknown_event_type (kept)"
            );
        }
    }
    Read {
        agent: events.iter().map(Value::to_string).collect(),
        end: h.turn_end(&v),
        result: h.result_text(&v),
        thread: h.thread_id(&v),
    }
}

/// Whether the CLI's session `id` is still in the thread's home (`home`, the host side of
/// the sandbox's `$HOME`): a path inside the sandbox's home is looked up as it is; any other
/// id is part of a `.jsonl` file's name (Claude Code's transcript `<id>.jsonl`, Codex's
/// rollout `rollout-<time>-<id>.jsonl`).
pub fn session_exists(home: &Path, id: &str) -> bool {
    session_in(home, sandbox::local::bwrap::HOME, id)
}

/// [`session_exists`] for a home the sandbox sees at `inside` (a Kubernetes sandbox pod's,
/// looked up by its supervisor).
pub fn session_in(home: &Path, inside: &str, id: &str) -> bool {
    if let Some(rest) = id.strip_prefix(inside) {
        return home.join(rest.trim_start_matches('/')).is_file();
    }
    if id.is_empty() || id.contains('/') {
        return false;
    }
    let mut stack = vec![(home.to_path_buf(), 0)];
    let mut budget = 20_000;
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            budget -= 1;
            if budget == 0 {
                return false;
            }
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() && depth < 8 {
                stack.push((e.path(), depth + 1));
            } else if t.is_file() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(".jsonl") && name.contains(id) {
                    return true;
                }
            }
        }
    }
    false
}
