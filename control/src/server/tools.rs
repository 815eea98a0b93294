//! `/tools`: list the tools a key may use, describe one, call a method (`crate::tools`).
//! Tool and argument errors come back with 200 in the body, as the reference does; a body
//! that is not an object, an unknown tool or method are API errors.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Map, Value, json};

use crate::server::app::App;
use crate::server::http::{ApiError, bytes, caller, parse};
use crate::store::{Code, Key, Scope};
use crate::tools::host::{State as ToolState, Tool, ToolHost};
use crate::tools::worker::Reply;

fn host(app: &App) -> Result<&Arc<ToolHost>, ApiError> {
    app.tools.as_ref().ok_or_else(|| {
        ApiError::new(
            Code::NotFound,
            "no tools are configured on this server (tools: in its config)",
        )
    })
}

/// The tool, if the key may use it and it is ready.
fn usable(app: &App, key: &Key, name: &str) -> Result<Arc<Tool>, ApiError> {
    let host = host(app)?;
    if !Scope::tool_allowed(&key.scopes, name) {
        return Err(ApiError::new(
            Code::Forbidden,
            format!("the key {:?} lacks the scope tools:{name}", key.name),
        ));
    }
    let tool = host
        .get(name)
        .ok_or_else(|| ApiError::new(Code::NotFound, format!("no tool {name:?}")))?;
    match &tool.state {
        ToolState::Ready { .. } => Ok(tool),
        ToolState::MissingSecrets(_) => {
            Err(ApiError::new(Code::NotFound, format!("no tool {name:?}")))
        }
        ToolState::Broken(e) => Err(ApiError::new(
            Code::NotFound,
            format!("tool {name:?} failed to load: {e}"),
        )),
    }
}

/// `GET /tools` → `{name: {description, methods: [names]}}`, the tools this key may use.
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let key = caller(&app, &headers, Scope::Tools).await?;
    let mut out = Map::new();
    for t in host(&app)?.tools() {
        let ToolState::Ready {
            manifest,
            description,
        } = &t.state
        else {
            continue;
        };
        if !Scope::tool_allowed(&key.scopes, &t.name) {
            continue;
        }
        let methods: Vec<&str> = description
            .methods
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        out.insert(
            t.name.clone(),
            json!({"description": summary(&manifest.description, &description.description), "methods": methods}),
        );
    }
    Ok(Json(Value::Object(out)))
}

fn summary<'a>(declared: &'a str, described: &'a str) -> &'a str {
    if declared.is_empty() {
        described
    } else {
        declared
    }
}

/// `GET /tools/{tool}` → `{tool, description, methods: [{name, description, parameters}]}`.
pub async fn describe(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let key = caller(&app, &headers, Scope::Tools).await?;
    let tool = usable(&app, &key, &name)?;
    let ToolState::Ready {
        manifest,
        description,
    } = &tool.state
    else {
        return Err(ApiError::new(Code::NotFound, format!("no tool {name:?}")));
    };
    Ok(Json(json!({
        "tool": name,
        "description": summary(&manifest.description, &description.description),
        "methods": description.methods,
    })))
}

/// `POST /tools/{tool}/{method}` with a JSON object of arguments → `{tool, method, result}`,
/// or `{tool, method, error, kind}` (`arguments`, `tool`, `timeout`, `crashed`) with 200.
pub async fn call(
    State(app): State<Arc<App>>,
    Path((name, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let key = caller(&app, &headers, Scope::Tools).await?;
    let tool = usable(&app, &key, &name)?;
    if let ToolState::Ready { description, .. } = &tool.state
        && !description.methods.iter().any(|m| m.name == method)
    {
        let known: Vec<&str> = description
            .methods
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        return Err(ApiError::new(
            Code::NotFound,
            format!(
                "tool {name:?} has no method {method:?} (methods: {})",
                known.join(", ")
            ),
        ));
    }
    let bytes = bytes(&app, body).await?;
    let args: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse(&bytes)?
    };
    let Value::Object(args) = args else {
        // 400, as the reference answers a body that is not an object.
        return Err(ApiError::new(
            Code::InvalidJson,
            "the body must be a JSON object of the method's arguments ({} for none)",
        ));
    };
    // A sandbox token speaks for its own thread; another key may name one.
    let thread_key = key.thread_key.as_deref().or_else(|| {
        headers
            .get("x-centaur-thread-key")
            .and_then(|v| v.to_str().ok())
    });
    let reply = host(&app)?.call(&tool, &method, &args, thread_key).await;
    Ok(Json(match reply {
        Reply::Result(result) => json!({"tool": name, "method": method, "result": result}),
        Reply::Error { kind, message } => {
            json!({"tool": name, "method": method, "error": message, "kind": kind})
        }
    }))
}
