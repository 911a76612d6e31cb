# shellcheck shell=bash
# What the end-to-end scripts share: PASS/FAIL lines with their counts, and a retry helper.
# Sourced; the caller reports "$PASSED passed, $FAILED failed" and fails when FAILED > 0.

PASSED=0
FAILED=0

say() { printf '\n--- %s\n' "$*"; }
pass() { printf 'PASS  %s\n' "$1"; PASSED=$((PASSED + 1)); }
fail() { printf 'FAIL  %s\n' "$1"; FAILED=$((FAILED + 1)); }
# check NAME COMMAND...: one PASS or FAIL line for the command's outcome.
check() {
  local name=$1
  shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}

# eventually SECONDS COMMAND...: retries the command once a second until it succeeds.
eventually() {
  local limit=$1
  shift
  local deadline=$((SECONDS + limit))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 1
  done
}
