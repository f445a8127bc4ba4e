#!/usr/bin/env bash
# Installs everything Berth needs on a fresh Debian machine, idempotently:
# Debian packages (Redis, OpenSSH, Chromium and docker-compose for the deploy
# tests; containerd, runc, CNI plugins, iptables, mmdebstrap and gcc for the
# local real node and its images; busybox, to run a run container's PID 1 script
# as an Alpine image would), a Python venv with Berth in it, and the
# Go-built local cluster (cached under ~/.cache/berth).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_apt=()
for pkg in redis-server openssh-server openssh-client chromium docker-compose \
           containerd runc containernetworking-plugins iptables conntrack iproute2 \
           mmdebstrap gcc libc6-dev tcpdump busybox; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}" >&2
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The packages start system-wide daemons; Berth runs its own on loopback ports.
  $sudo_cmd service redis-server stop >/dev/null 2>&1 || true
  $sudo_cmd service containerd stop >/dev/null 2>&1 || true
fi

stamp=.venv/.berth-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing Python packages into .venv" >&2
  python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -c constraints.txt -e '.[dev]'
  echo "$want" > "$stamp"
fi

command -v go >/dev/null || { echo "Go 1.26 is required to build the local control plane" >&2; exit 1; }
deploy/local-cluster/build.sh >/dev/null
