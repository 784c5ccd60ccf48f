#!/usr/bin/env python3
"""SVG chart of zkvault vs the no-encryption baseline from loadtest/results/*.json (standard library only).

    python3 loadtest/chart.py loadtest/results/2026-11-30-store.json loadtest/results/2026-11-30-retrieve.json \
        -o docs/performance.svg

Two panels: throughput (req/s, higher is better) and p99 latency (ms, lower is better), one group
per (scenario, backend, operation) with a zkvault bar and a baseline bar, labelled with the ratio.
"""
import argparse
import json
from xml.sax.saxutils import escape

COLORS = {"zkvault": "#2b6cb0", "baseline": "#a0aec0"}


def groups_of(paths):
    out = []
    for path in paths:
        doc = json.load(open(path))
        for r in doc.get("ratios", []):
            out.append(dict(label=f"{doc['scenario']} {r['op'].upper()}", sub=r["backend"],
                            zk_rate=r["zkvault_req_per_s"], bl_rate=r["baseline_req_per_s"],
                            zk_p99=r["zkvault_p99_ms"], bl_p99=r["baseline_p99_ms"],
                            t=r["throughput_ratio"], p=r["p99_ratio"]))
    return out


def panel(x0, y0, w, h, groups, key_zk, key_bl, ratio_key, title, unit):
    top = max(max(g[key_zk], g[key_bl]) for g in groups) * 1.15 or 1
    parts = [f'<text x="{x0}" y="{y0 - 12}" font-size="14" font-weight="bold">{escape(title)}</text>',
             f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0 + h}" stroke="#333"/>']
    for i in range(5):
        v = top * i / 4
        y = y0 + h - h * i / 4
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{v:,.0f}</text>')
    slot = w / len(groups)
    bw = min(40, slot / 3)
    for i, g in enumerate(groups):
        cx = x0 + slot * i + slot / 2
        for j, (who, key) in enumerate((("zkvault", key_zk), ("baseline", key_bl))):
            v = g[key]
            bh = h * v / top
            x = cx - bw + j * bw
            parts.append(f'<rect x="{x:.1f}" y="{y0 + h - bh:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" fill="{COLORS[who]}">'
                         f'<title>{escape(who)}: {v:,.2f} {unit}</title></rect>')
            parts.append(f'<text x="{x + bw / 2 - 1:.1f}" y="{y0 + h - bh - 3:.1f}" font-size="9" text-anchor="middle">{v:,.0f}</text>'
                         if v >= 10 else
                         f'<text x="{x + bw / 2 - 1:.1f}" y="{y0 + h - bh - 3:.1f}" font-size="9" text-anchor="middle">{v:,.1f}</text>')
        parts.append(f'<text x="{cx:.1f}" y="{y0 + h + 14}" font-size="11" text-anchor="middle">{escape(g["label"])}</text>')
        parts.append(f'<text x="{cx:.1f}" y="{y0 + h + 27}" font-size="10" text-anchor="middle" fill="#555">{escape(g["sub"])} · ×{g[ratio_key]:.2f}</text>')
    return parts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="+")
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args()
    groups = groups_of(a.results)
    if not groups:
        raise SystemExit("no zkvault/baseline ratios in the given results")
    width = max(640, 110 * len(groups) + 100)
    ph = 220
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{2 * ph + 170}" font-family="sans-serif">',
             '<rect width="100%" height="100%" fill="white"/>']
    parts += panel(70, 40, width - 100, ph, groups, "zk_rate", "bl_rate", "t", "Throughput, req/s (higher is better; ×ratio = zkvault/baseline)", "req/s")
    parts += panel(70, ph + 120, width - 100, ph, groups, "zk_p99", "bl_p99", "p", "p99 latency, ms (lower is better; ×ratio = zkvault/baseline)", "ms")
    ly = 2 * ph + 160
    for i, (who, c) in enumerate(COLORS.items()):
        label = "zkvault" if who == "zkvault" else "baseline (same HTTP + storage, no encryption)"
        parts.append(f'<rect x="{70 + i * 120}" y="{ly - 10}" width="12" height="12" fill="{c}"/>')
        parts.append(f'<text x="{86 + i * 120}" y="{ly}" font-size="11">{escape(label)}</text>')
    parts.append("</svg>")
    with open(a.out, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
