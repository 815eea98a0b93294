//! What an agent event means to a person, one short line per action: the tool calls as
//! they happen and their results, commands, file changes, subagents and errors. Used by
//! `centaur ask` and by Slack's progress message.

use serde_json::Value;

/// The first line of a text, cut to `max` characters (with … when anything was left out).
pub fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    let cut: String = line.chars().take(max).collect();
    let more = cut.len() < line.len() || text.trim_end().lines().count() > 1;
    format!("{cut}{}", if more { " …" } else { "" })
}

/// What an event means to a person: from the canonical (`agent`) stream, the tool calls
/// as they happen and their results, commands, file changes, subagents and errors.
pub fn describe(v: &Value) -> Vec<String> {
    describe_opt(v).unwrap_or_default()
}

fn describe_opt(v: &Value) -> Option<Vec<String>> {
    let s = |k: &str| v[k].as_str().unwrap_or("");
    let out: Vec<String> = match s("type") {
        "assistant" => v["message"]["content"]
            .as_array()?
            .iter()
            .filter(|b| b["type"] == "tool_use")
            .map(|b| {
                let name = b["name"].as_str().unwrap_or("tool");
                format!("> {name} {}", first_line(&b["input"].to_string(), 120))
            })
            .collect(),
        "tool" => v["content"]
            .as_array()?
            .iter()
            .map(|r| {
                let mark = if r["is_error"] == true { "<!" } else { "<" };
                format!(
                    "{mark} {}",
                    first_line(r["content"].as_str().unwrap_or(""), 100)
                )
            })
            .collect(),
        "command_execution" => vec![
            format!("$ {}", first_line(s("command"), 120)),
            format!(
                "< {} (exit {})",
                first_line(s("aggregated_output"), 100),
                v["exit_code"]
            ),
        ],
        "file_change" => vec![format!("~ {}", first_line(&v["changes"].to_string(), 120))],
        "subagent" => vec![format!(
            "* subagent {} {}{}",
            v["name"].as_str().unwrap_or(s("subagent_id")),
            s("status"),
            v["summary"]
                .as_str()
                .or(v["activity"].as_str())
                .map(|t| format!(": {}", first_line(t, 100)))
                .unwrap_or_default()
        )],
        "error" => vec![format!("! {}", first_line(s("error"), 160))],
        "system" if s("subtype") == "api_retry" => vec![format!(
            "! the model API failed; the agent retries ({})",
            first_line(
                v["message"].as_str().or(v["error"].as_str()).unwrap_or(""),
                100
            )
        )],
        _ => Vec::new(),
    };
    Some(out)
}
