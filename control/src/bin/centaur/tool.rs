//! `centaur tool` (`centaur-tool` inside every sandbox): list the tools, describe one, call a
//! method, JSON in and out. Inside a sandbox it reaches the control plane at
//! `http://centaur.internal` through the sandbox's gateway, which adds the thread's token;
//! outside, give `--server` and a key with a `tools:` scope.

use std::io::Read as _;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Map, Value, json};

use crate::client::{Api, ApiFailure, encode};

/// `centaur tool [TOOL [METHOD [ARGS…]]]`.
#[derive(Debug, Args)]
#[command(after_help = "Examples (inside a sandbox, as `centaur-tool`):
  centaur-tool                                   list the tools this thread may call
  centaur-tool github                            the methods of github, with their parameters
  centaur-tool github search_issues --query \"crash on start\" --limit 5
  centaur-tool github read_file '{\"repo\": \"octo/hello\", \"path\": \"README.md\"}'
  echo '{\"query\": \"x\"}' | centaur-tool github search_issues -

The result is printed as JSON on stdout. A tool's error is printed as {\"error\", \"kind\"} on
stdout with exit status 1; a refused call (scope, unknown tool) goes to stderr, status 2.")]
pub struct ToolArgs {
    /// The control plane (inside a sandbox: `http://centaur.internal`, through its gateway).
    #[arg(
        long,
        env = "CENTAUR_API_URL",
        default_value = "http://centaur.internal"
    )]
    pub server: String,
    /// An API key with a `tools:` scope; none inside a sandbox (its gateway adds the token).
    #[arg(
        long,
        env = "CENTAUR_API_KEY",
        hide_env_values = true,
        default_value = ""
    )]
    pub key: String,
    /// The tool; without it, list the tools.
    pub tool: Option<String>,
    /// The method; without it, describe the tool.
    pub method: Option<String>,
    /// The arguments: `--name value` pairs (typed by the method's parameters), one JSON
    /// object, or `-` to read that object from stdin.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs it: 0 on a result, 1 on a tool's error, 2 when the call was refused.
pub async fn run(a: ToolArgs) -> anyhow::Result<u8> {
    let api = Api::new(&a.server, &a.key)?;
    let answer = async {
        match (&a.tool, &a.method) {
            (None, _) => api.call("GET", "/tools", None).await,
            (Some(t), None) => {
                api.call("GET", &format!("/tools/{}", encode(t)), None)
                    .await
            }
            (Some(t), Some(m)) => {
                let args = arguments(&api, t, m, &a.args).await?;
                let path = format!("/tools/{}/{}", encode(t), encode(m));
                api.call("POST", &path, Some(&Value::Object(args))).await
            }
        }
    }
    .await;
    let v = match answer {
        Ok(v) => v,
        Err(e) => match e.downcast_ref::<ApiFailure>() {
            Some(f) => {
                eprintln!("centaur-tool: {} ({})", f.message, f.code);
                return Ok(2);
            }
            None => return Err(e),
        },
    };
    if a.method.is_none() {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    if let Some(err) = v.get("error") {
        println!("{}", json!({"error": err, "kind": v["kind"]}));
        return Ok(1);
    }
    println!("{}", v["result"]);
    Ok(0)
}

/// The call's arguments: a JSON object (given, or on stdin with `-`), or `--name value`
/// pairs typed by the method's parameters.
async fn arguments(
    api: &Api,
    tool: &str,
    method: &str,
    args: &[String],
) -> anyhow::Result<Map<String, Value>> {
    match args {
        [] => return Ok(Map::new()),
        [one] if one == "-" => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            return object(&text);
        }
        [one] if one.trim_start().starts_with('{') => return object(one),
        _ => {}
    }
    let described = api
        .call("GET", &format!("/tools/{}", encode(tool)), None)
        .await?;
    let params = described["methods"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == method))
        .map(|m| m["parameters"].clone())
        .unwrap_or(Value::Null);
    let mut out = Map::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(name) = flag.strip_prefix("--") else {
            bail!("expected --NAME VALUE, a JSON object or -, got {flag:?}");
        };
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (name, None),
        };
        let name = name.replace('-', "_");
        let raw = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .with_context(|| format!("--{name} needs a value"))?,
        };
        let kind = params[&name]["type"].as_str().unwrap_or("any");
        out.insert(name.clone(), typed(&name, kind, &raw)?);
    }
    Ok(out)
}

fn object(text: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str(text).context("the arguments are not JSON")? {
        Value::Object(m) => Ok(m),
        _ => bail!("the arguments must be one JSON object"),
    }
}

/// A flag's value as its parameter's type: numbers and booleans parsed, arrays and objects
/// as JSON, strings as given; `any` takes JSON when it parses.
fn typed(name: &str, kind: &str, raw: &str) -> anyhow::Result<Value> {
    let bad = || anyhow::anyhow!("--{name} must be {kind}, got {raw:?}");
    Ok(match kind {
        "string" => Value::String(raw.to_string()),
        "integer" => Value::from(raw.parse::<i64>().map_err(|_| bad())?),
        "number" => Value::from(raw.parse::<f64>().map_err(|_| bad())?),
        "boolean" => Value::Bool(raw.parse::<bool>().map_err(|_| bad())?),
        "array" | "object" => serde_json::from_str(raw).map_err(|_| bad())?,
        _ => serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_take_their_parameters_types() {
        assert_eq!(typed("n", "integer", "5").unwrap(), json!(5));
        assert_eq!(typed("q", "string", "5").unwrap(), json!("5"));
        assert_eq!(typed("b", "boolean", "true").unwrap(), json!(true));
        assert_eq!(typed("l", "array", "[1,2]").unwrap(), json!([1, 2]));
        assert_eq!(typed("x", "any", "{\"a\":1}").unwrap(), json!({"a": 1}));
        assert_eq!(typed("x", "any", "plain").unwrap(), json!("plain"));
        let e = typed("limit", "integer", "five").unwrap_err().to_string();
        assert!(e.contains("--limit must be integer"), "{e}");
        assert!(object("[1]").is_err());
    }
}
