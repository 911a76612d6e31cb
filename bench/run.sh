#!/usr/bin/env bash
# Benchmarks the services natively against the local PostgreSQL and RabbitMQ, each figure side
# by side with what bounds it on this machine, and prints a markdown table (also written to
# bench/RESULTS.md). See bench/README.md for what is measured and why.
#
#   bench/run.sh           full run: release build, 10 s per load, 3 repetitions (medians)
#   bench/run.sh --smoke   under a minute once the tools are installed: proves the script works
#
# Servers run pinned to CPU 0, the load generator to CPU 1 (PostgreSQL and RabbitMQ are left to
# the scheduler). All traffic stays on 127.0.0.1. Needs: cargo, python3, psql, taskset; installs
# oha (cargo install) and nginx (Debian package) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=full
case "${1:-}" in
  "") ;;
  --smoke) MODE=smoke ;;
  *) echo "usage: bench/run.sh [--smoke]" >&2; exit 2 ;;
esac

if [ "$MODE" = smoke ]; then
  DURATION=1s REPEATS=1 DRAIN_ORDERS=500 PUBLISH_ORDERS=1000 PROFILE=debug
else
  DURATION=10s REPEATS=3 DRAIN_ORDERS=20000 PUBLISH_ORDERS=20000 PROFILE=release
fi
CONCURRENCIES=(16 64)
# Unconfirmed messages the raw publisher keeps in flight: as many as the HTTP clients, and more.
PUBLISH_WINDOWS=(16 64 256)
DRAIN_WINDOW=256
INSERT_BATCH=1000
BILLING_PREFETCH=1000 # billing-app's default
SERVER_CPU=0
LOAD_CPU=1
INVENTORY_PORT=18080 BILLING_PORT=18081 GATEWAY_PORT=13000 NGINX_PORT=18090
MOVIES_DB=bench_movies ORDERS_DB=bench_orders QUEUE=bench_billing_queue
OUT=bench/out
RESULTS="$OUT/results.tsv"
PIDS=()

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# --- tools and services ---------------------------------------------------------------------

command -v taskset >/dev/null || die "taskset is missing (Debian package util-linux)"
command -v psql >/dev/null || die "psql is missing (Debian package postgresql-client)"
[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs to keep the load generator off the servers' CPU"
if ! command -v oha >/dev/null; then
  log "installing oha (cargo install oha --locked), once"
  cargo install oha --locked --quiet
fi
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  [ "$(id -u)" = 0 ] || die "nginx is missing: apt-get install nginx"
  log "installing Debian's nginx, once"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
Scripts/ensure-services.sh >&2

log "building ($PROFILE)"
if [ "$PROFILE" = release ]; then
  cargo build --release --locked --quiet -p inventory-app -p billing-app -p api-gateway -p bench
else
  cargo build --locked --quiet -p inventory-app -p billing-app -p api-gateway -p bench
fi
BIN=target/$PROFILE

mkdir -p "$OUT"
: >"$RESULTS"

sql() { psql -h 127.0.0.1 -U postgres -qAt -v ON_ERROR_STOP=1 "$@"; }

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$BIN/bench-tool" delete-queue "$QUEUE" 2>/dev/null || true
  sql -d postgres -c "DROP DATABASE IF EXISTS $MOVIES_DB WITH (FORCE)" -c "DROP DATABASE IF EXISTS $ORDERS_DB WITH (FORCE)" 2>/dev/null || true
}
trap cleanup EXIT
cleanup

export RABBITMQ_QUEUE=$QUEUE RUST_LOG=warn
# start NAME COMMAND...: runs a server on the servers' CPU, logging to $OUT/NAME.log; its
# process id is left in STARTED.
start() {
  local name=$1
  shift
  taskset -c "$SERVER_CPU" "$@" >"$OUT/$name.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
}
wait_ready() {
  for _ in $(seq 1 100); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.1
  done
  die "$1 did not answer; see $OUT/*.log"
}
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

INVENTORY_APP_PORT=$INVENTORY_PORT INVENTORY_DB_NAME=$MOVIES_DB start inventory-app "$BIN/inventory-app"
INVENTORY_PID=$STARTED
API_GATEWAY_PORT=$GATEWAY_PORT INVENTORY_APP_URL=http://127.0.0.1:$INVENTORY_PORT \
  BILLING_APP_URL=http://127.0.0.1:$BILLING_PORT start api-gateway "$BIN/api-gateway"
GATEWAY_PID=$STARTED
wait_ready "http://127.0.0.1:$INVENTORY_PORT/ready"
wait_ready "http://127.0.0.1:$GATEWAY_PORT/ready"

# nginx as the reference reverse proxy: one worker on the same CPU, keep-alive to the upstream.
sed -e "s/@NGINX_PORT@/$NGINX_PORT/" -e "s/@INVENTORY_PORT@/$INVENTORY_PORT/" -e "s|@OUT@|$PWD/$OUT|g" \
  bench/nginx.conf >"$OUT/nginx.conf"
start nginx "$NGINX" -c "$PWD/$OUT/nginx.conf" -e "$PWD/$OUT/nginx-error.log"
wait_ready "http://127.0.0.1:$NGINX_PORT/api/movies"

# billing-app once, to create its database and schema; the drain runs start it again.
BILLING_APP_PORT=$BILLING_PORT BILLING_DB_NAME=$ORDERS_DB start billing-app "$BIN/billing-app"
BILLING_PID=$STARTED
wait_ready "http://127.0.0.1:$BILLING_PORT/ready"
IDLE_BILLING_KIB=$(rss_kib "$BILLING_PID")
kill -TERM "$BILLING_PID" && wait "$BILLING_PID" || true

log "loading 100 movies"
for i in $(seq 1 100); do
  curl -fs -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"title\": \"Movie $i\", \"description\": \"A benchmark movie, number $i.\"}" \
    "http://127.0.0.1:$INVENTORY_PORT/api/movies"
done
{
  echo -e "rss_idle\tinventory-app\t$(rss_kib "$INVENTORY_PID")"
  echo -e "rss_idle\tapi-gateway\t$(rss_kib "$GATEWAY_PID")"
  echo -e "rss_idle\tbilling-app\t$IDLE_BILLING_KIB"
} >>"$RESULTS"

# --- measurements -----------------------------------------------------------------------------

# load LABEL CONCURRENCY URL [oha options...]: one oha run, appended to the results as
# "http LABEL CONCURRENCY rps p50_ms p99_ms errors".
load() {
  local label=$1 concurrency=$2 url=$3
  shift 3
  taskset -c "$LOAD_CPU" oha -z "$DURATION" -c "$concurrency" -w --no-tui --output-format json \
    --worker-threads 1 "$@" "$url" >"$OUT/oha.json"
  python3 - "$label" "$concurrency" "$OUT/oha.json" >>"$RESULTS" <<'PY'
import json, sys
label, concurrency, path = sys.argv[1:4]
report = json.load(open(path))
codes = report.get("statusCodeDistribution", {})
errors = sum(n for code, n in codes.items() if code != "200") + sum(report.get("errorDistribution", {}).values())
p = report["latencyPercentiles"]
print(f"http\t{label}\t{concurrency}\t{report['summary']['requestsPerSec']:.1f}\t{p['p50'] * 1000:.3f}\t{p['p99'] * 1000:.3f}\t{errors}")
PY
}

declare -A BASE=([direct]=$INVENTORY_PORT [gateway]=$GATEWAY_PORT [nginx]=$NGINX_PORT)
for repeat in $(seq 1 "$REPEATS"); do
  for path in /api/movies/42 /api/movies; do
    for concurrency in "${CONCURRENCIES[@]}"; do
      for target in direct gateway nginx; do
        log "GET $path c=$concurrency via $target ($repeat/$REPEATS)"
        load "GET $path|$target" "$concurrency" "http://127.0.0.1:${BASE[$target]}$path"
      done
    done
  done
done

ORDER='{"user_id": "20", "number_of_items": "99", "total_amount": "250"}'
for repeat in $(seq 1 "$REPEATS"); do
  for concurrency in "${CONCURRENCIES[@]}"; do
    log "POST /api/billing c=$concurrency via gateway ($repeat/$REPEATS)"
    load "POST /api/billing|gateway" "$concurrency" "http://127.0.0.1:$GATEWAY_PORT/api/billing" \
      -m POST -H 'Content-Type: application/json' -d "$ORDER"
  done
  # The raw publisher gets the gateway's CPU, so both publish with the same means.
  for window in "${PUBLISH_WINDOWS[@]}"; do
    log "raw confirmed publishing, $window in flight ($repeat/$REPEATS)"
    read -r _ _ rate < <(taskset -c "$SERVER_CPU" "$BIN/bench-tool" publish "$QUEUE" "$PUBLISH_ORDERS" "$window")
    echo -e "publish_raw\t$window\t$rate" >>"$RESULTS"
  done
done
RSS_LOADED_INVENTORY=$(rss_kib "$INVENTORY_PID")
RSS_LOADED_GATEWAY=$(rss_kib "$GATEWAY_PID")

for repeat in $(seq 1 "$REPEATS"); do
  log "drain: $DRAIN_ORDERS orders queued, then billing-app started ($repeat/$REPEATS)"
  "$BIN/bench-tool" delete-queue "$QUEUE"
  sql -d "$ORDERS_DB" -c "TRUNCATE orders"
  "$BIN/bench-tool" publish "$QUEUE" "$DRAIN_ORDERS" "$DRAIN_WINDOW" >/dev/null
  # The clock starts with billing-app's process and stops when the last order is stored.
  "$BIN/bench-tool" wait-stored "$ORDERS_DB" "$DRAIN_ORDERS" >"$OUT/drain.txt" &
  waiter=$!
  BILLING_APP_PORT=$BILLING_PORT BILLING_DB_NAME=$ORDERS_DB start billing-app "$BIN/billing-app"
  BILLING_PID=$STARTED
  wait "$waiter" || die "billing-app did not store the backlog"
  [ "$(sql -d "$ORDERS_DB" -c 'SELECT count(*) FROM orders')" -eq "$DRAIN_ORDERS" ] || die "orders were stored twice"
  read -r _ _ rate <"$OUT/drain.txt"
  echo -e "drain\t$DRAIN_ORDERS\t$rate" >>"$RESULTS"
  RSS_LOADED_BILLING=$(rss_kib "$BILLING_PID")
  kill -TERM "$BILLING_PID" && wait "$BILLING_PID" || true

  log "raw consumption of $DRAIN_ORDERS queued orders, storing nothing ($repeat/$REPEATS)"
  "$BIN/bench-tool" publish "$QUEUE" "$DRAIN_ORDERS" "$DRAIN_WINDOW" >/dev/null
  read -r _ _ rate < <(taskset -c "$SERVER_CPU" "$BIN/bench-tool" consume "$QUEUE" "$DRAIN_ORDERS" "$BILLING_PREFETCH")
  echo -e "consume_raw\t$DRAIN_ORDERS\t$rate" >>"$RESULTS"

  log "raw batched inserts of $DRAIN_ORDERS orders, $INSERT_BATCH per statement ($repeat/$REPEATS)"
  sql -d "$ORDERS_DB" -c "TRUNCATE orders"
  read -r _ _ rate < <(taskset -c "$SERVER_CPU" "$BIN/bench-tool" insert "$ORDERS_DB" "$DRAIN_ORDERS" "$INSERT_BATCH")
  echo -e "insert_raw\t$DRAIN_ORDERS\t$rate" >>"$RESULTS"
done
{
  echo -e "rss_loaded\tinventory-app\t$RSS_LOADED_INVENTORY"
  echo -e "rss_loaded\tapi-gateway\t$RSS_LOADED_GATEWAY"
  echo -e "rss_loaded\tbilling-app\t$RSS_LOADED_BILLING"
} >>"$RESULTS"

# --- report -----------------------------------------------------------------------------------

versions=$(
  echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
  echo "- $(rustc --version), profile $PROFILE; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- PostgreSQL $(sql -d postgres -c 'SHOW server_version'), RabbitMQ $(rabbitmqctl version 2>/dev/null || echo '(version unknown)')"
  echo "- $("$NGINX" -v 2>&1), $(oha --version)"
  echo "- mode $MODE: $DURATION per load, $REPEATS repetition(s), medians; servers on CPU $SERVER_CPU, load generator on CPU $LOAD_CPU; services log at warn"
)
report=$(python3 bench/report.py "$RESULTS" "$versions")
echo "$report"
if [ "$MODE" = full ]; then
  echo "$report" >bench/RESULTS.md
  log "written to bench/RESULTS.md"
else
  echo "$report" >"$OUT/RESULTS-smoke.md"
fi
