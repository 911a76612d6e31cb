#!/usr/bin/env bash
# Orders per second through the Compose stack on one RabbitMQ node and on the three-node
# cluster (docker-compose.ha.yml), side by side in one run, and prints a markdown table
# (also written to bench/CLUSTER.md).
#
#   bench/cluster.sh [SECONDS]   default 30 s of load per layout and repetition, 2 repetitions
#
# Each layout is brought up from scratch (fresh volumes), warmed up for 5 s, then loaded by
# CLIENTS clients (Scripts/lib/order-load.py, one keep-alive connection each, no pause between
# requests) posting to the entry on port 3000; layouts alternate (single, cluster, single,
# cluster) and the medians are reported. "accepted/s" counts orders answered 200, that is
# confirmed by the broker: on the cluster, written to a majority of the queue's three members.
# "stored/s" is the rate at which billing-app (one replica, or two on the cluster) stored them.
# Needs a Docker engine with the compose plugin, python3, and the entry's ports free.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-30}
REPEATS=${BENCH_REPEATS:-2}
CLIENTS=${BENCH_CLIENTS:-16}
WARMUP=5
PLAIN=http://127.0.0.1:${API_GATEWAY_PUBLISHED_PORT:-3000}
export COMPOSE_PROJECT_NAME=movie-billing-bench
WORK=$(mktemp -d)
LOADER=

log() { printf '[bench] %s\n' "$*" >&2; }
cleanup() {
  [ -z "$LOADER" ] || kill "$LOADER" 2>/dev/null || true
  COMPOSE_FILE=docker-compose.yml:docker-compose.ha.yml docker compose down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

files_of() { if [ "$1" = cluster ]; then echo docker-compose.yml:docker-compose.ha.yml; else echo docker-compose.yml; fi; }
sql() { docker compose exec -T billing-db psql -qAt -c "$1"; }

log "building the images"
for service in inventory-app billing-app api-gateway; do
  docker compose build "$service" >/dev/null
done

# measure LAYOUT REPETITION: one measurement, appended to $WORK/results as
# "layout accepted_per_s p50_ms p99_ms refused stored_per_s".
measure() {
  local layout=$1 repetition=$2 answers=$WORK/$1-$2.answers
  export COMPOSE_FILE
  COMPOSE_FILE=$(files_of "$layout")
  log "$layout, repetition $repetition: starting the stack"
  docker compose up -d --wait --wait-timeout 600 >/dev/null
  python3 Scripts/lib/order-load.py post "$PLAIN" "$answers" --clients "$CLIENTS" \
    --first-user 1 --interval 0 &
  LOADER=$!
  sleep "$WARMUP"
  local from to
  from=$(date +%s.%N)
  sleep "$DURATION"
  to=$(date +%s.%N)
  kill -TERM "$LOADER"
  wait "$LOADER" || true
  LOADER=
  # Stored rate: rows created within the measured window, over its length.
  local stored
  stored=$(sql "SELECT count(*) FROM orders WHERE created_at >= to_timestamp($from) AND created_at < to_timestamp($to)")
  python3 - "$answers" "$from" "$to" "$layout" "$stored" >>"$WORK/results" <<'EOF'
import statistics, sys
path, start, end, layout, stored = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
inside = []
for line in open(path):
    s, e, _client, _user, status, _id = line.split()
    s, e = float(s), float(e)
    if s >= start and e <= end:
        inside.append((e - s, status))
ok = sorted(d for d, status in inside if status == "200")
refused = sum(1 for _d, status in inside if status != "200")
seconds = end - start
p = lambda q: ok[min(len(ok) - 1, int(q * len(ok)))] * 1000 if ok else 0.0
print(f"{layout} {len(ok) / seconds:.0f} {p(0.50):.1f} {p(0.99):.1f} {refused} {stored / seconds:.0f}")
EOF
  tail -n 1 "$WORK/results" >&2
  docker compose down -v >/dev/null 2>&1
}

for repetition in $(seq 1 "$REPEATS"); do
  measure single "$repetition"
  measure cluster "$repetition"
done

python3 - "$WORK/results" "$DURATION" "$CLIENTS" "$REPEATS" >bench/CLUSTER.md <<'EOF'
import os, platform, statistics, sys
from collections import defaultdict
results, duration, clients, repeats = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rows = defaultdict(list)
for line in open(results):
    layout, *values = line.split()
    rows[layout].append([float(v) for v in values])
median = {layout: [statistics.median(column) for column in zip(*values)] for layout, values in rows.items()}
print("# Orders per second: one RabbitMQ node against the three-node cluster\n")
print(f"`bench/cluster.sh {duration}`: {clients} clients posting through the entry on port 3000, "
      f"{duration} s per layout after a 5 s warm-up, {repeats} repetitions alternating, medians. "
      f"{os.cpu_count()} CPUs for everything (the load, the entry, two gateways, one or three "
      "brokers, billing-app, PostgreSQL).\n")
print("| layout | accepted orders/s | p50 | p99 | not 200 | stored orders/s |")
print("|---|---:|---:|---:|---:|---:|")
names = {"single": "one node (docker-compose.yml)", "cluster": "three nodes (docker-compose.ha.yml)"}
for layout in ("single", "cluster"):
    accepted, p50, p99, refused, stored = median[layout]
    print(f"| {names[layout]} | {accepted:.0f} | {p50:.1f} ms | {p99:.1f} ms | {refused:.0f} | {stored:.0f} |")
ratio = median["cluster"][0] / median["single"][0] if median["single"][0] else 0
print(f"\nThe cluster accepts {ratio:.2f}x the orders per second of the single node.")
EOF
cat bench/CLUSTER.md
