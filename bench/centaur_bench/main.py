"""The command line: which mode, scenarios and contenders; runs them in alternation for several rounds."""

import argparse
import atexit
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from .common import HOST, MITMPROXY_VERSION, RELEASE, ROOT, TOOLS, Procs, log, version
from .contenders import CONTENDERS, Centaur
from .install import install, make_pki, map_hosts
from .report import report, stats
from .scenarios import MODES, NEEDS_PROCS, QUICK_CONTENDERS, SCENARIOS


class Ctx:
    pass


def main():
    ap = argparse.ArgumentParser(description=sys.modules[__package__].__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a few scenarios, one round, under 2 minutes")
    mode.add_argument("--smoke", action="store_true", help="CI: start, measure once, write a table")
    ap.add_argument("--rounds", type=int, help="rounds per scenario (full: 3)")
    ap.add_argument("--duration", type=int, help="seconds per load run (full: 5)")
    ap.add_argument("--scenarios", help="comma-separated: " + ",".join(SCENARIOS))
    ap.add_argument("--contenders", help="comma-separated: " + ",".join(CONTENDERS))
    ap.add_argument("--baseline", metavar="BINARY",
                    help="another build of centaur-gateway to run beside centaur-t, in alternation, with the "
                         "same policy: the 'T vs baseline' column compares the two in one run")
    ap.add_argument("--out", help="Markdown output (full: BENCHMARKS.md; else target/bench/BENCHMARKS.md); JSON beside it")
    ap.add_argument("--no-install", action="store_true", help="use what is installed; never apt-get, pip or cargo install")
    args = ap.parse_args()
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    m = MODES[mode_name]
    args.scenarios = args.scenarios.split(",") if args.scenarios else m["scenarios"]
    default_contenders = list(CONTENDERS) if mode_name == "full" else \
        ["direct", "centaur-t", "centaur-c"] if mode_name == "smoke" else QUICK_CONTENDERS
    args.contenders = args.contenders.split(",") if args.contenders else default_contenders
    if args.baseline:
        if not (os.path.isfile(args.baseline) and os.access(args.baseline, os.X_OK)):
            ap.error(f"--baseline {args.baseline}: not an executable file")
        CONTENDERS["baseline"] = Centaur("baseline", f"centaur transparent, baseline ({os.path.basename(args.baseline)})",
                                         "transparent", True, os.path.abspath(args.baseline))
        if "baseline" not in args.contenders:
            at = args.contenders.index("centaur-t") + 1 if "centaur-t" in args.contenders else len(args.contenders)
            args.contenders.insert(at, "baseline")
    elif "baseline" in args.contenders:
        ap.error("the baseline contender needs --baseline BINARY")
    for s in args.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    for c in args.contenders:
        if c not in CONTENDERS:
            ap.error(f"unknown contender {c!r}; known: {', '.join(CONTENDERS)}")
    if os.geteuid() != 0:
        ap.error("run as root: it maps origin.test in /etc/hosts and raises the open-file limit")
    out_md = args.out or (os.path.join(ROOT, "BENCHMARKS.md") if mode_name == "full" else os.path.join(TOOLS, "BENCHMARKS.md"))
    out_json = os.path.splitext(out_md)[0] + ".json"
    if mode_name == "full" and not args.out:
        out_json = os.path.join(ROOT, "bench", "results.json")

    os.environ["RUST_BACKTRACE"] = "0"  # errors, not stack traces, in the table's footnotes
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 10,000 idle connections need it
    started = time.monotonic()
    ctx = Ctx()
    ctx.quick = mode_name != "full"
    ctx.duration = args.duration or m["duration"]
    ctx.new_hosts = 10000 if "new_host" in args.scenarios else 0
    ctx.oha, ctx.mitmdump = install(args)
    os.makedirs(TOOLS, exist_ok=True)
    ctx.work = tempfile.mkdtemp(prefix="run-", dir=TOOLS)
    os.chmod(ctx.work, 0o755)
    atexit.register(shutil.rmtree, ctx.work, True)
    make_pki(ctx.work)
    map_hosts([HOST] + [f"h{i:04d}.{HOST}" for i in range(ctx.new_hosts)])
    procs = Procs()

    origin = procs.start([f"{RELEASE}/bench-origin", "--cert", f"{ctx.work}/origin.pem", "--key", f"{ctx.work}/origin.key"],
                         stdout=subprocess.PIPE, text=True)
    ctx.origin_port = int(origin.stdout.readline().rsplit(":", 1)[1])
    log(f"origin on 127.0.0.1:{ctx.origin_port}; contenders: {', '.join(args.contenders)}")
    contenders = [CONTENDERS[c] for c in args.contenders]
    for c in contenders:
        c.start(ctx, procs)
    ctx.peak = {}
    rounds = args.rounds or m["rounds"]
    results = {}
    for scen in args.scenarios:
        title, applies, fn, metric = SCENARIOS[scen]
        results[scen] = {}
        runs = {}
        for rnd in range(rounds):
            for c in contenders:
                if applies == "proxies" and c.mode == "direct" or applies not in ("all", "proxies") and c.name != applies:
                    continue
                if c.name in runs and "error" in runs[c.name]:
                    continue
                log(f"{scen} round {rnd + 1}/{rounds}: {c.name}")
                try:
                    r = fn(ctx, c, procs) if scen in NEEDS_PROCS else fn(ctx, c)
                    for k, v in r.items():
                        runs.setdefault(c.name, {}).setdefault(k, []).append(v)
                except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
                    log(f"  {c.name} failed: {e}")
                    runs[c.name] = {"error": str(e).replace("\n", " ")[:300]}
                if scen == "new_host" and c.mode != "direct":
                    # Its pool now holds an idle upstream connection per name (thousands, for
                    # 90 s), each an open descriptor in the origin: start it afresh.
                    c.stop(procs)
                    c.start(ctx, procs)
        for name, values in runs.items():
            results[scen][name] = values if "error" in values else {"metrics": {k: stats(v) for k, v in values.items()}}
        if scen == "ka_h1_16":
            ctx.peak = {n: r["metrics"]["rps"]["median"] for n, r in results[scen].items() if "metrics" in r}

    for c in contenders:
        c.stop(procs)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.release()}, {os.cpu_count()} cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB",
        "command": "bench/run" + ("" if len(sys.argv) == 1 else " " + " ".join(sys.argv[1:])),
        "mode": mode_name, "rounds": rounds, "duration": ctx.duration,
        "seconds": round(time.monotonic() - started),
        "versions": {
            "centaur-gateway": version([f"{RELEASE}/centaur-gateway", "--version"]).split()[-1],
            "oha": version([ctx.oha, "--version"]).split()[-1],
            "squid": version(["squid", "-v"]).split("Version")[-1].strip() if "squid" in args.contenders else "–",
            "mitmproxy": MITMPROXY_VERSION if "mitmproxy" in args.contenders else "–",
            "hudsucker": "0.25" if "hudsucker" in args.contenders else "–",
            "rustc": version(["rustc", "--version"]).split()[1],
        },
    }
    report(meta, results, args.contenders, out_md, out_json)
    log(f"done in {meta['seconds']} s")
