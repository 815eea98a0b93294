#!/usr/bin/env python3
"""Run inside a thread's sandbox by the tools test: the MCP SDK's streamable-HTTP client
against the control plane at http://centaur.internal/mcp (the sandbox's gateway adds the
thread's token). Prints one JSON line: the tool names listed, a call's structured result,
and the error of a call to a tool this thread may not use."""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError

URL = sys.argv[1] if len(sys.argv) > 1 else "http://centaur.internal/mcp"


async def main():
    async with streamablehttp_client(URL) as (read, write, _):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            listed = await session.list_tools()
            found = await session.call_tool("github__read_file", {"repo": "octo/hello", "path": "README.md"})
            try:
                await session.call_tool("http_fetch__get", {"url": "https://example.com/page"})
                refused = "called"
            except McpError as e:
                refused = e.error.message
            bad = await session.call_tool("github__read_file", {"repo": 5, "path": "README.md"})
            print(
                json.dumps(
                    {
                        "server": init.serverInfo.name,
                        "tools": sorted(t.name for t in listed.tools),
                        "schema": next(t.inputSchema for t in listed.tools if t.name == "github__read_file"),
                        "found": found.structuredContent,
                        "found_error": found.isError,
                        "refused": refused,
                        "bad": [c.text for c in bad.content],
                        "bad_error": bad.isError,
                    }
                )
            )


asyncio.run(main())
