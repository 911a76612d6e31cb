#!/usr/bin/env bash
# Resident memory of inventory-app while it serves a large `GET /api/movies` to many clients at
# once. Prints a markdown table, one row per binary measured.
#
#   bench/list-memory.sh                 builds this checkout (release) and measures it
#   bench/list-memory.sh BINARY...       measures the given inventory-app binaries instead, one
#                                        after the other, each against the same fresh data (to
#                                        compare builds of two commits side by side)
#
# Each measurement: a fresh database with ROWS movies (default 100,000), inventory-app started
# on it alone, then CLIENTS (16) curl loops fetching the whole list again and again for DURATION
# seconds (20) while /proc/PID/status is sampled every 100 ms. Reported: VmRSS idle (ready, data
# loaded, nothing served yet), the highest VmRSS sampled under load, VmHWM (the kernel's own
# peak, which no sampling interval can miss) and VmRSS once the clients have stopped.
# Every response is checked: status 200 and the same size as the first, validated, response.
#
# Needs: cargo, curl, psql, python3 and the PostgreSQL of Scripts/ensure-services.sh.
# Settings: ROWS, CLIENTS, DURATION, PORT (18180).
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-100000}
CLIENTS=${CLIENTS:-16}
DURATION=${DURATION:-20}
PORT=${PORT:-18180}
# Unique per run, so two runs (or bench/run.sh) never share a database.
DB=bench_list_memory_$$
OUT=bench/out/list-memory
URL=http://127.0.0.1:$PORT/api/movies
APP_PID=''
SAMPLER_PID=''
CLIENT_PIDS=()

log() { printf '[list-memory] %s\n' "$*" >&2; }
die() { printf '[list-memory] error: %s\n' "$*" >&2; exit 1; }
sql() { PGOPTIONS=--client-min-messages=warning psql -h 127.0.0.1 -U postgres -qAt -v ON_ERROR_STOP=1 "$@"; }
mib() { awk -v kib="$1" 'BEGIN { printf "%.1f", kib / 1024 }'; }
bytes_mib() { awk -v bytes="$1" 'BEGIN { printf "%.1f", bytes / 1048576 }'; }
# status_kib PID FIELD: a VmRSS/VmHWM line of /proc/PID/status, in KiB, read without a fork.
status_kib() {
  local key value _
  while read -r key value _; do
    if [ "$key" = "$2:" ]; then
      echo "$value"
      return 0
    fi
  done <"/proc/$1/status"
  return 1
}

stop_app() {
  for pid in "${CLIENT_PIDS[@]}" $SAMPLER_PID $APP_PID; do kill "$pid" 2>/dev/null || true; done
  for pid in "${CLIENT_PIDS[@]}" $SAMPLER_PID $APP_PID; do wait "$pid" 2>/dev/null || true; done
  CLIENT_PIDS=() SAMPLER_PID='' APP_PID=''
}
cleanup() {
  stop_app
  sql -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" 2>/dev/null || true
}
trap cleanup EXIT

for tool in curl psql python3; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done
Scripts/ensure-services.sh >&2

if [ $# -eq 0 ]; then
  log "building inventory-app (release)"
  cargo build --release --locked --quiet -p inventory-app
  set -- target/release/inventory-app
fi
for binary in "$@"; do
  [ -x "$binary" ] || die "$binary is not an executable"
done
mkdir -p "$OUT"

# The data once, in a template: every binary then starts on an identical copy.
log "creating $ROWS movies"
sql -d postgres -c "CREATE DATABASE $DB"
INVENTORY_APP_PORT=$PORT INVENTORY_DB_NAME=$DB RUST_LOG=warn "$1" >"$OUT/schema.log" 2>&1 &
APP_PID=$!
for _ in $(seq 1 100); do
  curl -fs -o /dev/null "http://127.0.0.1:$PORT/ready" && break
  sleep 0.1
done
curl -fs -o /dev/null "http://127.0.0.1:$PORT/ready" || die "inventory-app did not become ready; see $OUT/schema.log"
stop_app
sql -d "$DB" -c "INSERT INTO movies (title, description)
  SELECT 'Movie ' || i, 'A benchmark movie, number ' || i || '.' FROM generate_series(1, $ROWS) AS i"
sql -d "$DB" -c "VACUUM ANALYZE movies"

rows=()
for binary in "$@"; do
  name=$(basename "$binary")
  log "measuring $binary"
  run_db=${DB}_run
  sql -d postgres -c "DROP DATABASE IF EXISTS $run_db WITH (FORCE)" -c "CREATE DATABASE $run_db TEMPLATE $DB"
  INVENTORY_APP_PORT=$PORT INVENTORY_DB_NAME=$run_db RUST_LOG=warn "$binary" >"$OUT/$name.log" 2>&1 &
  APP_PID=$!
  ready=
  for _ in $(seq 1 100); do
    if curl -fs -o /dev/null "http://127.0.0.1:$PORT/ready"; then ready=1; break; fi
    sleep 0.1
  done
  [ -n "$ready" ] || die "$binary did not become ready; see $OUT/$name.log"

  rm -f "$OUT/peak.txt"
  idle_kib=$(status_kib "$APP_PID" VmRSS)
  # One request checked in full before the load: the whole table, in id order, valid JSON.
  curl -fsS -o "$OUT/list.json" "$URL"
  python3 - "$OUT/list.json" "$ROWS" <<'PY' || die "the list is wrong"
import json, sys
movies = json.load(open(sys.argv[1]))
ids = [m["id"] for m in movies]
assert len(ids) == int(sys.argv[2]), f"{len(ids)} movies, expected {sys.argv[2]}"
assert ids == sorted(ids), "not in id order"
PY
  body_bytes=$(stat -c %s "$OUT/list.json")

  (
    peak=0
    while rss=$(status_kib "$APP_PID" VmRSS 2>/dev/null); do
      [ "$rss" -gt "$peak" ] && peak=$rss && echo "$peak" >"$OUT/peak.txt"
      sleep 0.1
    done
  ) &
  SAMPLER_PID=$!
  deadline=$((SECONDS + DURATION))
  for i in $(seq 1 "$CLIENTS"); do
    (
      while [ "$SECONDS" -lt "$deadline" ]; do
        curl -s -o /dev/null -w '%{http_code} %{size_download}\n' "$URL" || echo "curl-failed 0"
      done >"$OUT/client-$i.txt"
    ) &
    CLIENT_PIDS+=($!)
  done
  for pid in "${CLIENT_PIDS[@]}"; do wait "$pid"; done
  CLIENT_PIDS=()
  sleep 0.3 # the sampler's last look
  kill "$SAMPLER_PID" 2>/dev/null || true
  wait "$SAMPLER_PID" 2>/dev/null || true
  SAMPLER_PID=''

  peak_kib=$(cat "$OUT/peak.txt")
  hwm_kib=$(status_kib "$APP_PID" VmHWM)
  after_kib=$(status_kib "$APP_PID" VmRSS)
  requests=$(cat "$OUT"/client-*.txt | wc -l)
  errors=$(cat "$OUT"/client-*.txt | awk -v size="$body_bytes" '$1 != 200 || $2 != size' | wc -l)
  stop_app
  sql -d postgres -c "DROP DATABASE IF EXISTS $run_db WITH (FORCE)"
  rows+=("| \`$binary\` | $requests | $errors | $(mib "$idle_kib") | $(mib "$peak_kib") | $(mib "$hwm_kib") | $(mib "$after_kib") |")
done

echo "GET /api/movies: $ROWS movies ($(bytes_mib "$body_bytes") MiB of JSON), $CLIENTS clients fetching it repeatedly for ${DURATION} s; $(nproc) CPUs, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
echo "| binary | responses | errors | idle VmRSS MiB | peak sampled VmRSS MiB | VmHWM MiB | VmRSS after MiB |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
