#!/usr/bin/env bash
# Counts the instructions api-gateway spends per forwarded request, under valgrind's callgrind:
# a figure that, unlike requests per second, does not move with what else the machine is doing
# (the same binary and load count the same within a fraction of a percent). Beside it, from the
# same proxy run natively: its CPU time per request, user and system (from /proc, so as noisy
# as the machine), and its system calls per request (strace -c, when strace is installed).
#
#   bench/instructions.sh                 builds this checkout (release) and measures it
#   bench/instructions.sh GATEWAY...      the given api-gateway binaries, one row each
#   REQUESTS=5000 PATH_=/api/movies/42    the measured load (after 500 requests of warm-up)
#   CPU_REQUESTS=20000                    the native load whose CPU time is read
#
# inventory-app (this checkout's release build) runs natively on a fresh database with 50
# movies; each gateway, and then nginx as bench/run.sh configures it (the reference row, when
# nginx is installed), runs under callgrind in front of it while oha sends the requests with
# 16 connections; the counters are zeroed after the warm-up and read after the load. The native
# runs pin the proxy and inventory-app to CPU 0 and oha to CPU 1, as bench/run.sh does. Prints a
# markdown table. Needs valgrind, oha, psql, taskset and the local PostgreSQL (strace is
# optional). Leaves nothing behind but bench/out/instructions/, where each row's profile of the
# load stays (and its strace count, row-N.strace), the profile to be read with
# `callgrind_annotate --inclusive=yes --tree=calling bench/out/instructions/row-N.callgrind`.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-5000}
CPU_REQUESTS=${CPU_REQUESTS:-20000}
TARGET_PATH=${PATH_:-/api/movies/42}
INVENTORY_PORT=18280 GATEWAY_PORT=13200 NGINX_PORT=13201 DB=bench_instructions
OUT=bench/out/instructions

log() { printf '[instructions] %s\n' "$*" >&2; }
for tool in valgrind callgrind_control callgrind_annotate oha psql taskset; do
  command -v "$tool" >/dev/null || { log "$tool is missing"; exit 1; }
done
command -v strace >/dev/null || log "strace is missing (Debian package strace): no system call column"

cargo build --release --locked --quiet -p inventory-app
if [ "$#" -eq 0 ]; then
  cargo build --release --locked --quiet -p api-gateway
  set -- target/release/api-gateway
fi
mkdir -p "$OUT"
rm -f "$OUT"/row-*

sql() { psql -h 127.0.0.1 -U postgres -qAt -v ON_ERROR_STOP=1 "$@"; }
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  sql -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

export RUST_LOG=warn
INVENTORY_APP_PORT=$INVENTORY_PORT INVENTORY_DB_NAME=$DB taskset -c 0 target/release/inventory-app >"$OUT/inventory-app.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$INVENTORY_PORT/ready" && break; sleep 0.1; done
for i in $(seq 1 50); do
  curl -fs -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"title\": \"Movie $i\", \"description\": \"A benchmark movie, number $i.\"}" \
    "http://127.0.0.1:$INVENTORY_PORT/api/movies"
done

# wait_for PORT: until the proxy on PORT answers the measured path.
wait_for() {
  for _ in $(seq 300); do
    curl -fs -o /dev/null "http://127.0.0.1:$1$TARGET_PATH" && return
    sleep 0.2
  done
  log "nothing answers on port $1"
  exit 1
}

# load PORT N [CPU]: N requests to the proxy on PORT with 16 connections, on CPU (default: any).
load() {
  local pin=()
  [ -n "${3:-}" ] && pin=(taskset -c "$3")
  "${pin[@]}" oha -n "$2" -c 16 --no-tui "http://127.0.0.1:$1$TARGET_PATH" >"$OUT/oha.txt"
  grep -q 'Success rate:.*100.00%' "$OUT/oha.txt" || { log "requests failed: $OUT/oha.txt"; exit 1; }
}

# cpu_ticks PID: the user and system time the process has used so far, in clock ticks.
cpu_ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }

# measure LABEL PORT COMMAND...: runs COMMAND (a proxy listening on PORT in front of
# inventory-app) under callgrind, keeping its profile of the load as $OUT/row-N.callgrind (N
# counting the rows from 1), then natively for its CPU time and system calls; prints its row.
ROWS=0
measure() {
  local label=$1 port=$2 profile="$OUT/callgrind.out" pid total
  shift 2
  ROWS=$((ROWS + 1))
  log "measuring $label under callgrind"
  rm -f "$profile"*
  valgrind --tool=callgrind --callgrind-out-file="$profile" "$@" >"$OUT/proxy.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_for "$port"
  load "$port" 500
  callgrind_control -z "$pid" >/dev/null 2>&1
  load "$port" "$REQUESTS"
  # The dump requested here is the load alone; the one written at exit is what followed it.
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
  mv "$profile.1" "$OUT/row-$ROWS.callgrind"
  log "its profile of the load: $OUT/row-$ROWS.callgrind"
  total=$(callgrind_annotate "$OUT/row-$ROWS.callgrind" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')

  log "measuring $label natively"
  taskset -c 0 "$@" >"$OUT/proxy.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_for "$port"
  load "$port" 2000 1
  local user0 system0 user1 system1 tick_us calls="–"
  read -r user0 system0 < <(cpu_ticks "$pid")
  load "$port" "$CPU_REQUESTS" 1
  read -r user1 system1 < <(cpu_ticks "$pid")
  tick_us=$((1000000 / $(getconf CLK_TCK)))
  if command -v strace >/dev/null; then
    # strace slows every call down: its load is counted, not timed. The total line reads
    # "100.00 SECONDS USECS/CALL CALLS [ERRORS] total".
    strace -c -f -p "$pid" -o "$OUT/strace.txt" 2>/dev/null &
    local tracer=$!
    sleep 1
    load "$port" "$REQUESTS" 1
    kill -INT "$tracer"
    wait "$tracer" 2>/dev/null || true
    calls=$(awk -v n="$REQUESTS" '$NF == "total" { printf "%.1f", $4 / n }' "$OUT/strace.txt")
    cp "$OUT/strace.txt" "$OUT/row-$ROWS.strace"
  fi
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
  echo "| $label | $((total / REQUESTS)) | $(((user1 - user0) * tick_us / CPU_REQUESTS)) | $(((system1 - system0) * tick_us / CPU_REQUESTS)) | $calls |"
}

echo "| proxy | instructions per request | user µs per request | system µs per request | system calls per request |"
echo "|---|---:|---:|---:|---:|"
for gateway in "$@"; do
  API_GATEWAY_PORT=$GATEWAY_PORT INVENTORY_APP_URL=http://127.0.0.1:$INVENTORY_PORT \
    BILLING_APP_URL=http://127.0.0.1:1 RABBITMQ_QUEUE=bench_instructions \
    measure "\`$gateway\`" "$GATEWAY_PORT" "$gateway"
done

# The reference: nginx as bench/run.sh configures it, in one process (no master) so that the
# process measured is the one that serves.
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ -x "$NGINX" ]; then
  sed -e "s/@NGINX_PORT@/$NGINX_PORT/" -e "s/@INVENTORY_PORT@/$INVENTORY_PORT/" -e "s|@OUT@|$PWD/$OUT|g" \
    bench/nginx.conf >"$OUT/nginx.conf"
  measure "nginx (reference, \`bench/nginx.conf\`)" "$NGINX_PORT" \
    "$NGINX" -c "$PWD/$OUT/nginx.conf" -e "$PWD/$OUT/nginx-error.log" -g 'master_process off;'
else
  log "nginx is not installed: no reference row"
fi
