#!/usr/bin/env bash
# Makes sure the PostgreSQL and RabbitMQ that the tests and benchmarks use answer on
# 127.0.0.1:5432 (user postgres, trust authentication) and 127.0.0.1:5672 (guest/guest).
# Starts them when installed but stopped; installs them from Debian packages when running as
# root on Debian; otherwise stops with one line saying what to do.
set -euo pipefail

listening() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_for_port() { # port name
  for _ in $(seq 1 60); do
    listening "$1" && return 0
    sleep 1
  done
  echo "error: $2 did not start listening on 127.0.0.1:$1 within 60 s" >&2
  exit 1
}

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_postgres() {
  listening 5432 && return 0
  if ! command -v pg_ctlcluster >/dev/null; then
    if ! can_install; then
      echo "error: PostgreSQL is not reachable on 127.0.0.1:5432; start one that lets user postgres in without a password (trust), or run this script as root on Debian to install it" >&2
      exit 1
    fi
    echo "PostgreSQL: installing Debian's postgresql"
    apt_install postgresql
    # A throw-away test server: trust local TCP connections, as the tests expect.
    local hba
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
      sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    done
  fi
  echo "PostgreSQL: starting"
  local version
  for version in /etc/postgresql/*/; do
    pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start
  done
  wait_for_port 5432 PostgreSQL
}

ensure_rabbitmq() {
  listening 5672 && return 0
  if ! command -v rabbitmq-server >/dev/null; then
    if ! can_install; then
      echo "error: RabbitMQ is not reachable on 127.0.0.1:5672; start one with the guest/guest account, or run this script as root on Debian to install it" >&2
      exit 1
    fi
    echo "RabbitMQ: installing Debian's rabbitmq-server"
    apt_install rabbitmq-server
  fi
  echo "RabbitMQ: starting"
  rabbitmq-server -detached
  wait_for_port 5672 RabbitMQ
}

ensure_postgres
ensure_rabbitmq
