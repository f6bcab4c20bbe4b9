#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
#
# Test the floor that meta/runtime.yml claims (requires_ansible) with the ansible-core in
# tests/harness/requirements-floor.txt, in a virtualenv of its own (.cache/venv-floor):
#   1. ansible-test sanity: ansible-doc, validate-modules, runtime-metadata;
#   2. sshd_keepalive converged on a Debian 12 systemd container, its own verify included,
#      then once more, which must change nothing.
# The dependency collections (community.docker for the connection) come from .venv's
# `ansible` package; their versions admit this ansible-core.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/tests/harness"
venv="$root/.cache/venv-floor"
container=ut-floor-1
image=${UNBROKEN_MOLECULE_IMAGE_1:-unbroken-test/debian12-systemd:latest}

pins=$(grep -vE '^\s*(#|$)' "$here/requirements-floor.txt" | tr '\n' ' ')
UNBROKEN_SANITY_VENV=$venv UNBROKEN_SANITY_CORE=$pins \
  UNBROKEN_SANITY_REQUIREMENTS="ansible-doc runtime-metadata validate-modules" \
  "$here/sanity.sh" --test ansible-doc --test validate-modules --test runtime-metadata
# sed reads to the end: head would close the pipe early, and pipefail fail the stage.
"$venv/bin/ansible" --version | sed -n 1p

cleanup() { docker rm -f "$container" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
docker run -d --name "$container" --cap-add SYS_ADMIN \
  --tmpfs /run --tmpfs /run/lock --tmpfs /tmp -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
  "$image" /lib/systemd/systemd >/dev/null
# Readiness, with a budget: systemd reports running (or degraded: a unit it does not need).
for _ in $(seq 1 60); do
  state=$(docker exec "$container" systemctl is-system-running 2>/dev/null || true)
  case $state in running | degraded) break ;; esac
  sleep 1
done
echo "$container: systemd $state"

collections=$("$root/.venv/bin/python" -c 'import ansible_collections,os;print(os.path.dirname(list(ansible_collections.__path__)[0]))')
export ANSIBLE_COLLECTIONS_PATH="$root/.cache/collections:$collections"
export ANSIBLE_INTERPRETER_PYTHON=auto_silent ANSIBLE_PIPELINING=true
playbook=("$venv/bin/ansible-playbook" -i "$container," -c community.docker.docker
  "$here/floor/converge.yml")

"${playbook[@]}"
second=$("${playbook[@]}")
echo "$second" | tail -n 4
if ! grep -Eq "$container +: ok=[0-9]+ +changed=0 .*failed=0" <<<"$second"; then
  echo "the second converge on the floor ansible-core changed something or failed" >&2
  exit 1
fi
interval=$(docker exec "$container" sshd -T | awk '$1 == "clientaliveinterval" {print $2}')
echo "effective ClientAliveInterval: $interval"
[ "${interval:-0}" -gt 0 ]
