#!/usr/bin/env bash
# Install Debian's Chromium for the marketplace's browser tests, once (idempotent).
# The tests skip without it, except under CI=true where they fail.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "chromium is missing; install it with: sudo apt-get install -y chromium" >&2
  exit 0
fi
echo "== installing chromium (for tests/registry/test_web.py)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
