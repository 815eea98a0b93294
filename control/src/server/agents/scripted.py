#!/usr/bin/env python3
"""Centaur's built-in scripted agent: a stand-in for a real agent CLI (there is no model API
here). It speaks Claude Code's stream-json protocol: one user turn per stdin line, JSON lines
on stdout, a "result" line ends each turn. For each turn it runs one command in its sandbox
(`run: CMD` in the message, else `uname -sr`) and, if CENTAUR_DEMO_API is set, calls that URL
with the placeholder in CENTAUR_DEMO_KEY (the gateway swaps in the real key). `lines: N` in
the message prints N progress lines first, as fast as it can; `sleep: N` in
the message waits N seconds first, printing a line each second."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid

session = str(uuid.uuid4())


def out(o):
    print(json.dumps(o), flush=True)


out({"type": "system", "subtype": "init", "session_id": session, "tools": ["Bash"], "model": "scripted"})
for n, line in enumerate(sys.stdin, 1):
    turn = json.loads(line)
    text = " ".join(b.get("text", "") for b in turn["message"]["content"] if b.get("type") == "text")
    m = re.search(r"lines:\s*(\d+)", text)
    for i in range(int(m.group(1)) if m else 0):
        out({"type": "system", "subtype": "progress", "line": i + 1})
    m = re.search(r"sleep:\s*(\d+)", text)
    for i in range(int(m.group(1)) if m else 0):
        out({"type": "system", "subtype": "heartbeat", "second": i + 1})
        time.sleep(1)
    m = re.search(r"run:\s*(.+)", text)
    cmd = m.group(1).strip() if m else "uname -sr"
    out(
        {
            "type": "assistant",
            "session_id": session,
            "message": {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": f"tu_{n}", "name": "Bash", "input": {"command": cmd}}],
            },
        }
    )
    p = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60)
    out(
        {
            "type": "user",
            "session_id": session,
            "message": {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": f"tu_{n}", "content": (p.stdout + p.stderr)[-2000:]}],
            },
        }
    )
    answer = f"`{cmd}` exited {p.returncode}: {p.stdout.strip()[:200]}"
    api = os.environ.get("CENTAUR_DEMO_API")
    if api:
        req = urllib.request.Request(api, headers={"Authorization": "Bearer " + os.environ.get("CENTAUR_DEMO_KEY", "")})
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                answer += f"; the API said {r.status}: {r.read().decode()[:200]}"
        except Exception as e:
            answer += f"; the API call failed: {e}"
    out(
        {
            "type": "assistant",
            "session_id": session,
            "message": {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        }
    )
    out({"type": "result", "subtype": "success", "is_error": False, "result": answer, "session_id": session, "num_turns": n})
