#!/usr/bin/env bash
# Checks the monitoring configuration of both deployments: Prometheus config, alert rules and
# their unit tests, the Grafana provisioning and dashboard, and the Kubernetes manifests in
# Manifests/monitoring (rendered with kubectl kustomize). What is checked and why:
# monitoring/check_monitoring.py.
#
#   Scripts/check-monitoring.sh           check; exit 1 on any failure
#   Scripts/check-monitoring.sh --write   regenerate Manifests/monitoring/prometheusrule.yaml
#                                         from monitoring/prometheus/alerts.yml, then check
#
# Installs what is missing: promtool (Debian's `prometheus` package) and kubectl (Debian's
# `kubernetes-client`) as root on Debian, PyYAML into the virtual environment under target/.
# A second run installs nothing and takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "check-monitoring: $*"; }

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "error: $1 is missing; install Debian's $2 package (needs root and apt-get)" >&2
    exit 1
  fi
  log "installing Debian's $2 (for $1)"
  # Package lists may be missing on a fresh machine; update once.
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}

command -v python3 >/dev/null || apt_install python3 python3
command -v promtool >/dev/null || apt_install promtool prometheus

# PyYAML in the project's tool environment (target/tools-venv), like the other checks' tools.
# shellcheck source=Scripts/lib/python-tools.sh
source Scripts/lib/python-tools.sh
python_tools PyYAML==6.0.3

# Any kubectl renders Manifests/monitoring (its kustomization sticks to what Debian's 1.20 knows).
command -v kubectl >/dev/null || apt_install kubectl kubernetes-client
kubectl=$(command -v kubectl)

log "promtool: $(promtool --version 2>&1 | head -n1)"
log "kubectl: $kubectl"

exec "$TOOLS_VENV/bin/python" monitoring/check_monitoring.py --promtool "$(command -v promtool)" --kubectl "$kubectl" "$@"
