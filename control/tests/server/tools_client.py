"""The tools API driven with `requests`, as an agent's client and a tool author would.

argv: BASE_URL ALL_KEY (tools:*) GITHUB_KEY (tools:github) AGENT_KEY (agent) AUTHOR_DIR
REPO. Exits non-zero on the first failed check; prints "all checks passed" at the end.
"""

import shutil
import sys
import threading
import time

import requests

BASE, ALL, GITHUB, AGENT, AUTHOR, REPO = sys.argv[1:7]


def h(key):
    return {"Authorization": f"Bearer {key}"}


def call(tool, method, args, key=ALL, thread=None):
    headers = h(key)
    if thread:
        headers["X-Centaur-Thread-Key"] = thread
    return requests.post(f"{BASE}/tools/{tool}/{method}", json=args, headers=headers, timeout=60)


def check(cond, what, detail=""):
    if not cond:
        print(f"FAILED: {what}\n{detail}", file=sys.stderr)
        sys.exit(1)


def wait_for(what, pred, seconds):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        last = requests.get(f"{BASE}/tools", headers=h(ALL), timeout=10)
        if last.status_code == 200 and pred(last.json()):
            return last.json()
        time.sleep(0.2)
    check(False, f"waiting for {what}", last.text if last is not None else "")


listed = wait_for("github, http_fetch and probe", lambda t: {"github", "http_fetch", "probe"} <= set(t), 90)
check(
    listed["github"]["methods"] == ["comment", "read_file", "search_issues", "search_pull_requests"], "github's methods", listed
)
check("needs_secret" not in listed and "broken" not in listed, "hidden and broken tools are not listed", listed)

# A broken tool is reported with its error; a tool whose secret has no value is hidden.
r = requests.get(f"{BASE}/tools/broken", headers=h(ALL), timeout=10)
check(r.status_code == 404 and "failed to load" in r.text and "SyntaxError" in r.text, "broken tool's error", r.text)
r = requests.get(f"{BASE}/tools/needs_secret", headers=h(ALL), timeout=10)
check(r.status_code == 404 and r.json()["code"] == "NOT_FOUND", "a tool without its secret is hidden", r.text)

# The schema comes from the type hints and docstrings.
d = requests.get(f"{BASE}/tools/github", headers=h(GITHUB), timeout=10).json()
search = next(m for m in d["methods"] if m["name"] == "search_issues")
check(
    search["parameters"]["query"]
    == {"type": "string", "required": True, "description": search["parameters"]["query"]["description"]},
    "search_issues' query parameter",
    search,
)
check(search["parameters"]["limit"]["default"] == 10, "a default is shown", search)

# GitHub through the tool: the gateway injects the token (the fake refuses without it).
r = call("github", "search_issues", {"query": "crash", "repo": "octo/hello"}, key=GITHUB)
check(r.status_code == 200 and r.json()["result"][0]["title"] == "found: crash is:issue repo:octo/hello", "search_issues", r.text)
r = call("github", "search_pull_requests", {"query": "fix"}, key=GITHUB)
check(r.json()["result"][0]["pull_request"] is True, "search_pull_requests", r.text)
r = call("github", "read_file", {"repo": "octo/hello", "path": "README.md"}, key=GITHUB)
check(r.json()["result"]["text"].startswith("# Hello"), "read_file", r.text)
r = call("github", "comment", {"repo": "octo/hello", "number": 7, "body": "Looks good"}, key=GITHUB)
check(
    r.json()
    == {
        "tool": "github",
        "method": "comment",
        "result": {"id": 42, "url": "https://github.com/octo/hello/issues/7#issuecomment-42"},
    },
    "comment",
    r.text,
)
r = call("github", "read_file", {"repo": "octo/hello", "path": "nope.md"}, key=GITHUB)
check(
    r.status_code == 200 and r.json()["kind"] == "tool" and "404" in r.json()["error"],
    "a GitHub error comes back in the body",
    r.text,
)

# Scopes: tools:github sees and calls github only; an agent key has no tools at all.
r = requests.get(f"{BASE}/tools", headers=h(GITHUB), timeout=10)
check(set(r.json()) == {"github"}, "tools:github lists github only", r.text)
r = call("http_fetch", "get", {"url": "https://example.com/page"}, key=GITHUB)
check(r.status_code == 403 and r.json()["code"] == "FORBIDDEN", "tools:github cannot call http_fetch", r.text)
r = requests.get(f"{BASE}/tools", headers=h(AGENT), timeout=10)
check(r.status_code == 403, "an agent key cannot list tools", r.text)
r = requests.get(f"{BASE}/tools", timeout=10)
check(r.status_code == 401, "no key, no tools", r.text)

# http_fetch reaches its declared host; its gateway refuses any other one.
r = call("http_fetch", "get", {"url": "https://example.com/page"})
check(r.json()["result"]["text"] == "hello from example.com", "http_fetch on an allowed host", r.text)
r = call("http_fetch", "get", {"url": "https://api.github.com/search/issues?q=x"})
check(
    r.json().get("kind") == "tool" and "gateway refused api.github.com" in r.json()["error"],
    "an undeclared host is refused",
    r.text,
)

# Bad input, each with its own clear answer.
r = requests.post(f"{BASE}/tools/github/search_issues", data="[1, 2]", headers=h(ALL), timeout=10)
check(r.status_code == 400 and "JSON object" in r.json()["message"], "a non-object body", r.text)
r = requests.post(f"{BASE}/tools/github/search_issues", data="{nope", headers=h(ALL), timeout=10)
check(r.status_code == 400 and r.json()["code"] == "INVALID_JSON", "a body that is not JSON", r.text)
r = call("github", "delete_everything", {})
check(r.status_code == 404 and "search_issues" in r.json()["message"], "an unknown method names the methods", r.text)
r = call("nope", "x", {})
check(r.status_code == 404, "an unknown tool", r.text)
r = call("github", "search_issues", {"query": 5})
check(
    r.status_code == 200 and r.json()["kind"] == "arguments" and "query must be string" in r.json()["error"],
    "a wrong type",
    r.text,
)
r = call("github", "comment", {"repo": "a/b"})
check(r.json()["kind"] == "arguments" and "number, body" in r.json()["error"], "missing arguments", r.text)

# Concurrent calls are served at once: four calls meet at a barrier of four.
results = []
threads = [threading.Thread(target=lambda: results.append(call("probe", "meet", {"n": 4}).json())) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
check(all(r.get("result") == "met" for r in results), "four concurrent calls", results)

# A tool that hangs is cut off at its timeout; one that crashes is restarted.
r = call("probe", "hang", {})
check(r.json()["kind"] == "timeout" and "2s" in r.json()["error"], "a hanging call times out", r.text)
r = call("probe", "echo", {"text": "after the hang"})
check(r.json()["result"] == "after the hang", "the worker serves again after a timeout", r.text)
r = call("probe", "crash", {})
check(r.json()["kind"] == "crashed", "a crashing call", r.text)
r = call("probe", "echo", {"text": "after the crash"})
check(r.json()["result"] == "after the crash", "the worker is restarted after a crash", r.text)
r = call("probe", "context", {}, thread="api:probe-1")
check(r.json()["result"] == {"tool": "probe", "thread_key": "api:probe-1"}, "the session context reaches the tool", r.text)

# A replace-mode secret: the tool holds a placeholder and sends it; its gateway swaps it.
r = call("probe", "replaced", {})
check(
    r.json()["result"] == {"held": "centaur-placeholder-probe-GITHUB_TOKEN", "title": "found: probe"},
    "replace mode",
    r.text,
)

# /mcp's own bad input: JSON-RPC errors, notifications accepted, no server stream.
mcp = f"{BASE}/mcp"
r = requests.post(mcp, data="{nope", headers=h(ALL), timeout=10)
check(r.status_code == 400 and r.json()["error"]["code"] == -32700, "MCP: not JSON", r.text)
r = requests.post(mcp, json={"jsonrpc": "2.0", "id": 1, "method": "resources/list"}, headers=h(ALL), timeout=10)
check(r.json()["error"]["code"] == -32601, "MCP: a method not offered", r.text)
r = requests.post(mcp, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h(ALL), timeout=10)
check(r.status_code == 202 and r.text == "", "MCP: a notification", r.text)
r = requests.post(
    mcp,
    json={"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {"protocolVersion": "1999-01-01"}},
    headers=h(ALL),
    timeout=10,
)
check(r.json()["result"]["protocolVersion"] == "2025-06-18", "MCP: an unknown version gets ours", r.text)
r = requests.post(mcp, json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, headers=h(GITHUB), timeout=10)
check(
    {t["name"].split("__")[0] for t in r.json()["result"]["tools"]} == {"github"}, "MCP: a key's scope filters the list", r.text
)
r = requests.get(mcp, headers=h(ALL), timeout=10)
check(r.status_code == 405, "MCP: no server stream", r.text)
r = requests.post(mcp, json={"jsonrpc": "2.0", "id": 4, "method": "tools/list"}, headers=h(AGENT), timeout=10)
check(r.status_code == 403, "MCP: an agent key", r.text)

# A tool author's round trip: copy the example, add a method, call it; no restart.
start = time.monotonic()
shutil.copytree(f"{REPO}/tools/http_fetch", f"{AUTHOR}/my_fetch")
with open(f"{AUTHOR}/my_fetch/http_fetch_tool/client.py", "a") as f:
    f.write('\n    def shout(self, text: str) -> str:\n        """Say it louder."""\n        return text.upper() + "!"\n')
wait_for("my_fetch.shout", lambda t: "shout" in t.get("my_fetch", {}).get("methods", []), 30)
r = call("my_fetch", "shout", {"text": "hello"})
check(r.json()["result"] == "HELLO!", "the author's new method", r.text)
print(f"author round trip: listed and called in {time.monotonic() - start:.1f}s")
with open(f"{AUTHOR}/probe/probe.py", "a") as f:
    f.write('\n    def added(self) -> str:\n        """Added while running."""\n        return "new"\n')
wait_for("probe.added", lambda t: "added" in t.get("probe", {}).get("methods", []), 30)
check(call("probe", "added", {}).json()["result"] == "new", "an edited tool is reloaded")
shutil.rmtree(f"{AUTHOR}/my_fetch")
wait_for("my_fetch removed", lambda t: "my_fetch" not in t, 30)
print("all checks passed")
