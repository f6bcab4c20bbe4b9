#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
#
# TEST DOUBLE. Builds STAND-IN NVIDIA Container Toolkit packages (the real ones
# are not reachable from CI) under the real package names and versions, and a
# signed flat apt repository laid out like NVIDIA's:
#   OUT/libnvidia-container/gpgkey
#   OUT/libnvidia-container/stable/deb/ARCH/{Packages,Release,InRelease,Release.gpg,*.deb}
# The stand-in nvidia-container-runtime logs its call and hands off to runc, so
# `docker run --runtime=nvidia` really runs a container (without any GPU).
# Also writes OUT/fingerprint and an already-expired second key
# (OUT/libnvidia-container/gpgkey-expired, OUT/fingerprint-expired).
# Usage: build_repo.sh OUT VERSION...
set -eu
out=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
arch=$(dpkg --print-architecture)
repo="$out/libnvidia-container"
debs="$repo/stable/deb/$arch"
work=$(mktemp -d)
export GNUPGHOME="$work/gnupg"
mkdir -m 700 "$GNUPGHOME"
mkdir -p "$debs"

package() { # name version depends files...
  name=$1 version=$2 depends=$3; shift 3
  root="$work/$name-$version"
  mkdir -p "$root/DEBIAN" "$root/usr/share/doc/$name"
  {
    echo "Package: $name"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: unbroken.training tests <standin@unbroken.invalid>"
    [ -n "$depends" ] && echo "Depends: $depends"
    echo "Section: utils"
    echo "Priority: optional"
    echo "Description: STAND-IN for NVIDIA's $name (test double, no GPU support)"
  } >"$root/DEBIAN/control"
  echo "Stand-in test double of $name $version built by unbroken.training tests." \
    >"$root/usr/share/doc/$name/STANDIN"
  for tool in "$@"; do
    mkdir -p "$root/usr/bin"
    sed "s/@VERSION@/$version/" "$here/$tool" >"$root/usr/bin/$tool"
    chmod 0755 "$root/usr/bin/$tool"
  done
  dpkg-deb --root-owner-group -Zgzip --build "$root" "$debs/${name}_${version}_${arch}.deb" >/dev/null
}

for v in "$@"; do
  package libnvidia-container1 "$v" ""
  package libnvidia-container-tools "$v" "libnvidia-container1 (>= $v)" nvidia-container-cli
  package nvidia-container-toolkit-base "$v" "" nvidia-container-runtime nvidia-ctk
  package nvidia-container-toolkit "$v" \
    "nvidia-container-toolkit-base (= $v), libnvidia-container-tools (>= $v), libnvidia-container-tools (<< 2.0.0)" \
    nvidia-container-runtime-hook
done

python3 "$here/make_index.py" "$debs" "$arch"

gpg --batch --passphrase '' --quick-gen-key \
  'unbroken.training STAND-IN repository key <standin@unbroken.invalid>' ed25519 sign 1y 2>/dev/null
fpr=$(gpg --with-colons --list-keys standin@unbroken.invalid | awk -F: '$1=="fpr"{print $10; exit}')
gpg --batch --armor --export "$fpr" >"$repo/gpgkey"
gpg --batch --yes --local-user "$fpr" --clearsign -o "$debs/InRelease" "$debs/Release"
gpg --batch --yes --local-user "$fpr" -abs -o "$debs/Release.gpg" "$debs/Release"
echo "$fpr" >"$out/fingerprint"

# A key that expired long ago (made with a faked clock), for the expiry check.
gpg --batch --passphrase '' --faked-system-time 20200101T000000 --quick-gen-key \
  'unbroken.training STAND-IN expired key <expired@unbroken.invalid>' ed25519 sign 1d 2>/dev/null
efpr=$(gpg --with-colons --list-keys expired@unbroken.invalid | awk -F: '$1=="fpr"{print $10; exit}')
gpg --batch --armor --export "$efpr" >"$repo/gpgkey-expired"
echo "$efpr" >"$out/fingerprint-expired"

rm -rf "$work"
