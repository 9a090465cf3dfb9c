#!/bin/bash
# setup-host.sh - kernel and host settings ferry's containers and tests rely on (idempotent).
set -euo pipefail
# Unprivileged containers map root to host uid 1000000; root may write any map, but keep entries so tools
# like lxc-usernsexec agree.
grep -q '^root:1000000:1000000000' /etc/subuid 2>/dev/null || echo 'root:1000000:1000000000' >> /etc/subuid
grep -q '^root:1000000:1000000000' /etc/subgid 2>/dev/null || echo 'root:1000000:1000000000' >> /etc/subgid
# Loop devices for btrfs pools on loop files.
modprobe loop 2>/dev/null || true
modprobe btrfs 2>/dev/null || true
exit 0
