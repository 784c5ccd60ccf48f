#!/usr/bin/env bash
# Bounded fuzzing of every cargo-fuzz target in fuzz/ (libFuzzer, AddressSanitizer).
#
#   fuzz/run.sh [SECONDS]     total time budget, split evenly across the targets (default 60)
#
# Seeds: fuzz/corpus/<target>/ (committed; read here, never written). Inputs the fuzzer finds
# interesting are kept between runs in $FUZZ_CORPUS_DIR/<target>/ (default fuzz/.work/corpus;
# CI keeps them under /var/cache). A crash, a panic, an assertion, a leak or an input slower than
# 30 s fails the run; the input is left in fuzz/artifacts/<target>/, and
# `RUSTC_BOOTSTRAP=1 cargo fuzz run -O <target> <file>` reproduces it.
#
# cargo fuzz passes nightly-only flags (-Zsanitizer); the machine has only the stable toolchain,
# so RUSTC_BOOTSTRAP=1 lets stable rustc accept them. Build artefacts go to
# $FUZZ_TARGET_DIR, else "$CARGO_TARGET_DIR-fuzz", else fuzz/target: never the workspace's.
set -euo pipefail
cd "$(dirname "$0")"

budget="${1:-60}"
targets=(resident_id record_name stored_record keystore_parse keystore_file)
per=$(( budget / ${#targets[@]} ))
(( per >= 1 )) || per=1

export RUSTC_BOOTSTRAP=1
if [[ -n "${FUZZ_TARGET_DIR:-}" ]]; then
  export CARGO_TARGET_DIR="$FUZZ_TARGET_DIR"
elif [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR%/}-fuzz"
fi
work="${FUZZ_CORPUS_DIR:-.work/corpus}"

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz --locked" >&2; exit 1; }
cargo fuzz build -O

failed=()
printf '%-16s %10s %8s %8s  %s\n' target execs seconds corpus result
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  log="$(mktemp)"
  # The first directory receives new inputs; the committed seeds are only read.
  if cargo fuzz run -O "$t" "$work/$t" "corpus/$t" -- \
      -max_total_time="$per" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    failed+=("$t")
  fi
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  secs="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)"
  printf '%-16s %10s %8s %8s  %s\n' "$t" "${execs:-?}" "${secs:-?}" "$(ls "$work/$t" | wc -l)" "$result"
  if [[ "$result" != ok ]]; then
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -20 >&2 || tail -40 "$log" >&2
  fi
  rm -f "$log"
done

if (( ${#failed[@]} )); then
  echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${per} s each, no crash"
