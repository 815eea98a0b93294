"""The agent API driven by clients nobody here wrote: httpx for requests, httpx-sse for the
event stream, requests for the bad-input cases. Run by tests/server/api.rs against a real
`centaur server`; argv: BASE_URL AGENT_KEY TOOLS_ONLY_KEY. Exits non-zero on the first failed
check, naming it."""

import json
import sys
import uuid

import httpx
import requests
from httpx_sse import connect_sse

BASE, KEY, WEAK = sys.argv[1], sys.argv[2], sys.argv[3]
H = {"Authorization": f"Bearer {KEY}"}
c = httpx.Client(base_url=BASE, headers=H, timeout=60)


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def err(r, status, code, what):
    body = r.json()
    check(
        r.status_code == status and body.get("code") == code and body.get("message"),
        f"{what} -> {status} {code} (got {r.status_code} {body})",
    )


def follow(thread, execution_id=None, last=None, after=None, live=True):
    params = {} if live else {"follow": "false"}
    if execution_id:
        params["execution_id"] = execution_id
    if after is not None:
        params["after_event_id"] = after
    headers = dict(H)
    if last is not None:
        headers["Last-Event-ID"] = str(last)
    events = []
    with httpx.Client(base_url=BASE, timeout=60) as s:
        with connect_sse(s, "GET", f"/agent/threads/{thread}/events", params=params, headers=headers) as es:
            check(es.response.headers["content-type"].startswith("text/event-stream"), "the stream is text/event-stream")
            for sse in es.iter_sse():
                events.append((int(sse.id), sse.event, sse.data))
    return events


# --- auth -------------------------------------------------------------------------------
err(httpx.get(f"{BASE}/agent/threads"), 401, "UNAUTHORIZED", "no key")
err(httpx.get(f"{BASE}/agent/threads", headers={"Authorization": "Bearer ctr_wrong"}), 401, "UNAUTHORIZED", "unknown key")
err(
    httpx.get(f"{BASE}/agent/threads", headers={"Authorization": f"Bearer {WEAK}"}),
    403,
    "FORBIDDEN",
    "a key without the agent scope",
)
check(httpx.get(f"{BASE}/agent/threads", headers={"X-Api-Key": KEY}).status_code == 200, "X-Api-Key works too")
check(httpx.get(f"{BASE}/healthz").json() == {"ok": True}, "/healthz")
check(httpx.get(f"{BASE}/readyz").json()["ready"] is True, "/readyz")

# --- spawn, message, execute, events ----------------------------------------------------
thread = f"test:{uuid.uuid4().hex[:12]}"
r = c.post("/agent/spawn", json={"thread_key": thread, "spawn_id": "s1"})
check(r.status_code == 200 and r.json()["assignment_generation"] == 1, f"spawn {r.text}")
spawned = r.json()
r2 = c.post("/agent/spawn", json={"thread_key": thread, "spawn_id": "s1"})
check(r2.json().get("idempotent") is True and r2.json()["runtime_id"] == spawned["runtime_id"], "spawn replay is idempotent")
gen = spawned["assignment_generation"]
r = c.post(
    "/agent/message",
    json={
        "thread_key": thread,
        "assignment_generation": gen,
        "message_id": "m1",
        "parts": [{"type": "text", "text": "steps=3 pause=0.05 first"}],
    },
)
check(r.status_code == 200 and r.json()["message_id"] == "m1", "message stored")
r = c.post(
    "/agent/message",
    json={
        "thread_key": thread,
        "assignment_generation": gen,
        "message_id": "m1",
        "parts": [{"type": "text", "text": "steps=3 pause=0.05 first"}],
    },
)
check(r.json().get("idempotent") is True, "message replay is idempotent")
r = c.post(
    "/agent/message",
    json={
        "thread_key": thread,
        "assignment_generation": gen,
        "message_id": "m1",
        "parts": [{"type": "text", "text": "something else"}],
    },
)
err(r, 409, "IDEMPOTENCY_PAYLOAD_MISMATCH", "message_id reused with another payload")
err(
    c.post(
        "/agent/message", json={"thread_key": thread, "assignment_generation": gen + 1, "parts": [{"type": "text", "text": "x"}]}
    ),
    409,
    "ASSIGNMENT_GENERATION_STALE",
    "a stale generation",
)
err(
    c.post(
        "/agent/message", json={"thread_key": "test:nobody", "assignment_generation": 1, "parts": [{"type": "text", "text": "x"}]}
    ),
    409,
    "NO_ACTIVE_ASSIGNMENT",
    "a thread with no assignment",
)
r = c.post("/agent/execute", json={"thread_key": thread, "assignment_generation": gen, "execute_id": "x1"})
check(
    r.status_code == 202 and r.json()["status"] == "queued" and r.json()["execution_id"].startswith("exe_"),
    f"execute -> 202 queued {r.text}",
)
exe = r.json()["execution_id"]
r = c.post("/agent/execute", json={"thread_key": thread, "assignment_generation": gen, "execute_id": "x1"})
check(r.status_code == 202 and r.json()["execution_id"] == exe and r.json().get("idempotent") is True, "execute replay")
events = follow(thread, exe)
ids = [e[0] for e in events]
check(ids == sorted(set(ids)), "event ids strictly increase")
kinds = [e[1] for e in events]
check(
    kinds[-1] == "execution_state" and json.loads(events[-1][2])["status"] == "completed",
    f"the stream ends with the terminal state {kinds}",
)
# The harness prints its init line when it starts: it belongs to the execution only when the
# turn reached the harness first (a line before the turn belongs to no execution). Either way
# the thread holds it once, before the turn's own lines.
outputs = [e[2] for e in events if e[1] == "output"]
parsed = [json.loads(o) for o in outputs]
turn = [p for p in parsed if p["type"] != "system"]
check(
    len(turn) == 4 and [p["type"] for p in turn] == ["assistant"] * 3 + ["result"],
    f"3 steps + result, as the harness printed them ({[p['type'] for p in parsed]})",
)
everything = [json.loads(e[2]) for e in follow(thread, live=False) if e[1] == "output"]
check(
    [p["type"] for p in everything] == ["system", "assistant", "assistant", "assistant", "result"],
    f"the thread holds init once, then the turn ({[p['type'] for p in everything]})",
)
step = next(o for o in outputs if '"assistant"' in o)
check(step == json.dumps(json.loads(step)), "an output line is stored and sent verbatim (Python's own spacing kept)")
r = c.get(f"/agent/executions/{exe}")
check(
    r.json()["status"] == "completed" and r.json()["result_text"] == "steps=3 pause=0.05 first",
    f"the execution's result {r.text}",
)
check(r.json()["agent_thread_id"].startswith("counting-"), "the harness's session id is kept")

# Replay from any id, by query or by Last-Event-ID, gives the same suffix.
full = follow(thread, exe)
for cut in [ids[0], ids[len(ids) // 2], ids[-2]]:
    by_query = follow(thread, exe, after=cut)
    by_header = follow(thread, exe, last=cut)
    check(by_query == by_header == [e for e in full if e[0] > cut], f"replay after {cut} (query and Last-Event-ID)")
past = follow(thread, exe, after=ids[-1])
check(len(past) == 1 and past[0][1] == "execution_state", "a cursor past the end gets the terminal snapshot and the stream ends")

# Auto mode: execute with a message spawns and appends itself.
auto = f"test:{uuid.uuid4().hex[:12]}"
r = c.post("/agent/execute", json={"thread_key": auto, "message": "steps=1 pause=0 auto"})
check(r.status_code == 202, "auto mode execute")
ev = follow(auto, r.json()["execution_id"])
check(json.loads(ev[-1][2])["result_text"] == "steps=1 pause=0 auto", "auto mode answered")
r = c.get("/agent/messages", params={"thread_key": auto})
check([m["parts"][0]["text"] for m in r.json()["messages"]] == ["steps=1 pause=0 auto"], "the message is in the transcript")
r = c.get(f"/agent/threads/{auto}/executions")
check(len(r.json()["executions"]) == 1, "the thread's executions")
check(any(t["thread_key"] == auto for t in c.get("/agent/threads").json()["threads"]), "threads lists it")

# Cancel a running turn.
r = c.post("/agent/execute", json={"thread_key": auto, "message": "steps=100 pause=0.2 long"})
long_id = r.json()["execution_id"]
with httpx.Client(base_url=BASE, timeout=60) as s:
    with connect_sse(s, "GET", f"/agent/threads/{auto}/events", params={"execution_id": long_id}, headers=H) as es:
        for sse in es.iter_sse():
            if sse.event == "output" and '"Step"' in sse.data:
                break
r = c.post(f"/agent/executions/{long_id}/cancel")
check(r.json()["status"] in ("cancel_requested", "cancelled"), f"cancel {r.text}")
ev = follow(auto, long_id)
check(json.loads(ev[-1][2])["status"] == "cancelled", "the running turn ended cancelled")
err(c.post("/agent/executions/exe_nope/cancel"), 404, "NOT_FOUND", "cancel of an unknown execution")
r = c.post("/agent/execute", json={"thread_key": auto, "message": "steps=2 pause=0 after the cancel"})
ev = follow(auto, r.json()["execution_id"])
check(json.loads(ev[-1][2])["result_text"] == "steps=2 pause=0 after the cancel", "the next turn runs in a fresh sandbox")
steps = [e for e in ev if e[1] == "output" and '"Step"' in e[2]]
check(len(steps) == 2, f"the fresh sandbox's spool is read from its first line ({len(steps)} steps)")

# Failure loop: three failures in five minutes close the thread to new executions.
fl = f"test:{uuid.uuid4().hex[:12]}"
for i in range(3):
    r = c.post("/agent/execute", json={"thread_key": fl, "message": f"fail {i}"})
    ev = follow(fl, r.json()["execution_id"])
    check(json.loads(ev[-1][2])["terminal_reason"] == "harness_error", f"failure {i}")
err(c.post("/agent/execute", json={"thread_key": fl, "message": "again"}), 409, "THREAD_FAILURE_LOOP", "the failure-loop breaker")

# Release stops the sandbox.
r = c.post(f"/agent/threads/{auto}/release", json={"release_id": "r1"})
check(r.json()["released"] is True, "release")
check(c.post(f"/agent/threads/{auto}/release", json={"release_id": "r1"}).json().get("idempotent") is True, "release replay")

# --- bad input: a clear 4xx, nothing stored ---------------------------------------------
bad = f"test:{uuid.uuid4().hex[:12]}"
cases = [
    (b'{"thread_key": ', 400, "INVALID_JSON", "malformed JSON"),
    (json.dumps({"thread_key": bad, "message": "x", "color": "red"}).encode(), 422, "UNKNOWN_FIELD", "an unknown field"),
    (json.dumps({"message": "x"}).encode(), 422, "MISSING_FIELD", "a missing thread_key"),
    (json.dumps({"thread_key": bad}).encode(), 422, "MISSING_FIELD", "neither generation nor message"),
    (
        json.dumps({"thread_key": "no-namespace", "message": "x"}).encode(),
        422,
        "INVALID_THREAD_KEY",
        "a thread key without a namespace",
    ),
    (
        json.dumps({"thread_key": "x:" + "y" * 600, "message": "x"}).encode(),
        422,
        "INVALID_THREAD_KEY",
        "a thread key over 512 bytes",
    ),
    (json.dumps({"thread_key": bad, "message": {"parts": []}}).encode(), 400, "INVALID_MESSAGE", "an empty message"),
    (json.dumps({"thread_key": bad, "message": "x", "harness": "nope"}).encode(), 422, "UNKNOWN_HARNESS", "an unknown harness"),
    (json.dumps({"thread_key": bad, "message": "x" * (2 << 20)}).encode(), 413, "BODY_TOO_LARGE", "a 2 MiB body"),
    (
        json.dumps({"thread_key": bad, "assignment_generation": "one"}).encode(),
        422,
        "INVALID_FIELD",
        "a generation that is not a number",
    ),
]
for body, status, code, what in cases:
    r = requests.post(f"{BASE}/agent/execute", data=body, headers={**H, "Content-Type": "application/json"}, timeout=30)
    err(r, status, code, what)
check(all(t["thread_key"] != bad for t in c.get("/agent/threads").json()["threads"]), "nothing was stored for the bad requests")
err(c.get("/agent/executions/exe_nope"), 404, "NOT_FOUND", "an unknown execution")
err(
    c.get(f"/agent/threads/{thread}/events", params={"after_event_id": "x"}),
    422,
    "INVALID_FIELD",
    "a cursor that is not a number",
)
err(c.get("/agent/nope"), 404, "NOT_FOUND", "an unknown route")

# --- metrics ----------------------------------------------------------------------------
m = httpx.get(f"{BASE}/metrics").text
for name in [
    'centaur_executions{status="completed"}',
    "centaur_queue_depth",
    "centaur_sse_clients",
    "centaur_event_delivery_seconds_bucket",
    "centaur_event_delivery_seconds_count",
]:
    check(name in m, f"/metrics has {name}")
print("all checks passed")
