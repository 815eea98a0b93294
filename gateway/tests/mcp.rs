//! The `mcp` policy with the real MCP SDK on both sides: a FastMCP server behind the gateway
//! and the SDK's streamable-HTTP client in front of it. Allowed tools run; a tool not on the
//! list, or arguments failing a `when` clause, get a JSON-RPC error and never reach the
//! server; every judged body has a record naming the server, method and tool.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, json, python};

/// The FastMCP server, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fakes/mcp_pair.py")
        .display()
        .to_string()
}

fn start_server(log: &Path) -> (Server, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(python())
        .args([script(), "server".into(), port.to_string()])
        .arg(log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the MCP server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (server, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_calls_are_allowed_or_denied_by_name_and_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran.txt");
    let (_server, port) = start_server(&ran);
    let t = "  - name: allowlist
    config: {domains: [mcp.test]}
mcp:
  servers:
    - name: issues
      rules: [{host: mcp.test, paths: ['/mcp']}]
      tools:
        - name: search_issues
        - name: add_comment
          when: [{path: repo, matches: '^acme/'}]
";
    let env = Env::start(common::Opts {
        transforms: Some(t.into()),
        pins: vec![("mcp.test".into(), format!("127.0.0.1:{port}"))],
        ..common::Opts::default()
    })
    .await;
    let args = [
        "client".into(),
        format!("http://{}", env.tunnel()),
        "http://mcp.test/mcp".into(),
    ];
    let stdout = common::python_script(&script(), &args).await;
    let calls: Vec<serde_json::Value> = stdout.lines().map(json).collect();
    assert_eq!(calls.len(), 5, "{stdout}");
    assert_eq!(calls[1]["text"], "3 issues match flaky", "{stdout}");
    assert_eq!(calls[2]["text"], "commented on acme/app", "{stdout}");
    for refused in [&calls[3], &calls[4]] {
        let e = refused["error"].as_str().unwrap_or_default();
        assert!(e.contains("blocked by policy"), "{refused}");
    }
    // The server ran exactly the allowed calls.
    let ran = std::fs::read_to_string(&ran).unwrap();
    assert_eq!(ran, "search_issues\nadd_comment acme/app\n");

    let denied = env.record(|r| r["reason"] == "tool_not_allowed").await;
    assert_eq!(denied["status_code"], 200);
    assert_eq!(denied["rejected_by"], "mcp");
    let note = common::ann(&denied, "mcp");
    assert_eq!(note["server"], "issues");
    assert_eq!(note["messages"][0]["tool"], "delete_repo");
    assert_eq!(note["messages"][0]["decision"], "deny");
    let args = env.record(|r| r["reason"] == "argument_constraint").await;
    assert_eq!(
        common::ann(&args, "mcp")["messages"][0]["tool"],
        "add_comment"
    );
    assert!(
        !args.to_string().contains("evil/app"),
        "arguments are not audited: {args}"
    );
    let allowed = env
        .audit(0)
        .await
        .into_iter()
        .filter(|r| {
            r["request_transforms"].as_array().is_some_and(|ts| {
                ts.iter().any(|t| {
                    t["name"] == "mcp" && t["annotations"]["messages"][0]["tool"] == "search_issues"
                })
            })
        })
        .count();
    assert_eq!(allowed, 1);
    env.stop().await;
}
