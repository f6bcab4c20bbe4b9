#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
#
# Run `ansible-test sanity` on the collection. ansible-test needs the tree at
# .../ansible_collections/unbroken/training and, offline, cannot bootstrap its
# own per-test virtualenvs; so a dedicated virtualenv gets ansible-test's own
# pinned sanity requirements and the tests run with --local.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache="$root/.cache"
# The floor stage (floor.sh) runs some tests with the oldest supported ansible-core instead.
venv=${UNBROKEN_SANITY_VENV:-$cache/sanity-venv}
reqdir_rel=lib/python3.11/site-packages/ansible_test/_data/requirements
core=${UNBROKEN_SANITY_CORE:-$(grep -E '^ansible-core==' "$root/requirements-dev.txt")}
read -r -a tests <<<"${UNBROKEN_SANITY_REQUIREMENTS:-ansible-doc changelog import pep8 pylint runtime-metadata validate-modules yamllint}"

stamp=$(printf '%s\n' "$core" ${UNBROKEN_SANITY_REQUIREMENTS:+"${tests[*]}"} sanity-venv-1 | sha256sum | cut -c1-16)
if [ ! -f "$venv/.stamp-$stamp" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  read -r -a core_pins <<<"$core"
  "$venv/bin/pip" install -q "${core_pins[@]}"
  reqs=()
  for t in "${tests[@]}"; do
    reqs+=(-r "$venv/$reqdir_rel/sanity.$t.txt")
  done
  "$venv/bin/pip" install -q "${reqs[@]}"
  touch "$venv/.stamp-$stamp"
fi

# The import test bootstraps pip with a script it downloads from a host that is
# unreachable offline; give it an equivalent built from ensurepip instead.
pip_version=$(grep -oP "^\s*pip='\K[0-9.]+" "$venv/lib/python3.11/site-packages/ansible_test/_internal/python_requirements.py")
mkdir -p "$HOME/.ansible/test/cache"
cp "$root/tests/harness/get_pip_offline.py" "$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"

# A private copy per run, so parallel runs cannot pull the tree from under each other.
mkdir -p "$cache"
top=$(mktemp -d "$cache/sanity.XXXXXX")
trap 'rm -rf "$top"' EXIT
work="$top/ansible_collections/unbroken/training"
mkdir -p "$work"
# Exactly the files git would ship (tracked and not ignored).
(cd "$root" && git ls-files -co --exclude-standard -z) \
  | (cd "$root" && rsync -a --from0 --files-from=- ./ "$work/")
cd "$work"
# Git metadata lets ansible-test see which files belong to the collection.
git init -q && git add -A >/dev/null && git -c user.name=ci -c user.email=ci@localhost commit -qm sanity
"$venv/bin/ansible-test" sanity --local --python 3.11 --color no "$@"
