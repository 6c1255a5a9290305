#!/usr/bin/env bash
# Installs what the integration tests need, idempotently: a Python venv (.venv) with the pinned
# clients, and kcat from Debian. Java tool jars are fetched by scripts/kafka-jars.sh when present.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kcat >/dev/null 2>&1; then
  echo "== installing kcat (apt)"
  if ! apt-get install -y kcat >/dev/null 2>&1; then
    apt-get update >/dev/null
    apt-get install -y kcat >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ] || ! cmp -s tests/requirements.txt .venv/.requirements 2>/dev/null; then
  echo "== creating .venv with the test clients"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt .venv/.requirements
fi

if [ -x scripts/kafka-jars.sh ]; then
  scripts/kafka-jars.sh
fi
