#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
#
# The embedded default: a local container stands in for a GPU node (CPU only) and
# site.yml turns it into one that runs the reference training job, checkpointing.
#
#   bash demo/run.sh up       (make demo)       set everything up, converge, show the job
#   bash demo/run.sh status                     the job's status table again
#   bash demo/run.sh report                     write .cache/demo/demo-report.html (loss, samples/s)
#   bash demo/run.sh down     (make demo-down)  remove the container, its volume and cache
#
# Needs a Debian machine and root (it installs the Docker engine when missing, like
# `make test`). Everything it creates is named unbroken-demo-*.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
NODE=unbroken-demo-node
VOLUME=unbroken-demo-node-var-lib-docker
NODE_IMAGE=${UNBROKEN_DEMO_NODE_IMAGE:-unbroken-test/debian12-docker:latest}
TRAINING_IMAGE=${UNBROKEN_DEMO_TRAINING_IMAGE:-unbroken-test/pytorch-cpu:latest}
CACHE=$root/.cache/demo
JOB=demo
UNIT=unbroken-job-$JOB.service

say() { printf '\n\033[1m[demo] %s\033[0m\n' "$*"; }
die() { printf '[demo] error: %s\n' "$*" >&2; exit 1; }

ansible_env() {
  export ANSIBLE_COLLECTIONS_PATH=$root/.cache/collections
  export ANSIBLE_CALLBACK_RESULT_FORMAT=yaml
  export ANSIBLE_DISPLAY_SKIPPED_HOSTS=false
  export ANSIBLE_RETRY_FILES_ENABLED=false
  export PATH=$root/.venv/bin:$PATH
}

prepare_machine() {
  [ "$(id -u)" = 0 ] || die "run as root: the demo installs and starts a Docker engine when missing"
  say "Checking the machine: Docker engine, virtualenv with Ansible, local images"
  "$root/tests/harness/ensure_host.sh"
  python3 "$root/tests/harness/ensure_venv.py"
  "$root/tests/harness/build_images.sh"
  local link=$root/.cache/collections/ansible_collections/unbroken/training
  mkdir -p "$(dirname "$link")"
  [ -L "$link" ] || ln -s ../../../.. "$link"
}

node_running() { [ "$(docker inspect -f '{{.State.Running}}' "$NODE" 2>/dev/null)" = true ]; }

# Every capability except SYS_RESOURCE (which this kind of VM lacks), never --privileged.
DIND_CAPS=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
  LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER
  SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_TIME
  SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
  WAKE_ALARM BLOCK_SUSPEND AUDIT_READ)

start_node() {
  if node_running; then
    say "The stand-in GPU node $NODE is already running"
  else
    docker rm -f "$NODE" >/dev/null 2>&1 || true
    say "Starting the stand-in GPU node $NODE (systemd + its own Docker engine, no GPU)"
    local caps=()
    for c in "${DIND_CAPS[@]}"; do caps+=(--cap-add "$c"); done
    docker run -d --name "$NODE" --hostname "$NODE" "${caps[@]}" \
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
      --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw -v "$VOLUME:/var/lib/docker" \
      --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
      "$NODE_IMAGE" /lib/systemd/systemd >/dev/null
  fi
  local i
  for i in $(seq 1 90); do
    if docker exec "$NODE" docker info >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  docker logs --tail 30 "$NODE" >&2 || true
  die "the Docker engine inside $NODE did not answer within 90 s"
}

# The training image goes to the node the air-gapped way: a `docker save` tarball on this
# machine that the pytorch_image role copies, loads and checks by image ID.
stage_image() {
  local id tar
  id=$(docker image inspect -f '{{.Id}}' "$TRAINING_IMAGE" 2>/dev/null) \
    || die "image $TRAINING_IMAGE is missing (tests/harness/build_images.sh builds it)"
  tar=$CACHE/pytorch-cpu-${id#sha256:}.tar
  mkdir -p "$CACHE"
  if [ ! -s "$tar" ]; then
    say "Saving $TRAINING_IMAGE to $tar (the offline image the role will load)"
    rm -f "$CACHE"/pytorch-cpu-*.tar
    docker save -o "$tar.partial" "$TRAINING_IMAGE"
    mv "$tar.partial" "$tar"
  fi
  printf -- '---\npytorch_image_archive_path: %s\npytorch_image_id: "%s"\n' "$tar" "$id" \
    >"$CACHE/image-vars.yml"
}

converge() {
  say "Running site.yml against the stand-in node (ansible-playbook site.yml -i demo/inventory)"
  echo "    nvidia_container_toolkit is switched off in the demo: there is no GPU and NVIDIA's"
  echo "    packages are not installable here. Everything else runs as on a real GPU node."
  (cd "$root" && ansible-playbook site.yml -i demo/inventory -e "@$CACHE/image-vars.yml" "$@")
}

wait_for_checkpoint() {
  local i
  for i in $(seq 1 60); do
    if docker exec "$NODE" sh -c 'ls -d /srv/unbroken-demo/checkpoints/step-* >/dev/null 2>&1'; then
      return 0
    fi
    sleep 2
  done
  echo "    (no checkpoint yet after 120 s; see the journal command below)"
}

status() {
  (cd "$root" && ansible-playbook playbooks/status.yml -i demo/inventory)
}

report() {
  (cd "$root" && ansible-playbook playbooks/report.yml -i demo/inventory \
    -e "unbroken_report_path=$CACHE/demo-report.html")
}

explain() {
  cat <<EOF

$(printf '\033[1m')The reference training job runs on $NODE and checkpoints every 200 steps.$(printf '\033[0m')

  Watch it:                docker exec $NODE journalctl -fu $UNIT
  Its status table:        bash demo/run.sh status
  Kill it, see it resume:  docker exec $NODE docker kill -s KILL unbroken-job-$JOB
                           (systemd restarts it; it resumes from the newest valid checkpoint:
                            watch for "resumed" in the journal, then run the status again)
  Stop it gracefully:      docker exec $NODE systemctl stop $UNIT   (checkpoints first)
  Report with curves:      bash demo/run.sh report   (writes .cache/demo/demo-report.html)
  Log in to the node:      docker exec -it $NODE bash
  Tear it all down:        make demo-down

Not real here: no GPU (the job trains on CPU) and no NVIDIA Container Toolkit (the role is
switched off in demo/inventory); the image came from a local tarball instead of a registry.
EOF
}

down() {
  [ "$(id -u)" = 0 ] || die "run as root"
  say "Removing $NODE, its Docker volume and the demo cache"
  docker rm -f "$NODE" >/dev/null 2>&1 || true
  docker volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  rm -rf "$CACHE"
  echo "    done"
}

main() {
  local action=${1:-up}
  shift || true
  ansible_env
  case $action in
    up)
      prepare_machine
      start_node
      stage_image
      converge "$@"
      wait_for_checkpoint
      say "Status of the training job"
      status
      explain
      ;;
    status) node_running || die "$NODE is not running (make demo)"; status ;;
    report) node_running || die "$NODE is not running (make demo)"; report ;;
    down) down ;;
    *) die "usage: bash demo/run.sh up|status|report|down" ;;
  esac
}

main "$@"
