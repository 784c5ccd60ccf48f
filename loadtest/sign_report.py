#!/usr/bin/env python3
"""Turns a loadtest/sign.sh session into <out>.json and <out>.md (standard library only).

Input: runs.jsonl, one line per k6 run (op sign or verify, target, round, the k6 --summary-export
file, the server's CPU and memory over the run), as sign.sh writes it.
"""
import argparse
import datetime
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import fmt, load_run, median  # noqa: E402  (loadtest/report.py)

TARGETS = ("zkvault-soft", "zkvault-softhsm", "openbao")
ZKVAULT = TARGETS[:2]
PEER = "openbao"


def measured(run):
    """req/s, p99 and CPU/request of the run's own op (both scripts tag it op:sign or op:verify)."""
    o = (run.get("ops") or {}).get(run["scenario"])
    if not o or not o.get("rate") or o.get("p99_ms") is None:
        return None
    cpu = run["server_cpu_s"] * 1e6 / o["count"] if run.get("server_cpu_s") is not None and o.get("count") else None
    return dict(rate=o["rate"], p99=o["p99_ms"], p50=o.get("p50_ms"), count=o.get("count"), cpu=cpu)


def spread(xs):
    return dict(median=median(xs), min=min(xs), max=max(xs)) if xs else None


def summarize(runs):
    """Per op and target: medians over rounds. Per op and zkvault keystore: ratios to OpenBao in
    the same round (one pair per round), then their median and range."""
    targets, ratios = [], []
    for op in ("sign", "verify"):
        mine = [r for r in runs if r["scenario"] == op]
        for target in TARGETS:
            rs = [r for r in mine if r["target"] == target]
            ms = [m for m in map(measured, rs) if m]
            if not rs:
                continue
            cpus = [m["cpu"] for m in ms if m["cpu"]]
            targets.append(dict(
                op=op, target=target, rounds=len(ms),
                req_per_s=median([m["rate"] for m in ms]) if ms else None,
                p99_ms=median([m["p99"] for m in ms]) if ms else None,
                server_cpu_us_per_req=median(cpus) if cpus else None,
                rss_hwm_mib=max(r.get("rss_hwm_mib") or 0 for r in rs),
                failed_requests=sum(r.get("errors") or 0 for r in rs),
                failed_checks=sum(r.get("checks_failed") or 0 for r in rs),
                failed_runs=sum(1 for r in rs if r.get("k6_exit") != 0)))
        for target in ZKVAULT:
            pairs = []
            for rnd in sorted({r["round"] for r in mine}):
                zk = next((measured(r) for r in mine if r["target"] == target and r["round"] == rnd), None)
                bao = next((measured(r) for r in mine if r["target"] == PEER and r["round"] == rnd), None)
                if zk and bao:
                    pairs.append(dict(round=rnd, t=zk["rate"] / bao["rate"], p=zk["p99"] / bao["p99"],
                                      c=zk["cpu"] / bao["cpu"] if zk["cpu"] and bao["cpu"] else None))
            if pairs:
                ratios.append(dict(op=op, target=target, rounds=len(pairs), per_round=pairs,
                                   throughput=spread([x["t"] for x in pairs]), p99=spread([x["p"] for x in pairs]),
                                   cpu_per_req=spread([x["c"] for x in pairs if x["c"] is not None])))
    return targets, ratios


def ratio_cell(s):
    return "–" if not s else f"{s['median']:.2f} [{s['min']:.2f}–{s['max']:.2f}]"


def markdown(doc):
    m = doc["machine"]
    lines = [
        f"# Signing: zkvault (soft keystore, SoftHSM2) vs OpenBao transit — {doc['date']}",
        "",
        f"Machine: {m['cpus']} CPU ({m['cpu_model']}), {m['mem_gib']} GiB, Linux {m['kernel']}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}. k6 runs on the same machine. Shape: {doc['vus']} VUs, "
        f"{doc['duration']} per run, rounds alternating {', '.join(dict.fromkeys(r['target'] for r in doc['runs']))}.",
        "",
        f"Versions: {doc['versions']['zkvault']}, OpenBao {doc['versions']['openbao']}, {doc['versions']['softhsm']}. "
        "Server settings: " + ", ".join(f"{k}={v}" for k, v in doc["settings"].items()) + ".",
        "",
        "What each request does: a compact ES256 JWS over a fresh ~300-byte credential (JSON claims, a new subject "
        "each time). zkvault (SQLite, signer `credential`) builds the header and signs with a key that never leaves "
        "its keystore: sealed under the KEK (soft) or an EC key pair on the SoftHSM2 token (PKCS#11), and counts or "
        "audits per its own rules. OpenBao (dev server, in memory, no audit device) signs the JWS signing input "
        "that the k6 client built, with a transit ecdsa-p256 key (`marshaling_algorithm=jws`); the client then "
        "joins the JWS. Verify runs check a pool of such JWSs through each server's verify endpoint.",
        "",
        "## Medians over rounds",
        "",
        "| op | target | rounds | req/s | p99 ms | server CPU µs/req | VmHWM MiB | failed requests / checks / runs |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for t in doc["targets"]:
        lines.append(f"| {t['op']} | {t['target']} | {t['rounds']} | {fmt(t['req_per_s'], 0)} | {fmt(t['p99_ms'], 2)} | "
                     f"{fmt(t['server_cpu_us_per_req'])} | {fmt(t['rss_hwm_mib'])} | "
                     f"{t['failed_requests']} / {t['failed_checks']} / {t['failed_runs']} |")
    lines += [
        "",
        "Server CPU is the user+system time of the server process during the run divided by its requests.",
        "",
        "## zkvault / OpenBao, per round (median [range])",
        "",
        "Throughput ratio above 1: zkvault signed more per second; p99 and CPU ratios below 1: zkvault answered "
        "faster or spent less CPU per signature.",
        "",
        "| op | zkvault keystore | rounds | throughput | p99 | server CPU per request | per round (throughput / p99) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for x in doc["ratios"]:
        per = ", ".join(f"{p['round']}: {p['t']:.2f} / {p['p']:.2f}" for p in x["per_round"])
        lines.append(f"| {x['op']} | {x['target']} | {x['rounds']} | {ratio_cell(x['throughput'])} | {ratio_cell(x['p99'])} | "
                     f"{ratio_cell(x['cpu_per_req'])} | {per} |")
    lines += ["", "## Runs", "",
              "| op | round | target | requests | req/s | p50 ms | p99 ms | server CPU s | µs/req | k6 |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in doc["runs"]:
        o = measured(r) or {}
        lines.append(f"| {r['scenario']} | {r['round']} | {r['target']} | {fmt(o.get('count'))} | {fmt(o.get('rate'), 0)} | "
                     f"{fmt(o.get('p50'), 2)} | {fmt(o.get('p99'), 2)} | {fmt(r.get('server_cpu_s'), 2)} | {fmt(o.get('cpu'))} | "
                     f"{'pass' if r['k6_exit'] == 0 else '**FAIL (exit %s)**' % r['k6_exit']} |")
    crossed = [(r["scenario"], r["round"], r["target"], r["thresholds_crossed"]) for r in doc["runs"] if r.get("thresholds_crossed")]
    if crossed:
        lines += ["", "## Thresholds crossed", ""] + [f"- {o} round {n} {t}: {', '.join(c)}" for o, n, t, c in crossed]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--duration", default="")
    ap.add_argument("--vus", default="")
    ap.add_argument("--openbao-version", default="?")
    ap.add_argument("--zkvault-version", default="?")
    ap.add_argument("--softhsm-version", default="?")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    runs = [load_run(json.loads(line)) for line in open(a.runs) if line.strip()]
    targets, ratios = summarize(runs)
    doc = dict(
        kind="sign", date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        machine=json.loads(a.machine), duration=a.duration, vus=a.vus,
        versions=dict(zkvault=a.zkvault_version, openbao=a.openbao_version, softhsm=f"SoftHSM {a.softhsm_version}"),
        settings={"RUST_LOG": os.environ.get("RUST_LOG", "info")},
        targets=targets, ratios=ratios, runs=runs)
    with open(a.out + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    with open(a.out + ".md", "w") as f:
        f.write(markdown(doc))


if __name__ == "__main__":
    main()
