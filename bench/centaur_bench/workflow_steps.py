"""Workflow steps through `centaur server` (part of bench/control), on SQLite and PostgreSQL:
step checkpoints per second (each new step: the worker asks, runs the function, the result is
committed before the handler goes on), one run and 8 runs at once; and the cost of resuming a
run with 1,000 recorded steps (claim, load the checkpoints, replay the handler past them, take
the event, end) against one with none. Needs root (the worker's sandbox)."""

import http.client
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from .common import free_port, log, sh

WORKFLOW = '''WORKFLOW_NAME = "steps"


async def handler(inp, ctx):
    for i in range(inp["n"]):
        await ctx.step("s", lambda i=i: i)
    if inp.get("pause"):
        await ctx.wait_for_event("resume", correlation_id=inp["id"])
    return inp["n"]
'''


class Api:
    def __init__(self, port, key):
        self.port, self.key = port, key

    def call(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            c.request(method, path, json.dumps(body) if body is not None else None,
                      {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
            r = c.getresponse()
            return json.loads(r.read())
        finally:
            c.close()

    def start(self, inp):
        return self.call("POST", "/workflows/runs", {"workflow_name": "steps", "input": inp})["run_id"]

    def until(self, run, status, timeout=300):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r = self.call("GET", f"/workflows/runs/{run}")
            if r.get("status") == status:
                return r
            if r.get("status") == "failed":
                raise SystemExit(f"workflows: run {run} failed: {r.get('error_text')}")
            time.sleep(0.002)
        raise SystemExit(f"workflows: run {run} never became {status}")


def resume_ms(api, steps, tag):
    """Time from the event that wakes a run waiting after `steps` recorded steps to its end."""
    run = api.start({"n": steps, "pause": True, "id": tag})
    api.until(run, "waiting")
    t = time.perf_counter()
    api.call("POST", "/workflows/events", {"event_type": "resume", "correlation_id": tag})
    api.until(run, "completed")
    return (time.perf_counter() - t) * 1e3


def measure_engine(centaur, smoke, database_url, engine):
    work = tempfile.mkdtemp(prefix=f"centaur-bench-workflows-{engine}-")
    os.chmod(work, 0o755)
    flows = os.path.join(work, "flows")
    os.makedirs(flows)
    with open(os.path.join(flows, "steps.py"), "w") as f:
        f.write(WORKFLOW)
    os.chmod(flows, 0o755)
    config = os.path.join(work, "server.yaml")
    with open(config, "w") as f:
        f.write("harnesses:\n  unused:\n    command: ['true']\nworkflows:\n  dirs: [flows]\n  concurrency: 8\n")
    data = os.path.join(work, "data")
    db = ["--database-url", database_url] if database_url else []
    key = sh([centaur, "keys", "create", "--name", "bench", "--scopes", "agent", "--data-dir", data, *db]).strip()
    port = free_port()
    log(f"workflows ({engine}): starting centaur server on 127.0.0.1:{port}")
    server = subprocess.Popen(
        [centaur, "server", "--listen", f"127.0.0.1:{port}", "--config", config, "--data-dir", data, *db],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "server.log"), "w"))
    try:
        api = Api(port, key)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                if api.call("GET", "/workflows").get("workflows"):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        steps = 200 if smoke else 1000
        api.until(api.start({"n": 10}), "completed")
        t = time.perf_counter()
        api.until(api.start({"n": steps}), "completed")
        one = steps / (time.perf_counter() - t)
        runs, per = 8, (50 if smoke else 500)
        t = time.perf_counter()
        ids = [api.start({"n": per}) for _ in range(runs)]
        for r in ids:
            api.until(r, "completed")
        many = runs * per / (time.perf_counter() - t)
        reps = 2 if smoke else 5
        empty = [resume_ms(api, 0, f"e{i}") for i in range(reps)]
        full = [resume_ms(api, steps, f"f{i}") for i in range(reps)]
        log(f"workflows ({engine}): {one:.0f} steps/s one run, {many:.0f} steps/s {runs} runs; "
            f"resume with {steps} steps {statistics.median(full):.0f} ms, with none {statistics.median(empty):.0f} ms")
        return {
            "steps_per_s_one_run": one,
            "steps_per_s_concurrent": many,
            "concurrent_runs": runs,
            "recorded_steps": steps,
            "resume_full_ms": statistics.median(full),
            "resume_empty_ms": statistics.median(empty),
            "reps": reps,
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def measure(centaur, smoke, postgres_url):
    out = {"sqlite": measure_engine(centaur, smoke, None, "sqlite")}
    if postgres_url:
        out["postgres"] = measure_engine(centaur, smoke, postgres_url, "postgres")
    return out


def rows(w):
    """The workflow lines of the control plane's section."""
    if not w:
        return []
    s, p = w.get("sqlite", {}), w.get("postgres", {})

    def cell(d, k, fmt):
        return fmt(d[k]) if k in d else "—"

    n = s.get("recorded_steps", p.get("recorded_steps", 1000))
    runs = s.get("concurrent_runs", 8)
    return [
        "",
        f"Workflow steps (measured {w.get('when', 'with the rest')}; `ctx.step`, the worker in its own sandbox: each "
        "new step's result goes to the engine and is committed, with its progress event, before the handler goes on; "
        "SQLite commits one at a time, PostgreSQL's commits of concurrent runs share fsyncs). Resuming replays the "
        "handler from the top past the recorded steps (the worker answers them from the checkpoints it is sent):",
        "",
        "| measure | SQLite | PostgreSQL |",
        "|---|---|---|",
        f"| step checkpoints/s, one run | {cell(s, 'steps_per_s_one_run', lambda v: f'{v:,.0f}')} "
        f"| {cell(p, 'steps_per_s_one_run', lambda v: f'{v:,.0f}')} |",
        f"| step checkpoints/s, {runs} runs at once | {cell(s, 'steps_per_s_concurrent', lambda v: f'{v:,.0f}')} "
        f"| {cell(p, 'steps_per_s_concurrent', lambda v: f'{v:,.0f}')} |",
        f"| resume a run with {n:,} recorded steps (event → completed), median | "
        f"{cell(s, 'resume_full_ms', lambda v: f'{v:.0f} ms')} | {cell(p, 'resume_full_ms', lambda v: f'{v:.0f} ms')} |",
        f"| resume a run with no recorded step, median | {cell(s, 'resume_empty_ms', lambda v: f'{v:.0f} ms')} "
        f"| {cell(p, 'resume_empty_ms', lambda v: f'{v:.0f} ms')} |",
    ]
