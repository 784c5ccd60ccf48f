#!/usr/bin/env python3
"""Turns the runs of one loadtest/run.sh scenario into <out>.json and <out>.md (standard library only).

Input: runs.jsonl, one line per (backend, target) run as written by run.sh, each pointing to the
k6 --summary-export file of that run.
"""
import argparse
import datetime
import json
import os
import re

THROUGHPUT_TARGET = 0.90  # zkvault req/s >= 0.90 x baseline
P99_TARGET = 1.20  # zkvault p99 <= 1.2 x baseline
CUSTOM = [
    "reencrypt_batch_records_per_s", "reencrypt_records", "reencrypt_moved", "reencrypt_already_current",
    "reencrypt_rekeyed", "reencrypt_not_found", "reencrypt_left_on_old_master",
    "kek_rotation_ms", "dm_rotation_ms", "revocation_refused_ms", "revoked_accepted_late", "revoked_never_refused",
]


def ops_of(metrics):
    """Per-op request counts/rates and latency percentiles from tagged submetrics."""
    ops = {}
    # `{op:get}`, or `{phase:flood,op:get}` (reported as op `get@flood`).
    tag = r"\{(?:phase:([a-z_]+),)?op:([a-z_]+)\}"
    name = lambda hit: hit.group(2) + (f"@{hit.group(1)}" if hit.group(1) else "")
    for key, m in metrics.items():
        hit = re.fullmatch(r"http_reqs" + tag, key)
        if hit:
            ops.setdefault(name(hit), {}).update(count=m.get("count", 0), rate=m.get("rate", 0.0))
        hit = re.fullmatch(r"http_req_duration" + tag, key)
        if hit:
            ops.setdefault(name(hit), {}).update(
                avg_ms=m.get("avg"), p50_ms=m.get("med"), p95_ms=m.get("p(95)"), p99_ms=m.get("p(99)"), max_ms=m.get("max"),
                count=m.get("count", ops.get(name(hit), {}).get("count", 0)))
    return ops


def load_run(run):
    out = {k: run.get(k) for k in ("scenario", "backend", "target", "round", "seeded", "seed", "k6_exit", "server_cpu_s", "raw_update",
                                   "db_bytes_before", "db_bytes_after", "audit_rows_added", "refusal_rows_added")}
    for k in ("rss_kb", "rss_peak_kb", "rss_hwm_kb"):
        out[k.replace("_kb", "_mib")] = round((run.get(k) or 0) / 1024, 1)
    path = run.get("summary")
    if not path or not os.path.exists(path):
        return out
    metrics = json.load(open(path))["metrics"]
    total = metrics.get("http_reqs", {})
    failed = metrics.get("http_req_failed", {})
    checks = metrics.get("checks", {})
    dur = metrics.get("http_req_duration", {})
    out.update(
        requests=total.get("count", 0),
        req_per_s=total.get("rate", 0.0),
        p50_ms=dur.get("med"), p95_ms=dur.get("p(95)"), p99_ms=dur.get("p(99)"),
        # k6 Rate metrics: "passes" = samples that were true, i.e. failed requests here.
        errors=failed.get("passes", 0),
        checks_failed=checks.get("fails", 0),
        ops=ops_of(metrics),
        thresholds_crossed=sorted(k for k, m in metrics.items() for t, bad in (m.get("thresholds") or {}).items() if bad),
        custom={k: metrics[k] for k in CUSTOM if k in metrics},
    )
    if out["requests"] and run.get("server_cpu_s") is not None:
        out["server_cpu_us_per_req"] = round(run["server_cpu_s"] * 1e6 / out["requests"], 1)
    return out


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def ratios(runs):
    """zkvault/baseline per backend and op: one pair per round, then the median over rounds."""
    rows = []
    for backend in sorted({r["backend"] for r in runs}):
        for op in ("put", "get"):
            pairs = []
            for rnd in sorted({r.get("round") for r in runs if r["backend"] == backend}, key=lambda x: x or 0):
                zk = next((r for r in runs if r["backend"] == backend and r["target"] == "zkvault" and r.get("round") == rnd and r.get("ops")), None)
                bl = next((r for r in runs if r["backend"] == backend and r["target"] == "baseline" and r.get("round") == rnd and r.get("ops")), None)
                if not zk or not bl:
                    continue
                a, b = zk["ops"].get(op), bl["ops"].get(op)
                if not a or not b or not b.get("rate") or not b.get("p99_ms") or "p99_ms" not in a:
                    continue
                pair = dict(zr=a["rate"], br=b["rate"], zp=a["p99_ms"], bp=b["p99_ms"], t=a["rate"] / b["rate"], p=a["p99_ms"] / b["p99_ms"])
                if zk.get("server_cpu_us_per_req") and bl.get("server_cpu_us_per_req"):
                    pair["c"] = zk["server_cpu_us_per_req"] / bl["server_cpu_us_per_req"]
                pairs.append(pair)
            if not pairs:
                continue
            t = median([x["t"] for x in pairs])
            p = median([x["p"] for x in pairs])
            row = dict(backend=backend, op=op, rounds=len(pairs),
                       zkvault_req_per_s=median([x["zr"] for x in pairs]), baseline_req_per_s=median([x["br"] for x in pairs]),
                       throughput_ratio=t, throughput_ratio_range=[min(x["t"] for x in pairs), max(x["t"] for x in pairs)],
                       zkvault_p99_ms=median([x["zp"] for x in pairs]), baseline_p99_ms=median([x["bp"] for x in pairs]),
                       p99_ratio=p, p99_ratio_range=[min(x["p"] for x in pairs), max(x["p"] for x in pairs)],
                       meets_target=t >= THROUGHPUT_TARGET and p <= P99_TARGET)
            if all("c" in x for x in pairs):
                row["cpu_per_req_ratio"] = median([x["c"] for x in pairs])
            rows.append(row)
    return rows


def fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown(doc):
    m = doc["machine"]
    lines = [
        f"# Load test `{doc['scenario']}` — {doc['date']}",
        "",
        f"Machine: {m['cpus']} CPU ({m['cpu_model']}), {m['mem_gib']} GiB, Linux {m['kernel']}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])} (shared with other builds when above ~0.5). "
        + ("" if doc["scenario"] == "seed" else f"k6 runs on the same machine. Shape: {doc['vus']} VUs, {doc['duration']}."),
        "",
        ("Server settings: " + ", ".join(f"{k}={v}" for k, v in doc["settings"].items()) + " (defaults unless set).") if doc.get("settings") else "",
        "",
    ]
    runs = [r for r in doc["runs"] if r.get("ops") is not None]
    if runs:
        lines += ["| backend | target | round | requests | req/s | p50 ms | p95 ms | p99 ms | failed requests | failed checks | thresholds |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in runs:
            lines.append("| " + " | ".join([
                r["backend"], r["target"], fmt(r.get("round")), fmt(r.get("requests")), fmt(r.get("req_per_s"), 0),
                fmt(r.get("p50_ms"), 2), fmt(r.get("p95_ms"), 2), fmt(r.get("p99_ms"), 2), fmt(r.get("errors")),
                fmt(r.get("checks_failed")), "pass" if r["k6_exit"] == 0 else f"**crossed** (k6 exit {r['k6_exit']})"]) + " |")
        lines.append("")
    if any(r.get("ops") for r in runs):
        lines += ["| backend | target | round | op | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | checks failed | server CPU µs/req | peak RSS MiB | k6 |",
                  "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in runs:
            first = True
            for op, o in sorted(r["ops"].items(), key=lambda kv: -kv[1].get("count", 0)):
                lines.append("| " + " | ".join([
                    r["backend"], r["target"], fmt(r.get("round")), op, fmt(o.get("count")), fmt(o.get("rate"), 0), fmt(o.get("p50_ms"), 2),
                    fmt(o.get("p95_ms"), 2), fmt(o.get("p99_ms"), 2), fmt(o.get("max_ms"), 1),
                    fmt(r["errors"]) if first else "", fmt(r["checks_failed"]) if first else "",
                    fmt(r.get("server_cpu_us_per_req")) if first else "", fmt(r.get("rss_peak_mib")) if first else "",
                    ("pass" if r["k6_exit"] == 0 else f"**FAIL ({r['k6_exit']})**") if first else ""]) + " |")
                first = False
        lines.append("")
        lines.append("req/s is per operation over the whole k6 run; errors are requests k6 counted as failed; "
                     "server CPU is user+system time of the server process during the run divided by all its requests.")
        lines.append("")
    if doc["ratios"]:
        lines += ["## zkvault / baseline (same session, same kind of database)", "",
                  f"Target: throughput ≥ {THROUGHPUT_TARGET:.2f}× baseline and p99 ≤ {P99_TARGET:.1f}× baseline. "
                  "Medians over alternating rounds (range in brackets); CPU/req is the server's CPU time per request.", "",
                  "| backend | op | rounds | zkvault req/s | baseline req/s | throughput ratio | zkvault p99 ms | baseline p99 ms | p99 ratio | CPU/req ratio | target |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for x in doc["ratios"]:
            tr, pr = x["throughput_ratio_range"], x["p99_ratio_range"]
            lines.append(f"| {x['backend']} | {x['op'].upper()} | {x['rounds']} | {fmt(x['zkvault_req_per_s'], 0)} | {fmt(x['baseline_req_per_s'], 0)} | "
                         f"{x['throughput_ratio']:.3f} [{tr[0]:.2f}–{tr[1]:.2f}] | {fmt(x['zkvault_p99_ms'], 2)} | {fmt(x['baseline_p99_ms'], 2)} | "
                         f"{x['p99_ratio']:.3f} [{pr[0]:.2f}–{pr[1]:.2f}] | "
                         f"{fmt(x.get('cpu_per_req_ratio'), 3)} | {'met' if x['meets_target'] else '**not met**'} |")
        lines.append("")
    seeds = [r for r in doc["runs"] if r.get("seed") and r.get("round") in (None, 1)]
    if seeds:
        lines += ["## Seeding", "", "| backend | target | residents | seconds | residents/s |", "|---|---|---:|---:|---:|"]
        for r in seeds:
            s = r["seed"]
            secs = s.get("report", {}).get("seconds", s.get("seconds"))
            n = s.get("count")
            lines.append(f"| {r['backend']} | {r['target']} | {fmt(n)} | {fmt(secs, 1)} | {fmt(n / secs if secs else None, 0)} |")
        lines.append("")
    customs = [r for r in doc["runs"] if r.get("custom") or r.get("raw_update")]
    if customs:
        lines += ["## Scenario metrics", "", "| backend | metric | value |", "|---|---|---|"]
        for r in customs:
            for k, v in (r.get("custom") or {}).items():
                if "count" in v and "rate" in v and len(v) <= 3:
                    val = f"{fmt(v['count'])} ({fmt(v['rate'], 0)}/s over the run)"
                else:
                    val = ", ".join(f"{s} {fmt(v[s], 2)}" for s in ("med", "p(95)", "p(99)", "max") if s in v)
                lines.append(f"| {r['backend']} | {k} | {val} |")
            if r.get("raw_update"):
                u = r["raw_update"]
                lines.append(f"| {r['backend']} | raw SQL UPDATE of the same rows (one statement) | {fmt(u['rows'])} rows in {u['seconds']:.2f} s = {fmt(u['rows_per_s'], 0)} rows/s |")
        lines.append("")
    sized = [r for r in doc["runs"] if r.get("db_bytes_after") is not None and r.get("db_bytes_before") is not None]
    if sized:
        lines += ["## Database size over the run", "",
                  "SQLite counts its files, WAL included; PostgreSQL `pg_database_size`. Audit entries: all appended during the run, "
                  "and those recording refused requests (`access.*`, aggregated per key and second).", "",
                  "| backend | target | round | before MiB | after MiB | grew by KiB | audit entries added | of which refusals |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in sized:
            b, a = r["db_bytes_before"], r["db_bytes_after"]
            lines.append(f"| {r['backend']} | {r['target']} | {fmt(r.get('round'))} | {b / 2**20:,.1f} | {a / 2**20:,.1f} | {(a - b) / 1024:,.0f} | "
                         f"{fmt(r.get('audit_rows_added'))} | {fmt(r.get('refusal_rows_added'))} |")
        lines.append("")
    crossed = [(r["backend"], r["target"], r["thresholds_crossed"]) for r in doc["runs"] if r.get("thresholds_crossed")]
    if crossed:
        lines += ["## Thresholds crossed", ""] + [f"- {b}/{t}: {', '.join(c)}" for b, t, c in crossed] + [""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs")
    ap.add_argument("--machine")
    ap.add_argument("--scenario")
    ap.add_argument("--duration", default="")
    ap.add_argument("--vus", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--from-json", help="re-render the Markdown of an existing results JSON")
    a = ap.parse_args()
    if a.from_json:
        doc = json.load(open(a.from_json))
        doc.setdefault("settings", {})
        with open(a.out + ".md", "w") as f:
            f.write(markdown(doc) + "\n")
        return
    runs = [load_run(json.loads(line)) for line in open(a.runs) if line.strip()]
    doc = dict(scenario=a.scenario, date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               machine=json.loads(a.machine), duration=a.duration, vus=a.vus, runs=runs, ratios=ratios(runs),
               settings={k: os.environ.get(k, d) for k, d in (("ZKVAULT_AUDIT_READS", "true"), ("RUST_LOG", "info"), ("ZKVAULT_DB_MAX_CONNECTIONS", "8"))})
    with open(a.out + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    with open(a.out + ".md", "w") as f:
        f.write(markdown(doc) + "\n")


if __name__ == "__main__":
    main()
