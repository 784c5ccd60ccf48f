#!/usr/bin/env bash
# KEK rotation time against record count, and bulk re-encryption rate against a raw UPDATE of
# the same rows, on the embedded default (SQLite + soft keystore), all in one run.
#
#   loadtest/lifecycle_scaling.sh [COUNTS...]        default: 10000 100000 1000000
#
# Writes loadtest/results/<date>-lifecycle-scaling.md. Needs only the release build and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("${@:-10000 100000 1000000}")
read -r -a counts <<<"${counts[*]}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet --bin zkvault
bin="$target/release/zkvault"
out="loadtest/results/$(date -u +%Y-%m-%d)-lifecycle-scaling.md"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export RUST_LOG=warn

# The UINs `zkvault seed` writes (zkvault::vault::seed_uin), one per line.
uins() {
  python3 - "$1" <<'PY'
import sys
D = [[0,1,2,3,4,5,6,7,8,9],[1,2,3,4,0,6,7,8,9,5],[2,3,4,0,1,7,8,9,5,6],[3,4,0,1,2,8,9,5,6,7],[4,0,1,2,3,9,5,6,7,8],
     [5,9,8,7,6,0,4,3,2,1],[6,5,9,8,7,1,0,4,3,2],[7,6,5,9,8,2,1,0,4,3],[8,7,6,5,9,3,2,1,0,4],[9,8,7,6,5,4,3,2,1,0]]
P = [[0,1,2,3,4,5,6,7,8,9],[1,5,7,6,2,8,3,0,9,4],[5,8,0,3,7,9,6,1,4,2],[8,9,1,6,0,4,3,5,2,7],
     [9,4,5,3,1,2,8,7,6,0],[4,2,8,6,5,7,0,3,9,1],[2,7,9,3,8,0,6,4,1,5],[7,0,4,6,9,1,3,2,5,8]]
INV = [0,4,3,2,1,5,6,7,8,9]
out = sys.stdout
for i in range(int(sys.argv[1])):
    payload = str(100_000_000 + (i % 900_000_000) * 7919 % 900_000_000)
    c = 0
    for k, d in enumerate(reversed(payload)):
        c = D[c][P[(k + 1) % 8][int(d)]]
    out.write(f"{payload}{INV[c]}\n")
PY
}

json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
calc() { python3 -c "print($1)"; }

{
  echo "# Lifecycle scaling — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; SQLite (embedded default), soft keystore; release build."
  echo "Command: \`loadtest/lifecycle_scaling.sh ${counts[*]}\`"
  echo
  echo "| records | seed (s) | KEK rotation (ms) | masters rewrapped | bulk re-encryption (records/s) | raw UPDATE of the same rows (rows/s) | ratio |"
  echo "|---:|---:|---:|---:|---:|---:|---:|"
} >"$out"

for n in "${counts[@]}"; do
  data="$work/data-$n"
  s0=$(date +%s.%N)
  "$bin" --data-dir "$data" seed --count "$n" >/dev/null
  seed_s=$(calc "$(date +%s.%N) - $s0")
  kek=$("$bin" --data-dir "$data" keys rotate-kek)
  kek_ms=$(echo "$kek" | json_field "['elapsed_ms']")
  masters=$(echo "$kek" | json_field "['rewrapped_masters']")
  "$bin" --data-dir "$data" keys rotate-master --ns resident-portal >/dev/null
  uins "$n" >"$work/uins-$n.txt"
  r0=$(date +%s.%N)
  report=$("$bin" --data-dir "$data" reencrypt --ns resident-portal --ids "$work/uins-$n.txt" 2>/dev/null)
  r_s=$(calc "$(date +%s.%N) - $r0")
  moved=$(echo "$report" | json_field "['moved']")
  [ "$moved" = "$n" ] || { echo "re-encryption moved $moved of $n records" >&2; exit 1; }
  rate=$(calc "int($n / $r_s)")
  # The floor: rewrite the same columns of the same rows with no crypto and no lookups.
  raw=$(python3 - "$data/zkvault.db" <<'PY'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
n = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
t = time.time()
db.execute("UPDATE records SET master_version = master_version + 1, dek_nonce = dek_nonce, wrapped_dek = wrapped_dek")
db.commit()
print(int(n / (time.time() - t)))
PY
)
  ratio=$(calc "round($rate / $raw, 2)")
  printf '| %s | %.1f | %.1f | %s | %s | %s | %s |\n' "$n" "$seed_s" "$kek_ms" "$masters" "$rate" "$raw" "$ratio" >>"$out"
  rm -rf "$data" "$work/uins-$n.txt"
done
cat "$out"
