# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""How many module runs reach the host when sshd_keepalive converges an unchanged host,
and when its two drop-ins were edited by hand.

The sshd_keepalive Molecule scenario asserts what the role does on these runs (nothing
changed, nothing reloaded, a shadowing line still refused, edited drop-ins rewritten and
validated); this benchmark counts what it costs: the module runs per action (each one a
round trip to the host), next to the tasks the controller evaluated and the wall time.
Every module run on an idempotent run is about 0.15 controller CPU-seconds
(task_cost_bench.py), so this count is what keeps an unchanged host cheap.

On one fresh ``unbroken-test/debian12-systemd`` container (community.docker.docker,
pipelining), after a first converge of the role with its defaults:
  1. ``--repeat`` idempotent re-runs,
  2. one run after both drop-ins were edited by hand (ClientAliveCountMax 9, mode 0600).

Usage: .venv/bin/python benchmarks/round_trips_bench.py [--repeat 3] [--json FILE]
Needs root, the Docker engine and the local test images (tests/harness/build_images.sh).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import converge_bench as cb

HOST = "ut-bench-round-trips-1"
DROPIN = "/etc/ssh/sshd_config.d/00-unbroken-keepalive.conf"
CLIENT_DROPIN = "/etc/ssh/ssh_config.d/00-unbroken-keepalive.conf"
# Actions that run on the controller alone: evaluated, but no round trip to the host.
LOCAL = {"set_fact", "assert", "debug", "include_vars", "meta", "include_tasks", "fail"}
LOCAL |= {f"ansible.builtin.{action}" for action in LOCAL | {"validate_argument_spec"}}
LOCAL |= {"validate", "unbroken.training.validate"}


def converge(workdir: Path, inventory: Path) -> dict[str, Any]:
    """One run of the role; what ran on the host, by action, and the wall time."""
    play = [{"hosts": "all", "gather_facts": False, "roles": ["unbroken.training.sshd_keepalive"]}]
    path = workdir / "converge.yml"
    path.write_text(json.dumps(play))
    env = dict(os.environ)
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)  # nothing else may print to stdout
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(cb.ROOT / ".cache" / "collections"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_PIPELINING="True",
        ANSIBLE_RETRY_FILES_ENABLED="False",
    )
    start = time.monotonic()
    done = subprocess.run(
        [str(cb.ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), str(path)],
        capture_output=True, text=True, env=env, timeout=1800, check=False,
    )  # fmt: skip
    wall = time.monotonic() - start
    report = json.loads(done.stdout[done.stdout.index("{") :])
    results = [
        task["hosts"][HOST]
        for play in report["plays"]
        for task in play["tasks"]
        if HOST in task["hosts"]
    ]
    ran = [r for r in results if not r.get("skipped") and r.get("action") not in LOCAL]
    return {
        "ok": done.returncode == 0,
        "wall_s": round(wall, 2),
        "tasks": len(results),
        "module_runs": len(ran),
        "changed": sum(1 for r in results if r.get("changed")),
        "by_action": dict(sorted(collections.Counter(r["action"] for r in ran).items())),
    }


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [f"{'run':<22}  {'ok':<3}  {'wall s':>6}  {'tasks':>5}  {'module runs':>11}  by action"]
    for name, row in rows:
        actions = ", ".join(f"{a.rsplit('.', 1)[-1]} {n}" for a, n in row["by_action"].items())
        lines.append(
            f"{name:<22}  {'yes' if row['ok'] else 'NO':<3}  {row['wall_s']:>6.1f}  "
            f"{row['tasks']:>5}  {row['module_runs']:>11}  {actions}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--repeat", type=int, default=3, help="idempotent re-runs")
    parser.add_argument("--image", default="unbroken-test/debian12-systemd:latest")
    parser.add_argument(
        "--json", default=str(cb.ROOT / "tests" / "output" / "benchmarks" / "round_trips.json")
    )
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"cpus: {os.cpu_count()}", flush=True)  # fmt: skip
    cb.PREFIX = HOST.rsplit("-", 1)[0]  # converge_bench's container helpers, our names
    cb.remove_containers()
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        hosts = cb.start_containers(1, args.image)
        with tempfile.TemporaryDirectory(prefix="round-trips-bench-") as tmp:
            inventory = cb.write_inventory(Path(tmp), hosts)
            rows.append(("fresh converge", converge(Path(tmp), inventory)))
            for _run in range(args.repeat):
                rows.append(("unchanged host", converge(Path(tmp), inventory)))
            cb.sh("docker", "exec", HOST, "sed", "-i",
                  "s/^ClientAliveCountMax .*/ClientAliveCountMax 9/", DROPIN)  # fmt: skip
            cb.sh("docker", "exec", HOST, "chmod", "0600", CLIENT_DROPIN)
            rows.append(("hand-edited drop-ins", converge(Path(tmp), inventory)))
    finally:
        cb.remove_containers()
    print()
    print(table(rows))
    unchanged = [row for name, row in rows if name == "unchanged host"]
    if unchanged:
        print(
            f"\nunchanged host: {unchanged[0]['module_runs']} module runs in "
            f"{statistics.median(r['wall_s'] for r in unchanged):.1f} s (median of "
            f"{len(unchanged)})"
        )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    setup = {"role": "unbroken.training.sshd_keepalive (defaults)", "image": args.image}
    measured = {"load_average_before": load, "cpus": os.cpu_count()}
    runs = [{"run": name, **row} for name, row in rows]
    out.write_text(json.dumps({**setup, **measured, "runs": runs}, indent=2))
    print(f"\nJSON: {out}")
    return 0 if all(row["ok"] for _name, row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
