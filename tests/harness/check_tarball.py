# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Compare a built collection tarball with the files the checkout means to ship.

Meant to ship: every file git tracks (or would track: new, not ignored), less what
galaxy.yml's build_ignore and ansible-galaxy's own defaults leave out. Anything else
in the tarball (a tool cache, a nested stale copy of the collection) and anything
missing from it is reported, and the exit status is 1.

Usage: check_tarball.py TRACKED_LIST GALAXY_YML TARBALL
  TRACKED_LIST: NUL-separated paths, as `git ls-files -co --exclude-standard -z` writes.
"""

from __future__ import annotations

import fnmatch
import sys
import tarfile
from pathlib import Path

import yaml

# ansible-galaxy's own exclusions (ansible/galaxy/collection/__init__.py), which apply
# whatever galaxy.yml says: names of directories anywhere, and path patterns.
DEFAULT_DIRS = {"CVS", ".bzr", ".hg", ".git", ".svn", "__pycache__", ".tox"}
DEFAULT_PATTERNS = [
    "MANIFEST.json",
    "FILES.json",
    "galaxy.yml",
    "galaxy.yaml",
    ".git",
    "*.pyc",
    "*.retry",
    "tests/output",
]
# Written by ansible-galaxy into every tarball; not files of the checkout.
GENERATED = {"MANIFEST.json", "FILES.json"}


def left_out(path: str, patterns: list[str]) -> bool:
    """True when ansible-galaxy skips `path` or a directory above it."""
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if i < len(parts) and parts[i - 1] in DEFAULT_DIRS:
            return True
        if any(fnmatch.fnmatch(prefix, p) for p in patterns):
            return True
    return False


def meant_to_ship(tracked: list[str], galaxy: dict, root: Path) -> set[str]:
    namespace, name = galaxy["namespace"], galaxy["name"]
    patterns = [*DEFAULT_PATTERNS, f"{namespace}-{name}-*.tar.gz", *galaxy.get("build_ignore", [])]
    return {p for p in tracked if (root / p).is_file() and not left_out(p, patterns)}


def shipped(tarball: Path) -> set[str]:
    with tarfile.open(tarball) as tar:
        return {m.name for m in tar.getmembers() if not m.isdir()} - GENERATED


def main(argv: list[str]) -> int:
    tracked_list, galaxy_yml, tarball = (Path(a) for a in argv)
    tracked = [p for p in tracked_list.read_text().split("\0") if p]
    galaxy = yaml.safe_load(galaxy_yml.read_text())
    expected = meant_to_ship(tracked, galaxy, galaxy_yml.parent)
    actual = shipped(tarball)
    extra = sorted(actual - expected)
    missing = sorted(expected - actual)
    for path in extra:
        print(f"shipped but not meant to: {path}")
    for path in missing:
        print(f"meant to ship but missing: {path}")
    if extra or missing:
        print(
            f"{tarball.name}: {len(extra)} unexpected and {len(missing)} missing file(s);"
            " exclude tool caches in galaxy.yml's build_ignore",
            file=sys.stderr,
        )
        return 1
    print(f"{tarball.name}: {len(actual)} files, exactly the tracked files meant to ship")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
