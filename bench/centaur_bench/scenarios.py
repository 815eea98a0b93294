"""The scenarios: load with oha, probes, memory, cold start, audit queries; and the modes that pick them."""

import contextlib
import json
import os
import subprocess
import time

from .common import HOST, PLACEHOLDER, RELEASE, MiB, cpu_s, log, pss_kib, rss_kib, sh


def url(ctx, path, host=HOST, port=None):
    return f"https://{host}:{port or ctx.origin_port}{path}"


def oha_argv(ctx, c, path, conns, extra=(), host=HOST):
    """oha's command line for contender `c`, without how long or how many (-z or -n)."""
    cmd = [ctx.oha, "--no-tui", "--output-format", "json", "-c", str(conns),
           "--cacert", f"{ctx.work}/trust.pem", "-H", f"Authorization: Bearer {PLACEHOLDER}", *extra]
    target = url(ctx, path, host)
    if c.mode == "connect":
        cmd += ["-x", f"http://127.0.0.1:{c.port}"]
    elif c.mode == "transparent" and "--rand-regex-url" in extra:
        # --connect-to matches one exact name: dial the listener by port instead (every
        # generated name maps to 127.0.0.1 in /etc/hosts; the gateway's pins name the origin).
        target = url(ctx, path, host, c.port)
    elif c.mode == "transparent":
        cmd += ["--connect-to", f"{host}:{ctx.origin_port}:127.0.0.1:{c.port}"]
    return cmd + [target]


def oha(ctx, c, path, duration, conns, extra=(), host=HOST):
    """One oha run; returns its JSON summary, or raises with oha's complaint."""
    cmd = oha_argv(ctx, c, path, conns, ["-z", f"{duration}s", *extra], host)
    pid = c.pid()
    cpu_before = cpu_s(pid) if pid else None
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration * 4 + 60)
    cpu = cpu_s(pid) - cpu_before if pid else None
    if p.returncode != 0:
        raise RuntimeError(f"oha exit {p.returncode}: {p.stderr.strip()[-300:]}")
    out = json.loads(p.stdout)
    s = out["summary"]
    ok = sum(v for k, v in out.get("statusCodeDistribution", {}).items() if k == "200")
    # Requests still in flight at the -z deadline are cut off by oha itself: not failures.
    errors = {k: v for k, v in out.get("errorDistribution", {}).items() if k != "aborted due to deadline"}
    total = ok + sum(v for k, v in out.get("statusCodeDistribution", {}).items() if k != "200") + sum(errors.values())
    if ok == 0 or ok < 0.99 * total:
        raise RuntimeError(f"{ok} of {total} requests succeeded: {out.get('statusCodeDistribution')} "
                           f"{dict(list(errors.items())[:2])}")
    lat = out.get("latencyPercentiles", {})
    r = {"rps": ok / s["total"], "p50_ms": (lat.get("p50") or 0) * 1000, "p99_ms": (lat.get("p99") or 0) * 1000}
    if cpu is not None:
        # What one request costs the proxy in CPU: steadier than req/s on a shared machine.
        r["cpu_us_per_req"] = cpu * 1e6 / ok
    return r


def probe(ctx, c, sub, path, *extra):
    cmd = [f"{RELEASE}/bench-probe", sub, "--url", url(ctx, path), "--ca", f"{ctx.work}/trust.pem"]
    cmd += ["--connect", f"127.0.0.1:{c.port}"] + (["--tunnel"] if c.mode == "connect" else [])
    return cmd + list(extra)


def run_probe(ctx, c, sub, path, *extra):
    p = subprocess.run(probe(ctx, c, sub, path, *extra), capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip()[-300:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def load(path, conns, extra=(), size=None, host=HOST, long=False):
    def run(ctx, c):
        duration = ctx.duration * (2 if long else 1)
        r = oha(ctx, c, path, duration, conns, extra, host)
        return per_mib(r, size) if size else r
    return run


def upload(size, conns, long=False):
    def run(ctx, c):
        body = f"{ctx.work}/upload-{size}"
        if not os.path.exists(body):
            with open(body, "wb") as f:
                f.write(b"u" * size)
        r = oha(ctx, c, "/upload", ctx.duration * (2 if long else 1), conns,
                ["-m", "POST", "-D", body, "--wait-ongoing-requests-after-deadline"])
        return per_mib(r, size)
    return run


def per_mib(r, size):
    """A body scenario's figures: throughput, and CPU per MiB moved instead of per request."""
    out = {"MiB/s": r["rps"] * size / MiB, "p99_ms": r["p99_ms"]}
    if "cpu_us_per_req" in r:
        out["cpu_ms_per_MiB"] = r["cpu_us_per_req"] / 1000 / (size / MiB)
    return out


def sse(ctx, c):
    return run_probe(ctx, c, "sse", "/sse?n=200&ms=10", "--events", "200")


def ws(ctx, c):
    return run_probe(ctx, c, "ws", "/ws", "--count", str(500 if ctx.quick else 2000))


def half_load(ctx, c):
    peak = ctx.peak.get("centaur-t")
    if not peak:
        raise RuntimeError("needs ka_h1_16 for centaur-t first")
    rate = int(peak / 2)
    own = ctx.peak.get(c.name)
    if own and own < rate:
        raise RuntimeError(f"peak {own:.0f} req/s is below the rate {rate}")
    r = oha(ctx, c, "/", ctx.duration, 16, ["-q", str(rate)])
    return {"p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "rate": rate}


@contextlib.contextmanager
def policy_alone(ctx):
    """Memory and start-up are measured with the realistic policy alone: the 10,000 name pins
    that only new_host needs would add a few MiB of their own."""
    saved, ctx.new_hosts = ctx.new_hosts, 0
    try:
        yield
    finally:
        ctx.new_hosts = saved


def fresh(ctx, c, procs):
    """A new instance of the contender, for the memory and start-up scenarios."""
    saved = (c.proc, c.port)
    with policy_alone(ctx):
        c.start(ctx, procs)
    return saved


def memory(conns):
    def run(ctx, c, procs):
        saved = fresh(ctx, c, procs)
        try:
            oha(ctx, c, "/", 1, 1)  # one request: lazy set-up done, as in service
            time.sleep(1)
            if conns == 0:
                return {"RSS_MiB": rss_kib(c.pid()) / 1024, "anon_MiB": rss_kib(c.pid(), "RssAnon") / 1024}
            before = rss_kib(c.pid())
            holder = subprocess.Popen(probe(ctx, c, "idle", "/", "--conns", str(conns)), stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = holder.stdout.readline()
            if not line:
                raise RuntimeError(f"idle probe: {holder.stderr.read().strip()[-300:]}")
            time.sleep(1)
            after = rss_kib(c.pid())
            holder.stdin.close()
            holder.wait(60)
            return {"RSS_MiB": after / 1024, "anon_MiB": rss_kib(c.pid(), "RssAnon") / 1024,
                    "KiB_per_conn": (after - before) / conns}
        finally:
            c.stop(procs)
            c.proc, c.port = saved
    return run


def idle_pss(ctx, c, procs, n=4):
    """Memory per instance with `n` fresh instances running, each after one request: what one
    more gateway beside one more sandbox costs a host. PSS splits the executable's and the
    libraries' pages between the processes that map them, which RSS counts in full for each."""
    saved, name, started = (c.proc, c.port), c.name, []
    try:
        for i in range(n):
            c.name = f"{name}-pss{i}"  # its own configuration, audit file and log
            with policy_alone(ctx):
                c.start(ctx, procs)
            started.append(c.proc)
            oha(ctx, c, "/", 1, 1)
        time.sleep(1)
        return {"PSS_MiB": sum(pss_kib(p.pid) for p in started) / n / 1024}
    finally:
        c.name = name
        for p in started:
            procs.stop(p)
        c.proc, c.port = saved


def cold_start(ctx, c, procs):
    with policy_alone(ctx):
        argv, port, env = c.command(ctx)
    c_port, c.port = c.port, port
    try:
        cmd = probe(ctx, c, "cold", "/", "--", *argv)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
        if p.returncode != 0:
            raise RuntimeError(p.stderr.strip()[-300:])
        return json.loads(p.stdout.strip().splitlines()[-1])
    finally:
        c.port = c_port


def audit_query(ctx, c):
    d = f"{ctx.work}/audit-1m"
    if not os.path.isdir(d):
        os.makedirs(d)
        log("writing 1,000,000 audit records through the real writer (gen_audit)")
        sh([f"{RELEASE}/examples/gen_audit", d, "1000000"])
    files = sorted(f"{d}/{f}" for f in os.listdir(d))

    def timed(*args):
        start = time.monotonic()
        subprocess.run([f"{RELEASE}/centaur", "audit", *args], stdout=subprocess.DEVNULL, check=True)
        return time.monotonic() - start

    return {
        "host_s": timed("query", *files, "--host", "api3.openai.com", "--output", "json"),
        "window_s": timed("query", *files, "--since", "2026-01-01T00:05:00Z", "--until", "2026-01-01T00:06:00Z",
                          "--host", "*.github.com", "--output", "json"),
        "verify_s": timed("verify", *files),
    }


# name -> (title, contenders it applies to, function, the metric the table leads with)
SCENARIOS = {
    "ka_h1_16": ("keep-alive, HTTP/1.1, 16 conns, 13 B", "all", load("/", 16), "rps"),
    "ka_h1_256": ("keep-alive, HTTP/1.1, 256 conns, 13 B", "all", load("/", 256), "rps"),
    "ka_h2_16": ("keep-alive, HTTP/2, 16 conns, 13 B", "all", load("/", 16, ["--http2"]), "rps"),
    "ka_h2_256": ("keep-alive, HTTP/2, 256 conns, 13 B", "all", load("/", 256, ["--http2"]), "rps"),
    "new_conn": ("new TLS connection per request, 8 conns", "all", load("/", 8, ["--disable-keepalive"]), "rps"),
    # oha's --rand-regex-url reads the URL as a regex in which "." is a literal dot.
    "new_host": ("new host name per request (leaf issuance), 8 conns", "all",
                 load("/", 8, ["--disable-keepalive", "--rand-regex-url"], host="h[0-9]{4}.origin.test"), "rps"),
    "down_1m": ("download 1 MiB, 4 conns", "all", load("/bytes/1048576", 4, size=MiB), "MiB/s"),
    "down_100m": ("download 100 MiB, 2 conns", "all",
                  load("/bytes/104857600", 2, ["--wait-ongoing-requests-after-deadline"], size=100 * MiB, long=True), "MiB/s"),
    "up_1m": ("upload 1 MiB, 4 conns", "all", upload(MiB, 4), "MiB/s"),
    "up_100m": ("upload 100 MiB, 2 conns", "all", upload(100 * MiB, 2, long=True), "MiB/s"),
    "sse": ("SSE event latency (200 events, 10 ms apart)", "all", sse, "p99_us"),
    "ws": ("WebSocket echo round trip (64 B)", "all", ws, "p99_us"),
    "half_load": ("latency at half centaur's peak, 16 conns", "all", half_load, "p99_ms"),
    "idle_rss": ("idle RSS after one request", "proxies", memory(0), "RSS_MiB"),
    "idle_pss": ("idle memory per instance, 4 instances running (PSS)", "proxies", idle_pss, "PSS_MiB"),
    "rss_1k": ("RSS with 1,000 idle keep-alive conns", "proxies", memory(1000), "RSS_MiB"),
    "rss_10k": ("RSS with 10,000 idle keep-alive conns", "proxies", memory(10000), "RSS_MiB"),
    "cold_start": ("cold start to first served request", "proxies", cold_start, "ms"),
    "audit_query": ("`centaur audit` over 1M records", "centaur-t", audit_query, "host_s"),
}


NEEDS_PROCS = {"idle_rss", "idle_pss", "rss_1k", "rss_10k", "cold_start"}


HIGHER_IS_BETTER = {"rps", "MiB/s"}


MODES = {
    "full": dict(rounds=3, duration=5, scenarios=list(SCENARIOS), new_hosts=10000),
    "quick": dict(rounds=1, duration=3, new_hosts=0,
                  scenarios=["ka_h1_16", "new_conn", "down_1m", "half_load", "idle_rss", "cold_start"]),
    "smoke": dict(rounds=1, duration=1, new_hosts=0, scenarios=["ka_h1_16", "idle_rss"]),
}


QUICK_CONTENDERS = ["direct", "centaur-t", "centaur-t-bare", "centaur-c", "hudsucker", "squid"]
