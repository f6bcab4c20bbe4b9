#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
#
# mypy --strict (settings in pyproject.toml) on the collection's plugins and on the training
# runtime. The plugins are checked as ansible_collections.unbroken.training.plugins, through
# the collections link that `make test` keeps in .cache/collections, so that a module's calls
# into module_utils are checked too; the runtime is checked from the folder it is shipped from.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mypy=${MYPY:-$root/.venv/bin/mypy}
config="$root/pyproject.toml"
runtime="$root/runtime"
helper="$root/runtime/helper"

link="$root/.cache/collections/ansible_collections/unbroken/training"
if [ ! -L "$link" ]; then
  mkdir -p "$(dirname "$link")"
  ln -s ../../../.. "$link"
fi

cd "$root/.cache/collections"
MYPYPATH=$PWD "$mypy" --config-file "$config" --cache-dir "$root/.cache/mypy/plugins" \
  ansible_collections/unbroken/training/plugins

cd "$runtime"
MYPYPATH="$runtime:$helper" "$mypy" --config-file "$config" --cache-dir "$root/.cache/mypy/runtime" \
  train.py unbroken_ckpt "$helper"
