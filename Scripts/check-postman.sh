#!/usr/bin/env bash
# Runs the Postman collection (postman/) with newman against a running system and fails on any
# failed assertion.
#
#   Scripts/check-postman.sh BASE_URL   against a running gateway, e.g. http://localhost:3000
#                                       (Compose) or http://NODE_IP:30000 (Kubernetes)
#   Scripts/check-postman.sh            starts the three services natively first, with fresh
#                                       databases and a fresh queue (what Scripts/test.sh does)
#
# The collection deletes every movie on its way (it tests DELETE /api/movies) and leaves the
# acceptance scenario's movie and orders behind: run it against a fresh stack, never one whose
# data matters. billing-app must be running: the collection waits for an order to be stored.
# newman comes from npm, installed once under target/newman; the JUnit report goes to
# target/postman/.
set -euo pipefail
cd "$(dirname "$0")/.."

NEWMAN_VERSION=6.2.2
newman=target/newman/node_modules/.bin/newman
if [ ! -x "$newman" ] || [ "$("$newman" --version)" != "$NEWMAN_VERSION" ]; then
  command -v npm >/dev/null || {
    echo "error: npm is missing (Debian package npm, or Node.js from nodejs.org)" >&2
    exit 1
  }
  echo "installing newman $NEWMAN_VERSION into target/newman"
  mkdir -p target/newman
  npm install --prefix target/newman --no-audit --no-fund --loglevel=error "newman@$NEWMAN_VERSION"
fi

base_url=${1:-}
if [ -z "$base_url" ]; then
  # shellcheck source=Scripts/lib/native-stack.sh
  . Scripts/lib/native-stack.sh
  RUST_LOG=warn stack_start postman
  base_url=$STACK_URL
fi

mkdir -p target/postman
started=$(date +%s)
"$newman" run postman/microservices.postman_collection.json \
  --environment postman/compose.postman_environment.json \
  --env-var "baseUrl=${base_url%/}" \
  --timeout-request 15000 \
  --reporters cli,junit \
  --reporter-junit-export target/postman/junit.xml \
  --color off
echo "the Postman collection passed against $base_url in $(($(date +%s) - started)) s"
