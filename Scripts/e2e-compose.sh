#!/usr/bin/env bash
# End-to-end test of the Compose stack, as a user runs it: build and start everything, run
# the acceptance scenario with curl over HTTPS through the entry (trusting the entry's own CA)
# and check the orders table through psql in billing-db; meanwhile an alert reaches a webhook
# and its resolution follows. Then the entry itself (redirect, headers, request ids, /metrics
# kept inside, plain HTTP on 3000), the balancing with one gateway stopped under load, the
# certificate across a restart of the entry, RabbitMQ restarted while orders are posted, what
# is published on the host, image sizes, and last a backup restored into a fresh stack after
# `down -v`. Prints PASS/FAIL per step and always removes the stack and its volumes at the end.
#
# It runs under its own Compose project name, so it never touches a stack you started
# yourself (but it needs the entry's ports free: 3000, 80 and 443, or those named by
# API_GATEWAY_PUBLISHED_PORT, ENTRY_HTTP_PORT and ENTRY_HTTPS_PORT). Needs a Docker engine with
# the compose plugin, curl, openssl and python3 (the alerts' webhook receiver runs on this
# machine, on the Compose network's gateway address).
set -euo pipefail
cd "$(dirname "$0")/.."

export COMPOSE_PROJECT_NAME=${E2E_PROJECT_NAME:-movie-billing-e2e}
PLAIN_PORT=${API_GATEWAY_PUBLISHED_PORT:-3000}
HTTP_PORT=${ENTRY_HTTP_PORT:-80}
HTTPS_PORT=${ENTRY_HTTPS_PORT:-443}
# What users type: plain HTTP on 3000 as before, HTTPS through the entry.
PLAIN=http://127.0.0.1:$PLAIN_PORT
HTTPS=https://localhost:$HTTPS_PORT
# The Alertmanager route and Prometheus rule waits, shortened for this test only (below).
ALERT_FOR=10s
WORK=$(mktemp -d)
CA=$WORK/entry-root.crt
RECEIVER_PID=

# shellcheck source=Scripts/lib/checks.sh
source Scripts/lib/checks.sh
now() { date +%s.%N; }
# since T: seconds from T to now, one decimal.
since() { awk -v t="$1" -v n="$(now)" 'BEGIN { printf "%.1f", n - t }'; }

# Every profile, so that `down` also removes the monitoring and backup containers.
compose_all() { docker compose --profile monitoring --profile backup "$@"; }

cleanup() {
  local status=$?
  [ -z "$RECEIVER_PID" ] || kill "$RECEIVER_PID" 2>/dev/null || true
  if [ "$FAILED" -gt 0 ] || [ "$status" -ne 0 ]; then
    say "logs of the failed run (last 40 lines per service)"
    compose_all logs --no-color --tail 40 2>/dev/null || true
  fi
  say "removing the stack and its volumes"
  compose_all down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$WORK"
  echo "total time: ${SECONDS} s"
}
trap cleanup EXIT

# --- helpers -------------------------------------------------------------------------

# request_to BASE METHOD PATH [JSON]: prints the status code; the body goes to $WORK/body.
request_to() {
  local base=$1 method=$2 path=$3 data=${4:-}
  local args=(-sS --max-time 10 -o "$WORK/body" -w '%{http_code}' -X "$method")
  [[ $base != https:* ]] || args+=(--cacert "$CA")
  if [ -n "$data" ]; then
    args+=(-H 'Content-Type: application/json' -d "$data")
  fi
  curl "${args[@]}" "$base$path" || echo 000
}
# request METHOD PATH [JSON]: over HTTPS, through the entry, trusting only its CA.
request() { request_to "$HTTPS" "$@"; }

body() { cat "$WORK/body"; }
order_id_of_body() { sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p' "$WORK/body"; }

# headers_of URL [CURL ARGS...]: the response headers, names lower-cased.
headers_of() {
  local url=$1
  shift
  curl -sS --max-time 10 --cacert "$CA" -o /dev/null -D - "$@" "$url" | tr -d '\r' |
    awk -F': ' 'NF > 1 { printf "%s: %s\n", tolower($1), substr($0, length($1) + 3) }'
}

# sql QUERY: runs it in the orders database, unaligned output.
sql() {
  docker compose exec -T billing-db psql -v ON_ERROR_STOP=1 -qAt -c "$1"
}
movies_sql() {
  docker compose exec -T inventory-db psql -v ON_ERROR_STOP=1 -qAt -c "$1"
}

users_stored() { sql "SELECT string_agg(user_id::text, ',' ORDER BY user_id) FROM orders"; }
stored_users_are() { [ "$(users_stored)" = "$1" ]; }

# The services of the default profile, all healthy.
all_healthy() {
  local expected states
  expected=$(docker compose config --services | wc -l)
  states=$(docker compose ps --all --format '{{.Service}} {{.Health}}')
  [ "$(grep -c ' healthy$' <<<"$states")" -eq "$expected" ]
}

service_healthy() {
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$(docker compose ps -q "$1")")" = healthy ]
}

# The entry's CA root (Caddy's internal CA, made on its first start, kept in entry-data).
fetch_ca() {
  docker compose cp entry:/data/caddy/pki/authorities/local/root.crt "$CA" >/dev/null 2>&1 &&
    [ -s "$CA" ]
}
https_ready() { fetch_ca && [ "$(request GET /health)" = 200 ]; }

# SHA-256 fingerprint of the certificate the entry serves for localhost.
served_fingerprint() {
  openssl s_client -connect "127.0.0.1:$HTTPS_PORT" -servername localhost </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 | cut -d= -f2
}
file_fingerprint() { openssl x509 -noout -fingerprint -sha256 -in "$1" | cut -d= -f2; }

# logs_contain SERVICE TEXT: SERVICE's log holds TEXT. The log is taken whole before it is
# searched: docker compose exits 255 when the pipe it writes to closes early, as `grep -q` does
# at its first match, and under pipefail that would turn a match into a failure.
logs_contain() {
  local logs
  logs=$(docker compose logs --no-color "$1" 2>/dev/null) && grep -qF -- "$2" <<<"$logs"
}
# gateway_served SERVICE TEXT: the gateway logged a request whose id contains TEXT.
gateway_served() { logs_contain "$1" "request_id=$2"; }

# --- 1. build and start ----------------------------------------------------------------

say "building the images (one after the other, so they share the build cache)"
for service in inventory-app billing-app api-gateway; do
  timeout 1800 docker compose build "$service"
done

say "starting the stack"
started=$(now)
if timeout 600 docker compose up -d --build --wait --wait-timeout 300; then
  pass "docker compose up -d --build --wait ($(since "$started") s)"
else
  fail "docker compose up -d --build --wait"
  exit 1
fi
docker compose ps
check "all $(docker compose config --services | wc -l) services are healthy" eventually 60 all_healthy
check "HTTPS through the entry answers, trusting only the entry's CA" eventually 30 https_ready

# --- 2. alerts: Prometheus and Alertmanager, with a webhook receiver ---------------------

say "monitoring: Prometheus and Alertmanager (test intervals), a webhook receiver on this machine"
# Test-only settings, in copies of the production files: scrapes and rule evaluations every
# 2 s instead of 15 s, BillingQueueNoConsumer's `for` $ALERT_FOR instead of 5 minutes,
# Alertmanager's group_wait 1 s and group_interval 2 s instead of 30 s and 5 minutes.
mkdir -p "$WORK/prometheus" "$WORK/alertmanager"
sed -e 's/^  scrape_interval: 15s$/  scrape_interval: 2s/' \
  -e 's/^  scrape_timeout: 10s$/  scrape_timeout: 2s/' \
  -e 's/^  evaluation_interval: 15s$/  evaluation_interval: 2s/' \
  monitoring/prometheus/prometheus.yml >"$WORK/prometheus/prometheus.yml"
awk -v for_="$ALERT_FOR" '
  /- alert: BillingQueueNoConsumer$/ { rule = 1 }
  rule && /^ +for: / { sub(/for: .*/, "for: " for_); rule = 0 }
  { print }' monitoring/prometheus/alerts.yml >"$WORK/prometheus/alerts.yml"
sed -e 's/^  group_wait: 30s$/  group_wait: 1s/' -e 's/^  group_interval: 5m$/  group_interval: 2s/' \
  monitoring/alertmanager/alertmanager.yml >"$WORK/alertmanager/alertmanager.yml"
test_settings_applied() {
  [ "$(grep -c -E '^  (scrape_interval|scrape_timeout|evaluation_interval): 2s$' "$WORK/prometheus/prometheus.yml")" = 3 ] &&
    grep -A3 'alert: BillingQueueNoConsumer$' "$WORK/prometheus/alerts.yml" | grep -q "for: $ALERT_FOR" &&
    [ "$(grep -c -E '^  group_(wait|interval): [12]s$' "$WORK/alertmanager/alertmanager.yml")" = 2 ]
}
check "test intervals applied to copies of prometheus.yml, alerts.yml, alertmanager.yml" test_settings_applied
# Prometheus and Alertmanager run as nobody.
chmod -R a+rX "$WORK"

gateway_ip=$(docker network inspect -f '{{(index .IPAM.Config 0).Gateway}}' "${COMPOSE_PROJECT_NAME}_back")
python3 Scripts/lib/alert-receiver.py "$gateway_ip" "$WORK/alerts" "$WORK/receiver-port" &
RECEIVER_PID=$!
eventually 10 test -s "$WORK/receiver-port"
webhook_url="http://$gateway_ip:$(cat "$WORK/receiver-port")/alerts"
echo "webhook receiver: $webhook_url"
cat >"$WORK/monitoring-test.yml" <<EOF
services:
  prometheus:
    volumes:
      - $WORK/prometheus:/etc/prometheus:ro
    ports: !reset []
  alertmanager:
    environment:
      ALERT_WEBHOOK_URL: $webhook_url
      ALERTMANAGER_CONFIG: /etc/alertmanager-test/alertmanager.yml
    volumes:
      - $WORK/alertmanager:/etc/alertmanager-test:ro
    ports: !reset []
EOF
# Only the two needed (Grafana is not): the same project, so they watch this stack.
docker compose -f docker-compose.yml -f "$WORK/monitoring-test.yml" --profile monitoring \
  up -d prometheus alertmanager
# prometheus_get PATH: Prometheus' answer, fetched with Alertmanager's wget (upstream's
# Prometheus image has wget too, for its healthcheck; the offline stand-in has none, so its
# container health is not waited for here).
prometheus_get() { docker compose exec -T alertmanager wget -q -O - "http://prometheus:9090$1" 2>/dev/null; }
monitoring_ready() { service_healthy alertmanager && prometheus_get /-/ready >/dev/null; }
check "prometheus and alertmanager started (monitoring profile, test intervals)" \
  eventually 90 monitoring_ready
# received STATUS ALERTNAME: the webhook got that alert in that status.
received() { grep -q " $1 $2\( \|$\)" "$WORK/alerts" 2>/dev/null; }
arrival() { awk -v s="$1" -v a="$2" '$0 ~ " " s " " a "( |$)" { print $1; exit }' "$WORK/alerts"; }
# Prometheus sees billing_queue's consumer before the scenario stops it.
consumer_scraped() {
  prometheus_get '/api/v1/query?query=rabbitmq_detailed_queue_consumers%7Bqueue%3D%22billing_queue%22%7D' |
    grep -q '"value":\[[0-9.]*,"1"\]'
}
check "Prometheus scrapes billing_queue's consumer (1)" eventually 60 consumer_scraped

# --- 3. the acceptance scenario, over HTTPS ----------------------------------------------

say "acceptance scenario (https://localhost through the entry)"
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
billing_stopped_at=$(now)
billing_stopped() {
  local running
  running=$(docker compose ps --status running --services) && ! grep -qx billing-app <<<"$running"
}
check "4. docker compose stop billing-app" billing_stopped

status=$(request POST /api/billing/ '{"user_id": "22", "number_of_items": "10", "total_amount": "50"}')
check "5. POST /api/billing/ (user 22) with billing-app stopped answers 200 ($status)" [ "$status" = 200 ]

sleep 2
check "6. TABLE orders: user 20 present, user 22 absent" stored_users_are 20

# While billing-app is down: its queue has no consumer, and the alert reaches the webhook.
# Bound: the rule's for ($ALERT_FOR) + a scrape and an evaluation (2 s each) + group_wait (1 s)
# + RabbitMQ's statistics interval (5 s), so 20 s; 45 s allowed.
if eventually 45 received firing BillingQueueNoConsumer; then
  pass "   BillingQueueNoConsumer (for: $ALERT_FOR) reached the webhook $(awk -v a="$(arrival firing BillingQueueNoConsumer)" -v t="$billing_stopped_at" 'BEGIN { printf "%.1f", a - t }') s after billing-app stopped (bound 45 s)"
else
  fail "   BillingQueueNoConsumer reached the webhook within 45 s of billing-app stopping"
fi

docker compose start billing-app >/dev/null
billing_started_at=$(now)
check "7. billing-app started again: user 22 appears, nothing duplicated" \
  eventually 60 stored_users_are 20,22
# Bound: billing-app's start and reconnection (a few s) + a scrape, an evaluation and
# group_interval (2 s each) + RabbitMQ's statistics interval (5 s); 45 s allowed.
if eventually 45 received resolved BillingQueueNoConsumer; then
  pass "   the resolution reached the webhook $(awk -v a="$(arrival resolved BillingQueueNoConsumer)" -v t="$billing_started_at" 'BEGIN { printf "%.1f", a - t }') s after billing-app started (bound 45 s)"
else
  fail "   the resolution of BillingQueueNoConsumer reached the webhook within 45 s"
fi
echo "webhook received:"
sed 's/^/  /' "$WORK/alerts" 2>/dev/null || true
# Their work is done: two cores are better spent on the rest.
docker compose --profile monitoring stop prometheus alertmanager >/dev/null 2>&1
kill "$RECEIVER_PID" 2>/dev/null || true
RECEIVER_PID=

# --- 4. the entry -----------------------------------------------------------------------

say "the entry: HTTP redirect, plain HTTP on $PLAIN_PORT, headers, request ids, /metrics"
expected_suffix=""
[ "$HTTPS_PORT" = 443 ] || expected_suffix=":$HTTPS_PORT"
redirect=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code} %{redirect_url}' \
  "http://localhost:$HTTP_PORT/api/movies/?title=new" || true)
check "http://localhost:$HTTP_PORT/ redirects to HTTPS, path and query kept ($redirect)" \
  [ "$redirect" = "308 https://localhost$expected_suffix/api/movies/?title=new" ]
followed=$(curl -sS --max-time 10 --cacert "$CA" -L -o /dev/null -w '%{http_code}' \
  "http://localhost:$HTTP_PORT/api/movies/" || true)
check "   followed, it lands on the API over HTTPS ($followed)" [ "$followed" = 200 ]

status=$(request_to "$PLAIN" GET /api/movies/)
check "http://localhost:$PLAIN_PORT/api/movies/ still answers 200 with the movie ($status)" movie_listed
status=$(request_to "$PLAIN" POST /api/billing/ '{"user_id": "30", "number_of_items": "1", "total_amount": "1"}')
check "   and takes orders ($status)" [ "$status" = 200 ]
status=$(curl -sS --max-time 10 -k -o /dev/null -w '%{http_code}' "https://127.0.0.1:$HTTPS_PORT/api/movies/" || true)
check "https://127.0.0.1/ (no server name) answers too ($status)" [ "$status" = 200 ]

https_headers=$(headers_of "$HTTPS/api/movies/")
plain_headers=$(headers_of "$PLAIN/api/movies/")
check "HTTPS: Strict-Transport-Security max-age=${ENTRY_HSTS_MAX_AGE:-31536000}" \
  grep -qx "strict-transport-security: max-age=${ENTRY_HSTS_MAX_AGE:-31536000}" <<<"$https_headers"
security_headers() {
  grep -qx 'x-content-type-options: nosniff' <<<"$1" && grep -qx 'x-frame-options: DENY' <<<"$1" &&
    grep -qx 'referrer-policy: no-referrer' <<<"$1" &&
    grep -q "^content-security-policy: default-src 'none'" <<<"$1" && ! grep -q '^server:' <<<"$1"
}
check "HTTPS and :$PLAIN_PORT: nosniff, X-Frame-Options, Referrer-Policy, CSP, no Server" \
  security_headers "$https_headers"
plain_without_hsts() {
  security_headers "$plain_headers" && ! grep -q '^strict-transport-security:' <<<"$plain_headers"
}
check "   (plain HTTP on $PLAIN_PORT: the same, and no HSTS)" plain_without_hsts

kept=$(headers_of "$HTTPS/api/movies/" -H 'X-Request-Id: e2e-kept-id-1' | sed -n 's/^x-request-id: //p')
check "a client's x-request-id is kept ($kept)" [ "$kept" = e2e-kept-id-1 ]
made=$(headers_of "$HTTPS/api/movies/" | sed -n 's/^x-request-id: //p')
check "   one is made when the client sends none ($made)" \
  grep -qE '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' <<<"$made"
gateway_served_any() { gateway_served api-gateway "$1" || gateway_served api-gateway-2 "$1"; }
check "   the gateway logged the entry's id" eventually 5 gateway_served_any "$made"

metrics_hidden() {
  local url status
  for url in "$HTTPS/metrics" "$HTTPS/metrics/" "$HTTPS/METRICS" "$PLAIN/metrics" "$PLAIN/metrics/"; do
    status=$(curl -sS --max-time 10 --cacert "$CA" -o "$WORK/body" -w '%{http_code}' "$url" || echo 000)
    if [ "$status" != 404 ] || grep -q http_requests_total "$WORK/body"; then
      echo "  $url answered $status"
      return 1
    fi
  done
}
check "/metrics is not reachable through the entry (404 on HTTPS and :$PLAIN_PORT)" metrics_hidden

# --- 5. balancing, and one gateway stopped under load --------------------------------------

say "balancing across api-gateway and api-gateway-2; api-gateway-2 stopped under load"
for i in $(seq 1 10); do
  curl -sS --max-time 10 --cacert "$CA" -o /dev/null -H "X-Request-Id: e2e-balance-$i" "$HTTPS/api/movies/"
done
both_served() { gateway_served api-gateway e2e-balance && gateway_served api-gateway-2 e2e-balance; }
check "both gateways served requests (round robin)" eventually 5 both_served

# load SECONDS FILE: GET /api/movies/ and POST /api/billing in turn, over HTTPS, as fast as
# they are answered; writes "time method status order_id" lines.
load() {
  local until=$((SECONDS + $1)) user=5000 status
  while [ "$SECONDS" -lt "$until" ]; do
    status=$(request GET /api/movies/)
    echo "$(now) GET $status -" >>"$2"
    user=$((user + 1))
    status=$(request POST /api/billing "{\"user_id\": \"$user\", \"number_of_items\": \"1\", \"total_amount\": \"2.50\"}")
    echo "$(now) POST $status $(order_id_of_body)" >>"$2"
  done
}
load 24 "$WORK/load" &
loader=$!
sleep 4
stop_at=$(now)
docker compose stop api-gateway-2 >/dev/null
echo "api-gateway-2 stopped in $(since "$stop_at") s"
sleep 8
restart_at=$(now)
docker compose start api-gateway-2 >/dev/null
wait "$loader"
total=$(wc -l <"$WORK/load")
failed_all=$(awk '$3 != 200' "$WORK/load" | wc -l)
# The entry's bound: a gateway stopped gracefully refuses connections at once (retried on the
# other); one that is gone is out after its first failed connection (passive, 1 s dial
# timeout) or its next active check (every 2 s, 1 s timeout). After 3 s nothing may fail.
failed_after=$(awk -v t="$stop_at" '$1 > t + 3 && $3 != 200' "$WORK/load" | wc -l)
slowest=$(awk -v a="$stop_at" -v b="$restart_at" 'NR > 1 && $1 > a && $1 < b + 5 { d = $1 - p; if (d > m) m = d } { p = $1 } END { printf "%.2f", m }' "$WORK/load")
echo "requests: $total (GET and POST in turn), failed: $failed_all in all, $failed_after later than 3 s after the stop; slowest answer around the stop and start: $slowest s"
awk '$3 != 200 { print "  failed:", $0 }' "$WORK/load"
check "no request failed later than 3 s after api-gateway-2 stopped ($failed_after of $total)" [ "$failed_after" -eq 0 ]
check "   nor at all, across its stop and its start again ($failed_all of $total)" [ "$failed_all" -eq 0 ]
ids=$(awk '$2 == "POST" && $3 == 200 { printf "%s\x27%s\x27", (n++ ? "," : ""), $4 }' "$WORK/load")
accepted=$(awk '$2 == "POST" && $3 == 200' "$WORK/load" | wc -l)
stored_load() { [ "$(sql "SELECT count(*) FROM orders WHERE id IN ($ids)")" -eq "$accepted" ]; }
check "   every order answered 200 is stored ($accepted)" eventually 30 stored_load
check "api-gateway-2 is healthy again" eventually 60 service_healthy api-gateway-2
rejoined() {
  for i in $(seq 1 6); do
    curl -sS --max-time 10 --cacert "$CA" -o /dev/null -H "X-Request-Id: e2e-rejoin-$i" "$HTTPS/api/movies/"
  done
  gateway_served api-gateway-2 e2e-rejoin
}
check "   and back in the rotation" eventually 10 rejoined

# --- 6. the certificate survives a restart of the entry -----------------------------------

say "restarting the entry: the same CA and the same certificate"
before=$(served_fingerprint)
root_before=$(file_fingerprint "$CA")
docker compose restart entry >/dev/null
eventually 30 https_ready || true
after=$(served_fingerprint)
root_after=$(file_fingerprint "$CA")
echo "served certificate: $before -> $after"
same_certificate() { [ -n "$before" ] && [ "$before" = "$after" ]; }
check "the certificate served for localhost is the same after the restart" same_certificate
check "   and so is the CA root that clients trust" [ "$root_before" = "$root_after" ]
check "   curl --cacert with the saved root still verifies" [ "$(request GET /api/movies/)" = 200 ]

# --- 7. RabbitMQ restarted while orders are being posted -----------------------------------

say "restarting rabbitmq while orders are being posted (plain HTTP on $PLAIN_PORT)"
post_orders() { # posts for $1 seconds; writes "status order_id" lines to $2
  local until=$((SECONDS + $1)) user=1000
  while [ "$SECONDS" -lt "$until" ]; do
    user=$((user + 1))
    local status
    status=$(request_to "$PLAIN" POST /api/billing "{\"user_id\": \"$user\", \"number_of_items\": \"1\", \"total_amount\": \"9.99\"}")
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

# --- 8. what the host can reach ---------------------------------------------------------

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
expected_published=$(printf 'entry 0.0.0.0:%s->3000/tcp\nentry 0.0.0.0:%s->80/tcp\nentry 0.0.0.0:%s->443/tcp\nrabbitmq 127.0.0.1:%s->15672/tcp\n' \
  "$PLAIN_PORT" "$HTTP_PORT" "$HTTPS_PORT" "${RABBITMQ_UI_PORT:-15672}" | sort)
check "only the entry (3000, 80, 443) and the RabbitMQ UI (127.0.0.1:15672) are published" \
  [ "$published" = "$expected_published" ]

entry_networks=$(docker inspect -f '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}' \
  "$(docker compose ps -q entry)")
check "the entry is attached to the front network only ($entry_networks)" \
  [ "$entry_networks" = "${COMPOSE_PROJECT_NAME}_front " ]

databases_unreachable_from_front() {
  ! docker run --rm --network "${COMPOSE_PROJECT_NAME}_front" postgres:15-alpine \
    pg_isready -h inventory-db -t 3 >/dev/null 2>&1
}
check "the databases are unreachable from the front network" databases_unreachable_from_front

gateway_log_files_written() {
  docker run --rm -v "${COMPOSE_PROJECT_NAME}_gateway-logs:/logs:ro" postgres:15-alpine \
    sh -c 'grep -q "request completed" /logs/api-gateway.*.log &&
           grep -q "request completed" /logs/api-gateway-2/api-gateway.*.log'
}
check "both gateways write their log files to the gateway-logs volume" gateway_log_files_written

# --- 9. image sizes ---------------------------------------------------------------------

say "image sizes"
for service in api-gateway inventory-app billing-app; do
  image="$service:${IMAGE_TAG:-0.1.0}"
  bytes=$(docker image inspect -f '{{.Size}}' "$image")
  awk -v image="$image" -v bytes="$bytes" 'BEGIN { printf "%-24s %6.1f MB\n", image, bytes / 1e6 }'
  # api-gateway carries the Swagger UI files of /api/docs (about 9 MB more than the others).
  check "$image is under 45 MB" [ "$bytes" -lt 45000000 ]
done

# --- 10. the Postman collection against the live stack -----------------------------------
# After the checks of stored users above: the collection deletes every movie and leaves orders
# of its own, which the backup below then carries like any other.

say "the Postman collection (newman) against $PLAIN"
check "every assertion of postman/ passes against the Compose stack" Scripts/check-postman.sh "$PLAIN"

# --- 11. backups: taken, copied away, restored into a fresh stack --------------------------

say "backups: backup-now (BACKUP_KEEP=2), copy them away, down -v, up, restore"
# The collection deleted every movie of the scenario above: one to carry through the backup.
status=$(request POST /api/movies/ '{"title": "A movie to back up", "description": "Restored"}')
check "a movie to carry through the backup is added ($status)" [ "$status" = 200 ]
created=$(body)
backup_run() { docker compose --profile backup run --rm -T "$@"; }
for i in 1 2 3; do
  backup_run -e BACKUP_KEEP=2 backup backup-now >"$WORK/backup-$i.log" 2>&1 ||
    { cat "$WORK/backup-$i.log"; fail "backup-now ($i)"; }
done
sed 's/^/  /' "$WORK/backup-3.log"
backup_run backup list >"$WORK/list" 2>&1 || true
sed 's/^/  /' "$WORK/list"
kept_two() {
  [ "$(grep -cE '^movies-[0-9]{8}T[0-9]{6}Z\.dump' "$WORK/list")" = 2 ] &&
    [ "$(grep -cE '^orders-[0-9]{8}T[0-9]{6}Z\.dump' "$WORK/list")" = 2 ]
}
check "three backups taken, the newest two of each database kept, named <database>-<UTC time>.dump" kept_two

orders_digest="SELECT count(*) || ' ' || md5(string_agg(id::text || user_id || number_of_items || total_amount || created_at, ',' ORDER BY id)) FROM orders"
movies_digest="SELECT count(*) || ' ' || md5(string_agg(id || title || description, ',' ORDER BY id)) FROM movies"
orders_before=$(sql "$orders_digest")
movies_before=$(movies_sql "$movies_digest")
echo "orders: $orders_before; movies: $movies_before"

# The scheduled service, with a 3 s interval for the test (24 h by default): it waits one
# interval after the newest backup, takes the next, and still keeps two of each.
BACKUP_INTERVAL=3s BACKUP_KEEP=2 compose_all up -d backup >/dev/null 2>&1
scheduled() {
  logs_contain backup 'next backup in' && logs_contain backup 'orders: /backups/orders-'
}
check "the scheduled backup service waits for the interval, then takes a backup" eventually 30 scheduled
check "   its healthcheck passes" docker compose exec -T backup /bin/sh /opt/backup/backup.sh health
backup_run backup list >"$WORK/list" 2>&1 || true
check "   and two of each database are still kept" kept_two
# What docs/operations.md ("Backups") says to do: the backups volume copied off the machine.
docker compose stop backup >/dev/null 2>&1
mkdir -p "$WORK/saved"
compose_all cp backup:/backups/. "$WORK/saved/" >/dev/null
orders_file=$(find "$WORK/saved" -name 'orders-*.dump' | sort | tail -n 1)
movies_file=$(find "$WORK/saved" -name 'movies-*.dump' | sort | tail -n 1)
copied() { [ -s "$orders_file" ] && [ -s "$movies_file" ]; }
check "docker compose cp backup:/backups copies them to this machine" copied

compose_all down -v >/dev/null 2>&1
no_volume_left() {
  [ -z "$(docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")" ]
}
check "docker compose down -v: no volume of the stack is left" no_volume_left
started=$(now)
docker compose up -d --wait --wait-timeout 300 >/dev/null 2>&1 || true
check "a fresh stack is up again ($(since "$started") s)" all_healthy
check "   with no order" stored_users_are ""

refused=$(backup_run -v "$WORK/saved:/restore:ro" backup restore "/restore/$(basename "$orders_file")" 2>&1 || true)
check "restore refuses while billing-app is connected" grep -q 'docker compose stop billing-app' <<<"$refused"
docker compose stop billing-app inventory-app >/dev/null
if backup_run -v "$WORK/saved:/restore:ro" backup restore \
  "/restore/$(basename "$orders_file")" "/restore/$(basename "$movies_file")" >"$WORK/restore.log" 2>&1; then
  pass "restore $(basename "$orders_file") $(basename "$movies_file")"
else
  fail "restore $(basename "$orders_file") $(basename "$movies_file")"
fi
sed 's/^/  /' "$WORK/restore.log"
docker compose start inventory-app billing-app >/dev/null
orders_after=$(sql "$orders_digest")
movies_after=$(movies_sql "$movies_digest")
echo "orders: $orders_after; movies: $movies_after"
check "every order is back, exactly once (count and digest as before the backup)" \
  [ "$orders_after" = "$orders_before" ]
check "every movie is back" [ "$movies_after" = "$movies_before" ]
check "no order is stored twice" [ "$(sql 'SELECT count(*) - count(DISTINCT id) FROM orders')" -eq 0 ]
check "the services are healthy on the restored databases" eventually 60 all_healthy
# The entry made a new CA in its new volume.
eventually 30 https_ready || true
status=$(request GET /api/movies/)
check "GET /api/movies/ over HTTPS lists the restored movie ($status)" movie_listed
status=$(request POST /api/billing/ '{"user_id": "40", "number_of_items": "1", "total_amount": "5"}')
new_order_stored() { [ "$(sql "SELECT count(*) FROM orders WHERE user_id = 40")" = 1 ]; }
check "a new order is stored in the restored orders table ($status)" eventually 30 new_order_stored

say "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
