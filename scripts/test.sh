#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test in the workspace.
# Installs what it needs by itself: the rustfmt and clippy components, kcat (apt) and a Python
# venv with the client libraries (scripts/test-env.sh).
# Usage: scripts/test.sh            (from anywhere; CI runs it through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s ==\n' "$*"; }

ensure_component() {
  if ! cargo "$1" --version >/dev/null 2>&1; then
    step "installing rustup component $2"
    rustup component add "$2"
  fi
}
ensure_component fmt rustfmt
ensure_component clippy clippy

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (debug: assertions on)"
cargo test --workspace --locked

step "engine stress test (release: more bytes through direct I/O + sendfile)"
cargo test --release --locked -p runnel-engine --test sendfile_stress

step "integration tests: the real runnel binary driven by kcat and Python clients"
scripts/test-env.sh
cargo build --locked -p runnel-bin --bin runnel --bin runnel-load
.venv/bin/python -m pytest -q tests
