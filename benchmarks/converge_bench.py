# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Time site.yml on 1, 2 and 4 hosts: fresh converge, idempotent re-run, pipelining off.

Each host is a local systemd container (``unbroken-test/debian12-systemd`` by default)
reached with ``docker exec`` (community.docker.docker). The default profile puts every
host in ``login_nodes``, so site.yml applies sshd_keepalive (server and client) and
session_tools: real package installs (openssh-server, tmux, mosh, locales) from the
Debian mirror the image is configured with. GPU-node instances (Docker-in-Docker plus a
1.6 GB image load each) are too heavy for this 2-core benchmark; see benchmarks/README.md.

Per host count N, on fresh containers:
  1. fresh converge (pipelining on, forks = N),
  2. idempotent re-run (pipelining on),
  3. idempotent re-run with pipelining off.
Task times come from Ansible's JSON callback (the same per-task start/end that
ansible.posix.profile_tasks prints); each task counts with its slowest host, and is
classed as "packages" (apt/package/dnf: index refreshes, downloads and installs), "facts"
or "our tasks" (everything else the roles do).

Usage: .venv/bin/python benchmarks/converge_bench.py [--hosts 1 2 4] [--prefix NAME] [--json FILE]
Needs root, the Docker engine and the local test images (tests/harness/build_images.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "ut-bench-converge"
PACKAGE_ACTIONS = {
    "apt",
    "package",
    "dnf",
    "yum",
    "ansible.builtin.apt",
    "ansible.builtin.package",
    "ansible.builtin.dnf",
    "ansible.builtin.yum",
}
FACT_ACTIONS = {"gather_facts", "setup", "ansible.builtin.gather_facts", "ansible.builtin.setup"}


@dataclass
class Run:
    hosts: int
    kind: str
    pipelining: bool
    load_1m: float
    wall_s: float
    ok: bool
    changed: int
    split_s: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    slowest_tasks: list[tuple[str, float]] = field(default_factory=list)
    changed_tasks: list[str] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)


def sh(*argv: str, check: bool = True, timeout: float = 600) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()[-800:]}")
    return done.stdout


def names(count: int) -> list[str]:
    return [f"{PREFIX}-{i}" for i in range(1, count + 1)]


def remove_containers() -> None:
    found = sh("docker", "ps", "-aq", "--filter", f"name=^{PREFIX}-", check=False).split()
    if found:
        sh("docker", "rm", "-f", *found, check=False)


def start_containers(count: int, image: str) -> list[str]:
    hosts = names(count)
    for name in hosts:
        sh(
            "docker", "run", "-d", "--name", name, "--hostname", name,
            "--cap-add", "SYS_ADMIN", "--tmpfs", "/run", "--tmpfs", "/run/lock",
            "--tmpfs", "/tmp", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            image, "/lib/systemd/systemd",
        )  # fmt: skip
    for name in hosts:
        for _attempt in range(60):
            state = sh("docker", "exec", name, "systemctl", "is-system-running", check=False)
            if state.strip() in ("running", "degraded"):
                break
            time.sleep(1)
    return hosts


def write_inventory(directory: Path, hosts: list[str]) -> Path:
    inventory = {
        "all": {
            "children": {
                "login_nodes": {
                    "hosts": {
                        name: {
                            "ansible_connection": "community.docker.docker",
                            "ansible_user": "root",
                            "ansible_python_interpreter": "/usr/bin/python3",
                        }
                        for name in hosts
                    }
                }
            }
        }
    }
    path = directory / "inventory.json"
    path.write_text(json.dumps(inventory))
    return path


def machine_busy_s() -> float:
    """CPU-seconds the whole machine has spent outside idle and iowait since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def containers_cpu_s(hosts: list[str]) -> float | None:
    """CPU-seconds the hosts' containers have used (cgroup v1 cpuacct or v2 cpu.stat)."""
    total = 0.0
    for name in hosts:
        cid = sh("docker", "inspect", "-f", "{{.Id}}", name).strip()
        v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage")
        v2 = Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat")
        if v1.exists():
            total += int(v1.read_text()) / 1e9
        elif v2.exists():
            usage = dict(line.split() for line in v2.read_text().splitlines())
            total += int(usage["usage_usec"]) / 1e6
        else:
            return None
    return total


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Played:
    """One ansible-playbook run: its process, wall time, CPU split and JSON report."""

    done: subprocess.CompletedProcess[str]
    wall: float
    cpu: dict[str, float]
    report: dict[str, Any]


def playbook(
    inventory: Path,
    hosts: list[str],
    pipelining: bool,
    play: Path = ROOT / "site.yml",
    collections: Path = ROOT / ".cache" / "collections",
) -> Played:
    """Run ``play`` on ``hosts`` (one fork each) and measure it; the JSON callback reports."""
    env = dict(os.environ)
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)  # nothing else may print to stdout
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_PIPELINING="True" if pipelining else "False",
        ANSIBLE_FORKS=str(max(len(hosts), 1)),
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3",
    )
    busy, children, inside = machine_busy_s(), children_cpu_s(), containers_cpu_s(hosts)
    start = time.monotonic()
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), str(play)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600, check=False,
    )  # fmt: skip
    wall = time.monotonic() - start
    # The controller: ansible-playbook, its workers and the docker CLI they start; the
    # hosts: the module runs inside the containers; the rest of the machine's busy time is
    # dockerd, containerd and runc starting each `docker exec` (and anything else running).
    controller = children_cpu_s() - children
    machine = machine_busy_s() - busy
    after = containers_cpu_s(hosts)
    cpu = {"machine": round(machine, 2), "controller": round(controller, 2)}
    if inside is not None and after is not None:
        cpu["hosts"] = round(after - inside, 2)
        cpu["docker+other"] = round(machine - controller - (after - inside), 2)
    try:
        report = json.loads(done.stdout[done.stdout.index("{") :])
    except ValueError:
        report = {"stats": {}, "plays": [], "error": done.stdout[-2000:] + done.stderr[-2000:]}
    return Played(done, wall, cpu, report)


def _seconds(duration: dict[str, str]) -> float:
    start = datetime.fromisoformat(duration["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(duration["end"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


def task_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task: its name, class, seconds (slowest host) and what the hosts did."""
    rows = []
    for play in report.get("plays", []):
        for task in play.get("tasks", []):
            duration = task.get("task", {}).get("duration")
            if not duration or "end" not in duration:
                continue
            results = task.get("hosts", {}).values()
            actions = {r.get("action", "") for r in results}
            if actions & PACKAGE_ACTIONS:
                kind = "packages"
            elif actions & FACT_ACTIONS:
                kind = "facts"
            else:
                kind = "our tasks"
            rows.append(
                {
                    "name": task["task"].get("name", "?"),
                    "class": kind,
                    "action": sorted(actions),
                    "seconds": round(_seconds(duration), 3),
                    "ran": sum(1 for r in results if not r.get("skipped")),
                    "changed": sum(1 for r in results if r.get("changed")),
                }
            )
    return rows


def classify(rows: list[dict[str, Any]]) -> tuple[dict[str, float], list[tuple[str, float]]]:
    split = {"packages": 0.0, "facts": 0.0, "our tasks": 0.0}
    for row in rows:
        split[row["class"]] += row["seconds"]
    slowest = sorted(((r["name"], round(r["seconds"], 2)) for r in rows), key=lambda t: -t[1])
    return {k: round(v, 2) for k, v in split.items()}, slowest[:5]


RUN_KINDS = {
    "fresh": ("fresh", True),
    "idempotent": ("idempotent", True),
    "idempotent-nopipe": ("idempotent", False),
}


def measure(count: int, image: str, workdir: Path, kinds: list[str]) -> list[Run]:
    remove_containers()
    hosts = start_containers(count, image)
    inventory = write_inventory(workdir, hosts)
    runs = []
    try:
        for kind, pipelining in (RUN_KINDS[k] for k in kinds):
            load_1m = os.getloadavg()[0]
            played = playbook(inventory, hosts, pipelining)
            wall, cpu, report = played.wall, played.cpu, played.report
            stats = report.get("stats", {})
            ok = bool(stats) and all(
                s.get("failures", 0) == 0 and s.get("unreachable", 0) == 0 for s in stats.values()
            )
            rows = task_rows(report)
            split, slowest = classify(rows)
            runs.append(
                Run(
                    hosts=count,
                    kind=kind,
                    pipelining=pipelining,
                    load_1m=round(load_1m, 2),
                    wall_s=round(wall, 2),
                    ok=ok,
                    changed=sum(s.get("changed", 0) for s in stats.values()),
                    split_s=split,
                    cpu_s=cpu,
                    slowest_tasks=slowest,
                    changed_tasks=[r["name"] for r in rows if r["changed"]],
                    tasks=rows,
                )
            )
            print(f"  {count} host(s) {kind:<10} pipelining={'on ' if pipelining else 'off'} "
                  f"{wall:7.1f} s  cpu {cpu['machine']:6.1f} s  ok={ok} "
                  f"changed={runs[-1].changed}", flush=True)  # fmt: skip
            if kind == "idempotent" and runs[-1].changed_tasks:
                print(f"    changed: {'; '.join(runs[-1].changed_tasks)}", flush=True)
            if not ok:
                print(report.get("error", "")[-3000:], file=sys.stderr)
                break
    finally:
        remove_containers()
    return runs


def medians(runs: list[Run]) -> list[Run]:
    """One row per host count and run kind: the median run (of two, the slower one)."""
    groups: dict[tuple[int, str, bool], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.hosts, r.kind, r.pipelining), []).append(r)
    return [sorted(g, key=lambda r: r.wall_s)[len(g) // 2] for g in groups.values()]


def table(runs: list[Run]) -> str:
    one = {(r.kind, r.pipelining): r.wall_s for r in medians(runs) if r.hosts == 1}
    repeats: dict[tuple[int, str, bool], list[float]] = {}
    for r in runs:
        repeats.setdefault((r.hosts, r.kind, r.pipelining), []).append(r.wall_s)
    lines = [
        f"{'hosts':>5}  {'run':<10}  {'pipelining':<10}  {'load':>4}  {'wall s':>7}  "
        f"{'range s':>11}  {'per host s':>10}  {'x 1-host':>8}  {'packages s':>10}  "
        f"{'facts s':>7}  {'our tasks s':>11}  {'cpu s':>6}  {'ctl cpu s':>9}  "
        f"{'host cpu s':>10}  {'changed':>7}  ok"
    ]
    for r in medians(runs):
        ratio = r.wall_s / one[(r.kind, r.pipelining)] if one.get((r.kind, r.pipelining)) else 0
        walls = repeats[(r.hosts, r.kind, r.pipelining)]
        spread = f"{min(walls):.1f}-{max(walls):.1f}" if len(walls) > 1 else "-"
        lines.append(
            f"{r.hosts:>5}  {r.kind:<10}  {'on' if r.pipelining else 'off':<10}  "
            f"{r.load_1m:>4.1f}  {r.wall_s:>7.1f}  {spread:>11}  {r.wall_s / r.hosts:>10.1f}  "
            f"{ratio:>8.2f}  {r.split_s.get('packages', 0):>10.1f}  "
            f"{r.split_s.get('facts', 0):>7.1f}  {r.split_s.get('our tasks', 0):>11.1f}  "
            f"{r.cpu_s.get('machine', 0):>6.1f}  {r.cpu_s.get('controller', 0):>9.1f}  "
            f"{r.cpu_s.get('hosts', 0):>10.1f}  {r.changed:>7}  {'yes' if r.ok else 'NO'}"
        )
    return "\n".join(lines)


def main() -> int:
    global PREFIX  # noqa: PLW0603 - the container helpers read the module's prefix
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--runs",
        nargs="+",
        choices=sorted(RUN_KINDS),
        default=["fresh", "idempotent", "idempotent-nopipe"],
        help="runs per host count, in order, on the same containers; name a run twice to "
        "repeat it (the table shows the median and the range, the JSON every run)",
    )
    parser.add_argument("--image", default="unbroken-test/debian12-systemd:latest")
    parser.add_argument(
        "--prefix", default=PREFIX, help="container name prefix (runs side by side need their own)"
    )
    parser.add_argument(
        "--json", default=str(ROOT / "tests" / "output" / "benchmarks" / "converge_bench.json")
    )
    args = parser.parse_args()
    PREFIX = args.prefix
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"cpus: {os.cpu_count()}", flush=True)  # fmt: skip
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="converge-bench-") as tmp:
        for count in args.hosts:
            runs.extend(measure(count, args.image, Path(tmp), args.runs))
    print()
    print(table(runs))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "profile": "login_nodes (sshd_keepalive + session_tools)",
                "image": args.image,
                "connection": "community.docker.docker",
                "load_average_before": load,
                "cpus": os.cpu_count(),
                "runs": [asdict(r) for r in runs],
            },
            indent=2,
        )
    )
    print(f"\nJSON: {out}")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
