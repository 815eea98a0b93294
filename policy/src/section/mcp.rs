//! `mcp`: JSON-RPC to an MCP server (streamable HTTP), judged per `tools/call` by tool name
//! and argument constraints, as iron-proxy's `mcp:` block. Every `POST` to a matched server is
//! judged, whatever its `Content-Type` (iron-proxy lets a non-JSON type through unjudged); a
//! denial is a JSON-RPC error with HTTP 200 and the request never leaves. The judging is
//! pure: the gateway hands it the body as the client sent it (placeholders, never a real
//! value), and the audit names methods and tools, never arguments.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::error::Errors;
use crate::matcher::rule::{RawRule, Request, Rule, required_rules};
use crate::value::{S, pos};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMcp {
    #[serde(default)]
    pub error: RawMcpError,
    #[serde(default)]
    pub servers: Vec<RawServer>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMcpError {
    pub code: Option<i64>,
    pub message: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub name: S,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub tools: Vec<RawTool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTool {
    pub name: S,
    #[serde(default)]
    pub when: Vec<RawClause>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClause {
    pub path: S,
    #[schemars(with = "Option<serde_json::Value>")]
    pub equals: Option<Value>,
    #[serde(rename = "in")]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub one_of: Option<Vec<Value>>,
    pub matches: Option<S>,
}

/// The MCP policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mcp {
    /// JSON-RPC error code of a denial (default -32001).
    pub error_code: i64,
    /// Its message (default `blocked by policy`).
    pub error_message: String,
    /// The servers judged, first match wins.
    pub servers: Vec<McpServer>,
}

/// One MCP server: where it is, and the tools a client may call on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServer {
    /// Unique name (in the audit record).
    pub name: String,
    /// Requests that are this server's.
    pub rules: Vec<Rule>,
    /// Tools that may be called; any other is denied.
    pub tools: Vec<McpTool>,
}

/// An allowed tool and the constraints on its arguments (all must hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpTool {
    /// Tool name.
    pub name: String,
    /// Argument constraints, ANDed.
    pub when: Vec<Clause>,
}

/// A constraint on one argument: a dotted path into `arguments` (numeric segments index
/// arrays) and a test.
#[derive(Debug, Clone)]
pub struct Clause {
    /// Path segments.
    pub path: Vec<String>,
    /// What the value must be.
    pub test: Test,
}

/// What an argument must be.
#[derive(Debug, Clone)]
pub enum Test {
    /// Equal to this JSON scalar (numbers compared as numbers).
    Equals(Value),
    /// Equal to one of these.
    In(Vec<Value>),
    /// A string the regular expression matches (anywhere; anchor it to match it all).
    Matches(regex::Regex),
}

impl PartialEq for Clause {
    fn eq(&self, other: &Clause) -> bool {
        self.path == other.path
            && match (&self.test, &other.test) {
                (Test::Equals(a), Test::Equals(b)) => a == b,
                (Test::In(a), Test::In(b)) => a == b,
                (Test::Matches(a), Test::Matches(b)) => a.as_str() == b.as_str(),
                _ => false,
            }
    }
}

impl Eq for Clause {}

/// Why a JSON-RPC message was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpDenial {
    /// The body is not JSON-RPC (not JSON, no `method`, a `tools/call` without a name).
    Malformed,
    /// A `tools/call` of a tool not on the server's list.
    ToolNotAllowed,
    /// A `tools/call` whose arguments fail a `when` clause.
    ArgumentConstraint,
}

impl McpDenial {
    /// The code in the audit record (iron-proxy's).
    pub fn code(self) -> &'static str {
        match self {
            McpDenial::Malformed => "malformed_jsonrpc",
            McpDenial::ToolNotAllowed => "tool_not_allowed",
            McpDenial::ArgumentConstraint => "argument_constraint",
        }
    }
}

/// One JSON-RPC message as judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// Its method (`tools/call`, `initialize`, …; empty when malformed).
    pub method: String,
    /// The tool, for a `tools/call`.
    pub tool: Option<String>,
    /// Its id (`null` for notifications and malformed messages).
    pub id: Value,
    /// Why it was denied, if it was.
    pub denied: Option<McpDenial>,
}

impl Mcp {
    /// The server a request is for, if any.
    pub fn server_for(&self, req: &Request<'_>) -> Option<usize> {
        self.servers
            .iter()
            .position(|s| s.rules.iter().any(|r| r.matches(req)))
    }

    /// The HTTP 200 body answering a denied body: one error per message (a batch for a
    /// batch), each with its message's id.
    pub fn denial(&self, judged: &[Judged], batch: bool) -> String {
        let error = |j: &Judged| {
            serde_json::json!({
                "jsonrpc": "2.0",
                "id": j.id,
                "error": {
                    "code": self.error_code,
                    "message": self.error_message,
                    "data": {"reason": j.denied.unwrap_or(McpDenial::Malformed).code()},
                },
            })
        };
        match batch {
            true => Value::Array(judged.iter().map(error).collect()).to_string(),
            false => judged.first().map(error).unwrap_or(Value::Null).to_string(),
        }
    }
}

impl McpServer {
    /// Judges a request body: a message or a batch. Returns each message and whether the body
    /// was a batch; a batch with any denied message is denied whole.
    pub fn judge(&self, body: &[u8]) -> (Vec<Judged>, bool) {
        let malformed = || Judged {
            method: String::new(),
            tool: None,
            id: Value::Null,
            denied: Some(McpDenial::Malformed),
        };
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) if !items.is_empty() => {
                (items.iter().map(|m| self.message(m)).collect(), true)
            }
            Ok(m @ Value::Object(_)) => (vec![self.message(&m)], false),
            _ => (vec![malformed()], false),
        }
    }

    fn message(&self, m: &Value) -> Judged {
        let id = m.get("id").cloned().unwrap_or(Value::Null);
        let Some(method) = m.get("method").and_then(Value::as_str) else {
            // A response (the client answering the server's request) passes.
            let denied = m.get("result").or(m.get("error")).is_none();
            let denied = denied.then_some(McpDenial::Malformed);
            return Judged {
                method: String::new(),
                tool: None,
                id,
                denied,
            };
        };
        let mut j = Judged {
            method: method.to_string(),
            tool: None,
            id,
            denied: None,
        };
        if method != "tools/call" {
            return j;
        }
        let params = m.get("params");
        let Some(name) = params.and_then(|p| p.get("name")).and_then(Value::as_str) else {
            j.denied = Some(McpDenial::Malformed);
            return j;
        };
        j.tool = Some(name.to_string());
        let args = params
            .and_then(|p| p.get("arguments"))
            .unwrap_or(&Value::Null);
        j.denied = match self.tools.iter().find(|t| t.name == name) {
            None => Some(McpDenial::ToolNotAllowed),
            Some(t) if !t.when.iter().all(|c| c.holds(args)) => Some(McpDenial::ArgumentConstraint),
            Some(_) => None,
        };
        j
    }
}

impl Clause {
    fn holds(&self, args: &Value) -> bool {
        let mut v = args;
        for seg in &self.path {
            v = match v {
                Value::Object(m) => match m.get(seg) {
                    Some(x) => x,
                    None => return false,
                },
                Value::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get(i)) {
                    Some(x) => x,
                    None => return false,
                },
                _ => return false,
            };
        }
        match &self.test {
            Test::Equals(want) => same(v, want),
            Test::In(options) => options.iter().any(|o| same(v, o)),
            Test::Matches(re) => v.as_str().is_some_and(|s| re.is_match(s)),
        }
    }
}

/// JSON scalars compared with numbers as numbers (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

pub(crate) fn mcp(raw: RawMcp, errs: &mut Errors) -> Option<Mcp> {
    if raw.servers.is_empty() {
        return None;
    }
    let mut servers: Vec<McpServer> = Vec::with_capacity(raw.servers.len());
    for (i, s) in raw.servers.into_iter().enumerate() {
        let base = format!("mcp.servers[{i}]");
        if s.name.value.is_empty() || servers.iter().any(|o| o.name == s.name.value) {
            errs.push(
                format!("{base}.name"),
                pos(&s.name),
                "must be unique and not empty",
            );
        }
        let tools = s
            .tools
            .into_iter()
            .enumerate()
            .map(|(k, t)| tool(&format!("{base}.tools[{k}]"), t, errs))
            .collect();
        servers.push(McpServer {
            name: s.name.value.clone(),
            rules: required_rules(&base, &s.rules, errs),
            tools,
        });
    }
    Some(Mcp {
        error_code: raw.error.code.unwrap_or(-32001),
        error_message: raw
            .error
            .message
            .unwrap_or_else(|| "blocked by policy".into()),
        servers,
    })
}

fn tool(base: &str, raw: RawTool, errs: &mut Errors) -> McpTool {
    let mut when = Vec::with_capacity(raw.when.len());
    for (k, c) in raw.when.into_iter().enumerate() {
        let at = format!("{base}.when[{k}]");
        let test = match (c.equals, c.one_of, c.matches) {
            (Some(v), None, None) => Test::Equals(v),
            (None, Some(vs), None) => Test::In(vs),
            (None, None, Some(re)) => match regex::Regex::new(&re.value) {
                Ok(r) => Test::Matches(r),
                Err(e) => {
                    errs.push(
                        format!("{at}.matches"),
                        pos(&re),
                        format!("invalid regex: {e}"),
                    );
                    continue;
                }
            },
            _ => {
                errs.push(
                    &at,
                    pos(&c.path),
                    "give exactly one of `equals`, `in` or `matches`",
                );
                continue;
            }
        };
        let path: Vec<String> = c.path.value.split('.').map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            errs.push(format!("{at}.path"), pos(&c.path), "an empty path segment");
            continue;
        }
        when.push(Clause { path, test });
    }
    McpTool {
        name: raw.name.value.clone(),
        when,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    const POLICY: &str = "dns: {enabled: false}
mcp:
  servers:
    - name: github
      rules: [{host: mcp.test, paths: ['/mcp']}]
      tools:
        - name: search_issues
        - name: add_comment
          when:
            - {path: repo, in: [acme/app, acme/web]}
            - {path: labels.0, equals: triage}
            - {path: body, matches: '^[^@]*$'}
";

    fn server() -> McpServer {
        Config::parse(POLICY).unwrap().policy.mcp.unwrap().servers[0].clone()
    }

    fn one(body: &str) -> Judged {
        let (j, batch) = server().judge(body.as_bytes());
        assert!(!batch);
        j[0].clone()
    }

    #[test]
    fn tools_calls_are_judged_by_name_and_arguments() {
        let call = |tool: &str, args: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
            )
        };
        assert_eq!(one(&call("search_issues", "{}")).denied, None);
        let j = one(&call("delete_repo", "{}"));
        assert_eq!(
            (j.denied, j.tool.as_deref()),
            (Some(McpDenial::ToolNotAllowed), Some("delete_repo"))
        );
        assert_eq!(j.id, serde_json::json!(7));
        let ok = r#"{"repo":"acme/app","labels":["triage"],"body":"thanks"}"#;
        assert_eq!(one(&call("add_comment", ok)).denied, None);
        for bad in [
            r#"{"repo":"evil/app","labels":["triage"],"body":"x"}"#,
            r#"{"repo":"acme/app","labels":["bug"],"body":"x"}"#,
            r#"{"repo":"acme/app","labels":["triage"],"body":"mail me@evil"}"#,
            r#"{"repo":"acme/app"}"#,
        ] {
            assert_eq!(
                one(&call("add_comment", bad)).denied,
                Some(McpDenial::ArgumentConstraint),
                "{bad}"
            );
        }
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#).denied,
            None
        );
        assert_eq!(one(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).denied, None);
        assert_eq!(one("not json").denied, Some(McpDenial::Malformed));
        assert_eq!(
            one(r#"{"id":1,"method":"tools/call","params":{}}"#).denied,
            Some(McpDenial::Malformed)
        );
        let (j, batch) = server()
            .judge(format!("[{},{}]", call("search_issues", "{}"), call("rm_rf", "{}")).as_bytes());
        assert!(batch);
        assert_eq!(
            j.iter().map(|j| j.denied).collect::<Vec<_>>(),
            [None, Some(McpDenial::ToolNotAllowed)]
        );
        let mcp = Config::parse(POLICY).unwrap().policy.mcp.unwrap();
        let body: Value = serde_json::from_str(&mcp.denial(&j, true)).unwrap();
        assert_eq!(body[1]["error"]["code"], -32001);
        assert_eq!(body[1]["error"]["data"]["reason"], "tool_not_allowed");
    }

    #[test]
    fn bad_servers_are_reported() {
        let e = Config::parse(
            "dns: {enabled: false}
mcp:
  servers:
    - name: a
      tools: [{name: t, when: [{path: x, equals: 1, in: [2]}, {path: y, matches: '('}]}]
    - name: a
      rules: [{host: b.test}]
",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "mcp.servers[0].rules",
            "exactly one of",
            "invalid regex",
            "mcp.servers[1].name",
        ] {
            assert!(e.contains(want), "{want} in {e}");
        }
    }
}
