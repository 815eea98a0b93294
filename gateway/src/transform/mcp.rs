//! `mcp`: the JSON-RPC body of a `POST` to an MCP server, judged before any credential touches
//! it (so the audit, which names methods and tools, sees only what the client sent). A denied
//! body is answered with JSON-RPC errors carrying the messages' ids, with HTTP 200.

use audit::{Annotations, McpMessage};
use policy::{McpDenial, Reason};

use crate::exchange::failure::Failure;
use crate::transform::step::{Cx, Transform};

/// The policy's MCP server at this index.
pub(super) struct Mcp(pub usize);

impl Transform for Mcp {
    async fn run(&self, cx: &mut Cx<'_>) -> Result<(), Failure> {
        let Some(mcp) = cx.snap.policy.mcp.as_ref() else {
            return Ok(());
        };
        let server = &mcp.servers[self.0];
        let body = cx.body.bytes().cloned().unwrap_or_default();
        let (judged, batch) = server.judge(&body);
        let denied = judged.iter().find_map(|j| j.denied);
        let messages = judged
            .iter()
            .map(|j| McpMessage {
                decision: if j.denied.is_some() { "deny" } else { "allow" },
                method: j.method.clone(),
                reason: j.denied.map(McpDenial::code),
                tool: j.tool.clone(),
            })
            .collect();
        let note = Annotations::Mcp {
            messages,
            server: server.name.clone(),
        };
        let action = if denied.is_some() { "reject" } else { "allow" };
        cx.note("mcp", action, note);
        match denied {
            None => Ok(()),
            Some(d) => Err(Failure::Mcp {
                reason: match d {
                    McpDenial::Malformed => Reason::MalformedJsonrpc,
                    McpDenial::ToolNotAllowed => Reason::ToolNotAllowed,
                    McpDenial::ArgumentConstraint => Reason::ArgumentConstraint,
                },
                body: mcp.denial(&judged, batch),
            }),
        }
    }
}
