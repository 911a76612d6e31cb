#!/usr/bin/env bash
# End-to-end test of the Compose stack, as a user runs it: build and start everything, run
# the acceptance scenario with curl against localhost:3000, check the orders table through
# psql in billing-db, restart RabbitMQ while orders are being posted, check what is published
# on the host, and report image sizes. Prints PASS/FAIL per step and always removes the stack
# and its volumes at the end.
#
# It runs under its own Compose project name, so it never touches a stack you started
# yourself (but it needs port 3000 free). Needs a Docker engine with the compose plugin.
set -euo pipefail
cd "$(dirname "$0")/.."

export COMPOSE_PROJECT_NAME=${E2E_PROJECT_NAME:-movie-billing-e2e}
GATEWAY=http://127.0.0.1:${API_GATEWAY_PUBLISHED_PORT:-3000}
WORK=$(mktemp -d)
PASSED=0
FAILED=0

say() { printf '\n--- %s\n' "$*"; }
pass() { printf 'PASS  %s\n' "$1"; PASSED=$((PASSED + 1)); }
fail() { printf 'FAIL  %s\n' "$1"; FAILED=$((FAILED + 1)); }
# check NAME COMMAND...: one PASS or FAIL line for the command's outcome.
check() {
  local name=$1
  shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}

cleanup() {
  local status=$?
  if [ "$FAILED" -gt 0 ] || [ "$status" -ne 0 ]; then
    say "logs of the failed run (last 40 lines per service)"
    docker compose logs --no-color --tail 40 2>/dev/null || true
  fi
  say "removing the stack and its volumes"
  docker compose down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- helpers -------------------------------------------------------------------------

# request METHOD PATH [JSON]: prints the status code; the body goes to $WORK/body.
request() {
  local method=$1 path=$2 data=${3:-}
  local args=(-sS --max-time 10 -o "$WORK/body" -w '%{http_code}' -X "$method")
  if [ -n "$data" ]; then
    args+=(-H 'Content-Type: application/json' -d "$data")
  fi
  curl "${args[@]}" "$GATEWAY$path" || echo 000
}

body() { cat "$WORK/body"; }
order_id_of_body() { sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p' "$WORK/body"; }

# sql QUERY: runs it in the orders database, unaligned output.
sql() {
  docker compose exec -T billing-db psql -v ON_ERROR_STOP=1 -qAt -c "$1"
}

# eventually SECONDS COMMAND...: retries the command once a second until it succeeds.
eventually() {
  local limit=$1
  shift
  local deadline=$((SECONDS + limit))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 1
  done
}

users_stored() { sql "SELECT string_agg(user_id::text, ',' ORDER BY user_id) FROM orders"; }
stored_users_are() { [ "$(users_stored)" = "$1" ]; }

all_healthy() {
  local states
  states=$(docker compose ps --all --format '{{.Service}} {{.Health}}')
  [ "$(grep -c ' healthy$' <<<"$states")" -eq 6 ]
}

service_healthy() {
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$(docker compose ps -q "$1")")" = healthy ]
}

# --- 1. build and start ----------------------------------------------------------------

say "building the images (one after the other, so they share the build cache)"
for service in inventory-app billing-app api-gateway; do
  timeout 1800 docker compose build "$service"
done

say "starting the stack"
if timeout 600 docker compose up -d --build --wait --wait-timeout 300; then
  pass "docker compose up -d --build --wait"
else
  fail "docker compose up -d --build --wait"
  exit 1
fi
docker compose ps
check "all six services are healthy" eventually 60 all_healthy

# --- 2. the acceptance scenario --------------------------------------------------------

say "acceptance scenario"
status=$(request POST /api/movies/ '{"title": "A new movie", "description": "Very short description"}')
check "1. POST /api/movies/ answers 200 ($status)" [ "$status" = 200 ]
created=$(body)

status=$(request GET /api/movies/)
movie_listed() { [ "$status" = 200 ] && grep -qF "$created" "$WORK/body"; }
check "2. GET /api/movies/ answers 200 with the movie ($status)" movie_listed

status=$(request POST /api/billing/ '{"user_id": "20", "number_of_items": "99", "total_amount": "250"}')
check "3. POST /api/billing/ (user 20) answers 200 ($status)" [ "$status" = 200 ]
check "   user 20 is stored in billing-db" eventually 30 stored_users_are 20

docker compose stop billing-app >/dev/null
billing_stopped() { ! docker compose ps --status running --services | grep -qx billing-app; }
check "4. docker compose stop billing-app" billing_stopped

status=$(request POST /api/billing/ '{"user_id": "22", "number_of_items": "10", "total_amount": "50"}')
check "5. POST /api/billing/ (user 22) with billing-app stopped answers 200 ($status)" [ "$status" = 200 ]

sleep 2
check "6. TABLE orders: user 20 present, user 22 absent" stored_users_are 20

docker compose start billing-app >/dev/null
check "7. billing-app started again: user 22 appears, nothing duplicated" \
  eventually 60 stored_users_are 20,22

# --- 3. RabbitMQ restarted while orders are being posted ----------------------------------

say "restarting rabbitmq while orders are being posted"
post_orders() { # posts for $1 seconds; writes "status order_id" lines to $2
  local until=$((SECONDS + $1)) user=1000
  while [ "$SECONDS" -lt "$until" ]; do
    user=$((user + 1))
    local status
    status=$(request POST /api/billing "{\"user_id\": \"$user\", \"number_of_items\": \"1\", \"total_amount\": \"9.99\"}")
    echo "$status $(order_id_of_body)" >>"$2"
    sleep 0.05
  done
}
post_orders 75 "$WORK/answers" &
poster=$!
sleep 5
docker compose restart rabbitmq >/dev/null
eventually 120 service_healthy rabbitmq || true
wait "$poster"

total=$(wc -l <"$WORK/answers")
accepted=$(grep -c '^200 ' "$WORK/answers" || true)
refused=$(grep -c '^503 ' "$WORK/answers" || true)
echo "answers: $total, of which 200: $accepted, 503: $refused"
check "every answer during the restart is 200 or 503" [ "$((accepted + refused))" -eq "$total" ]
accepted_after_restart() { tail -n 20 "$WORK/answers" | grep -q '^200 '; }
check "orders were accepted again after the restart" accepted_after_restart

ids=$(awk '$1 == 200 { printf "%s\x27%s\x27", (n++ ? "," : ""), $2 }' "$WORK/answers")
stored_accepted() { [ "$(sql "SELECT count(*) FROM orders WHERE id IN ($ids)")" -eq "$accepted" ]; }
check "every order answered 200 is stored ($accepted)" eventually 60 stored_accepted
check "no order is stored twice" \
  [ "$(sql 'SELECT count(*) - count(DISTINCT id) FROM orders')" -eq 0 ]

# --- 4. what the host can reach ---------------------------------------------------------

say "published ports"
# "service host:port->port/tcp" for every port published on the host (IPv6 twins dropped).
published=$(docker ps --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
  --format '{{.Label "com.docker.compose.service"}}|{{.Ports}}' |
  awk -F'|' '{
    n = split($2, ports, ", ")
    for (i = 1; i <= n; i++)
      if (ports[i] ~ /->/ && ports[i] !~ /^(\[::\]|:::)/) print $1, ports[i]
  }' | sort)
echo "$published"
expected_published=$(printf 'api-gateway 0.0.0.0:%s->3000/tcp\nrabbitmq 127.0.0.1:%s->15672/tcp' \
  "${API_GATEWAY_PUBLISHED_PORT:-3000}" "${RABBITMQ_UI_PORT:-15672}")
check "only the gateway (3000) and the RabbitMQ UI (127.0.0.1:15672) are published" \
  [ "$published" = "$expected_published" ]

databases_unreachable_from_front() {
  ! docker run --rm --network "${COMPOSE_PROJECT_NAME}_front" postgres:15-alpine \
    pg_isready -h inventory-db -t 3 >/dev/null 2>&1
}
check "the databases are unreachable from the front network" databases_unreachable_from_front

gateway_log_file_written() {
  docker run --rm -v "${COMPOSE_PROJECT_NAME}_gateway-logs:/logs:ro" postgres:15-alpine \
    sh -c 'grep -q "order accepted" /logs/api-gateway.*.log'
}
check "the gateway writes its log file to the gateway-logs volume" gateway_log_file_written

# --- 5. image sizes ---------------------------------------------------------------------

say "image sizes"
for service in api-gateway inventory-app billing-app; do
  image="$service:${IMAGE_TAG:-0.1.0}"
  bytes=$(docker image inspect -f '{{.Size}}' "$image")
  awk -v image="$image" -v bytes="$bytes" 'BEGIN { printf "%-24s %6.1f MB\n", image, bytes / 1e6 }'
  check "$image is under 40 MB" [ "$bytes" -lt 40000000 ]
done

say "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
