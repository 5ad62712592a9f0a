#!/usr/bin/env bash
# Install the command-line tools some tests use, once (idempotent): dig (bind9-dnsutils) for
# tests/discovery/test_dns_sd_interop.py; iptables and tcpdump for tests/relay/test_netns.py
# (a node behind NAT, a capture on the relay); tmux for tests/observe/test_top.py (the live
# view in a terminal). The tests skip without them, except under CI=true.
set -euo pipefail
missing=()
command -v dig >/dev/null 2>&1 || missing+=(bind9-dnsutils)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v tcpdump >/dev/null 2>&1 || missing+=(tcpdump)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "missing tools; install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 0
fi
echo "== installing ${missing[*]} (for the DNS-SD interop, relay namespace and top terminal tests)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
