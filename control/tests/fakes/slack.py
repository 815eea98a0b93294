#!/usr/bin/env python3
"""A fake of the Slack Web API over HTTPS, for the control plane's tests: the methods the
server calls, as Slack documents them (https://api.slack.com/methods), plus Socket Mode's
WebSocket. It records every call (with the Authorization header it received) so tests can
check what reached "Slack": the real token, the answer in the right thread, nothing twice.

Methods: chat.postMessage, chat.update (JSON or form bodies), conversations.replies (form or
query; `include_all_metadata`), apps.connections.open (app-level token; returns
wss://HOST/link/?ticket=N). Tokens are checked (`invalid_auth` otherwise). Messages carry
`metadata` as Slack stores it. Text over 40,000 characters is `msg_too_long`.

Test controls (not Slack's), under /_fake/:
  POST /_fake/faults   {"chat.postMessage": ["429", "500", "ok", "error:channel_not_found",
                        "post_then_hang:30"], ...}: the next calls of a method misbehave in
                        order ("post_then_hang:N" performs the post, then answers after N s);
  POST /_fake/seed     {"channel": C, "messages": [{"ts", "user", "text", "thread_ts"}]}
  POST /_fake/socket/push        {"payload": {...}}: an events_api envelope to the newest socket
  POST /_fake/socket/disconnect  a `disconnect` message to the newest socket
  GET  /_fake/log      {"calls": [...], "messages": {channel: [...]}, "acks": [...],
                        "connections": n}

Usage: slack.py --dir DIR --host slack.test --bot-token T --app-token A
Prints `PORT=<n>` once listening; DIR/ca.pem is the CA that signed its certificate (for
slack.test and 127.0.0.1)."""

import argparse
import asyncio
import itertools
import json
import ssl
import sys
import time
import urllib.parse

import trustme
from aiohttp import WSMsgType, web

MAX_TEXT = 40_000


class Fake:
    def __init__(self, args):
        self.host = args.host
        self.bot = args.bot_token
        self.app = args.app_token
        self.calls = []
        self.messages = {}
        self.faults = {}
        self.acks = []
        self.sockets = []
        self.connections = 0
        self.seq = itertools.count(1)
        self.tickets = itertools.count(1)

    def ts(self):
        return f"{int(time.time())}.{next(self.seq):06d}"

    async def args(self, request):
        ctype = request.headers.get("Content-Type", "")
        raw = await request.read()
        args = dict(request.query)
        if ctype.startswith("application/json"):
            args.update(json.loads(raw or b"{}"))
        elif raw:
            args.update({k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()})
        return args

    def fault(self, method):
        queue = self.faults.get(method) or []
        return queue.pop(0) if queue else "ok"

    async def method(self, request):
        method = request.match_info["method"]
        args = await self.args(request)
        auth = request.headers.get("Authorization", "")
        self.calls.append({"method": method, "authorization": auth, "args": args, "at": time.time()})
        want = self.app if method == "apps.connections.open" else self.bot
        if auth != f"Bearer {want}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        fault = self.fault(method)
        if fault == "429":
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"})
        if fault == "500":
            return web.Response(status=500, text="upstream trouble")
        if fault.startswith("error:"):
            return web.json_response({"ok": False, "error": fault[6:]})
        handler = getattr(self, method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        answer = handler(args)
        if fault.startswith("post_then_hang:"):
            await asyncio.sleep(float(fault.split(":")[1]))
        return web.json_response(answer)

    def chat_postMessage(self, a):
        channel, text = a.get("channel"), a.get("text", "")
        if channel not in self.messages:
            return {"ok": False, "error": "channel_not_found"}
        if len(text) > MAX_TEXT:
            return {"ok": False, "error": "msg_too_long"}
        meta = a.get("metadata")
        if isinstance(meta, str):
            meta = json.loads(meta)
        m = {"ts": self.ts(), "text": text, "bot_id": "BFAKE", "user": "UBOT", "type": "message"}
        if a.get("thread_ts"):
            m["thread_ts"] = a["thread_ts"]
        if meta:
            m["metadata"] = meta
        self.messages[channel].append(m)
        return {"ok": True, "channel": channel, "ts": m["ts"], "message": m}

    def chat_update(self, a):
        for m in self.messages.get(a.get("channel"), []):
            if m["ts"] == a.get("ts"):
                m["text"] = a.get("text", "")
                m.setdefault("edits", 0)
                m["edits"] += 1
                return {"ok": True, "channel": a["channel"], "ts": m["ts"], "text": m["text"]}
        return {"ok": False, "error": "message_not_found"}

    def conversations_replies(self, a):
        channel, root = a.get("channel"), a.get("ts")
        if channel not in self.messages:
            return {"ok": False, "error": "channel_not_found"}
        meta = str(a.get("include_all_metadata", "")).lower() in ("true", "1")
        out = []
        for m in self.messages[channel]:
            if m["ts"] == root or m.get("thread_ts") == root:
                m = dict(m)
                if not meta:
                    m.pop("metadata", None)
                out.append(m)
        if not out:
            return {"ok": False, "error": "thread_not_found"}
        return {"ok": True, "messages": out, "has_more": False, "response_metadata": {"next_cursor": ""}}

    def apps_connections_open(self, a):
        return {"ok": True, "url": f"wss://{self.host}/link/?ticket={next(self.tickets)}&app_id=AFAKE"}

    async def link(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "AFAKE"}})
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                self.acks.append(json.loads(msg.data))
        if ws in self.sockets:
            self.sockets.remove(ws)
        return ws

    async def control(self, request):
        what = request.match_info["what"]
        body = await request.json() if request.can_read_body else {}
        if what == "faults":
            for method, queue in body.items():
                self.faults.setdefault(method, []).extend(queue)
        elif what == "seed":
            self.messages.setdefault(body["channel"], []).extend(body.get("messages", []))
        elif what == "channel":
            self.messages.setdefault(body["channel"], [])
        elif what in ("push", "disconnect"):
            if not self.sockets:
                return web.json_response({"ok": False, "error": "no socket"}, status=409)
            if what == "push":
                env = {"envelope_id": f"env-{next(self.seq)}", "type": "events_api", "payload": body["payload"],
                       "accepts_response_payload": False, "retry_attempt": 0, "retry_reason": ""}
            else:
                env = {"type": "disconnect", "reason": "refresh_requested"}
            await self.sockets[-1].send_json(env)
            return web.json_response({"ok": True, "envelope": env})
        return web.json_response({"ok": True})

    async def log(self, request):
        return web.json_response(
            {"calls": self.calls, "messages": self.messages, "acks": self.acks, "connections": self.connections}
        )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--host", default="slack.test")
    p.add_argument("--bot-token", required=True)
    p.add_argument("--app-token", default="xapp-unset")
    args = p.parse_args()
    ca = trustme.CA()
    ca.cert_pem.write_to_path(f"{args.dir}/ca.pem")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(args.host, "127.0.0.1").configure_cert(ctx)
    fake = Fake(args)
    app = web.Application(client_max_size=8 << 20)
    app.router.add_post("/api/{method}", fake.method)
    app.router.add_get("/api/{method}", fake.method)
    app.router.add_get("/link/", fake.link)
    app.router.add_get("/_fake/log", fake.log)
    app.router.add_post("/_fake/socket/{what}", fake.control)
    app.router.add_post("/_fake/{what}", fake.control)

    async def serve():
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        print(f"PORT={port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
