"""Tool calls through `centaur server` (part of bench/control): a tool whose worker runs in its
own sandbox behind its own gateway, called over the REST API. Warm round trips one at a time
and from 8 clients at once, and a cold call (the worker just crashed: a new sandbox, gateway
and Python worker before the answer). Needs root (sandboxes)."""

import http.client
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time

from .common import free_port, log, sh

TOOL = '''import os


class Client:
    """A tool for the benchmark."""

    def echo(self, text: str) -> str:
        """Says it back."""
        return text

    def crash(self) -> None:
        """Ends its worker."""
        os._exit(3)
'''


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))]


class Api:
    def __init__(self, port, key):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.key = key

    def call(self, method, args):
        body = json.dumps(args)
        self.conn.request("POST", f"/tools/bench/{method}", body,
                          {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
        r = self.conn.getresponse()
        return json.loads(r.read())


def setup(work):
    tool = os.path.join(work, "tools", "bench")
    os.makedirs(tool)
    with open(os.path.join(tool, "pyproject.toml"), "w") as f:
        f.write("[tool.centaur]\ndescription = 'bench'\nmodule = 'bench_tool'\n")
    with open(os.path.join(tool, "bench_tool.py"), "w") as f:
        f.write(TOOL)
    for d in (work, os.path.join(work, "tools"), tool):
        os.chmod(d, 0o755)
    config = os.path.join(work, "server.yaml")
    with open(config, "w") as f:
        f.write("harnesses:\n  unused:\n    command: ['true']\ntools:\n  dirs: [tools]\n")
    return config


def listed(port, key, deadline):
    while time.monotonic() < deadline:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            c.request("GET", "/tools", headers={"Authorization": f"Bearer {key}"})
            r = c.getresponse()
            if r.status == 200 and "bench" in json.loads(r.read()):
                return True
        except (OSError, ValueError):
            pass
        finally:
            c.close()
        time.sleep(0.02)
    return False


def measure(centaur, smoke):
    work = tempfile.mkdtemp(prefix="centaur-bench-tools-")
    config = setup(work)
    data = os.path.join(work, "data")
    key = sh([centaur, "keys", "create", "--name", "bench", "--scopes", "tools:*", "--data-dir", data]).strip()
    port = free_port()
    log(f"tools: starting centaur server on 127.0.0.1:{port}")
    server = subprocess.Popen(
        [centaur, "server", "--listen", f"127.0.0.1:{port}", "--config", config, "--data-dir", data],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "server.log"), "w"))
    try:
        started = time.monotonic()
        if not listed(port, key, started + 60):
            raise SystemExit("tools: the bench tool never loaded (see its server.log)")
        first_ready = (time.monotonic() - started) * 1e3
        api = Api(port, key)
        for _ in range(20):
            api.call("echo", {"text": "warm"})
        n = 100 if smoke else 500
        lat = []
        for i in range(n):
            t = time.perf_counter()
            out = api.call("echo", {"text": str(i)})
            lat.append((time.perf_counter() - t) * 1e3)
            assert out.get("result") == str(i), out
        clients, per = 8, (25 if smoke else 200)
        errors = []

        def client():
            a = Api(port, key)
            for i in range(per):
                if a.call("echo", {"text": str(i)}).get("result") != str(i):
                    errors.append(i)

        t = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        rate = clients * per / (time.perf_counter() - t)
        cold = []
        for _ in range(3 if smoke else 10):
            assert api.call("crash", {}).get("kind") == "crashed"
            t = time.perf_counter()
            assert api.call("echo", {"text": "again"}).get("result") == "again"
            cold.append((time.perf_counter() - t) * 1e3)
        log(f"tools: warm p50 {statistics.median(lat):.2f} ms, {rate:.0f} calls/s, cold p50 {statistics.median(cold):.0f} ms")
        return {
            "first_listed_ms": first_ready,
            "warm": {"calls": n, "p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99)},
            "concurrent": {"clients": clients, "calls": clients * per, "calls_per_s": rate, "errors": len(errors)},
            "cold": {"calls": len(cold), "p50_ms": percentile(cold, 0.5), "p99_ms": max(cold)},
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def rows(t):
    """The tool-call lines of the control plane's section."""
    if not t:
        return []
    return [
        "",
        f"Tool calls (measured {t.get('when', 'with the rest')}; `POST /tools/{{tool}}/{{method}}`, SQLite server, "
        "one tool whose worker runs in its own sandbox "
        "behind its own gateway; a keep-alive HTTP/1.1 client per caller):",
        "",
        "| measure | value |",
        "|---|---|",
        f"| server start → the tool listed (its sandbox, gateway and worker started) | {t['first_listed_ms']:.0f} ms |",
        f"| warm call round trip p50, one caller | {t['warm']['p50_ms']:.2f} ms |",
        f"| warm call round trip p99, one caller | {t['warm']['p99_ms']:.2f} ms |",
        f"| warm calls/s, {t['concurrent']['clients']} callers | {t['concurrent']['calls_per_s']:,.0f} "
        f"({t['concurrent']['errors']} wrong answers) |",
        f"| cold call (the worker had crashed: new sandbox, gateway, Python worker) p50 | {t['cold']['p50_ms']:.0f} ms |",
        f"| cold call, slowest of {t['cold']['calls']} | {t['cold']['p99_ms']:.0f} ms |",
    ]
