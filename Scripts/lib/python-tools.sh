# shellcheck shell=bash
# Sourced by the check scripts: a Python virtual environment under target/ holding the
# command-line tools the checks need (shellcheck, hadolint, kubernetes-validate, ...), so a
# fresh machine gets them with nothing but python3, and a second run installs nothing.

TOOLS_VENV="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/tools-venv"

# python_tools PACKAGE...: makes sure the packages are installed and their commands on PATH.
python_tools() {
  if [ ! -x "$TOOLS_VENV/bin/pip" ]; then
    python3 -m venv "$TOOLS_VENV" || {
      echo "error: cannot create a Python virtual environment; install python3-venv" >&2
      return 1
    }
  fi
  local missing=() package
  for package in "$@"; do
    "$TOOLS_VENV/bin/pip" show -q "${package%%[=<>]*}" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} into $TOOLS_VENV"
    "$TOOLS_VENV/bin/pip" install -q --disable-pip-version-check "${missing[@]}"
  fi
  export PATH="$TOOLS_VENV/bin:$PATH"
}
