# shellcheck shell=bash
# Sourced by the checks that need the whole system running: builds the three services and
# starts them as native processes against the local PostgreSQL and RabbitMQ
# (Scripts/ensure-services.sh), with databases and a queue of their own that are removed again
# when the calling script exits. Nothing of a developer's own databases or queues is touched.
#
#   stack_start NAME   start; NAME names the logs directory target/NAME/ and the databases
#   STACK_URL          the gateway's base URL, once started
#   STACK_LOGS         where each service writes its log

STACK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STACK_PIDS=()

# A port that is free now on 127.0.0.1 (the kernel's choice).
stack_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stack_sql() { psql -h 127.0.0.1 -U postgres -qAt -v ON_ERROR_STOP=1 -d postgres "$@"; }

stack_stop() {
  local pid
  for pid in "${STACK_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${STACK_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  STACK_PIDS=()
  if [ -n "${STACK_QUEUE:-}" ]; then
    "$STACK_ROOT/target/debug/bench-tool" delete-queue "$STACK_QUEUE" >/dev/null 2>&1 || true
  fi
  if [ -n "${STACK_MOVIES_DB:-}" ]; then
    stack_sql -c "DROP DATABASE IF EXISTS $STACK_MOVIES_DB WITH (FORCE)" \
      -c "DROP DATABASE IF EXISTS $STACK_ORDERS_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
}

# stack_wait URL LOG: waits up to 60 s for URL to answer 200.
stack_wait() {
  local _
  for _ in $(seq 1 600); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "error: $1 did not become ready within 60 s; its log, $2:" >&2
  tail -20 "$2" >&2
  return 1
}

stack_start() {
  local name=$1 id inventory_port billing_port gateway_port bin
  (cd "$STACK_ROOT" && Scripts/ensure-services.sh >&2)
  (cd "$STACK_ROOT" && cargo build --locked --quiet -p inventory-app -p billing-app -p api-gateway -p bench)
  bin=$STACK_ROOT/target/debug
  id=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
  STACK_MOVIES_DB=${name//-/_}_movies_$id
  STACK_ORDERS_DB=${name//-/_}_orders_$id
  STACK_QUEUE=${name//-/_}_billing_$id
  STACK_LOGS=$STACK_ROOT/target/$name
  mkdir -p "$STACK_LOGS"
  trap stack_stop EXIT
  inventory_port=$(stack_free_port)
  billing_port=$(stack_free_port)
  gateway_port=$(stack_free_port)

  export RABBITMQ_QUEUE=$STACK_QUEUE RUST_LOG=${RUST_LOG:-info}
  INVENTORY_APP_PORT=$inventory_port INVENTORY_DB_NAME=$STACK_MOVIES_DB \
    "$bin/inventory-app" >"$STACK_LOGS/inventory-app.log" 2>&1 &
  STACK_PIDS+=($!)
  BILLING_APP_PORT=$billing_port BILLING_DB_NAME=$STACK_ORDERS_DB \
    "$bin/billing-app" >"$STACK_LOGS/billing-app.log" 2>&1 &
  STACK_PIDS+=($!)
  API_GATEWAY_PORT=$gateway_port INVENTORY_APP_URL=http://127.0.0.1:$inventory_port \
    BILLING_APP_URL=http://127.0.0.1:$billing_port \
    "$bin/api-gateway" >"$STACK_LOGS/api-gateway.log" 2>&1 &
  STACK_PIDS+=($!)

  stack_wait "http://127.0.0.1:$inventory_port/ready" "$STACK_LOGS/inventory-app.log"
  stack_wait "http://127.0.0.1:$billing_port/ready" "$STACK_LOGS/billing-app.log"
  stack_wait "http://127.0.0.1:$gateway_port/ready" "$STACK_LOGS/api-gateway.log"
  STACK_URL=http://127.0.0.1:$gateway_port
  echo "services running natively: gateway $STACK_URL, logs in $STACK_LOGS" >&2
}
