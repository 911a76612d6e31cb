#!/usr/bin/env bash
# Provisions the "agent" VM: a K3s agent (worker) joining the server on the master VM with the
# node token the master left in the synced folder. Run as root by Vagrant (see Vagrantfile);
# safe to run again.
set -euo pipefail

: "${K3S_VERSION:?}" "${NODE_IP:?}" "${MASTER_IP:?}" "${SHARED_DIR:?}"

iface=$(ip -o -4 addr show | awk -v ip="$NODE_IP" '{ split($4, a, "/") } a[1] == ip { print $2; exit }')
if [[ -z $iface ]]; then
  echo "k3s-agent: no network interface has the address $NODE_IP" >&2
  exit 1
fi

# Vagrant brings the master up first; wait for its token all the same.
for _ in $(seq 1 150); do
  [[ -s $SHARED_DIR/node-token ]] && break
  sleep 2
done
if [[ ! -s $SHARED_DIR/node-token ]]; then
  echo "k3s-agent: no node token in $SHARED_DIR: is the master VM up?" >&2
  exit 1
fi

if ! systemctl is-active --quiet k3s-agent; then
  curl -sfL --retry 5 -o /tmp/k3s-install.sh \
    "https://raw.githubusercontent.com/k3s-io/k3s/${K3S_VERSION/+/%2B}/install.sh"
  K3S_URL="https://$MASTER_IP:6443" \
    K3S_TOKEN="$(cat "$SHARED_DIR/node-token")" \
    INSTALL_K3S_VERSION="$K3S_VERSION" \
    INSTALL_K3S_EXEC="agent --node-ip=$NODE_IP --flannel-iface=$iface" \
    sh /tmp/k3s-install.sh
fi
echo "k3s-agent: K3s $K3S_VERSION agent on $NODE_IP ($iface) joined https://$MASTER_IP:6443"
