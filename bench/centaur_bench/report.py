"""The table (BENCHMARKS.md) and the JSON: medians with ranges, ratios, goals met or missed."""

import json
import os
import statistics

from .common import log
from .contenders import CONTENDERS
from .scenarios import HIGHER_IS_BETTER, SCENARIOS


def stats(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def fmt(v, metric):
    if v is None:
        return "–"
    if metric == "rps":
        return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"
    if metric == "cpu_us_per_req":
        return f"{v:.0f} µs CPU"
    if metric == "cpu_ms_per_MiB":
        return f"{v:.2f} ms CPU"
    if metric in ("p99_us", "p50_us", "max_us"):
        return f"{v:.0f} µs"
    if metric in ("p99_ms", "p50_ms", "ms"):
        return f"{v:.2f} ms" if v < 10 else f"{v:.0f} ms"
    if metric.endswith("_s"):
        return f"{v:.2f} s"
    if metric.endswith("_MiB"):
        return f"{v:.1f} MiB"
    return f"{v:.0f}"


def cell(result, metric):
    if result is None:
        return "–"
    if "error" in result:
        return "failed¹"
    s = result["metrics"].get(metric)
    if s is None:
        return "–"
    if s["min"] == s["max"]:
        return fmt(s["median"], metric)
    return f"{fmt(s['median'], metric)} ({fmt(s['min'], metric)}–{fmt(s['max'], metric)})"


def ratio(results, scen, ours, theirs, metric):
    a = (results.get(scen, {}).get(ours) or {}).get("metrics", {}).get(metric)
    b = (results.get(scen, {}).get(theirs) or {}).get("metrics", {}).get(metric)
    if not a or not b or not b["median"]:
        return None
    if metric in HIGHER_IS_BETTER:
        return a["median"] / b["median"]
    return b["median"] / a["median"]  # times better: the peer's latency or memory over ours


def goals(results):
    """The issue's goals, each with the measured figure."""
    def m(scen, c, metric):
        s = (results.get(scen, {}).get(c) or {}).get("metrics", {}).get(metric)
        return s["median"] if s else None

    rows = []

    def goal(text, value, target, shown):
        met = None if value is None else value >= target
        rows.append((text, shown if value is not None else "not measured", {True: "met", False: "**missed**", None: "–"}[met]))

    for scen in ("ka_h1_16", "ka_h2_16"):
        r = ratio(results, scen, "centaur-c", "hudsucker", "rps")
        goal(f"{scen}: CONNECT ≥ 1.5× hudsucker", r, 1.5, f"{r:.2f}×" if r else "")
        r = ratio(results, scen, "centaur-c", "squid", "rps")
        goal(f"{scen}: CONNECT ≥ 3× squid", r, 3.0, f"{r:.2f}×" if r else "")
        r = ratio(results, scen, "centaur-t", "direct", "rps")
        goal(f"{scen}: transparent ≥ 50% of direct", r, 0.5, f"{r:.0%}" if r else "")
    r = ratio(results, "new_conn", "centaur-c", "hudsucker", "rps")
    goal("new connection per request: CONNECT ≥ 2× hudsucker", r, 2.0, f"{r:.2f}×" if r else "")
    for scen in ("down_1m", "down_100m", "up_1m", "up_100m"):
        r = ratio(results, scen, "centaur-t", "direct", "MiB/s")
        goal(f"{scen}: transparent ≥ 60% of direct", r, 0.6, f"{r:.0%}" if r else "")
    a, b = m("half_load", "centaur-t", "p99_ms"), m("half_load", "direct", "p99_ms")
    d = None if a is None or b is None else a - b
    goal("half load: p99 ≤ direct + 1 ms", None if d is None else 1.0 - d, 0.0, f"+{d:.2f} ms" if d is not None else "")
    v = m("idle_rss", "centaur-t", "RSS_MiB")
    goal("idle RSS ≤ 8 MiB", None if v is None else 8.0 - v, 0.0, f"{v:.1f} MiB" if v is not None else "")
    r = ratio(results, "idle_pss", "centaur-t", "hudsucker", "PSS_MiB")
    a, b = m("idle_pss", "centaur-t", "PSS_MiB"), m("idle_pss", "hudsucker", "PSS_MiB")
    goal("idle memory, 4 instances running: PSS each ≤ hudsucker's", r, 1.0,
         f"{a:.1f} MiB vs {b:.1f} MiB" if r else "")
    v = m("cold_start", "centaur-t", "ms")
    goal("cold start ≤ 50 ms", None if v is None else 50.0 - v, 0.0, f"{v:.1f} ms" if v is not None else "")
    r = ratio(results, "ka_h1_16", "centaur-t", "centaur-t-bare", "rps")
    goal("full policy + audit cost ≤ 10% (vs allow-only)", r, 0.9, f"{1 - r:.1%} slower" if r else "")
    return rows


def report(meta, results, contenders, path_md, path_json):
    peers = [c for c in ("hudsucker", "squid", "mitmproxy") if c in contenders]
    lines = [
        "# Benchmarks",
        "",
        f"Measured {meta['date']} on {meta['machine']} with `{meta['command']}` "
        f"({meta['mode']} mode: {meta['rounds']} round(s), {meta['duration']} s per load run"
        + ("; built without LTO, figures not comparable" if meta["mode"] == "smoke" else "") + "). "
        "Client, contender and origin share the same cores over loopback: read the ratios, not the absolutes. "
        "Cells are medians with (min–max) over the rounds. How to rerun and what each scenario does: "
        "[bench/README.md](bench/README.md).",
        "",
        "Versions: " + "; ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
        "## Goals",
        "",
        "| goal | measured | |",
        "|---|---|---|",
        *[f"| {g} | {v} | {s} |" for g, v, s in goals(results)],
        "",
        "## All results",
        "",
        "Ratios: centaur CONNECT against each CONNECT peer, centaur transparent against direct"
        + (" and against the baseline build" if "baseline" in contenders else "") + "; "
        "above 1 is better for centaur whatever the metric (for latency and memory, the peer's figure over ours).",
        "",
    ]
    head = ["scenario", "metric"] + [CONTENDERS[c].label for c in contenders]
    ratio_cols = []
    if "direct" in contenders and "centaur-t" in contenders:
        ratio_cols.append(("centaur-t", "direct", "T ÷ direct"))
    if "baseline" in contenders and "centaur-t" in contenders:
        ratio_cols.append(("centaur-t", "baseline", "T vs baseline"))
    for p in peers:
        if "centaur-c" in contenders:
            ratio_cols.append(("centaur-c", p, f"C vs {p}"))
    head += [r[2] for r in ratio_cols]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    footnotes = []
    for scen, per in results.items():
        title, _, _, metric = SCENARIOS[scen]
        metrics = [metric] + sorted({k for r in per.values() if r and "metrics" in r for k in r["metrics"]} - {metric, "rate"})
        for mi, mm in enumerate(metrics):
            row = [title if mi == 0 else "", mm]
            for c in contenders:
                r = per.get(c)
                row.append(cell(r, mm))
                if r and "error" in r and mi == 0:
                    footnotes.append(f"{title}, {CONTENDERS[c].label}: {r['error']}")
            for ours, theirs, _ in ratio_cols:
                v = ratio(results, scen, ours, theirs, mm)
                row.append(f"{v:.2f}" if v else "–")
            lines.append("| " + " | ".join(row) + " |")
    if footnotes:
        lines += ["", "¹ Failures, as the client reported them:", ""] + [f"- {f}" for f in footnotes]
    lines.append("")
    os.makedirs(os.path.dirname(path_md) or ".", exist_ok=True)
    kept = control_section(path_md)
    with open(path_md, "w") as f:
        f.write("\n".join(lines))
        if kept:
            f.write("\n" + kept)
    with open(path_json, "w") as f:
        json.dump({"meta": meta, "results": results,
                   "goals": [{"goal": g, "measured": v, "status": s} for g, v, s in goals(results)]}, f, indent=1)
    log(f"wrote {path_md} and {path_json}")


CONTROL_BEGIN = "<!-- bench/control: begin -->"
CONTROL_END = "<!-- bench/control: end -->"


def control_section(path_md):
    """The control plane's section (written by bench/control), kept when the gateway's table is rewritten."""
    try:
        text = open(path_md).read()
    except OSError:
        return ""
    i, j = text.find(CONTROL_BEGIN), text.find(CONTROL_END)
    return text[i : j + len(CONTROL_END)] + "\n" if 0 <= i < j else ""
