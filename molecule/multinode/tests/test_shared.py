# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The shared-storage variant: a second job, `mns`, whose checkpoints live on one volume both
nodes mount (/srv/shared, the stand-in for NFS or Lustre), with sharded state (train.py
--mode sharded: FSDP2 and torch.distributed.checkpoint, which writes each rank's shard into
the same step directory).

The job is deployed by the collection's site.yml (the first job, `mn`, is stopped meanwhile
so the two do not share two cores), killed where it hurts most (node 1's container: rank 0,
the holder of the job's lock and the writer of the manifest, and the rendezvous store), and
removed again, ports included. Every test deploys the job if it is missing, so each runs
alone; the module ends with `mn` started again for whichever test comes next.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_multinode import (
    JOB,
    NODES,
    RECOVERY_BUDGET,
    playbook,
    sh,
    wait_for,
    write_figures,
)
from test_multinode import status as multinode_status

SHARED: dict[str, Any] = dict(
    JOB,
    name="mns",
    checkpoint_dir="/srv/shared/mns",
    checkpoint_layout="shared",
    rdzv_port=29401,
    args=[*JOB["args"], "--mode", "sharded"],
)
NAME = SHARED["name"]
UNIT = f"unbroken-job-{NAME}.service"
CONTAINER = f"unbroken-job-{NAME}"
STATUS = f"{SHARED['checkpoint_dir']}/status.json"
INTERVAL = int(JOB["args"][JOB["args"].index("--checkpoint-interval") + 1])
RESUMED = re.compile(r"resumed from checkpoint step-\d+ \(step (\d+)\)")


def status(node: str) -> dict[str, Any] | None:
    return multinode_status(node, STATUS)


def converge(job: dict[str, Any]) -> None:
    run = playbook("site.yml", "-e", json.dumps({"trainer_jobs": [job]}))
    assert run.returncode == 0, run.stdout[-4000:]


def deployed() -> bool:
    return all(
        sh(node, f"systemctl is-active {UNIT}", check=False).strip() == "active" for node in NODES
    )


def training(after: float = 0.0) -> dict[str, Any] | None:
    """The job's one status file (rank 0 writes it, both nodes read it) says it trains past
    the step it resumed from, in a run started after ``after``."""
    st = status(NODES[0])
    if not st or st.get("state") != "training" or float(st.get("started_at") or 0) <= after:
        return None
    if time.time() - float(st.get("updated_at") or 0) > 10:
        return None
    if int(st.get("step") or 0) <= int((st.get("resumed_from") or {}).get("step") or 0):
        return None
    return st


def ensure_training() -> dict[str, Any]:
    if not deployed():
        converge(SHARED)
    return wait_for("the shared job to train", training, RECOVERY_BUDGET)


@pytest.fixture(scope="module", autouse=True)
def first_job_stopped_meanwhile() -> Iterator[None]:
    run = playbook("playbooks/job_stop.yml", "-e", "unbroken_jobs=" + JOB["name"])
    assert run.returncode == 0, run.stdout[-4000:]
    yield
    if any(
        sh(node, f"test -e /etc/systemd/system/{UNIT} && echo yes", check=False).strip()
        for node in NODES
    ):
        converge(dict(SHARED, state="absent"))
    run = playbook("playbooks/job_start.yml", "-e", "unbroken_jobs=" + JOB["name"])
    assert run.returncode == 0, run.stdout[-4000:]


def test_11_shared_layout_one_directory_holds_every_ranks_shard() -> None:
    """Both nodes see the same step directories, each with both ranks' DCP shards."""
    st = ensure_training()
    assert st["extra"] == {"world_size": 2, "mode": "sharded"}, st
    step = wait_for(
        "a committed checkpoint",
        lambda: sh(NODES[0], f"ls {SHARED['checkpoint_dir']} | grep -E '^step-[0-9]+$' | tail -1"),
        RECOVERY_BUDGET,
    ).strip()
    listings = {}
    for node in NODES:
        listings[node] = sh(
            node, f"cd {SHARED['checkpoint_dir']}/{step} && ls -A && sha256sum MANIFEST.json"
        )
    assert listings[NODES[0]] == listings[NODES[1]], listings  # one directory, not two copies
    names = listings[NODES[0]].split()
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata", "MANIFEST.json"} <= set(names), names
    manifest = json.loads(sh(NODES[1], f"cat {SHARED['checkpoint_dir']}/{step}/MANIFEST.json"))
    assert {"__0_0.distcp", "__1_0.distcp"} <= set(manifest["files"]), manifest["files"]
    # One lock for the job, on the shared directory: rank 0 holds it from node 1, and a
    # writer on node 2 (another job given the same directory) would be refused.
    lock = f"{SHARED['checkpoint_dir']}/.lock"
    assert f" on {NODES[0]} " in sh(NODES[1], f"cat {lock}"), sh(NODES[1], f"cat {lock}")
    assert sh(NODES[1], f"flock -n {lock} true && echo free", check=False).strip() == "", lock


def test_12_rank_0s_container_killed_both_ranks_resume_from_one_step() -> None:
    """Node 1's container SIGKILLed (rank 0, the lock holder, the rendezvous store): both
    nodes' ranks resume from the same committed step of the shared directory."""
    before = ensure_training()
    fault_at = time.time()
    sh(NODES[0], f"docker kill --signal KILL {CONTAINER}")
    step_before = int(before.get("step") or 0)
    step_before = max(step_before, int((status(NODES[0]) or {}).get("step") or 0))
    st = wait_for("the shared job to train again", lambda: training(fault_at), RECOVERY_BUDGET)
    seconds = time.time() - fault_at
    resumed = {}
    for node in NODES:
        log = sh(
            node,
            f"journalctl -u {UNIT} --since=@{int(fault_at)} --no-pager -o cat",
            check=False,
        )
        resumed[node] = [int(s) for s in RESUMED.findall(log)]
    # Every rank's restore of this recovery (the last per node) read the same step, and so
    # did the status that rank 0 wrote.
    last = {node: steps[-1] for node, steps in resumed.items() if steps}
    assert len(last) == 2 and len(set(last.values())) == 1, resumed
    step = last[NODES[0]]
    assert (st.get("resumed_from") or {}).get("step") == step, st
    assert step % INTERVAL == 0 and 0 <= step_before - step <= 2 * INTERVAL, (step_before, step)
    write_figures(
        {
            "fault": "shared: node 1's container killed (sharded, shared volume)",
            "recovery_seconds": round(seconds, 1),
            "step_before_fault": step_before,
            "resumed_from_step": step,
            "steps_lost": step_before - step,
            "checkpoint_interval": INTERVAL,
        }
    )
    assert seconds < RECOVERY_BUDGET


def test_13_removing_the_job_stops_it_and_closes_its_ports_keeping_checkpoints() -> None:
    """state absent on both nodes: units and containers gone, firewall openings gone, the
    shared checkpoints kept (keep_checkpoints_on_remove defaults to true)."""
    ensure_training()
    converge(dict(SHARED, state="absent"))
    for node in NODES:
        assert sh(node, f"systemctl is-active {UNIT}", check=False).strip() != "active", node
        assert sh(node, f"docker ps -aq --filter name=^{CONTAINER}$").strip() == "", node
        ruleset = sh(node, "nft list ruleset")
        assert f"trainer-{NAME}" not in ruleset, (node, ruleset)
        assert f"trainer-{JOB['name']}" in ruleset, (node, ruleset)  # the other job's stay
    assert sh(NODES[1], f"ls {SHARED['checkpoint_dir']} | grep -c '^step-'").strip() != "0"
