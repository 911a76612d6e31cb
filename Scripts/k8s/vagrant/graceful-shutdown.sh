#!/usr/bin/env bash
# Provisions both VMs, before K3s: the kubelet's graceful node shutdown, so that `vagrant halt`
# (./orchestrator.sh stop) stops every pod with SIGTERM and its grace period before the VM powers
# off. Without it K3s leaves its containers running when the VM shuts down, and PostgreSQL and
# RabbitMQ are cut off mid-write at every stop. Run as root by Vagrant (see Vagrantfile); safe to
# run again: it rewrites two small files and restarts a service only when one of them changed.
#
#   /etc/rancher/k3s/config.yaml            K3s's configuration file: the kubelet's
#                                           shutdown-grace-period (all pods) and
#                                           shutdown-grace-period-critical-pods (the part of it
#                                           kept for system-critical pods, which stop last)
#   /etc/systemd/logind.conf.d/zz-...conf   how long logind lets the kubelet's inhibitor lock
#                                           delay a shutdown (InhibitDelayMaxSec); logind's 5 s
#                                           default, or Ubuntu's unattended-upgrades drop-in
#                                           (30 s), would cut the grace period short
#
# Vagrant's halt timeout (config.vm.graceful_halt_timeout in the Vagrantfile) is longer than the
# grace period, so Vagrant never powers a VM off while its pods are still stopping.
set -euo pipefail

: "${SHUTDOWN_GRACE_PERIOD:?seconds}" "${SHUTDOWN_GRACE_PERIOD_CRITICAL_PODS:?seconds}"
K3S_CONFIG_DIR=${K3S_CONFIG_DIR:-/etc/rancher/k3s}
LOGIND_CONF_DIR=${LOGIND_CONF_DIR:-/etc/systemd/logind.conf.d}

if ((SHUTDOWN_GRACE_PERIOD_CRITICAL_PODS >= SHUTDOWN_GRACE_PERIOD)); then
  echo "graceful-shutdown: the critical pods' share ($SHUTDOWN_GRACE_PERIOD_CRITICAL_PODS s) must be less than the grace period ($SHUTDOWN_GRACE_PERIOD s)" >&2
  exit 1
fi

# write_if_changed FILE: stdin into FILE; status 0 when FILE changed, 1 when it already said so.
write_if_changed() {
  local file=$1 new
  new=$(cat)
  if [[ -f $file && $(cat "$file") == "$new" ]]; then
    return 1
  fi
  mkdir -p "$(dirname "$file")"
  printf '%s\n' "$new" >"$file"
}

# A name that sorts after every other drop-in (logind reads them in lexical order, the last
# one wins): unattended-upgrades' own file is called unattended-upgrades-logind-maxdelay.conf.
# A few seconds more than the grace period, for the kubelet to release its lock.
if write_if_changed "$LOGIND_CONF_DIR/zz-k3s-graceful-node-shutdown.conf" <<CONF; then
# Written by Scripts/k8s/vagrant/graceful-shutdown.sh (Vagrant provisioning).
[Login]
InhibitDelayMaxSec=$((SHUTDOWN_GRACE_PERIOD + 10))
CONF
  systemctl restart systemd-logind
  echo "graceful-shutdown: logind lets a shutdown wait up to $((SHUTDOWN_GRACE_PERIOD + 10)) s"
fi

if write_if_changed "$K3S_CONFIG_DIR/config.yaml" <<CONF; then
# Written by Scripts/k8s/vagrant/graceful-shutdown.sh (Vagrant provisioning).
kubelet-arg:
  - "shutdown-grace-period=${SHUTDOWN_GRACE_PERIOD}s"
  - "shutdown-grace-period-critical-pods=${SHUTDOWN_GRACE_PERIOD_CRITICAL_PODS}s"
CONF
  # K3s reads the file at start: an installed K3s (a re-provisioned VM) restarts to apply it.
  # Its containers keep running across the restart.
  for unit in k3s k3s-agent; do
    if systemctl is-active --quiet "$unit"; then
      systemctl restart "$unit"
    fi
  done
  echo "graceful-shutdown: kubelet shutdown-grace-period ${SHUTDOWN_GRACE_PERIOD}s (${SHUTDOWN_GRACE_PERIOD_CRITICAL_PODS}s of it for critical pods)"
fi
echo "graceful-shutdown: pods get ${SHUTDOWN_GRACE_PERIOD}s to stop when the VM shuts down"
