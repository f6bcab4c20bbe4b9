# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Run every test stage of the collection, time each, and summarise.

This is what `make test` (and so CI's `.ci/run`) runs. Stages run in order;
a failing stage does not stop the later ones unless they cannot work without
it (host, virtualenv, images). Each stage's full output goes to
tests/output/logs/<stage>.log; its tail is printed when it fails. The run ends
with a table of stage times, a JSON report (tests/output/stages.json) and a
closing line `stages: N passed, N failed`.

Usage: python3 tests/harness/run_stages.py [STAGE_OR_SCENARIO ...]
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "output"
LOGS = OUT / "logs"
VENV = ROOT / ".venv"
COLLECTIONS = ROOT / ".cache" / "collections"
TAIL_LINES = 80


@dataclass
class Stage:
    name: str
    commands: list[list[str]]
    fatal: bool = False  # later stages cannot run without this one
    result: str = "not run"
    seconds: float = 0.0
    summary: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def venv_bin(tool: str) -> str:
    return str(VENV / "bin" / tool)


def scenarios() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def build_stages() -> list[Stage]:
    harness = ROOT / "tests" / "harness"
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    stages = [
        Stage("host", [[str(harness / "ensure_host.sh")]], fatal=True),
        Stage("venv", [[sys.executable, str(harness / "ensure_venv.py")]], fatal=True),
        Stage("images", [[str(harness / "build_images.sh")]], fatal=True),
        Stage(
            "lint-python",
            [
                [venv_bin("ruff"), "check", "."],
                [venv_bin("ruff"), "format", "--check", "."],
            ],
        ),
        Stage("lint-ansible", [[venv_bin("ansible-lint"), "--profile", "production"]]),
        Stage("role-docs", [[venv_bin("python"), str(harness / "check_role_docs.py")]]),
        Stage("mypy", [[str(harness / "mypy.sh")]]),
        Stage("changelog", [[venv_bin("antsibull-changelog"), "lint"]]),
        Stage(
            "workflows",
            [
                [
                    venv_bin("check-jsonschema"),
                    "--builtin-schema",
                    "vendor.github-workflows",
                    *workflows,
                ],
                [venv_bin("zizmor"), "--offline", *workflows],
                [venv_bin("python"), str(harness / "check_workflow.py")],
            ],
        ),
        Stage("sanity", [[str(harness / "sanity.sh")]]),
        Stage("floor", [[str(harness / "floor.sh")]]),
        Stage("build", [[str(harness / "build_install.sh")]]),
        Stage("unit", [[venv_bin("pytest"), "-q", "tests/unit"]]),
    ]
    if any((ROOT / "tests" / "e2e").glob("test_*.py")):
        stages.append(
            Stage("e2e", [[venv_bin("pytest"), "-q", "--durations=0", "tests/e2e"]]),
        )
    for name in scenarios():
        stages.append(
            Stage(f"molecule:{name}", [[venv_bin("molecule"), "test", "-s", name]]),
        )
    return stages


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    env["ANSIBLE_COLLECTIONS_PATH"] = str(COLLECTIONS)
    env.setdefault("ANSIBLE_FORCE_COLOR", "0")
    env.setdefault("PY_COLORS", "0")
    env.setdefault("NO_COLOR", "1")
    env["UNBROKEN_REPORT_DIR"] = str(OUT)
    return env


def link_collection() -> None:
    # A copy that Molecule's prerun may have left earlier would shadow the checkout.
    stale = Path.home() / ".ansible/collections/ansible_collections/unbroken/training"
    if stale.is_dir() and not stale.is_symlink():
        shutil.rmtree(stale)
    link = COLLECTIONS / "ansible_collections" / "unbroken" / "training"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(os.path.relpath(ROOT, link.parent))


# A Docker volume name (a bind mount's source is a path instead).
VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Run by the virtualenv's Python: the host's python3 need not have PyYAML.
READ_YAML = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"


def named_volumes(config: dict[str, Any]) -> list[str]:
    """The named Docker volumes a Molecule scenario's platforms mount, in order."""
    names: list[str] = []
    for platform in config.get("platforms") or []:
        for spec in platform.get("volumes") or []:
            source = str(spec).split(":", 1)[0]
            if VOLUME_NAME.fullmatch(source) and source not in names:
                names.append(source)
    return names


def remove_test_volumes(scenario: str) -> None:
    """Drop the named volumes (Docker-in-Docker's /var/lib/docker) of one scenario.

    Only that scenario's: others may be running from other checkouts at the same time.
    """
    try:
        config = subprocess.run(
            [
                venv_bin("python"),
                "-c",
                READ_YAML,
                str(ROOT / "molecule" / scenario / "molecule.yml"),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        names = named_volumes(json.loads(config) or {})
        if names:
            subprocess.run(
                ["docker", "volume", "rm", "-f", *names],
                capture_output=True,
                check=False,
                timeout=300,
            )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        print(f"cannot remove the volumes of scenario {scenario}: {exc}", flush=True)


PYTEST_SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed|error).*?)\s*=*$")


def last_summary(log: Path) -> str:
    found = ""
    for line in log.read_text(errors="replace").splitlines():
        m = PYTEST_SUMMARY.match(line.strip())
        if m and " in " in m.group(1):
            found = m.group(1)
    return found


def run_stage(stage: Stage, env: dict[str, str]) -> None:
    log = LOGS / (stage.name.replace(":", "_") + ".log")
    print(f"\n=== stage {stage.name} ===", flush=True)
    start = time.monotonic()
    ok = True
    with log.open("w") as fh:
        for cmd in stage.commands:
            fh.write(f"$ {shlex.join(cmd)}\n")
            fh.flush()
            print(f"$ {shlex.join(cmd)}", flush=True)
            rc = subprocess.call(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            if rc != 0:
                fh.write(f"exit status {rc}\n")
                ok = False
                break
    stage.seconds = time.monotonic() - start
    stage.result = "passed" if ok else "failed"
    stage.summary = last_summary(log)
    if stage.name.startswith("molecule:"):
        remove_test_volumes(stage.name.split(":", 1)[1])
    if not ok:
        lines = log.read_text(errors="replace").splitlines()
        print(f"--- last {TAIL_LINES} lines of {log.relative_to(ROOT)} ---")
        print("\n".join(lines[-TAIL_LINES:]))
    extra = f" ({stage.summary})" if stage.summary else ""
    print(f"=== {stage.name}: {stage.result} in {stage.seconds:.0f} s{extra}", flush=True)


def report(stages: list[Stage], total: float) -> int:
    print("\n| stage | result | seconds | tests |")
    print("|---|---|---:|---|")
    for s in stages:
        print(f"| {s.name} | {s.result} | {s.seconds:.0f} | {s.summary} |")
    print(f"| total | | {total:.0f} | |")
    data = {
        "total_seconds": round(total, 1),
        "stages": [
            {"name": s.name, "result": s.result, "seconds": round(s.seconds, 1), "tests": s.summary}
            for s in stages
        ],
    }
    (OUT / "stages.json").write_text(json.dumps(data, indent=2) + "\n")
    passed = sum(s.result == "passed" for s in stages)
    failed = sum(s.result != "passed" for s in stages)
    print(f"\nstages: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def main(argv: list[str]) -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    link_collection()
    stages = build_stages()
    if argv:
        wanted = set(argv)
        stages = [
            s for s in stages if s.name in wanted or s.name.split(":", 1)[-1] in wanted or s.fatal
        ]
    env = environment()
    start = time.monotonic()
    blocked = False
    for stage in stages:
        if blocked:
            stage.result = "skipped (an earlier stage failed)"
            continue
        run_stage(stage, env)
        if stage.fatal and stage.result != "passed":
            blocked = True
    return report(stages, time.monotonic() - start)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
