"""A fake OpenAI chat-completions API over HTTPS, for running a real agent CLI against.

Usage: llm.py DIR KEY. Makes a CA and a certificate for api.llm.test with trustme, writes the
CA to DIR/ca.pem, prints {"port": N} once listening. Every request is appended to
DIR/requests.jsonl as {"method", "path", "authorization"}. A request whose Authorization is not
"Bearer KEY" gets 401; POST /v1/chat/completions answers "pong from the fake LLM", streamed
as server-sent events when the request asks for a stream."""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

from tls_serve import serve

DIR, KEY = sys.argv[1], sys.argv[2]
ANSWER = "pong from the fake LLM"
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body, ctype="application/json"):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def record(self):
        with LOCK, open(f"{DIR}/requests.jsonl", "a") as f:
            entry = {"method": self.command, "path": self.path,
                     "authorization": self.headers.get("authorization", "")}
            f.write(json.dumps(entry) + "\n")

    def do_GET(self):
        self.record()
        if self.headers.get("authorization") != f"Bearer {KEY}":
            return self.reply(401, {"error": {"message": "invalid api key"}})
        self.reply(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.record()
        if self.headers.get("authorization") != f"Bearer {KEY}":
            return self.reply(401, {"error": {"message": "invalid api key"}})
        if not self.path.startswith("/v1/chat/completions"):
            return self.reply(404, {"error": {"message": "not found"}})
        created = int(time.time())
        base = {"id": "chatcmpl-fake", "created": created, "model": body.get("model", "m")}
        if not body.get("stream"):
            return self.reply(200, dict(base, object="chat.completion", choices=[{
                "index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": ANSWER}}],
                usage={"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        chunks = [{"role": "assistant", "content": ""}, {"content": "pong from "},
                  {"content": "the fake LLM"}]
        for delta in chunks:
            event = dict(base, object="chat.completion.chunk",
                         choices=[{"index": 0, "delta": delta, "finish_reason": None}])
            self.chunk(f"data: {json.dumps(event)}\n\n".encode())
        last = dict(base, object="chat.completion.chunk",
                    choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    usage={"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10})
        self.chunk(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        self.chunk(b"")

    def chunk(self, data):
        """One chunk of a chunked body, flushed at once (an empty one ends the body)."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


serve(Handler, DIR, "api.llm.test")
