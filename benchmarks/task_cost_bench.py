# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""What one task costs per host: a skipped task, an assert, a module run.

Runs a generated playbook of ``--tasks`` identical tasks of each kind against 1 and 4
fresh ``unbroken-test/debian12-systemd`` containers (community.docker.docker, pipelining,
forks = hosts), with an empty playbook as the baseline, and reports per host and task the
CPU-seconds of the controller (ansible-playbook, its workers and the docker CLI) and of the
whole machine. It explains converge_bench.py's idempotent ratio: see benchmarks/README.md.

Usage: .venv/bin/python benchmarks/task_cost_bench.py [--hosts 1 4] [--tasks 40] [--json FILE]
Needs root, the Docker engine and the local test images (tests/harness/build_images.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import converge_bench as cb

KINDS: dict[str, dict[str, Any]] = {
    "skipped": {"ansible.builtin.debug": {"msg": "never"}, "when": "false"},
    "assert": {"ansible.builtin.assert": {"that": ["1 == 1"], "quiet": True}},
    "module": {"ansible.builtin.command": "true", "changed_when": False},
}


def run(
    workdir: Path, inventory: Path, hosts: int, tasks: list[dict[str, Any]]
) -> dict[str, float]:
    play = [
        {
            "hosts": "all",
            "gather_facts": False,
            "tasks": tasks or [{"ansible.builtin.meta": "noop"}],
        }
    ]
    path = workdir / "playbook.yml"
    path.write_text(json.dumps(play))
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(cb.ROOT / ".cache" / "collections"),
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.null",
        ANSIBLE_PIPELINING="True",
        ANSIBLE_FORKS=str(hosts),
        ANSIBLE_RETRY_FILES_ENABLED="False",
    )
    controller, machine, start = cb.children_cpu_s(), cb.machine_busy_s(), time.monotonic()
    subprocess.run(
        [str(cb.ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), str(path)],
        env=env, check=True, stdout=subprocess.DEVNULL, timeout=1800,
    )  # fmt: skip
    return {
        "wall_s": time.monotonic() - start,
        "controller_cpu_s": cb.children_cpu_s() - controller,
        "machine_cpu_s": cb.machine_busy_s() - machine,
    }


def row(
    hosts: int, kind: str, tasks: int, measured: dict[str, float], base: dict[str, float]
) -> dict[str, Any]:
    """One table row: the run, the empty-playbook baseline, and the cost per host and task."""
    runs = hosts * tasks
    return {
        "hosts": hosts,
        "kind": kind,
        **{key: round(value, 2) for key, value in measured.items()},
        "baseline": {key: round(value, 2) for key, value in base.items()},
        "controller_per_task": round(
            (measured["controller_cpu_s"] - base["controller_cpu_s"]) / runs, 4
        ),
        "machine_per_task": round((measured["machine_cpu_s"] - base["machine_cpu_s"]) / runs, 4),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'hosts':>5}  {'task':<8}  {'wall s':>7}  {'ctl cpu s':>9}  {'cpu s':>7}  "
        f"{'ctl cpu s per host and task':>27}  {'cpu s per host and task':>23}"
    ]
    for r in rows:
        lines.append(
            f"{r['hosts']:>5}  {r['kind']:<8}  {r['wall_s']:>7.1f}  "
            f"{r['controller_cpu_s']:>9.1f}  {r['machine_cpu_s']:>7.1f}  "
            f"{r['controller_per_task']:>27.3f}  {r['machine_per_task']:>23.3f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--image", default="unbroken-test/debian12-systemd:latest")
    parser.add_argument(
        "--json", default=str(cb.ROOT / "tests" / "output" / "benchmarks" / "task_cost_bench.json")
    )
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; cpus: {os.cpu_count()}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="task-cost-bench-") as tmp:
        for count in args.hosts:
            cb.remove_containers()
            try:
                inventory = cb.write_inventory(Path(tmp), cb.start_containers(count, args.image))
                base = run(Path(tmp), inventory, count, [])
                for kind, task in KINDS.items():
                    tasks = [{"name": f"{kind} {i}", **task} for i in range(args.tasks)]
                    measured = run(Path(tmp), inventory, count, tasks)
                    rows.append(row(count, kind, args.tasks, measured, base))
                    print(f"  {count} host(s) {kind:<8} {measured['wall_s']:6.1f} s", flush=True)
            finally:
                cb.remove_containers()
    print()
    print(table(rows))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"load_average_before": load, "cpus": os.cpu_count(), "tasks": args.tasks}
    out.write_text(json.dumps({**summary, "image": args.image, "rows": rows}, indent=2))
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
