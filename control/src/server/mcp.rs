//! `/mcp`: the tools a key may use as an MCP server (streamable HTTP, JSON answers). Each
//! tool method is one MCP tool named `TOOL__METHOD`, its parameters the input schema. A
//! thread's sandbox reaches it at `http://centaur.internal/mcp` with its token added by its
//! gateway; any other client with a key that has a `tools:` scope.
//!
//! Stateless: no session id is issued, no server-initiated stream is offered (`GET` and
//! `DELETE` answer 405), and every request is answered with one JSON body.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::server::app::App;
use crate::server::http::{ApiError, bytes, caller};
use crate::store::{Key, Scope};
use crate::tools::host::State as ToolState;
use crate::tools::worker::{Method, Reply};

/// Protocol versions we speak, newest first; a client asking for another gets the newest.
const VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];

/// JSON-RPC error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// `POST /mcp`: one JSON-RPC message (or a batch); notifications get 202.
pub async fn post(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = caller(&app, &headers, Scope::Tools).await?;
    let bytes = bytes(&app, body).await?;
    let Ok(message) = serde_json::from_slice::<Value>(&bytes) else {
        let e = error(Value::Null, PARSE_ERROR, "the body is not JSON");
        return Ok((StatusCode::BAD_REQUEST, axum::Json(e)).into_response());
    };
    let answer = match message {
        Value::Array(batch) => {
            let mut out = Vec::new();
            for m in batch {
                out.extend(handle(&app, &key, m).await);
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        m => handle(&app, &key, m).await,
    };
    Ok(match answer {
        Some(v) => axum::Json(v).into_response(),
        None => StatusCode::ACCEPTED.into_response(),
    })
}

/// `GET` / `DELETE /mcp`: no server stream, no sessions.
pub async fn not_offered() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [("allow", "POST")],
        "this MCP server answers POST only (no server-initiated stream, no sessions)",
    )
        .into_response()
}

/// One message's answer; `None` for a notification or a response.
async fn handle(app: &App, key: &Key, m: Value) -> Option<Value> {
    let id = m.get("id").cloned();
    let Some(method) = m.get("method").and_then(Value::as_str) else {
        // A response from the client (we send no requests), or nonsense.
        return id.map(|id| error(id, INVALID_REQUEST, "not a JSON-RPC request"));
    };
    let id = id?; // a notification (`notifications/initialized`, `…/cancelled`)
    let params = m.get("params").cloned().unwrap_or(Value::Null);
    Some(match method {
        "initialize" => {
            let asked = params["protocolVersion"].as_str().unwrap_or("");
            let version = VERSIONS
                .iter()
                .find(|v| **v == asked)
                .unwrap_or(&VERSIONS[0]);
            ok(
                id,
                json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "centaur", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": "Centaur's tools. Each tool is TOOL__METHOD; credentials are added by the tools' own gateways.",
                }),
            )
        }
        "ping" => ok(id, json!({})),
        "tools/list" => ok(id, json!({"tools": list(app, key)})),
        "tools/call" => call(app, key, id, &params).await,
        other => error(
            id,
            METHOD_NOT_FOUND,
            &format!("method {other:?} is not offered (initialize, ping, tools/list, tools/call)"),
        ),
    })
}

/// Every method of every tool the key may use.
fn list(app: &App, key: &Key) -> Vec<Value> {
    let Some(host) = &app.tools else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in host.tools() {
        let ToolState::Ready { description, .. } = &t.state else {
            continue;
        };
        if !Scope::tool_allowed(&key.scopes, &t.name) {
            continue;
        }
        for m in &description.methods {
            out.push(json!({
                "name": format!("{}__{}", t.name, m.name),
                "description": m.description,
                "inputSchema": schema(m),
            }));
        }
    }
    out
}

/// A method's parameters as a JSON Schema object.
fn schema(m: &Method) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, p) in &m.parameters {
        let mut prop = Map::new();
        if let Some(t) = p["type"].as_str().filter(|t| *t != "any") {
            prop.insert(
                "type".into(),
                if p["nullable"] == true {
                    json!([t, "null"])
                } else {
                    json!(t)
                },
            );
        }
        for k in ["description", "default"] {
            if let Some(v) = p.get(k) {
                prop.insert(k.into(), v.clone());
            }
        }
        if p["required"] == true {
            required.push(name.clone());
        }
        properties.insert(name.clone(), Value::Object(prop));
    }
    json!({"type": "object", "properties": properties, "required": required})
}

async fn call(app: &App, key: &Key, id: Value, params: &Value) -> Value {
    let Some(name) = params["name"].as_str() else {
        return error(id, INVALID_PARAMS, "tools/call needs a name");
    };
    let args = match params.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => return error(id, INVALID_PARAMS, "arguments must be an object"),
    };
    let Some(host) = &app.tools else {
        return error(id, INVALID_PARAMS, "no tools are configured on this server");
    };
    // Tool names may hold `_`: the tool whose name (and `__`) starts this one, with the method.
    let found = host.tools().into_iter().find_map(|t| {
        let method = name.strip_prefix(&t.name)?.strip_prefix("__")?.to_string();
        let usable = Scope::tool_allowed(&key.scopes, &t.name)
            && matches!(&t.state, ToolState::Ready { description, .. }
                if description.methods.iter().any(|x| x.name == method));
        usable.then_some((t, method))
    });
    let Some((tool, method)) = found else {
        return error(id, INVALID_PARAMS, &format!("unknown tool {name:?}"));
    };
    let thread = key.thread_key.as_deref();
    let (text, structured, is_error) = match host.call(&tool, &method, &args, thread).await {
        Reply::Result(v) => {
            let text = match &v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (text, v.is_object().then_some(v), false)
        }
        Reply::Error { kind, message } => (format!("{kind}: {message}"), None, true),
    };
    let mut result = json!({"content": [{"type": "text", "text": text}], "isError": is_error});
    if let Some(s) = structured {
        result["structuredContent"] = s;
    }
    ok(id, result)
}

fn ok(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}
