#!/bin/sh
# Entrypoint of the Compose `alertmanager` service (prom/alertmanager; BusyBox sh). Alertmanager
# reads no environment variables in its configuration, so the webhook URL, a setting
# (ALERT_WEBHOOK_URL), is written to the file the configuration names (url_file), on a tmpfs:
# it may carry a token, and it stays out of the configuration and the logs. The configuration
# itself is copied next to it, routed to the receiver `none` when no URL is set. Then
# Alertmanager runs with the arguments given (docker-compose.yml `command`).
#
# ALERTMANAGER_CONFIG names another configuration to start from (the end-to-end test's).
set -eu

source_config=${ALERTMANAGER_CONFIG:-/etc/alertmanager/alertmanager.yml}
run=/run/alertmanager

if [ -n "${ALERT_WEBHOOK_URL:-}" ]; then
  printf '%s\n' "$ALERT_WEBHOOK_URL" >"$run/webhook-url"
  cp "$source_config" "$run/alertmanager.yml"
else
  echo "alertmanager: ALERT_WEBHOOK_URL is not set: alerts are shown at http://127.0.0.1:9093 and delivered nowhere" >&2
  : >"$run/webhook-url"
  sed 's/^\(  receiver:\) webhook$/\1 none/' "$source_config" >"$run/alertmanager.yml"
fi

exec /bin/alertmanager --config.file="$run/alertmanager.yml" "$@"
