# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Idempotent re-runs of sshd_keepalive against dev-sec's ssh_hardening on Debian 12.

The question (issue 20): what does an unchanged host cost with our role, next to the role
the field holds up as the model for sshd configuration (``devsec.hardening.ssh_hardening``
with its defaults)? Wall time and controller CPU-seconds of an idempotent re-run, medians
of ``--repeat`` runs each, the two roles interleaved.

Each role gets its own fresh ``unbroken-test/debian12-systemd`` container (reached with
``docker exec``, community.docker.docker, pipelining on): ssh_hardening writes the whole
``sshd_config`` without the ``Include`` of ``sshd_config.d``, so on one host the two roles
would fight over the same keywords. One container per ``--tree`` (a checkout of this
collection, e.g. a ``git archive`` of an older commit: its sshd_keepalive role is what runs)
and one for ssh_hardening, all started from the same image at the same time:
  1. one converge of every role (fresh host: packages, writes, restarts),
  2. ``--repeat`` rounds of one idempotent re-run of every role, the order rotating by one
     each round so that no role always runs first or after the same one.
Our plays run the role with ``gather_facts: false`` (it gathers the subset it needs);
ssh_hardening's run with ``gather_facts: true``, which its tasks need.

dev-sec's collection is not a dependency of this project: pass a checkout of it with
``--devsec-collection`` (the collection's own folder, holding galaxy.yml, or a collections
path holding ``ansible_collections/devsec/hardening``); without it the benchmark looks for
the one the ``ansible`` package may ship in this virtual environment.

Usage: .venv/bin/python benchmarks/ssh_hardening_bench.py --devsec-collection PATH
           [--tree NAME=PATH ...] [--repeat 5] [--prefix ut-bench-sshhard] [--json FILE]
Needs root, the Docker engine and the local test images (tests/harness/build_images.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import converge_bench as cb

DEVSEC = "devsec ssh_hardening"


def collections_path(workdir: Path, namespace: str, name: str, source: Path) -> Path:
    """A collections path of its own for one collection checkout (a link to it)."""
    base = workdir / f"collections-{namespace}-{name}-{len(list(workdir.glob('collections-*')))}"
    link = base / "ansible_collections" / namespace / name
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(source.resolve())
    return base


def devsec_path(option: str | None, workdir: Path) -> Path:
    """The collections path that holds devsec.hardening; a clear error when there is none."""
    candidates: list[Path] = []
    if option:
        given = Path(option).expanduser()
        if (given / "galaxy.yml").is_file() and (given / "roles" / "ssh_hardening").is_dir():
            return collections_path(workdir, "devsec", "hardening", given)
        candidates.append(given)
    else:
        site = (cb.ROOT / ".venv" / "lib").glob("python*/site-packages/ansible_collections")
        candidates.extend(p.parent for p in site)
    for path in candidates:
        if (path / "ansible_collections/devsec/hardening/roles/ssh_hardening").is_dir():
            return path
    where = option or "this virtual environment's ansible package"
    raise SystemExit(
        f"devsec.hardening's ssh_hardening role was not found in {where}; pass a checkout of "
        "dev-sec/ansible-collection-hardening with --devsec-collection PATH"
    )


def parse_trees(values: list[str]) -> list[tuple[str, Path]]:
    trees = []
    for value in values:
        name, sep, path = value.partition("=")
        tree = Path(path if sep else name).expanduser().resolve()
        if not (tree / "roles" / "sshd_keepalive" / "tasks").is_dir():
            raise SystemExit(f"--tree {value}: {tree} holds no roles/sshd_keepalive")
        trees.append((name if sep else tree.name, tree))
    return trees


def write_inventory(directory: Path, hosts: list[str]) -> Path:
    host_vars = {
        "ansible_connection": "community.docker.docker",
        "ansible_user": "root",
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    path = directory / "inventory.json"
    path.write_text(json.dumps({"all": {"hosts": dict.fromkeys(hosts, host_vars)}}))
    return path


def run_role(
    workdir: Path, inventory: Path, host: str, role: str, collections: Path, facts: bool
) -> dict[str, Any]:
    """One run of one role on one host: wall time, controller and host CPU, what changed."""
    play = [{"hosts": host, "gather_facts": facts, "roles": [role]}]
    path = workdir / f"play-{host}.yml"
    path.write_text(json.dumps(play))
    load_1m = os.getloadavg()[0]
    played = cb.playbook(inventory, [host], True, path, collections)
    report = played.report
    stats = report.get("stats", {}).get(host, {})
    results = [
        task["hosts"][host]
        for play_report in report.get("plays", [])
        for task in play_report.get("tasks", [])
        if host in task.get("hosts", {})
    ]
    row: dict[str, Any] = {
        "ok": played.done.returncode == 0 and bool(stats),
        "load_1m": round(load_1m, 2),
        "wall_s": round(played.wall, 2),
        "controller_cpu_s": played.cpu["controller"],
        "host_cpu_s": played.cpu.get("hosts"),
        "tasks": len(results),
        "changed": stats.get("changed", 0),
        "changed_tasks": [
            task["task"].get("name", "?")
            for play_report in report.get("plays", [])
            for task in play_report.get("tasks", [])
            if task.get("hosts", {}).get(host, {}).get("changed")
        ],
    }
    if not row["ok"]:
        row["error"] = (played.done.stdout[-2000:] + played.done.stderr[-2000:]).strip()
    return row


def summary(runs: list[dict[str, Any]], roles: list[str]) -> list[dict[str, Any]]:
    """Per role: the fresh converge, then medians and ranges of the idempotent re-runs."""
    rows = []
    for role in roles:
        fresh = [r for r in runs if r["role"] == role and r["run"] == "fresh"]
        again = [r for r in runs if r["role"] == role and r["run"] == "idempotent"]
        if not again:
            continue
        walls = [r["wall_s"] for r in again]
        cpus = [r["controller_cpu_s"] for r in again]
        hosts = [r["host_cpu_s"] for r in again if r["host_cpu_s"] is not None]
        rows.append(
            {
                "role": role,
                "fresh_wall_s": fresh[0]["wall_s"] if fresh else None,
                "runs": len(again),
                "wall_s": round(statistics.median(walls), 2),
                "wall_range_s": [min(walls), max(walls)],
                "controller_cpu_s": round(statistics.median(cpus), 2),
                "controller_cpu_range_s": [min(cpus), max(cpus)],
                "host_cpu_s": round(statistics.median(hosts), 2) if hosts else None,
                "tasks": again[-1]["tasks"],
                "changed": max(r["changed"] for r in again),
                "load_1m": [min(r["load_1m"] for r in again), max(r["load_1m"] for r in again)],
            }
        )
    base = next((r for r in rows if r["role"] == DEVSEC), None)
    for row in rows:
        if base and row is not base:
            row["wall_vs_devsec"] = round(row["wall_s"] / base["wall_s"], 2)
            row["cpu_vs_devsec"] = round(row["controller_cpu_s"] / base["controller_cpu_s"], 2)
    return rows


def ratio(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.2f}" if key in row else "-"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'role':<34}  {'fresh s':>7}  {'n':>2}  {'idem. wall s':>18}  {'ctl cpu s':>16}  "
        f"{'host cpu s':>10}  {'tasks':>5}  {'changed':>7}  {'wall x':>6}  {'cpu x':>5}"
    ]
    for r in rows:
        fresh = f"{r['fresh_wall_s']:.1f}" if r["fresh_wall_s"] is not None else "-"
        wall = f"{r['wall_s']:.1f} ({r['wall_range_s'][0]:.1f}-{r['wall_range_s'][1]:.1f})"
        cpu = (
            f"{r['controller_cpu_s']:.1f} "
            f"({r['controller_cpu_range_s'][0]:.1f}-{r['controller_cpu_range_s'][1]:.1f})"
        )
        host = f"{r['host_cpu_s']:.1f}" if r["host_cpu_s"] is not None else "-"
        lines.append(
            f"{r['role']:<34}  {fresh:>7}  {r['runs']:>2}  {wall:>18}  {cpu:>16}  {host:>10}  "
            f"{r['tasks']:>5}  {r['changed']:>7}  {ratio(r, 'wall_vs_devsec'):>6}  "
            f"{ratio(r, 'cpu_vs_devsec'):>5}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a checkout of this collection whose sshd_keepalive runs (repeatable; default: "
        "this checkout, named 'current')",
    )
    parser.add_argument(
        "--devsec-collection",
        metavar="PATH",
        help="a checkout of dev-sec/ansible-collection-hardening, or a collections path "
        "holding ansible_collections/devsec/hardening",
    )
    parser.add_argument("--repeat", type=int, default=5, help="idempotent re-runs per role")
    parser.add_argument("--image", default="unbroken-test/debian12-systemd:latest")
    parser.add_argument("--prefix", default="ut-bench-sshhard", help="container name prefix")
    parser.add_argument(
        "--json", default=str(cb.ROOT / "tests" / "output" / "benchmarks" / "ssh_hardening.json")
    )
    args = parser.parse_args()
    trees = parse_trees(args.tree or [f"current={cb.ROOT}"])
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"cpus: {os.cpu_count()}", flush=True)  # fmt: skip
    cb.PREFIX = args.prefix  # converge_bench's container helpers, our names
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ssh-hardening-bench-") as tmp:
        workdir = Path(tmp)
        # (label, role, collections path, gather facts in the play)
        plan = [
            (f"sshd_keepalive ({name})", "unbroken.training.sshd_keepalive",
             collections_path(workdir, "unbroken", "training", path), False)
            for name, path in trees
        ]  # fmt: skip
        devsec = devsec_path(args.devsec_collection, workdir)
        plan.append((DEVSEC, "devsec.hardening.ssh_hardening", devsec, True))
        cb.remove_containers()
        try:
            hosts = cb.start_containers(len(plan), args.image)
            inventory = write_inventory(workdir, hosts)
            order = list(range(len(plan)))
            rounds = [(0, "fresh")] + [(i + 1, "idempotent") for i in range(args.repeat)]
            for round_no, kind in rounds:
                if kind == "idempotent":
                    order = order[1:] + order[:1]
                for index in order:
                    label, role, collections, facts = plan[index]
                    row = run_role(workdir, inventory, hosts[index], role, collections, facts)
                    runs.append({"role": label, "run": kind, "round": round_no, **row})
                    print(f"  {kind:<10} {label:<34} {row['wall_s']:6.1f} s  "
                          f"ctl cpu {row['controller_cpu_s']:5.1f} s  load {row['load_1m']:.1f}  "
                          f"changed={row['changed']} ok={row['ok']}", flush=True)  # fmt: skip
                    if not row["ok"]:
                        print(row["error"], file=sys.stderr)
                    elif kind == "idempotent" and row["changed_tasks"]:
                        print(f"    changed: {'; '.join(row['changed_tasks'])}", flush=True)
        finally:
            cb.remove_containers()
    rows = summary(runs, [label for label, *_rest in plan])
    print()
    print(table(rows))
    print("\nwall x / cpu x: median idempotent re-run against ssh_hardening's (issue 20: <= 0.5)")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "image": args.image,
                "connection": "community.docker.docker (pipelining)",
                "trees": {name: str(path) for name, path in trees},
                "load_average_before": load,
                "cpus": os.cpu_count(),
                "summary": rows,
                "runs": runs,
            },
            indent=2,
        )
    )
    print(f"\nJSON: {out}")
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
