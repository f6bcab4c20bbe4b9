# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Check that each role's README documents exactly its argument spec.

Every option of a role's `main` entry point must appear in a row of the role
README's variables table as `` `name` `` with its default, and the README must
not document options the spec does not have. Exit 1 with a list of drifts.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\|\s*`([A-Za-z0-9_]+)`\s*\|(.*)$")


def spec_options(role: Path) -> dict[str, Any]:
    spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    return spec["argument_specs"]["main"].get("options", {}) or {}


def readme_rows(role: Path) -> dict[str, str]:
    readme = role / "README.md"
    if not readme.exists():
        return {}
    rows = {}
    for line in readme.read_text().splitlines():
        m = ROW.match(line.strip())
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def render_default(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return ""  # structured defaults are explained in prose, not matched
    return str(value)


def check_role(role: Path) -> list[str]:
    problems = []
    if not (role / "meta" / "argument_specs.yml").exists():
        return [f"{role.name}: no meta/argument_specs.yml"]
    options = spec_options(role)
    rows = readme_rows(role)
    if not rows:
        return [f"{role.name}: README.md has no variables table rows (| `name` | ... |)"]
    for name, opt in options.items():
        if name not in rows:
            problems.append(f"{role.name}: `{name}` is in the argument spec but not in README.md")
            continue
        default = render_default(opt.get("default"))
        if default and default not in rows[name]:
            problems.append(
                f"{role.name}: README row for `{name}` does not show the default {default!r}"
            )
    prefix = role.name + "_"
    for name in rows:
        if name.startswith(prefix) and name not in options:
            problems.append(f"{role.name}: README documents `{name}`, which the spec lacks")
    return problems


def main() -> int:
    roles = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())
    problems = [p for role in roles for p in check_role(role)]
    for p in problems:
        print(p)
    print(f"checked {len(roles)} roles: {len(problems)} drift(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
