#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
#
# Build the collection tarball exactly as Galaxy users get it, from a copy of the
# checkout in which the usual tool caches have been planted (as ansible-lint, mypy,
# pytest, an editor or a virtualenv leave them): the tarball must hold exactly the
# files git tracks less what galaxy.yml means to leave out (ansible-galaxy ignores
# .gitignore). Then install it into an empty collections path and check that ansible-doc
# shows every role's argument spec and every module's documentation from the installed copy.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/.cache/build"
rm -rf "$out"
mkdir -p "$out/dist" "$out/installed" "$out/src"

cd "$root"
git ls-files -co --exclude-standard -z >"$out/tracked"
rsync -a --from0 --files-from="$out/tracked" ./ "$out/src/"

# Plant what tools leave in a working tree, at the top and deeper down.
src="$out/src"
plant() { mkdir -p "$src/$(dirname "$1")" && echo "planted by build_install.sh" >"$src/$1"; }
for dir in . plugins runtime runtime/unbroken_ckpt tests/unit; do
  for cache in .mypy_cache .ruff_cache .pytest_cache .ansible .venv .cache .hypothesis; do
    plant "$dir/$cache/stale"
  done
  plant "$dir/__pycache__/stale.cpython-311.pyc"
done
# ansible-lint's copy of the collection itself: the stale nested copy seen shipped.
plant .ansible/collections/ansible_collections/unbroken/training/galaxy.yml
plant .ansible/collections/ansible_collections/unbroken/training/roles/trainer/tasks/main.yml
plant .tox/py/stale
plant .nox/py/stale
plant tests/output/junit/stale.xml
plant changelogs/.plugin-cache.yaml
plant .coverage
plant htmlcov/index.html
plant unbroken-training-0.0.1.tar.gz
plant runtime/train.py.swp
plant runtime/train.py~
plant .idea/workspace.xml
plant .vscode/settings.json

(cd "$src" && ansible-galaxy collection build --force --output-path "$out/dist" .)
tarball=$(ls "$out"/dist/unbroken-training-*.tar.gz)
python3 "$root/tests/harness/check_tarball.py" "$out/tracked" "$root/galaxy.yml" "$tarball"

# --no-deps: Galaxy is unreachable here; the dependencies come from the venv.
ansible-galaxy collection install --no-deps -p "$out/installed" "$tarball"

installed="$out/installed/ansible_collections/unbroken/training"
# Test harness files must not ship.
for path in molecule tests/harness .ci .github; do
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
