# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Operating a multi-node job: the operator playbooks act on all its nodes, and a node gone
for good (fault 4) is named by the status while the other waits for it.

The job is named once and the play limited to ONE of its nodes (``-l``): job_stop, job_start
and job_restart still act on every node (delegation), the stop ends with one final
checkpoint of one step on every node and no unit failed, the start resumes every node from
that step. Runs after test_multinode.py (same helpers, same job).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from test_multinode import (
    JOB,
    NAME,
    NODES,
    journal_since,
    last_step,
    playbook,
    recovered,
    sh,
    status,
    training_since,
    unit,
    wait_for,
    wait_training_both,
    write_figures,
)

JOINED = ",".join(NODES)


def job_rows(output: str) -> list[tuple[str, str]]:
    """(HOST, STATE) of the job's table lines, as the YAML or the JSON callback prints them."""
    return re.findall(rf'^\s*"?(\S+)\s+{re.escape(NAME)}\s+(\S+)\s', output, re.M)


def watchdog_record(node: str) -> dict[str, Any]:
    """The hang watchdog's watchdog.json on ``node`` ({} before its first check)."""
    out = sh(node, f"cat /var/lib/unbroken/trainer/{NAME}/watchdog.json", check=False)
    return json.loads(out) if out.strip() else {}


def stopped_everywhere() -> dict[str, dict[str, Any]]:
    """Every node's unit ended cleanly and its status says stopped."""
    found = {}
    for node in NODES:
        props = unit(node, "ActiveState", "Result")
        assert props == {"ActiveState": "inactive", "Result": "success"}, (node, props)
        found[node] = status(node) or {}
    return found


def test_07_stop_named_once_on_one_node_stops_every_node_at_one_step() -> None:
    """job_stop -l <node 2>: both nodes stop, one final checkpoint of one step on each disk."""
    wait_training_both()
    run = playbook("playbooks/job_stop.yml", "-l", NODES[1], "-e", "unbroken_jobs=" + NAME)
    assert run.returncode == 0, run.stdout[-4000:]
    statuses = stopped_everywhere()
    steps = {node: st.get("step") for node, st in statuses.items()}
    assert {st.get("state") for st in statuses.values()} == {"stopped"}, statuses
    assert {st.get("exit_code") for st in statuses.values()} == {0}, statuses
    assert len(set(steps.values())) == 1, steps  # the ranks agreed on the step
    step = steps[NODES[0]]
    for node in NODES:
        sh(node, f"test -f {JOB['checkpoint_dir']}/step-{step:06d}/MANIFEST.json")
    # The table after the change shows the job, read on both nodes, stopped.
    assert job_rows(run.stdout) == [(JOINED, "stopped")], run.stdout[-3000:]


def test_08_start_named_once_on_one_node_starts_every_node_from_the_stop_step() -> None:
    """job_start -l <node 1>: node 2 is started too (else the rendezvous never completes)."""
    stopped = {node: (status(node) or {}).get("step") for node in NODES}
    assert len(set(stopped.values())) == 1, stopped
    started_at = time.time()
    run = playbook("playbooks/job_start.yml", "-l", NODES[0], "-e", "unbroken_jobs=" + NAME)
    assert run.returncode == 0, run.stdout[-4000:]
    found = wait_for("both nodes to train again", lambda: training_since(started_at), 120)
    for node, st in found.items():
        # Nothing lost: each node resumed from the checkpoint the stop wrote.
        assert (st.get("resumed_from") or {}).get("step") == stopped[node], (node, st)
    assert job_rows(run.stdout) == [(JOINED, "training")], run.stdout[-3000:]


def test_09_restart_named_once_on_one_node_is_a_coordinated_stop_then_a_start() -> None:
    """job_restart -l <node 2>: both nodes stop at one step and resume from it."""
    wait_training_both()
    restart_at = time.time()
    run = playbook("playbooks/job_restart.yml", "-l", NODES[1], "-e", "unbroken_jobs=" + NAME)
    assert run.returncode == 0, run.stdout[-4000:]
    found = wait_for("both nodes to train again", lambda: training_since(restart_at), 120)
    stops = {
        node: re.findall(r"stopped at step (\d+) after", journal_since(node, restart_at))
        for node in NODES
    }
    # One final checkpoint per node, of the same step, and that step is where both resumed.
    assert [len(s) for s in stops.values()] == [1, 1] and len(set(map(tuple, stops.values()))) == 1
    step = int(stops[NODES[0]][0])
    assert {(st.get("resumed_from") or {}).get("step") for st in found.values()} == {step}, found
    for node in NODES:
        runs = sh(node, f"cat /var/lib/unbroken/trainer/{NAME}/runs.json")
        assert '"cause": "operator"' in runs, (node, runs[-500:])


def test_09b_report_draws_one_curve_per_multi_node_job(tmp_path: Path) -> None:
    """report.yml on both nodes: one section (one set of curves) for the job, not two."""
    path = tmp_path / "report.html"
    run = playbook("playbooks/report.yml", "-e", f"unbroken_report_path={path}")
    assert run.returncode == 0, run.stdout[-4000:]
    page = path.read_text()
    assert page.count("<section") == 1, page[:3000]
    assert f'<section id="{NODES[0]}-{NAME}">' in page
    assert f"{NAME} on 2 nodes: {', '.join(NODES)}" in page
    assert page.count(f'aria-label="loss by step: {NAME}"') == 1  # one loss chart


def test_10_node_gone_for_good_the_other_waits_and_the_status_names_it() -> None:
    """Fault 4: node 2 powered off (docker kill); node 1 waits (fixed size) and the status
    says it waits for node 2; once node 2 is back the job resumes from an agreed step."""
    wait_training_both()
    kills_before = int(watchdog_record(NODES[0]).get("kills") or 0)
    fault_at = time.time()
    subprocess.run(["docker", "kill", NODES[1]], check=True, timeout=120)
    step_before = last_step()
    try:
        seen: list[str] = []

        def says_waiting() -> str | None:
            # Limited to the survivor: node 2 is read by delegation and does not answer.
            run = playbook("playbooks/status.yml", "-l", NODES[0], "-e", "unbroken_jobs=" + NAME)
            seen[:] = [run.stdout]
            text = " ".join(run.stdout.split())
            if job_rows(run.stdout) == [(JOINED, "waiting")] and (
                f"waiting for {NODES[1]} (not reporting)" in text
            ):
                return run.stdout
            return None

        try:
            output = wait_for("the status to name the node it waits for", says_waiting, 180, 5)
        except AssertionError:
            print("LAST STATUS OUTPUT\n" + "".join(seen)[-5000:], flush=True)
            raise
        waiting_seen = time.time() - fault_at
        assert "nodes up 1/2" in output, output[-3000:]
        # The survivor really waits: its unit is not given up, and it takes no step.
        step_waiting = (status(NODES[0]) or {}).get("step")
        time.sleep(20)
        props = unit(NODES[0], "ActiveState")
        assert props["ActiveState"] not in ("failed", "inactive"), props
        assert (status(NODES[0]) or {}).get("step") == step_waiting

        # Node 1's agent runs without workers: its watchdog says it waits and leaves it
        # alone past hang_timeout (no kill, no restart toward its crash-loop limit), and
        # training_status on node 1 says waiting, not its last worker's state.
        hang_timeout = float(JOB["hang_timeout"])

        def node_1_waits_past_hang_timeout() -> dict[str, Any] | None:
            record = watchdog_record(NODES[0])
            updated = float((status(NODES[0]) or {}).get("updated_at") or 0)
            checked = float(record.get("checked_at") or 0)
            if record.get("waiting") is True and checked - updated > hang_timeout + 10:
                return record
            return None

        record = wait_for(
            "node 1's watchdog to see its agent wait past hang_timeout",
            node_1_waits_past_hang_timeout,
            hang_timeout + 120,
            5,
        )
        assert record["hung"] is False and int(record.get("kills") or 0) == kills_before, record
        run = playbook(
            "playbooks/status.yml",
            "-l",
            NODES[0],
            "-e",
            "unbroken_jobs=" + NAME,
            "-e",
            "unbroken_status_detail=true",
        )
        assert (NODES[0], "waiting") in job_rows(run.stdout), run.stdout[-3000:]
        # Its note (wrapped at any word, so one word of it): a rendezvous round.
        assert "rendezvous" in run.stdout, run.stdout[-3000:]
        runs = json.loads(sh(NODES[0], f"cat /var/lib/unbroken/trainer/{NAME}/runs.json"))
        assert (runs.get("last_start") or {}).get("cause") != "hang", runs
    finally:
        back_at = time.time()
        subprocess.run(["docker", "start", NODES[1]], check=True, timeout=120)
    figures = recovered(fault_at, step_before, "4: node 2 gone for good, then back")
    figures["status_named_the_node_after_seconds"] = round(waiting_seen, 1)
    figures["node_gone_seconds"] = round(back_at - fault_at, 1)
    figures["recovery_after_return_seconds"] = round(
        figures["recovery_seconds"] - (back_at - fault_at), 1
    )
    figures["status_row"] = next(
        (line.strip(' ",') for line in output.splitlines() if JOINED in line), ""
    )
    write_figures(figures)
