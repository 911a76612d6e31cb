#!/usr/bin/env bash
# Provisions the "master" VM: K3s server (control plane, also runs workloads), then shares the
# node token (for the agent) and a kubeconfig pointing at this VM (for the host) through the
# synced folder. Run as root by Vagrant (see Vagrantfile); safe to run again.
set -euo pipefail

: "${K3S_VERSION:?}" "${NODE_IP:?}" "${SHARED_DIR:?}"

# VirtualBox gives every VM the same NAT address on the first interface; K3s must use the
# private network's interface, whatever the box names it (eth1, enp0s8, ...).
iface=$(ip -o -4 addr show | awk -v ip="$NODE_IP" '{ split($4, a, "/") } a[1] == ip { print $2; exit }')
if [[ -z $iface ]]; then
  echo "k3s-server: no network interface has the address $NODE_IP" >&2
  exit 1
fi

if ! systemctl is-active --quiet k3s; then
  # The install script of the same release as the binary (a "+" in a URL path is "%2B").
  curl -sfL --retry 5 -o /tmp/k3s-install.sh \
    "https://raw.githubusercontent.com/k3s-io/k3s/${K3S_VERSION/+/%2B}/install.sh"
  # K3s's Traefik stays (its default): it serves the optional Ingress (HTTPS on ports 80/443
  # of both nodes, ORCHESTRATOR_INGRESS=1); the gateway's NodePort 30000 works without it.
  INSTALL_K3S_VERSION="$K3S_VERSION" \
    INSTALL_K3S_EXEC="server --node-ip=$NODE_IP --advertise-address=$NODE_IP --tls-san=$NODE_IP --flannel-iface=$iface --write-kubeconfig-mode=0600" \
    sh /tmp/k3s-install.sh
fi

for _ in $(seq 1 60); do
  [[ -s /var/lib/rancher/k3s/server/node-token && -s /etc/rancher/k3s/k3s.yaml ]] && break
  sleep 2
done

mkdir -p "$SHARED_DIR"
cp /var/lib/rancher/k3s/server/node-token "$SHARED_DIR/node-token"
# The host reaches the API server on the private network, not on the VM's loopback.
sed "s#https://127.0.0.1:6443#https://$NODE_IP:6443#" /etc/rancher/k3s/k3s.yaml >"$SHARED_DIR/kubeconfig"
echo "k3s-server: K3s $K3S_VERSION running on $NODE_IP ($iface)"
