#!/usr/bin/env python3
"""A test harness speaking stream-json. Every turn it receives is appended to turns.log in its
working directory; a turn it has seen before is an error (the crash test checks that no turn
reaches a harness twice). Per turn it prints `steps` progress lines, `pause` seconds apart
(from the message: `steps=N pause=S`), then a result whose text is the turn's text; with
`fetch=PATH`, followed by ` -> STATUS BODY` of a GET of http://centaur.internal/PATH made from
inside the sandbox. Its session id is counting-PID, and it keeps a file of that name in its
home, as a CLI keeps what it resumes from."""

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request


def fetch(path):
    try:
        with urllib.request.urlopen(f"http://centaur.internal{path}", timeout=10) as r:
            return f"{r.status} {r.read(300).decode(errors='replace')}"
    except urllib.error.HTTPError as e:
        return f"{e.code} {e.read(300).decode(errors='replace')}"
    except OSError as e:
        return f"error {e}"


def out(o):
    print(json.dumps(o), flush=True)


SESSION = f"counting-{os.getpid()}"
out({"type": "system", "subtype": "init", "session_id": SESSION})
# What a CLI keeps in its home to resume a session (the server looks it up by id).
try:
    os.makedirs(os.path.join(os.environ["HOME"], ".counting"), exist_ok=True)
    with open(os.path.join(os.environ["HOME"], ".counting", f"{SESSION}.jsonl"), "w") as f:
        f.write("{}\n")
except (KeyError, OSError):
    pass
seen = set()
for line in sys.stdin:
    turn = json.loads(line)
    text = " | ".join(b.get("text", "") for b in turn["message"]["content"] if b.get("type") == "text")
    with open("turns.log", "a") as f:
        f.write(json.dumps(text) + "\n")
    if text in seen:
        out({"type": "result", "is_error": True, "result": f"DUPLICATE TURN {text}"})
        continue
    seen.add(text)
    steps = int((re.search(r"steps=(\d+)", text) or [0, 3])[1])
    pause = float((re.search(r"pause=([\d.]+)", text) or [0, 0.05])[1])
    if "fail" in text:
        out({"type": "result", "subtype": "error_during_execution", "is_error": True, "result": "asked to fail"})
        continue
    for i in range(steps):
        time.sleep(pause)
        out(
            {
                "type": "assistant",
                "message": {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": f"t{i}", "name": "Step", "input": {"turn": text, "i": i}}],
                },
            }
        )
    probe = re.search(r"fetch=(\S+)", text)
    result = f"{text} -> {fetch(probe[1])}" if probe else text
    out({"type": "result", "subtype": "success", "is_error": False, "result": result, "session_id": SESSION})
