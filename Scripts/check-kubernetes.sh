#!/usr/bin/env bash
# The Kubernetes deliverables (Manifests/, Vagrantfile, orchestrator.sh), checked without a
# cluster, a VM or a registry:
#
#   1. render      kubectl kustomize, for each layout: Manifests/ (the default),
#                  Manifests/overlays/ha (RabbitMQ cluster) and Manifests/overlays/https (the
#                  Ingress component)
#   2. validate    each render against the Kubernetes API schemas, strictly (unknown fields
#                  fail), for the oldest and the newest supported version
#   3. policy      checkov on each render; every skipped check carries its reason
#   4. shellcheck  orchestrator.sh and the scripts here
#   5. Vagrantfile Ruby syntax
#   6. contract    each render x docker-compose.yml x the services' own configuration
#   7. unit tests  the contract's own tests, orchestrator.sh dry runs, the Vagrantfile
#
# Installs what it needs (Debian's kubectl and ruby when missing and root; Python tools in a
# cached virtualenv) and runs every check even after a failure. Exit status 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
# No __pycache__ directories in the work tree.
export PYTHONDONTWRITEBYTECODE=1

# Supported Kubernetes versions: 1.30 runs the preStop `sleep` action by default (beta), 1.37
# is the newest schema kubernetes-validate knows.
readonly OLDEST_K8S=1.30.0
readonly NEWEST_K8S=1.37.0
readonly REQUIREMENTS=Scripts/k8s/requirements.txt
# Beside the lint tools of the other checks, under target/ (git-ignored; cargo clean resets it).
VENV=${K8S_CHECK_VENV:-$PWD/target/k8s-check-venv}

step() { printf '\n==> %s\n' "$*"; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

results=()
failures=0
# check NAME COMMAND...: run one check, remember its outcome, carry on either way.
check() {
  local name=$1
  shift
  step "$name"
  if "$@"; then
    results+=("  ok    $name")
  else
    results+=("  FAIL  $name")
    failures=$((failures + 1))
    printf 'FAILED: %s\n' "$name"
  fi
}

# --- tools -----------------------------------------------------------------------------------

apt_install() {
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    die "$1 is missing; install Debian's $2 package (apt-get install $2)"
  fi
  echo "installing Debian's $2 ($1)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}

ensure_tools() {
  step "tools"
  # Debian names its kubectl package kubernetes-client. Its kustomize (kubectl 1.20) renders
  # Manifests/ but not the overlays' components and replicas fields, which need kubectl 1.21+
  # (any kubectl of a supported Kubernetes has them).
  command -v kubectl >/dev/null || apt_install kubectl kubernetes-client
  command -v ruby >/dev/null || apt_install ruby ruby
  command -v python3 >/dev/null || apt_install python3 python3-venv
  command -v cargo >/dev/null || die "cargo is missing (https://rustup.rs): the contract runs the services' binaries"

  # The Python tools, reinstalled only when requirements.txt changes.
  local stamp
  stamp=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
  if [[ ! -x $VENV/bin/python || $(cat "$VENV/.requirements" 2>/dev/null) != "$stamp" ]]; then
    echo "installing $(grep -c '==' "$REQUIREMENTS") pinned Python tools into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$stamp" >"$VENV/.requirements"
  fi
  echo "kubectl $(kubectl version --client 2>/dev/null | head -1 | sed 's/^Client Version: //')," \
    "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | tail -1)," \
    "checkov $("$VENV/bin/checkov" --version 2>/dev/null)," \
    "$("$VENV/bin/shellcheck" --version | sed -n 's/^version: /shellcheck /p')," \
    "$(ruby --version | cut -d' ' -f1-2)"

  # The contract asks the services which variables they read (`<binary> config`).
  cargo build --locked --quiet --bins -p api-gateway -p inventory-app -p billing-app
}

# --- checks ----------------------------------------------------------------------------------

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Every layout a user can apply, each checked in full.
readonly LAYOUTS="Manifests Manifests/overlays/ha Manifests/overlays/https"

rendered() { echo "$WORK/$(tr / _ <<<"$1").yaml"; }

render() {
  local layout=$1 out
  out=$(rendered "$layout")
  kubectl kustomize "$layout/" >"$out" || return 1
  echo "$(grep -c '^kind:' "$out") objects:" \
    "$(grep '^kind:' "$out" | sort | uniq -c | awk '{ printf "%s%s %s", sep, $1, $3; sep = ", " }')"
}

validate() {
  local layout=$1 version=$2 out RENDERED
  RENDERED=$(rendered "$layout")
  [[ -s $RENDERED ]] || return 1
  # --strict: a field the API does not have is an error, not silently dropped by the server.
  if out=$("$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$version" "$RENDERED" 2>&1); then
    echo "$(grep -c '^INFO .* passed' <<<"$out") objects valid against Kubernetes $version"
  else
    grep -v '^INFO' <<<"$out"
    return 1
  fi
}

policy() {
  local RENDERED
  RENDERED=$(rendered "$1")
  [[ -s $RENDERED ]] || return 1
  # Every skip is an annotation next to the workload it concerns, with its reason after "=".
  local unjustified
  unjustified=$(grep -rhn --include='*.yaml' 'checkov.io/skip' Manifests | grep -Ev 'checkov.io/skip[0-9]+: CKV2?_K8S_[0-9]+=.{20,}' || true)
  if [[ -n $unjustified ]]; then
    echo "checkov skips without a reason:"
    echo "$unjustified"
    return 1
  fi
  # --skip-download: no calls to the vendor's servers; the checks ship with the package.
  "$VENV/bin/checkov" --file "$RENDERED" --framework kubernetes --skip-download --compact --quiet \
    --output cli 2>&1 | sed '/^$/d'
  local status=${PIPESTATUS[0]}
  echo "skipped, with reasons: $(grep -o 'checkov.io/skip[0-9]*: CKV[A-Z0-9_]*' "$RENDERED" |
    awk '{print $2}' | sort | uniq -c | awk '{ printf "%s%s x%s", sep, $2, $1; sep = ", " }')"
  return "$status"
}

lint_shell() {
  "$VENV/bin/shellcheck" orchestrator.sh Scripts/check-kubernetes.sh Scripts/k8s/vagrant/*.sh &&
    echo "orchestrator.sh, Scripts/check-kubernetes.sh, Scripts/k8s/vagrant/*.sh: clean"
}

vagrantfile_syntax() { ruby -c Vagrantfile; }

contract() {
  local RENDERED
  RENDERED=$(rendered "$1")
  [[ -s $RENDERED ]] || return 1
  "$VENV/bin/python" Scripts/k8s/contract.py "$RENDERED"
}

unit_tests() {
  K8S_RENDERED=$(rendered Manifests) K8S_RENDERED_HA=$(rendered Manifests/overlays/ha) \
    K8S_RENDERED_HTTPS=$(rendered Manifests/overlays/https) \
    "$VENV/bin/python" -m unittest discover --start-directory Scripts/k8s \
    --pattern 'test_*.py' 2>&1 | tail -n 4
  return "${PIPESTATUS[0]}"
}

ensure_tools
for layout in $LAYOUTS; do
  check "render: kubectl kustomize $layout/" render "$layout"
  check "validate $layout: kubernetes-validate --strict, Kubernetes $OLDEST_K8S (oldest supported)" validate "$layout" "$OLDEST_K8S"
  check "validate $layout: kubernetes-validate --strict, Kubernetes $NEWEST_K8S (newest supported)" validate "$layout" "$NEWEST_K8S"
  check "policy $layout: checkov (Kubernetes checks)" policy "$layout"
  check "contract $layout: manifests, docker-compose.yml and the services agree" contract "$layout"
done
check "shellcheck" lint_shell
check "Vagrantfile: ruby -c" vagrantfile_syntax
check "unit tests: contract checks, orchestrator.sh dry runs, Vagrantfile" unit_tests

step "summary"
printf '%s\n' "${results[@]}"
echo "kubernetes checks: $((${#results[@]} - failures)) passed, $failures failed"
((failures == 0))
