#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
#
# Build the collection tarball exactly as Galaxy users get it, install it into
# an empty collections path, and check that ansible-doc shows every role's
# argument spec and every module's documentation from the installed copy.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/.cache/build"
rm -rf "$out"
mkdir -p "$out/dist" "$out/installed"

cd "$root"
ansible-galaxy collection build --force --output-path "$out/dist" .
tarball=$(ls "$out"/dist/unbroken-training-*.tar.gz)
# --no-deps: Galaxy is unreachable here; the dependencies come from the venv.
ansible-galaxy collection install --no-deps -p "$out/installed" "$tarball"

installed="$out/installed/ansible_collections/unbroken/training"
# Test harness files must not ship.
for path in molecule tests/harness .ci; do
  if [ -e "$installed/$path" ]; then echo "shipped a test artefact: $path" >&2; exit 1; fi
done

export ANSIBLE_COLLECTIONS_PATH="$out/installed:$(python3 -c 'import ansible_collections,os;print(os.path.dirname(list(ansible_collections.__path__)[0]))')"
for role in "$installed"/roles/*/; do
  role=$(basename "$role")
  ansible-doc -t role "unbroken.training.$role" >/dev/null
  echo "ansible-doc -t role unbroken.training.$role: ok"
done
for module in "$installed"/plugins/modules/*.py; do
  module=$(basename "$module" .py)
  ansible-doc -t module "unbroken.training.$module" >/dev/null
  echo "ansible-doc unbroken.training.$module: ok"
done
