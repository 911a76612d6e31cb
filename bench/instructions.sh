#!/usr/bin/env bash
# Counts the instructions api-gateway spends per forwarded request, under valgrind's callgrind:
# a figure that, unlike requests per second, does not move with what else the machine is doing
# (the same binary and load count the same within a fraction of a percent).
#
#   bench/instructions.sh                 builds this checkout (release) and measures it
#   bench/instructions.sh GATEWAY...      the given api-gateway binaries, one row each
#   REQUESTS=5000 PATH_=/api/movies/42    the measured load (after 500 requests of warm-up)
#
# inventory-app (this checkout's release build) runs natively on a fresh database with 50
# movies; each gateway, and then nginx as bench/run.sh configures it (the reference row, when
# nginx is installed), runs under callgrind in front of it while oha sends the requests with
# 16 connections; the counters are zeroed after the warm-up and read after the load. Prints a
# markdown table. Needs valgrind, oha, psql and the local PostgreSQL. Leaves nothing behind but
# bench/out/instructions/, where each row's profile of the load stays, to be read with
# `callgrind_annotate --inclusive=yes --tree=calling bench/out/instructions/row-N.callgrind`.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-5000}
TARGET_PATH=${PATH_:-/api/movies/42}
INVENTORY_PORT=18280 GATEWAY_PORT=13200 NGINX_PORT=13201 DB=bench_instructions
OUT=bench/out/instructions

log() { printf '[instructions] %s\n' "$*" >&2; }
for tool in valgrind callgrind_control callgrind_annotate oha psql; do
  command -v "$tool" >/dev/null || { log "$tool is missing"; exit 1; }
done

cargo build --release --locked --quiet -p inventory-app
if [ "$#" -eq 0 ]; then
  cargo build --release --locked --quiet -p api-gateway
  set -- target/release/api-gateway
fi
mkdir -p "$OUT"
rm -f "$OUT"/row-*.callgrind

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
INVENTORY_APP_PORT=$INVENTORY_PORT INVENTORY_DB_NAME=$DB target/release/inventory-app >"$OUT/inventory-app.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$INVENTORY_PORT/ready" && break; sleep 0.1; done
for i in $(seq 1 50); do
  curl -fs -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"title\": \"Movie $i\", \"description\": \"A benchmark movie, number $i.\"}" \
    "http://127.0.0.1:$INVENTORY_PORT/api/movies"
done

# measure LABEL PORT COMMAND...: runs COMMAND (a proxy listening on PORT in front of
# inventory-app) under callgrind, prints its row and keeps its profile of the load as
# $OUT/row-N.callgrind, N counting the rows from 1.
ROWS=0
measure() {
  local label=$1 port=$2 profile="$OUT/callgrind.out" pid total
  shift 2
  ROWS=$((ROWS + 1))
  log "measuring $label"
  rm -f "$profile"*
  valgrind --tool=callgrind --callgrind-out-file="$profile" "$@" >"$OUT/proxy.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 300); do
    curl -fs -o /dev/null "http://127.0.0.1:$port$TARGET_PATH" && break
    sleep 0.2
  done
  oha -n 500 -c 16 --no-tui "http://127.0.0.1:$port$TARGET_PATH" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  oha -n "$REQUESTS" -c 16 --no-tui "http://127.0.0.1:$port$TARGET_PATH" >"$OUT/oha.txt"
  grep -q 'Success rate:.*100.00%' "$OUT/oha.txt" || { log "requests failed: $OUT/oha.txt"; exit 1; }
  # The dump requested here is the load alone; the one written at exit is what followed it.
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
  mv "$profile.1" "$OUT/row-$ROWS.callgrind"
  log "its profile of the load: $OUT/row-$ROWS.callgrind"
  total=$(callgrind_annotate "$OUT/row-$ROWS.callgrind" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
  echo "| $label | $REQUESTS | $((total / REQUESTS)) |"
}

echo "| proxy | requests | instructions per request |"
echo "|---|---:|---:|"
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
