"""A fake of the GitHub REST API endpoints the github tool uses, and a plain web page, over
HTTPS: the origins behind the tools' gateways in the tool tests.

Usage: github.py DIR TOKEN. Makes a CA and one certificate for api.github.com and
example.com with trustme, writes the CA to DIR/ca.pem, prints {"port": N} once listening.
Every request is appended to DIR/requests.jsonl as {"host", "method", "path",
"authorization", "body"}.

api.github.com (GitHub's documented shapes; a request without `Authorization: Bearer TOKEN`
gets 401 {"message": "Bad credentials"}):
* GET /search/issues?q=… → {"total_count", "items": [...]}, items with `pull_request` when
  the query says is:pr;
* GET /repos/{owner}/{repo}/contents/{path} → a file object with base64 content;
* POST /repos/{owner}/{repo}/issues/{n}/comments → 201 with the comment.

example.com: GET /page → text/plain "hello from example.com".
"""

import base64
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler

from tls_serve import serve

DIR, TOKEN = sys.argv[1], sys.argv[2]
LOCK = threading.Lock()
FILES = {("octo/hello", "README.md"): "# Hello\nThis is the README.\n"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def record(self, body):
        entry = {
            "host": self.headers.get("Host", ""),
            "method": self.command,
            "path": self.path,
            "authorization": self.headers.get("Authorization"),
            "body": body.decode("utf-8", "replace"),
        }
        with LOCK, open(f"{DIR}/requests.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")

    def reply(self, status, payload, ctype="application/json"):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.record(body)
        host = self.headers.get("Host", "").split(":")[0]
        url = urllib.parse.urlsplit(self.path)
        if host == "example.com":
            if url.path == "/page":
                return self.reply(200, b"hello from example.com", "text/plain; charset=utf-8")
            return self.reply(404, b"not here", "text/plain")
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.reply(401, {"message": "Bad credentials"})
        parts = url.path.strip("/").split("/")
        if self.command == "GET" and url.path == "/search/issues":
            q = urllib.parse.parse_qs(url.query).get("q", [""])[0]
            item = {
                "number": 7,
                "title": f"found: {q}",
                "state": "open",
                "html_url": "https://github.com/octo/hello/issues/7",
                "user": {"login": "octocat"},
            }
            if "is:pr" in q:
                item["pull_request"] = {"url": "https://api.github.com/repos/octo/hello/pulls/7"}
            return self.reply(200, {"total_count": 1, "incomplete_results": False, "items": [item]})
        if self.command == "GET" and parts[:1] == ["repos"] and parts[3:4] == ["contents"]:
            repo, path = "/".join(parts[1:3]), urllib.parse.unquote("/".join(parts[4:]))
            text = FILES.get((repo, path))
            if text is None:
                return self.reply(404, {"message": "Not Found"})
            return self.reply(
                200,
                {
                    "type": "file",
                    "path": path,
                    "sha": "abc123",
                    "size": len(text),
                    "encoding": "base64",
                    "content": base64.b64encode(text.encode()).decode(),
                },
            )
        if self.command == "POST" and parts[:1] == ["repos"] and parts[3:4] == ["issues"] and parts[5:] == ["comments"]:
            comment = json.loads(body or b"{}")
            return self.reply(
                201,
                {
                    "id": 42,
                    "body": comment.get("body"),
                    "html_url": f"https://github.com/{parts[1]}/{parts[2]}/issues/{parts[4]}#issuecomment-42",
                },
            )
        return self.reply(404, {"message": "Not Found"})

    do_GET = handle_any
    do_POST = handle_any


serve(Handler, DIR, "api.github.com", "example.com")
