"""A real MCP server and a real MCP client (the `mcp` SDK), for the gateway's `mcp` policy.

server PORT LOG: a FastMCP server over streamable HTTP at http://127.0.0.1:PORT/mcp with the tools
        search_issues, add_comment and delete_repo. Host checks are off: it sits behind the
        gateway, reached as mcp.test. Each tool it runs appends a line to LOG.
client PROXY URL: connects through the gateway (httpx with PROXY), lists the tools, then calls
        search_issues, add_comment (allowed and refused arguments) and delete_repo, and prints
        one JSON line per call: {"call", "error", "text"}.

Usage: mcp_pair.py server PORT LOG | mcp_pair.py client PROXY URL"""

import asyncio
import json
import sys

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.server.fastmcp import FastMCP
from mcp.server.transport_security import TransportSecuritySettings


def server(port, log):
    def ran(line):
        with open(log, "a") as f:
            f.write(line + "\n")

    app = FastMCP(
        "issues",
        host="127.0.0.1",
        port=port,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )

    @app.tool()
    def search_issues(query: str) -> str:
        """Searches issues."""
        ran("search_issues")
        return f"3 issues match {query}"

    @app.tool()
    def add_comment(repo: str, body: str) -> str:
        """Comments on an issue."""
        ran(f"add_comment {repo}")
        return f"commented on {repo}"

    @app.tool()
    def delete_repo(repo: str) -> str:
        """Deletes a repository."""
        ran(f"delete_repo {repo}")
        return f"deleted {repo}"

    app.run(transport="streamable-http")


async def client(proxy, url):
    def factory(headers=None, timeout=None, auth=None):
        return httpx.AsyncClient(proxy=proxy, headers=headers, timeout=timeout, auth=auth)

    async with streamablehttp_client(url, httpx_client_factory=factory) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            print(json.dumps({"call": "list_tools", "tools": sorted(t.name for t in tools.tools)}), flush=True)
            calls = [
                ("search_issues", {"query": "flaky"}),
                ("add_comment", {"repo": "acme/app", "body": "thanks"}),
                ("add_comment", {"repo": "evil/app", "body": "thanks"}),
                ("delete_repo", {"repo": "acme/app"}),
            ]
            for name, args in calls:
                out = {"call": name, "args": args, "error": None, "text": None}
                try:
                    r = await session.call_tool(name, args)
                    out["text"] = r.content[0].text if r.content else None
                    out["is_error"] = r.isError
                except Exception as e:  # the SDK raises McpError for a JSON-RPC error
                    out["error"] = str(e)
                print(json.dumps(out), flush=True)


if sys.argv[1] == "server":
    server(int(sys.argv[2]), sys.argv[3])
else:
    asyncio.run(client(sys.argv[2], sys.argv[3]))
