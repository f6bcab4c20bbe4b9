# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Check that the CI workflow's matrix runs every stage of `make test`, each name valid.

The workflow splits tests/harness/run_stages.py's stages into parallel jobs (`ONLY=...`);
a stage or Molecule scenario added to the harness but not to the matrix would silently not
run in CI. Exit status 1 names what is missing or unknown.

Usage: check_workflow.py [WORKFLOW]   (default .github/workflows/ci.yml)
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_stages


def main(argv: list[str]) -> int:
    workflow = Path(argv[0]) if argv else run_stages.ROOT / ".github" / "workflows" / "ci.yml"
    data = yaml.safe_load(workflow.read_text())
    entries = data["jobs"]["make-test"]["strategy"]["matrix"]["only"]
    words = {w for entry in entries for w in entry.split()}
    stages = [s for s in run_stages.build_stages() if not s.fatal]
    known = {s.name for s in stages} | {s.name.split(":", 1)[-1] for s in stages}
    errors = [f"{w}: in the matrix but not a stage of run_stages.py" for w in sorted(words - known)]
    for s in stages:
        if s.name not in words and s.name.split(":", 1)[-1] not in words:
            errors.append(f"{s.name}: a stage of run_stages.py that no matrix job runs")
    for e in errors:
        print(f"{workflow.name}: {e}")
    if errors:
        return 1
    print(f"{workflow.name}: {len(entries)} jobs run all {len(stages)} stages")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
