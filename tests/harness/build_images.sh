#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
#
# Build the local, systemd-capable Debian test images that the Molecule
# scenarios use (no container registry is needed). Each image is tagged with a
# hash of its recipe; a warm rerun whose recipe did not change skips the build.
#
#   unbroken-test/debian12-systemd   Debian 12 (bookworm) + systemd + python3
#   unbroken-test/debian13-systemd   Debian 13 (trixie)   + systemd + python3
#   unbroken-test/debian12-docker    debian12-systemd + Docker engine (for
#                                    Docker-in-Docker scenarios)
#
# The Debian mirror is read from this machine's apt sources at run time.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
INCLUDE="python3,python3-apt,systemd,systemd-sysv,dbus,sudo,ca-certificates,iproute2,procps,openssh-client,gnupg,curl"

TORCH_VERSION=${UNBROKEN_TORCH_VERSION:-2.13.0}

log() { printf '[build_images] %s\n' "$*" >&2; }

debian_mirror() {
  if [ -n "${UNBROKEN_DEBIAN_MIRROR:-}" ]; then
    echo "$UNBROKEN_DEBIAN_MIRROR"; return
  fi
  local url=""
  # deb822 sources first, then the one-line format.
  url=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | grep -E '/debian/?$' | head -n1 || true)
  if [ -z "$url" ] && [ -f /etc/apt/sources.list ]; then
    url=$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' \
          /etc/apt/sources.list || true)
  fi
  if [ -z "$url" ]; then
    log "cannot find a Debian mirror in /etc/apt/sources*; set UNBROKEN_DEBIAN_MIRROR"; exit 2
  fi
  echo "${url%/}"
}

# Bump when the rootfs recipe in build_base changes (the hash covers the rest).
RECIPE_VERSION=1

recipe_hash() { # parts of the recipe...
  printf '%s\n' "$RECIPE_VERSION" "$@" | sha256sum | cut -c1-16
}

prune_old() { # name current-tag: drop older recipe builds of the same image
  docker images --format '{{.Repository}}:{{.Tag}}' "unbroken-test/$1" \
    | grep -v -e ":latest$" -e "^$2$" | xargs -r docker rmi >/dev/null 2>&1 || true
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_base() { # name suite
  local name=$1 suite=$2 tag hash dir mirror
  hash=$(recipe_hash "$suite" "$INCLUDE" "$(declare -f build_base)")
  tag="unbroken-test/$name:$hash"
  if have_image "$tag"; then
    log "$tag is cached"; docker tag "$tag" "unbroken-test/$name:latest"; return
  fi
  mirror=$(debian_mirror)
  dir=$(mktemp -d /var/tmp/unbroken-rootfs.XXXXXX)
  log "debootstrap $suite from $mirror into $dir"
  debootstrap --variant=minbase --include="$INCLUDE" "$suite" "$dir" "$mirror" >"$dir.log" 2>&1 \
    || { tail -n 30 "$dir.log" >&2; rm -rf "$dir" "$dir.log"; exit 1; }
  rm -f "$dir.log"
  # The same mirror inside the image, so apt works in test containers.
  printf 'deb %s %s main\n' "$mirror" "$suite" >"$dir/etc/apt/sources.list"
  rm -f "$dir"/etc/apt/sources.list.d/*.sources
  # Containers need no getty, and a quiet, fast boot.
  for unit in getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
              systemd-logind.service; do
    ln -sf /dev/null "$dir/etc/systemd/system/$unit"
  done
  echo 'debian' >"$dir/etc/hostname"
  : >"$dir/etc/machine-id"
  tar -C "$dir" -c . | docker import \
    -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
    - "$tag" >/dev/null
  rm -rf "$dir"
  docker tag "$tag" "unbroken-test/$name:latest"
  prune_old "$name" "$tag"
  log "built $tag"
}

build_docker() { # Docker engine on top of the Debian 12 image (Docker-in-Docker)
  local base_id hash tag
  base_id=$(docker image inspect -f '{{.Id}}' unbroken-test/debian12-systemd:latest)
  hash=$(recipe_hash docker "$base_id" "$(cat "$here/Dockerfile.docker")")
  tag="unbroken-test/debian12-docker:$hash"
  if have_image "$tag"; then
    log "$tag is cached"; docker tag "$tag" unbroken-test/debian12-docker:latest; return
  fi
  docker build -q -t "$tag" -f "$here/Dockerfile.docker" "$here" >/dev/null
  docker tag "$tag" unbroken-test/debian12-docker:latest
  prune_old debian12-docker "$tag"
  log "built $tag"
}

build_pytorch() { # CPU torch on Debian 12: the test stand-in for a PyTorch-CUDA image
  local base_id hash tag ctx
  base_id=$(docker image inspect -f '{{.Id}}' unbroken-test/debian12-systemd:latest)
  hash=$(recipe_hash pytorch "$base_id" "$TORCH_VERSION" "$(cat "$here/Dockerfile.pytorch")")
  tag="unbroken-test/pytorch-cpu:$hash"
  if have_image "$tag"; then
    log "$tag is cached"; docker tag "$tag" unbroken-test/pytorch-cpu:latest; return
  fi
  ctx=$(mktemp -d /var/tmp/unbroken-ctx.XXXXXX)
  # Wheels come through the machine's own pip configuration (index, mirrors,
  # local wheel directories), never from a host name written here.
  python3 -m pip download -q --only-binary=:all: --python-version 3.11 \
    -d "$ctx/wheels" "torch==$TORCH_VERSION" numpy >&2
  cp "$here/Dockerfile.pytorch" "$ctx/Dockerfile"
  docker build -q -t "$tag" "$ctx" >/dev/null || { rm -rf "$ctx"; exit 1; }
  rm -rf "$ctx"
  docker tag "$tag" unbroken-test/pytorch-cpu:latest
  prune_old pytorch-cpu "$tag"
  log "built $tag"
}

main() {
  build_base debian12-systemd bookworm
  build_base debian13-systemd trixie
  build_docker
  build_pytorch
}
main "$@"
