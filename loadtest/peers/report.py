#!/usr/bin/env python3
"""Turns a loadtest/peers/run.sh session into <out>.json and <out>.md (standard library only).

Input: runs.jsonl (one line per k6 run: op class write/read, backend, target, round, the k6
--summary-export file and the server's CPU and memory over the run) and seeds.jsonl.
"""
import argparse
import datetime
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from report import fmt, load_run, median  # noqa: E402  (loadtest/report.py)

# The k6 op tag that each target's run of an op class is measured by.
OPS = {
    "write": {"zkvault": "put", "baseline": "put", "openbao": "encrypt"},
    "read": {"zkvault": "get", "baseline": "get", "openbao": "decrypt"},
}
LABEL = {"write": "PUT / encrypt", "read": "GET / decrypt"}
TARGETS = ("zkvault", "baseline", "openbao")
PEERS = ("openbao", "baseline")


def measured(run):
    """req/s and p99 of the run's own op, or None when k6 produced no summary for it."""
    o = (run.get("ops") or {}).get(OPS[run["scenario"]][run["target"]])
    if not o or not o.get("rate") or o.get("p99_ms") is None:
        return None
    return dict(rate=o["rate"], p99=o["p99_ms"], cpu=run.get("server_cpu_us_per_req"))


def spread(xs):
    return dict(median=median(xs), min=min(xs), max=max(xs)) if xs else None


def summarize(runs):
    """Per backend, op class and target: medians over rounds; per peer: per-round ratios."""
    targets, ratios = [], []
    for backend in sorted({r["backend"] for r in runs}):
        for op in OPS:
            mine = [r for r in runs if r["backend"] == backend and r["scenario"] == op]
            for target in TARGETS:
                rs = [r for r in mine if r["target"] == target]
                ms = [m for m in map(measured, rs) if m]
                if not rs:
                    continue
                targets.append(dict(
                    backend=backend, op=op, target=target, k6_op=OPS[op][target], rounds=len(ms),
                    req_per_s=median([m["rate"] for m in ms]) if ms else None,
                    p99_ms=median([m["p99"] for m in ms]) if ms else None,
                    server_cpu_us_per_req=median([m["cpu"] for m in ms if m["cpu"]]) if any(m["cpu"] for m in ms) else None,
                    rss_peak_mib=max(r.get("rss_peak_mib") or 0 for r in rs),
                    rss_hwm_mib=max(r.get("rss_hwm_mib") or 0 for r in rs),
                    failed_requests=sum(r.get("errors") or 0 for r in rs),
                    failed_checks=sum(r.get("checks_failed") or 0 for r in rs),
                    failed_runs=sum(1 for r in rs if r.get("k6_exit") != 0)))
            for peer in PEERS:
                pairs = []
                for rnd in sorted({r["round"] for r in mine}):
                    zk = next((measured(r) for r in mine if r["target"] == "zkvault" and r["round"] == rnd), None)
                    other = next((measured(r) for r in mine if r["target"] == peer and r["round"] == rnd), None)
                    if zk and other:
                        pairs.append(dict(t=zk["rate"] / other["rate"], p=zk["p99"] / other["p99"],
                                          c=zk["cpu"] / other["cpu"] if zk["cpu"] and other["cpu"] else None))
                if pairs:
                    ratios.append(dict(backend=backend, op=op, peer=peer, rounds=len(pairs),
                                       throughput=spread([x["t"] for x in pairs]), p99=spread([x["p"] for x in pairs]),
                                       cpu_per_req=spread([x["c"] for x in pairs if x["c"] is not None])))
    return targets, ratios


def ratio_cell(s):
    if not s:
        return "–"
    return f"{s['median']:.2f} [{s['min']:.2f}–{s['max']:.2f}]"


def markdown(doc):
    m = doc["machine"]
    lines = [
        f"# zkvault vs OpenBao transit vs the no-encryption baseline — {doc['date']}",
        "",
        f"Machine: {m['cpus']} CPU ({m['cpu_model']}), {m['mem_gib']} GiB, Linux {m['kernel']}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}. k6 runs on the same machine. Shape: {doc['vus']} VUs, "
        f"{doc['duration']} per run, {doc['seeded']:,} seeded residents, rounds alternating zkvault, baseline, OpenBao.",
        "",
        "Server settings: " + ", ".join(f"{k}={v}" for k, v in doc["settings"].items()) + ".",
        "",
        "What each request does: zkvault PUT seals a new resident's ~2 KiB document under a key derived for that "
        "resident, stores it and appends its audit entry; GET reads a seeded resident's record (Zipfian), opens it "
        "and, by default, audits the read. The baseline does the same without any encryption. OpenBao "
        f"{doc['openbao_version']} (dev server, in memory, no audit device) only encrypts or decrypts the same "
        "documents under a transit key derived per resident (context = UIN) and stores nothing: its numbers are "
        "the ceiling of encryption as a service, not a record store.",
        "",
        "## Medians over rounds",
        "",
        "| backend | op | target | rounds | req/s | p99 ms | server CPU µs/req | peak RSS MiB (sampled / VmHWM) | failed requests / checks / runs |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for t in doc["targets"]:
        lines.append(f"| {t['backend']} | {LABEL[t['op']]} | {t['target']} ({t['k6_op']}) | {t['rounds']} | {fmt(t['req_per_s'], 0)} | "
                     f"{fmt(t['p99_ms'], 2)} | {fmt(t['server_cpu_us_per_req'])} | {fmt(t['rss_peak_mib'])} / {fmt(t['rss_hwm_mib'])} | "
                     f"{t['failed_requests']} / {t['failed_checks']} / {t['failed_runs']} |")
    lines += [
        "",
        "Server CPU is the user+system time of the server process during the run divided by its requests; VmHWM "
        "is the process's peak resident memory over its whole life (OpenBao's spans the session).",
        "",
        "## Ratios, per round (median [range])",
        "",
        "Throughput ratio above 1: zkvault served more; p99 and CPU ratios below 1: zkvault answered faster or "
        "spent less CPU per request.",
        "",
        "| backend | op | zkvault / | rounds | throughput | p99 | server CPU per request |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for x in doc["ratios"]:
        lines.append(f"| {x['backend']} | {LABEL[x['op']]} | {x['peer']} | {x['rounds']} | {ratio_cell(x['throughput'])} | "
                     f"{ratio_cell(x['p99'])} | {ratio_cell(x['cpu_per_req'])} |")
    lines += ["", "## Seeding", "", "| backend | target | residents | seconds | residents/s |", "|---|---|---:|---:|---:|"]
    for s in doc["seeds"]:
        secs = (s["seed"] or {}).get("report", {}).get("seconds", (s["seed"] or {}).get("seconds"))
        n = (s["seed"] or {}).get("count", doc["seeded"])
        lines.append(f"| {s['backend']} | {s['target']} | {fmt(n)} | {fmt(secs, 1)} | {fmt(n / secs if secs else None, 0)} |")
    lines += ["", "OpenBao's row is its batch encryption (200 documents a request) of the corpus the decrypt runs read.", "",
              "## Runs", "",
              "| backend | op | round | target | requests | req/s | p50 ms | p99 ms | server CPU s | µs/req | RSS peak MiB | k6 |",
              "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in doc["runs"]:
        o = (r.get("ops") or {}).get(OPS[r["scenario"]][r["target"]], {})
        lines.append(f"| {r['backend']} | {r['scenario']} | {r['round']} | {r['target']} | {fmt(o.get('count'))} | {fmt(o.get('rate'), 0)} | "
                     f"{fmt(o.get('p50_ms'), 2)} | {fmt(o.get('p99_ms'), 2)} | {fmt(r.get('server_cpu_s'), 2)} | "
                     f"{fmt(r.get('server_cpu_us_per_req'))} | {fmt(r.get('rss_peak_mib'))} | "
                     f"{'pass' if r['k6_exit'] == 0 else '**FAIL (exit %s)**' % r['k6_exit']} |")
    crossed = [(r["backend"], r["scenario"], r["round"], r["target"], r["thresholds_crossed"]) for r in doc["runs"] if r.get("thresholds_crossed")]
    if crossed:
        lines += ["", "## Thresholds crossed", ""] + [f"- {b} {o} round {n} {t}: {', '.join(c)}" for b, o, n, t, c in crossed]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--duration", default="")
    ap.add_argument("--vus", default="")
    ap.add_argument("--openbao-version", default="?")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    runs = [load_run(json.loads(line)) for line in open(a.runs) if line.strip()]
    seeds = [json.loads(line) for line in open(a.seeds) if line.strip()]
    targets, ratios = summarize(runs)
    doc = dict(
        kind="peers", date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        machine=json.loads(a.machine), duration=a.duration, vus=a.vus, seeded=runs[0]["seeded"] if runs else 0,
        openbao_version=a.openbao_version,
        settings={k: os.environ.get(k, d) for k, d in (("ZKVAULT_AUDIT_READS", "true"), ("RUST_LOG", "info"), ("ZKVAULT_DB_MAX_CONNECTIONS", "8"))},
        targets=targets, ratios=ratios, seeds=seeds, runs=runs)
    with open(a.out + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    with open(a.out + ".md", "w") as f:
        f.write(markdown(doc))


if __name__ == "__main__":
    main()
