#!/usr/bin/env python3
"""A stream-json test harness that misbehaves on request. Per turn, by the turn's text:
`hang` prints nothing and never ends; `chatter` prints a line every 0.3 s and never ends;
`crash` prints one line and dies (status 3); `exit` prints half a turn and exits 0;
`garbage` prints lines that are not JSON and an unknown event type, then ends normally;
`steer` waits for the next stdin line (a steer) and answers with its text; anything else is
answered `ok: <text>`."""

import json
import os
import sys
import time


def out(o):
    print(json.dumps(o), flush=True)


def text_of(line):
    turn = json.loads(line)
    return " ".join(b.get("text", "") for b in turn["message"]["content"] if b.get("type") == "text")


out({"type": "system", "subtype": "init", "session_id": f"misbehaving-{os.getpid()}"})
for line in sys.stdin:
    text = text_of(line)
    if text == "hang":
        time.sleep(3600)
    elif text == "chatter":
        while True:
            out({"type": "system", "subtype": "heartbeat"})
            time.sleep(0.3)
    elif text == "crash":
        out({"type": "assistant", "message": {"content": [{"type": "text", "text": "about to crash"}]}})
        os._exit(3)
    elif text == "exit":
        out({"type": "assistant", "message": {"content": [{"type": "text", "text": "half a turn"}]}})
        sys.exit(0)
    elif text == "garbage":
        print("this is not json", flush=True)
        print("\x1b[31m{broken", flush=True)
        out({"type": "mystery_event", "n": 1})
        out({"type": "result", "subtype": "success", "is_error": False, "result": "survived garbage"})
    elif text == "steer":
        out({"type": "assistant", "message": {"content": [{"type": "text", "text": "waiting for a steer"}]}})
        steer = json.loads(sys.stdin.readline())
        assert steer.get("steer") is True, steer
        out({"type": "result", "subtype": "success", "is_error": False,
             "result": f"steered: {text_of(json.dumps(steer))}"})
    else:
        out({"type": "result", "subtype": "success", "is_error": False, "result": f"ok: {text}"})
