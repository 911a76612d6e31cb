#!/usr/bin/env bash
# Every check of the project, in the order a failure is cheapest to find. This is the test
# command the README gives and CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null; then
  echo "error: cargo is not installed; get the Rust toolchain from https://rustup.rs" >&2
  exit 1
fi

step "PostgreSQL and RabbitMQ on 127.0.0.1"
Scripts/ensure-services.sh

step "formatting (cargo fmt --check)"
cargo fmt --all --check

step "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit and integration tests (cargo test)"
cargo test --workspace --locked

step "all checks passed"
