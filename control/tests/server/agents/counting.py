#!/usr/bin/env python3
"""A test harness speaking stream-json. Every turn it receives is appended to turns.log in its
working directory; a turn it has seen before is an error (the crash test checks that no turn
reaches a harness twice). Per turn it prints `steps` progress lines, `pause` seconds apart
(from the message: `steps=N pause=S`), then a result whose text is the turn's text."""

import json
import os
import re
import sys
import time


def out(o):
    print(json.dumps(o), flush=True)


out({"type": "system", "subtype": "init", "session_id": f"counting-{os.getpid()}"})
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
    out({"type": "result", "subtype": "success", "is_error": False, "result": text, "session_id": f"counting-{os.getpid()}"})
