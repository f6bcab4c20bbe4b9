#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
#
# Make a fresh Debian machine (as root) ready to test the collection: install
# the Debian packages the tests need when they are missing, and start a Docker
# engine when none answers. An engine that is already running is left alone.
set -euo pipefail

PACKAGES=(
  docker.io debootstrap iptables iproute2 conntrack
  openssh-client openssh-server tmux mosh locales
  docker-registry apache2-utils gnupg dpkg-dev openssl curl rsync
  chromium
)

log() { printf '[ensure_host] %s\n' "$*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "missing packages ${missing[*]}; run as root"; exit 2; }
  log "installing ${missing[*]}"
  apt-get update -qq
  NEEDRESTART_SUSPEND=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The host's own sshd is not needed by the tests; only its binaries are.
systemctl disable --now ssh >/dev/null 2>&1 || true

if docker info >/dev/null 2>&1; then
  log "docker engine already running"
  exit 0
fi
log "starting dockerd"
setsid dockerd >/var/log/unbroken-dockerd.log 2>&1 </dev/null &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then log "docker engine answers"; exit 0; fi
  sleep 1
done
log "dockerd did not answer within 60 s; see /var/log/unbroken-dockerd.log"
tail -n 20 /var/log/unbroken-dockerd.log >&2
exit 1
