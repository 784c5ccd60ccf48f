#!/usr/bin/env bash
# What zkvault costs as the work grows, on PostgreSQL, measured in one session:
#
#   loadtest/scale.sh [--small 100000] [--large 10000000] [--repeat 3] [--duration 20s]
#                     [--vus 16] [--out DIR] [--no-build] [--keep]
#
# Seeds two fresh databases (SMALL and LARGE residents, one 2 KiB record each) with `zkvault
# seed`, serves both, and alternates k6 rounds on them (GET: retrieve.js, Zipfian over all seeded
# residents; PUT: store.js, new residents, no biometric blobs). Then, on each, with the service
# still running: the database's size per record, a KEK rotation (`zkvault keys rotate-kek`) and
# `zkvault audit verify`, timed end to end. The report gives LARGE/SMALL ratios per round.
#
# Checks the free disk first (about 4 KB per resident, table, indexes and WAL) and refuses to
# start without room. Results: DIR/<date>-scale.md and .json, DIR defaulting to loadtest/out
# (`--out loadtest/results` publishes). Both databases are dropped on exit, failure included.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
. loadtest/lib/harness.sh

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }

SMALL=100000 LARGE=10000000 REPEAT=3 DURATION=20s VUS=16 OUT_DIR=loadtest/out BUILD=1 KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --small) SMALL="$2"; shift 2 ;;
    --large) LARGE="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --vus) VUS="$2"; shift 2 ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage ;;
    *) echo "unknown option $1" >&2; usage ;;
  esac
done

harness_init scale
ensure_venv k6
[ "$BUILD" = 1 ] && build_release

pg_data="$(psql -qtA "$PG_URL/postgres" -c 'SHOW data_directory')"
free_kb="$(df -Pk "$pg_data" | awk 'NR==2 {print $4}')"
need_kb=$(( (SMALL + LARGE) * 4 ))
[ "$free_kb" -gt "$need_kb" ] || { log "need ~$((need_kb / 1048576)) GiB free under $pg_data, have $((free_kb / 1048576)) GiB"; exit 1; }
log "disk: $((free_kb / 1048576)) GiB free, ~$((need_kb / 1048576)) GiB needed"

MACHINE="$(machine_json)"
RUNS="$WORK/runs.jsonl"; : >"$RUNS"
for size in small large; do
  count="${SMALL}"; [ "$size" = large ] && count="$LARGE"
  start_target scale postgres "$size" "$count"
done

# k6_round <size> <scenario> <round>
k6_round() {
  local size="$1" scenario="$2" round="$3" dir pid port count
  dir="DIR_$size"; dir="${!dir}"; pid="PID_$size"; pid="${!pid}"; port="PORT_$size"; port="${!port}"
  count="$SMALL"; [ "$size" = large ] && count="$LARGE"
  local summary="$dir/$scenario.$round.json" rc=0
  log "$size: $scenario round $round"
  watch_start "$pid" "$dir/$scenario.$round"
  env ZKV_URL="http://127.0.0.1:$port" ZKV_TOKEN="$(cat "$dir/data/writer.token")" ZKV_SEEDED="$count" \
      ZKV_VUS="$VUS" ZKV_DURATION="$DURATION" ZKV_BIO_RATIO=0 ZKV_WRITE_BASE=$((300000000 + round * 10000000)) \
      "$VENV/bin/k6" run --quiet --no-color --summary-export "$summary" "loadtest/$scenario.js" \
      >"$dir/$scenario.$round.log" 2>&1 || rc=$?
  watch_stop "$pid" "$dir/$scenario.$round"
  printf '{"kind":"k6","size":"%s","residents":%s,"scenario":"%s","round":%s,"summary":"%s","k6_exit":%s,"server_cpu_s":%s,"rss_peak_kb":%s}\n' \
    "$size" "$count" "$scenario" "$round" "$summary" "$rc" "$WATCH_CPU_S" "$WATCH_PEAK_KB" >>"$RUNS"
}

for round in $(seq 1 "$REPEAT"); do
  for scenario in retrieve store; do
    for size in small large; do k6_round "$size" "$scenario" "$round"; done
  done
done

# timed <size> <args...>: runs the CLI against <size>'s database; prints seconds.
timed() {
  local size="$1"; shift
  local dir; dir="DIR_$size"; dir="${!dir}"
  local t0 t1
  t0="$(date +%s.%N)"
  env $(cat "$dir/env") RUST_LOG=warn "$ZKVAULT" "$@" >"$dir/cli.out" 2>"$dir/cli.err" \
    || { cat "$dir/cli.err" >&2; return 1; }
  t1="$(date +%s.%N)"
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}'
}

for size in small large; do
  dir="DIR_$size"; dir="${!dir}"; url="$(db_url "$dir")"
  count="$SMALL"; [ "$size" = large ] && count="$LARGE"
  sizes="$(psql -qtA "$url" -c "SELECT pg_database_size(current_database()) || ' ' || pg_total_relation_size('records') || ' ' || pg_total_relation_size('audit') || ' ' || (SELECT count(*) FROM records)")"
  log "$size: sizes (database, records, audit, rows) $sizes"
  kek="$(timed "$size" keys rotate-kek --json)"
  log "$size: KEK rotation $kek s"
  verify="$(timed "$size" audit verify --json)"
  log "$size: audit verify $verify s"
  seed="SEEDJSON_$size"
  read -r db_b rec_b audit_b rows <<<"$sizes"
  printf '{"kind":"size","size":"%s","residents":%s,"records":%s,"database_bytes":%s,"records_bytes":%s,"audit_bytes":%s,"kek_rotation_s":%s,"audit_verify_s":%s,"seed":%s}\n' \
    "$size" "$count" "$rows" "$db_b" "$rec_b" "$audit_b" "$kek" "$verify" "${!seed}" >>"$RUNS"
done
for size in small large; do stop_target "$size"; done

out="$(out_base "$OUT_DIR" scale)"
python3 - "$RUNS" "$out" "$MACHINE" "$DURATION" "$VUS" <<'EOF'
import json, statistics, sys
runs_path, out, machine, duration, vus = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], sys.argv[5]
runs = [json.loads(l) for l in open(runs_path)]
k6 = [r for r in runs if r["kind"] == "k6"]
for r in k6:
    m = json.load(open(r["summary"]))["metrics"]
    r["req_s"] = m["http_reqs"]["rate"]
    r["p99_ms"] = m["http_req_duration"]["p(99)"]
    r["requests"] = m["http_reqs"]["count"]
    r["failed"] = m.get("http_req_failed", {}).get("passes", 0)
    r["cpu_us_per_req"] = r["server_cpu_s"] * 1e6 / max(r["requests"], 1)
sizes = {r["size"]: r for r in runs if r["kind"] == "size"}
med = statistics.median
lines = [f"# zkvault at {sizes['small']['residents']:,} and {sizes['large']['residents']:,} residents, PostgreSQL — one session",
         "", f"Machine: {machine['cpus']} CPU ({machine['cpu_model']}), {machine['mem_gib']} GiB, load average at start {machine['loadavg_at_start']}. "
         f"k6 on the same machine, {vus} VUs, {duration} per run, rounds alternating the two databases.", "",
         "| op | residents | rounds | req/s (median) | p99 ms (median) | server CPU µs/req | peak RSS MiB | failed requests | large/small throughput per round | large/small p99 per round |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
out_json = {"machine": machine, "runs": runs, "summary": []}
for scenario, op in (("retrieve", "GET"), ("store", "PUT")):
    rounds = sorted({r["round"] for r in k6 if r["scenario"] == scenario})
    by = {(r["size"], r["round"]): r for r in k6 if r["scenario"] == scenario}
    tput = [by[("large", n)]["req_s"] / by[("small", n)]["req_s"] for n in rounds]
    p99 = [by[("large", n)]["p99_ms"] / by[("small", n)]["p99_ms"] for n in rounds]
    for size in ("small", "large"):
        rs = [by[(size, n)] for n in rounds]
        row = {"op": op, "size": size, "residents": rs[0]["residents"], "req_s": med([r["req_s"] for r in rs]),
               "p99_ms": med([r["p99_ms"] for r in rs]), "cpu_us_per_req": med([r["cpu_us_per_req"] for r in rs]),
               "rss_peak_mib": max(r["rss_peak_kb"] for r in rs) / 1024, "failed": sum(r["failed"] for r in rs)}
        out_json["summary"].append(row)
        ratio = lambda xs: f"{med(xs):.2f} [{min(xs):.2f}–{max(xs):.2f}]" if size == "large" else ""
        lines.append(f"| {op} | {row['residents']:,} | {len(rs)} | {row['req_s']:,.0f} | {row['p99_ms']:.2f} | {row['cpu_us_per_req']:.0f} | {row['rss_peak_mib']:.0f} | {row['failed']} | {ratio(tput)} | {ratio(p99)} |")
lines += ["", "| residents | records | database | records table (with indexes) | per record | audit table | KEK rotation | audit verify | seeding |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for size in ("small", "large"):
    s = sizes[size]
    seed = s["seed"] or {}
    lines.append(f"| {s['residents']:,} | {s['records']:,} | {s['database_bytes']/2**30:.2f} GiB | {s['records_bytes']/2**30:.2f} GiB | "
                 f"{s['records_bytes']/max(s['records'],1):,.0f} B | {s['audit_bytes']/2**20:.1f} MiB | {s['kek_rotation_s']} s | {s['audit_verify_s']} s | "
                 f"{seed.get('report', {}).get('seconds', 0):.0f} s ({seed.get('per_second', 0):,.0f}/s) |")
lines += ["", "KEK rotation and audit verify are timed end to end (process start, keystore open, the work, exit) while the service runs; "
          "the record counts include the PUT rounds' new residents."]
open(out + ".md", "w").write("\n".join(lines) + "\n")
json.dump(out_json, open(out + ".json", "w"), indent=1)
print("\n".join(lines))
EOF
log "results: $out.md, $out.json"
