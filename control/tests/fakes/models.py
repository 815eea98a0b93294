"""A fake model API over HTTPS that real agent CLIs run against: the Anthropic Messages API
(`POST /v1/messages`), the OpenAI Responses API (`POST /v1/responses`) and Chat Completions
(`POST /v1/chat/completions`), streamed as server-sent events when asked (JSON otherwise).

Usage: models.py DIR KEY. Makes a CA and a certificate for model.test with trustme, writes the
CA to DIR/ca.pem, prints {"port": N} once listening. Every request is appended to
DIR/requests.jsonl as {"method", "path", "x-api-key", "authorization", "body"}. A model
request without KEY (as `x-api-key` or `Authorization: Bearer`) gets 401.

The script, from the newest user input of the request (its last directive):
* a tool result → the text `DONE:<its output>`;
* `RUN:<cmd>` → one call of the request's shell tool (Bash, bash, exec_command or shell)
  running `<cmd>`;
* `AGENT:<text>` → one call of the request's subagent tool (Task or Agent) with the prompt
  `<text>` (Anthropic only);
* `MCP:<tool> <json>` → one call of the request's tool `<tool>` (an MCP tool such as
  `mcp__centaur__github__search_issues`) with the JSON arguments, or the text
  `NO_TOOL:<tool> (tools: …)` when the request does not offer it (Anthropic and Responses);
* `SAY:<text>` → the text `<text>`;
* `HANG` → the stream opens and then nothing comes, ever;
* anything else → the text `OK`.
"""

import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler

from tls_serve import serve

DIR, KEY = sys.argv[1], sys.argv[2]
LOCK = threading.Lock()
SHELL_TOOLS = {"Bash": "command", "bash": "command", "exec_command": "cmd", "shell": "command"}


def text_of(content):
    """The text of a message content: a string, or blocks / parts with text."""
    if isinstance(content, str):
        return content
    out = []
    for b in content or []:
        if isinstance(b, str):
            out.append(b)
        elif isinstance(b, dict):
            for k in ("text", "output", "content"):
                v = b.get(k)
                if isinstance(v, (str, list)):
                    out.append(text_of(v))
                    break
    return "\n".join(out)


def tool_output(text):
    """A shell tool's output, without codex's preamble (`... Output:\\n`)."""
    if "Output:\n" in text:
        text = text.split("Output:\n", 1)[1]
    return text.strip()


def decide(items):
    """What to answer, from the newest input backwards: (kind, value). `items` are
    (role, kind, text) with kind "tool_result" or "text"."""
    for role, kind, text in reversed(items):
        if kind == "tool_result":
            return "text", f"DONE:{tool_output(text)}"
        if role == "assistant":
            return "text", "OK"
        if role != "user":
            continue
        found = list(re.finditer(r"(AGENT|RUN|SAY|MCP):(.+)|\bHANG\b", text))
        if found:
            # The last directive wins (a replayed transcript, or a turn the user interrupted,
            # comes before the new message).
            last = found[-1]
            if last.group(0) == "HANG":
                return "hang", None
            verb, arg = last.group(1), last.group(2).strip()
            return {"AGENT": "agent", "RUN": "tool", "SAY": "text", "MCP": "mcp"}[verb], arg
    return "text", "OK"


def shell_tool(tools):
    """(name, argument) of the request's shell tool."""
    for t in tools or []:
        name = t.get("name") or (t.get("function") or {}).get("name")
        if name in SHELL_TOOLS:
            return name, SHELL_TOOLS[name]
    return "bash", "command"


def anthropic_items(body):
    items = []
    for m in body.get("messages", []):
        content = m.get("content")
        if isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content
        ):
            for b in content:
                if isinstance(b, dict) and b.get("type") == "tool_result":
                    items.append((m["role"], "tool_result", text_of(b.get("content"))))
        else:
            items.append((m.get("role"), "text", text_of(content)))
    return items


def responses_items(body):
    items = []
    for it in body.get("input", []) if isinstance(body.get("input"), list) else []:
        t = it.get("type", "message")
        if t in ("function_call_output", "custom_tool_call_output"):
            out = it.get("output")
            items.append(("tool", "tool_result", out if isinstance(out, str) else text_of(out)))
        elif t == "message":
            items.append((it.get("role"), "text", text_of(it.get("content"))))
    if isinstance(body.get("input"), str):
        items.append(("user", "text", body["input"]))
    return items


def chat_items(body):
    items = []
    for m in body.get("messages", []):
        if m.get("role") == "tool":
            items.append(("tool", "tool_result", text_of(m.get("content"))))
        else:
            items.append((m.get("role"), "text", text_of(m.get("content"))))
    return items


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

    def chunk(self, data):
        """One chunk of a chunked body, flushed at once (an empty one ends the body)."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def sse(self, event, data):
        head = f"event: {event}\n" if event else ""
        self.chunk(f"{head}data: {json.dumps(data)}\n\n".encode())

    def hang(self):
        self.start_stream()
        time.sleep(3600)

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self):
        self.reply(404, {"error": {"message": f"no {self.path} here"}})

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length) or b"{}"
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"unparsed": raw[:200].decode(errors="replace")}
        with LOCK, open(f"{DIR}/requests.jsonl", "a") as f:
            f.write(json.dumps({
                "method": self.command, "path": self.path,
                "x-api-key": self.headers.get("x-api-key", ""),
                "authorization": self.headers.get("authorization", ""),
                "body": body,
            }) + "\n")
        if KEY not in (self.headers.get("x-api-key"), (self.headers.get("authorization") or "")[7:]):
            return self.reply(401, {"type": "error", "error": {
                "type": "authentication_error", "message": "invalid api key"}})
        path = self.path.split("?")[0]
        if path.endswith("/messages"):
            return self.anthropic(body)
        if path.endswith("/responses"):
            return self.openai_responses(body)
        if path.endswith("/chat/completions"):
            return self.chat(body)
        self.reply(404, {"error": {"message": f"no {path} here"}})

    # --- Anthropic Messages -------------------------------------------------------------

    def anthropic(self, body):
        kind, value = decide(anthropic_items(body))
        if kind == "hang":
            return self.hang()
        model = body.get("model", "fake-model")
        usage = {"input_tokens": 12, "output_tokens": 7}
        if kind == "mcp":
            name, _, raw = value.partition(" ")
            names = sorted(t.get("name", "") for t in body.get("tools") or [])
            if name not in names:
                kind, value = "text", f"NO_TOOL:{name} (tools: {', '.join(n for n in names if n.startswith('mcp__'))})"
        if kind in ("tool", "agent", "mcp"):
            if kind == "mcp":
                name, args = name, json.loads(raw or "{}")
            elif kind == "agent":
                names = {t.get("name") for t in body.get("tools") or []}
                name = "Agent" if "Agent" in names else "Task"
                args = {"description": "a subagent", "prompt": value,
                        "subagent_type": "general-purpose"}
            else:
                name, arg = shell_tool(body.get("tools"))
                args = {arg: value}
            block = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": name,
                     "input": args}
            stop = "tool_use"
        else:
            block = {"type": "text", "text": value}
            stop = "end_turn"
        message = {"id": f"msg_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant",
                   "model": model, "content": [block], "stop_reason": stop,
                   "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            return self.reply(200, message)
        self.start_stream()
        self.sse("message_start", {"type": "message_start", "message": dict(
            message, content=[], stop_reason=None, usage={"input_tokens": 12, "output_tokens": 1})})
        if block["type"] == "tool_use":
            self.sse("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": dict(block, input={})})
            self.sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
        else:
            self.sse("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}})
            self.sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": value}})
        self.sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        self.sse("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 7}})
        self.sse("message_stop", {"type": "message_stop"})
        self.chunk(b"")

    # --- OpenAI Responses ---------------------------------------------------------------

    def openai_responses(self, body):
        kind, value = decide(responses_items(body))
        if kind == "hang":
            return self.hang()
        rid = f"resp_{uuid.uuid4().hex[:20]}"
        namespace = None
        if kind == "mcp":
            name, _, raw = value.partition(" ")
            # Codex offers an MCP server's tools as a namespace (`mcp__SERVER`) of functions; a
            # call names the namespace and the function.
            offered = {}
            for t in body.get("tools") or []:
                if t.get("type") == "namespace":
                    for sub in t.get("tools") or []:
                        offered[f"{t.get('name')}__{sub.get('name')}"] = (t.get("name"), sub.get("name"))
                else:
                    n = t.get("name") or (t.get("function") or {}).get("name") or ""
                    offered[n] = (None, n)
            if name in offered:
                kind, args = "tool", json.loads(raw or "{}")
                namespace, name = offered[name]
            else:
                kind, value = "text", f"NO_TOOL:{name} (tools: {', '.join(n for n in sorted(offered) if 'centaur' in n)})"
        elif kind == "tool":
            name, arg = shell_tool(body.get("tools"))
            args = {arg: ["bash", "-lc", value] if name == "shell" else value}
        if kind == "tool":
            item = {"type": "function_call", "id": f"fc_{uuid.uuid4().hex[:16]}",
                    "call_id": f"call_{uuid.uuid4().hex[:16]}", "name": name,
                    "arguments": json.dumps(args), "status": "completed"}
            if namespace:
                item["namespace"] = namespace
        else:
            item = {"type": "message", "id": f"msg_{uuid.uuid4().hex[:16]}", "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": value, "annotations": []}]}
        usage = {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": 10, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": 30}
        response = {"id": rid, "object": "response", "created_at": int(time.time()),
                    "status": "completed", "model": body.get("model", "fake-model"),
                    "output": [item], "usage": usage}
        if not body.get("stream"):
            return self.reply(200, response)
        self.start_stream()
        self.sse("response.created", {"type": "response.created", "response": dict(
            response, status="in_progress", output=[], usage=None)})
        if item["type"] == "message":
            self.sse("response.output_item.added", {
                "type": "response.output_item.added", "output_index": 0,
                "item": dict(item, status="in_progress", content=[])})
            self.sse("response.output_text.delta", {
                "type": "response.output_text.delta", "item_id": item["id"], "output_index": 0,
                "content_index": 0, "delta": value})
        else:
            self.sse("response.output_item.added", {
                "type": "response.output_item.added", "output_index": 0,
                "item": dict(item, status="in_progress", arguments="")})
        self.sse("response.output_item.done", {"type": "response.output_item.done",
                                               "output_index": 0, "item": item})
        self.sse("response.completed", {"type": "response.completed", "response": response})
        self.chunk(b"")

    # --- Chat Completions ---------------------------------------------------------------

    def chat(self, body):
        kind, value = decide(chat_items(body))
        if kind == "hang":
            return self.hang()
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "created": int(time.time()),
                "model": body.get("model", "fake-model")}
        usage = {"prompt_tokens": 15, "completion_tokens": 8, "total_tokens": 23}
        if kind == "tool":
            name, arg = shell_tool(body.get("tools"))
            call = {"id": f"call_{uuid.uuid4().hex[:16]}", "type": "function",
                    "function": {"name": name, "arguments": json.dumps({arg: value})}}
            message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
            delta = {"role": "assistant", "content": None, "tool_calls": [dict(call, index=0)]}
        else:
            message, finish = {"role": "assistant", "content": value}, "stop"
            delta = {"role": "assistant", "content": value}
        if not body.get("stream"):
            return self.reply(200, dict(base, object="chat.completion", usage=usage, choices=[
                {"index": 0, "finish_reason": finish, "message": message}]))
        self.start_stream()
        chunk = dict(base, object="chat.completion.chunk")
        self.sse(None, dict(chunk, choices=[{"index": 0, "delta": delta, "finish_reason": None}]))
        self.sse(None, dict(chunk, choices=[{"index": 0, "delta": {}, "finish_reason": finish}]))
        self.sse(None, dict(chunk, choices=[], usage=usage))
        self.chunk(b"data: [DONE]\n\n")
        self.chunk(b"")


serve(Handler, DIR, "model.test", "127.0.0.1")
