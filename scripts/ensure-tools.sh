#!/usr/bin/env bash
# Install the command-line tools some tests use, once (idempotent): dig (bind9-dnsutils) for
# tests/discovery/test_dns_sd_interop.py. The tests skip without them, except under CI=true.
set -euo pipefail
if command -v dig >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "dig is missing; install it with: sudo apt-get install -y bind9-dnsutils" >&2
  exit 0
fi
echo "== installing bind9-dnsutils (dig, for tests/discovery/test_dns_sd_interop.py)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bind9-dnsutils >/dev/null
