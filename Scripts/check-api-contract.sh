#!/usr/bin/env bash
# The API contract: schemathesis generates requests from api-gateway/openapi.json (valid ones,
# and invalid ones that the document forbids) and sends them to the three services running
# natively, with every check it has: no 5xx, only documented statuses, content types, headers
# and bodies as documented, invalid data refused, valid data accepted. Any finding fails.
#
# Reproducible and bounded: a fixed seed (CONTRACT_SEED) and at most CONTRACT_MAX_EXAMPLES
# cases per operation and phase. The services get fresh databases and a fresh queue, removed
# afterwards; reports (JUnit, and the failing cases as curl commands) go to
# target/api-contract/.
set -euo pipefail
cd "$(dirname "$0")/.."

SEED=${CONTRACT_SEED:-20240601}
MAX_EXAMPLES=${CONTRACT_MAX_EXAMPLES:-300}
SCHEMATHESIS_VERSION=4.32.5

# shellcheck source=Scripts/lib/python-tools.sh
. Scripts/lib/python-tools.sh
python_tools "schemathesis==$SCHEMATHESIS_VERSION"
# shellcheck source=Scripts/lib/native-stack.sh
. Scripts/lib/native-stack.sh
# The services' request log is not what this check is about; their warnings and errors are.
RUST_LOG=warn stack_start api-contract

report=target/api-contract
rm -rf "$report/schemathesis"
started=$(date +%s)
status=0
# --workers 1: the movie operations share one table, so cases running at once could see each
# other's rows (a DELETE of all movies between a POST and its GET, say).
schemathesis run api-gateway/openapi.json \
  --url "$STACK_URL" \
  --checks all \
  --mode all \
  --phases examples,coverage,fuzzing \
  --max-examples "$MAX_EXAMPLES" \
  --seed "$SEED" \
  --workers 1 \
  --request-timeout 10 \
  --suppress-health-check too_slow \
  --report junit \
  --report-dir "$report/schemathesis" \
  --warnings off ||
  status=$?
echo "schemathesis: $(($(date +%s) - started)) s, seed $SEED, at most $MAX_EXAMPLES cases per operation and phase"

if grep -h -E ' (ERROR|WARN)' "$STACK_LOGS"/*.log >"$report/service-warnings.txt"; then
  echo "the services logged warnings or errors meanwhile (also in $report/service-warnings.txt):" >&2
  head -20 "$report/service-warnings.txt" >&2
fi
if [ "$status" != 0 ]; then
  echo "error: the services and api-gateway/openapi.json disagree (see above; JUnit report in $report/schemathesis)" >&2
  exit "$status"
fi
echo "the API contract holds: api-gateway/openapi.json and the services agree"
