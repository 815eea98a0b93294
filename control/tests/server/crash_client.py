"""The crash test's client (httpx): queues TURNS turns on each of THREADS threads while the
server is killed and restarted under it, retrying every request with the same idempotency
key until it is acknowledged, then waits for every execution to end. argv: BASE KEY THREADS
TURNS OUT.json. Writes {execute_id: [execution_id, status, result_text]}."""

import json
import sys
import time

import httpx

BASE, KEY, THREADS, TURNS, OUT = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
c = httpx.Client(base_url=BASE, headers={"Authorization": f"Bearer {KEY}"}, timeout=10)


def call(method, path, **kw):
    deadline = time.time() + 180
    while True:
        try:
            r = c.request(method, path, **kw)
            if r.status_code < 500:
                return r
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            raise SystemExit(f"{method} {path}: the server never answered")
        time.sleep(0.05)


acks = {}
for turn in range(TURNS):
    for t in range(THREADS):
        eid = f"t{t}-{turn}"
        body = {"thread_key": f"crash:{t}", "execute_id": eid, "message": f"crash t{t} turn {turn} steps=6 pause=0.3"}
        r = call("POST", "/agent/execute", json=body)
        if r.status_code != 202:
            raise SystemExit(f"execute {eid}: {r.status_code} {r.text}")
        acks[eid] = r.json()["execution_id"]
result = {}
deadline = time.time() + 90
for eid, exe in acks.items():
    while True:
        r = call("GET", f"/agent/executions/{exe}")
        v = r.json()
        if v["status"] in ("completed", "failed", "cancelled"):
            result[eid] = [exe, v["status"], v["result_text"] or v["error_text"]]
            break
        if time.time() > deadline:
            raise SystemExit(f"{exe} never ended: {v}")
        time.sleep(0.1)
json.dump(result, open(OUT, "w"), indent=1)
print(f"{len(result)} executions acknowledged and ended")
