"""The control plane's benchmark: `centaur server` on embedded SQLite and on PostgreSQL, on this
machine, in one run. Message appends per second from 16 clients; append → SSE delivery latency
with 100 followers on one thread; `execute` → first harness output on a cold sandbox (the
built-in scripted agent), and on a warm pool member; tool calls, warm and cold (centaur_bench.tool_calls). Writes its
section of BENCHMARKS.md (between markers, kept when bench/run rewrites the gateway's table)
and bench/control-results.json. Needs root (sandboxes).

  bench/control            release build, the published figures
  bench/control --smoke    debug build, short runs, a table under target/bench/ (a check that it runs)
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

from . import tool_calls, workflow_steps
from .common import ROOT, TARGET, free_port, log, sh
from .report import CONTROL_BEGIN, CONTROL_END


def build(release):
    args = ["cargo", "build", "-q", "-p", "control", "--bin", "centaur", "-p", "bench", "--bin", "control-bench"]
    log("building centaur and control-bench" + (" (release)" if release else ""))
    sh(args + (["--release"] if release else []), cwd=ROOT)
    d = os.path.join(TARGET, "release" if release else "debug")
    return os.path.join(d, "centaur"), os.path.join(d, "control-bench")


def postgres_db():
    url = sh([os.path.join(ROOT, "scripts", "postgres")]).strip()
    name = f"bench_{int(time.time())}_{os.getpid()}"
    sh(["psql", f"{url}/postgres", "-q", "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {name}"])
    return f"{url}/{name}"


def ready(base, proc, log_path, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            with open(log_path) as f:
                tail = f.read()[-2000:]
            raise SystemExit(f"the server exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("the server never became ready")


def run_engine(engine, centaur, tool, smoke, scenarios=None, config=None):
    """Starts a server on `engine` (with `config`'s YAML, if any) and runs each scenario
    (name, control-bench arguments) against it; the default scenarios are the API part's."""
    work = tempfile.mkdtemp(prefix=f"centaur-bench-{engine}-")
    os.chmod(work, 0o711)
    data = os.path.join(work, "data")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [centaur, "server", "--listen", f"127.0.0.1:{port}", "--data-dir", data]
    if config:
        path = os.path.join(work, "server.yaml")
        with open(path, "w") as f:
            f.write(config)
        cmd += ["--config", path]
    env = dict(os.environ)
    env.pop("CENTAUR_DATABASE_URL", None)
    if engine == "postgres":
        url = postgres_db()
        cmd += ["--database-url", url]
    log(f"{engine}: starting centaur server on {base}")
    server_log = os.path.join(work, "server.log")
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(server_log, "w"), env=env)
    try:
        ready(base, server, server_log)
        key_cmd = [centaur, "keys", "create", "--name", "bench", "--scopes", "agent,admin", "--data-dir", data]
        if engine == "postgres":
            key_cmd += ["--database-url", url]
        key = sh(key_cmd).strip()
        secs = "2" if smoke else "5"
        out = {}
        for name, args in scenarios or [
            ("appends", ["appends", "--clients", "16", "--seconds", secs]),
            ("delivery", ["delivery", "--followers", "100", "--rate", "50", "--seconds", secs]),
            ("cold", ["cold", "--runs", "3" if smoke else "10"]),
            ("output", ["output", "--lines", "2000" if smoke else "20000"]),
        ]:
            log(f"{engine}: {name}")
            out[name] = json.loads(sh([tool, "--server", base, "--key", key] + args))
            if name == "delivery":
                out[name]["server"] = server_histogram(base)
        return out
    finally:
        server.terminate()
        server.wait(timeout=30)
        stop_sandboxes(os.path.join(data, "sandboxes"))
        shutil.rmtree(work, ignore_errors=True)


def stop_sandboxes(root):
    """Stops every sandbox the server left: its supervisors outlive it by design (a warm pool
    member waits for the next start of the same deploy)."""
    for rt in os.listdir(root) if os.path.isdir(root) else []:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(30)
                s.connect(os.path.join(root, rt, "sock"))
                s.sendall(b'{"op":"stop"}\n')
                s.recv(4096)
        except OSError:
            pass  # already gone


def measure_pool(centaur, tool, smoke):
    """A new thread's first output from a cold start and from a warm pool member, one server
    after the other on SQLite (the warm one with `sandbox.warm_pool: 2`, each run waiting,
    untimed, for the pool to refill)."""
    runs = "3" if smoke else "20"
    cold = run_engine("sqlite", centaur, tool, smoke, [("cold", ["cold", "--runs", runs])])
    # The built-in config plus the pool: a config file names its harness (the same scripted agent).
    agents = os.path.join(ROOT, "control", "src", "server", "agents")
    config = (f"sandbox:\n  warm_pool: 2\n  mounts: ['{agents}:/run/centaur/agents']\n"
              "harnesses:\n  scripted:\n    command: [python3, /run/centaur/agents/scripted.py]\n")
    warm = run_engine("sqlite", centaur, tool, smoke, [("warm", ["cold", "--runs", runs, "--warm"])], config=config)
    return {"cold": cold["cold"], "warm": warm["warm"],
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def pool_rows(r):
    if not r:
        return []
    rows = ["", f"### Warm pool (measured {r['when']}, SQLite)", "",
            "| `execute` → first harness output, new thread | cold start | warm pool member | cold ÷ warm |",
            "|---|---|---|---|"]
    for q in ["p50_ms", "p99_ms"]:
        c, w = r["cold"]["first_output"][q], r["warm"]["first_output"][q]
        rows.append(f"| {q[:3]} of {r['cold']['runs']} | {ms(c)} | {ms(w)} | {c / w:.1f}× |")
    rows += ["", "A warm member's sandbox, CA and gateway already run (neutral policy, no harness): the claim "
             "is one store transaction, the gateway's policy swap and the harness's start (`python3`). "
             "Each warm run first waits, untimed, for the pool to refill. On this backend a cold sandbox is "
             "cheap and the agent's own interpreter start is most of both columns: the pool saves the sandbox "
             "and gateway (the difference), most at the tail. Where a sandbox takes seconds (a pod scheduled "
             "on Kubernetes) it would save those; that backend's pool is not built yet."]
    return rows


def server_histogram(base):
    """The server's own commit → SSE frame histogram (/metrics): p50 and p99 as bucket bounds."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        text = r.read().decode()
    buckets = []
    for line in text.splitlines():
        if line.startswith("centaur_event_delivery_seconds_bucket{le="):
            le = line.split('"')[1]
            buckets.append((float("inf") if le == "+Inf" else float(le), int(line.split()[-1])))
    total = buckets[-1][1] if buckets else 0

    def q(p):
        return next((le * 1e3 for le, n in buckets if n >= p * total), None) if total else None

    return {"frames": total, "p50_le_ms": q(0.5), "p99_le_ms": q(0.99)}


def ms(v):
    return f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"


def table(meta, results):
    rows = [
        CONTROL_BEGIN,
        "## Control plane (`bench/control`)",
        "",
        f"Measured {meta['when']} on {meta['machine']} with `bench/control{' --smoke' if meta['smoke'] else ''}` "
        f"({meta['build']} build): `centaur server` with the built-in scripted agent, the load tool "
        "(`bench/tools/src/bin/control-bench.rs`, keep-alive HTTP/1.1) on the same 2 cores, one run per engine. "
        "SQLite runs with `synchronous=FULL` (every acknowledged write is on disk); PostgreSQL 15 is Debian's, "
        "default settings (`fsync` on), on loopback.",
        "",
        "| measure | SQLite | PostgreSQL | goal |",
        "|---|---|---|---|",
    ]
    s, p = results.get("sqlite", {}), results.get("postgres", {})

    def get(r, *path):
        for k in path:
            r = r.get(k, {}) if isinstance(r, dict) else {}
        return r if isinstance(r, (int, float)) else None

    def cell(v, f):
        return "–" if v is None else f(v)

    def goal(v, ok):
        return "" if v is None else (" (met)" if ok(v) else " (**missed**)")

    a_s, a_p = get(s, "appends", "appends_per_s"), get(p, "appends", "appends_per_s")
    rows.append(
        f"| message appends/s, 16 clients | {cell(a_s, lambda v: f'{v:,.0f}')}{goal(a_s, lambda v: v >= 2000)} "
        f"| {cell(a_p, lambda v: f'{v:,.0f}')} | ≥ 2,000 on SQLite |"
    )
    for q in ["p50_ms", "p99_ms"]:
        v_s, v_p = get(s, "appends", "latency", q), get(p, "appends", "latency", q)
        rows.append(f"| append latency {q[:3]} (16 clients) | {cell(v_s, ms)} | {cell(v_p, ms)} | |")
    for q in ["p50_ms", "p99_ms"]:
        v_s, v_p = get(s, "delivery", "latency", q), get(p, "delivery", "latency", q)
        gs, gp = ("", "") if q == "p50_ms" else (goal(v_s, lambda v: v < 10), goal(v_p, lambda v: v < 10))
        rows.append(
            f"| append → SSE delivery {q[:3]}, 100 followers, 50 appends/s | {cell(v_s, ms)}{gs} "
            f"| {cell(v_p, ms)}{gp} | p99 < 10 ms (the reference polls every 500 ms) |"
        )
    for q in ["p50_le_ms", "p99_le_ms"]:
        v_s, v_p = get(s, "delivery", "server", q), get(p, "delivery", "server", q)
        rows.append(
            f"| of which commit → SSE frame (server histogram), {q[:3]} | ≤ {cell(v_s, ms)} | ≤ {cell(v_p, ms)} | |"
        )
    miss_s, miss_p = get(s, "delivery", "followers_missing_events"), get(p, "delivery", "followers_missing_events")
    rows.append(f"| followers that missed an event | {cell(miss_s, str)} | {cell(miss_p, str)} | 0 |")
    for q in ["p50_ms", "p99_ms"]:
        v_s, v_p = get(s, "cold", "first_output", q), get(p, "cold", "first_output", q)
        g = lambda v: v < 300  # noqa: E731
        rows.append(
            f"| `execute` → first harness output, cold sandbox, {q[:3]} | {cell(v_s, ms)}{goal(v_s, g)} "
            f"| {cell(v_p, ms)}{goal(v_p, g)} | < 300 ms |"
        )
    o_s, o_p = get(s, "output", "lines_per_s"), get(p, "output", "lines_per_s")
    rows.append(
        f"| harness output lines/s, one turn, each line committed with its canonical event and streamed "
        f"| {cell(o_s, lambda v: f'{v:,.0f}')} | {cell(o_p, lambda v: f'{v:,.0f}')} | |"
    )
    rows += [
        "",
        "Append → delivery is measured from the moment the append request is sent to the moment each follower "
        "has read the event off its stream (so it includes the append's own commit). A cold turn is a new "
        "thread: the sandbox (network namespace, nftables, cgroups, a CA), its gateway and supervisor, "
        "`python3` starting the agent, the turn written and the first line spooled, committed and streamed. "
        "Output lines/s: a warm sandbox's agent prints 20,000 lines as fast as it can; from the first `output` "
        "event a follower reads to the execution's end.",
        *pool_rows(results.get("pool")),
        *tool_calls.rows(results.get("tools")),
        *workflow_steps.rows(results.get("workflows")),
        CONTROL_END,
        "",
    ]
    return "\n".join(rows)


def write(path, section):
    try:
        text = open(path).read()
    except OSError:
        text = "# Benchmarks\n\n"
    i, j = text.find(CONTROL_BEGIN), text.find(CONTROL_END)
    if 0 <= i < j:
        text = text[:i] + section + text[j + len(CONTROL_END) :].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="debug build, short runs, output under target/bench/")
    ap.add_argument("--engines", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    ap.add_argument("--parts", default="api,pool,tools,workflows",
                    help="comma-separated: api, pool, tools, workflows (the others keep their last published figures)")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built (after an unrelated edit)")
    a = ap.parse_args()
    parts = a.parts.split(",")
    if a.no_build:
        d = os.path.join(TARGET, "debug" if a.smoke else "release")
        centaur, tool = os.path.join(d, "centaur"), os.path.join(d, "control-bench")
    else:
        centaur, tool = build(not a.smoke)
    results, before = {}, {}
    published = os.path.join(ROOT, "bench", "control-results.json")
    if not a.smoke and os.path.exists(published):
        kept = json.load(open(published))
        results, before = kept.get("results", {}), kept.get("meta", {})
    if "api" in parts:
        for engine in a.engines.split(","):
            results[engine] = run_engine(engine, centaur, tool, a.smoke)
    if "pool" in parts:
        results["pool"] = measure_pool(centaur, tool, a.smoke)
    if "tools" in parts:
        results["tools"] = tool_calls.measure(centaur, a.smoke)
        results["tools"]["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if "workflows" in parts:
        pg = postgres_db() if "postgres" in a.engines.split(",") else None
        results["workflows"] = workflow_steps.measure(centaur, a.smoke, pg)
        results["workflows"]["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    meta = {
        # The header's date is the API part's; the other parts carry their own.
        "when": now if "api" in parts or not before else before["when"],
        "machine": f"{os.uname().sysname} {os.uname().release}, {os.cpu_count()} cores",
        "build": "debug" if a.smoke else "release",
        "smoke": a.smoke,
    }
    out_dir = os.path.join(TARGET, "bench") if a.smoke else os.path.join(ROOT, "bench")
    md = os.path.join(TARGET, "bench", "CONTROL.md") if a.smoke else os.path.join(ROOT, "BENCHMARKS.md")
    os.makedirs(os.path.dirname(md), exist_ok=True)
    with open(os.path.join(out_dir, "control-results.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    section = table(meta, results)
    write(md, section)
    print(section)
