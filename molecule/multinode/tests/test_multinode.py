# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Faults injected into one CPU/gloo job spanning two Docker-in-Docker nodes.

Observed from the outside, per node: the status file on the node's own disk (node-local
checkpoints: each node's local rank 0 writes it), ``systemctl show`` and the journal. Each
test first waits until the job trains on both nodes, so any one of them runs alone. Per
fault it measures the time from the fault to both nodes training again beyond the step
they resumed from, and the steps lost (the last step reported before the fault minus the
agreed resume step, against the checkpoint interval); they are printed and written to
tests/output/multinode_faults.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

NODES = ("ut-mn-1", "ut-mn-2")
SCENARIO = Path(__file__).resolve().parents[1]
REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", SCENARIO.parents[1]))
GROUP_VARS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())["provisioner"]["inventory"][
    "group_vars"
]["gpu_nodes"]
JOB = GROUP_VARS["trainer_jobs"][0]
NAME = JOB["name"]
UNIT = f"unbroken-job-{NAME}.service"
CONTAINER = f"unbroken-job-{NAME}"
INTERVAL = int(JOB["args"][JOB["args"].index("--checkpoint-interval") + 1])
COLLECTIVE_TIMEOUT = int(JOB["collective_timeout"])
STATUS = f"{JOB['checkpoint_dir']}/status.json"
RECOVERY_BUDGET = 300.0  # an upper bound on a loaded two-core machine, not a target


def sh(node: str, command: str, check: bool = True, timeout: float = 120) -> str:
    """Run a shell command inside a node as root."""
    result = subprocess.run(
        ["docker", "exec", node, "bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{node}: {command!r} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def status(node: str, path: str = STATUS) -> dict[str, Any] | None:
    try:
        out = sh(node, f"cat {path}", check=False, timeout=30)
        return json.loads(out) if out else None
    except (ValueError, subprocess.TimeoutExpired):
        return None


def unit(node: str, *props: str) -> dict[str, str]:
    out = sh(node, f"systemctl show {UNIT} --property={','.join(props)}", check=False)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_for(what: str, probe: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except (subprocess.SubprocessError, AssertionError):
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{diagnose()}")
        time.sleep(every)


def diagnose() -> str:
    parts = []
    for node in NODES:
        parts.append(f"--- {node}: status {status(node)}")
        parts.append(sh(node, f"journalctl -u {UNIT} -n 40 --no-pager -o cat", check=False))
    return "\n".join(parts)


def training_since(after: float) -> dict[str, dict[str, Any]] | None:
    """Both nodes' status when each node's run started after ``after`` trains past its resume."""
    found = {}
    for node in NODES:
        st = status(node)
        if not st or st.get("state") != "training" or float(st.get("started_at") or 0) <= after:
            return None
        resumed = (st.get("resumed_from") or {}).get("step", 0)
        if int(st.get("step") or 0) <= resumed:
            return None
        found[node] = st
    return found


def wait_training_both(timeout: float = RECOVERY_BUDGET) -> dict[str, dict[str, Any]]:
    """Both nodes train, their status fresh (written within the last 10 s)."""

    def probe() -> dict[str, dict[str, Any]] | None:
        found = {}
        for node in NODES:
            st = status(node)
            if not st or st.get("state") != "training":
                return None
            if time.time() - float(st.get("updated_at") or 0) > 10:
                return None
            found[node] = st
        return found

    return wait_for("the job to train on both nodes", probe, timeout)


def last_step() -> int:
    """The newest step either node reported (both train in lockstep under DDP).

    Read just after a fault: the run it hit reports no further step (its ranks are dead or
    blocked in a collective), so this is the step the fault interrupted, with no race
    against a run that still trains and checkpoints.
    """
    return max(int((status(node) or {}).get("step") or 0) for node in NODES)


def recovered(fault_at: float, step_before: int, label: str) -> dict[str, Any]:
    """Wait until both nodes train again after ``fault_at``; check and record the figures."""
    found = wait_for(
        f"both nodes to resume after {label}",
        lambda: training_since(fault_at),
        RECOVERY_BUDGET,
    )
    seconds = time.time() - fault_at
    resumed = {node: (st.get("resumed_from") or {}).get("step") for node, st in found.items()}
    # One agreed step: every rank resumed from the same checkpoint.
    assert len(set(resumed.values())) == 1, resumed
    step = resumed[NODES[0]]
    assert isinstance(step, int) and step % INTERVAL == 0, resumed
    lost = step_before - step
    # A checkpoint every INTERVAL steps: at most one interval (plus the steps of a save still
    # being written when the fault hit) is lost, never the run.
    assert 0 <= lost <= 2 * INTERVAL, (step_before, step)
    figures = {
        "fault": label,
        "recovery_seconds": round(seconds, 1),
        "step_before_fault": step_before,
        "resumed_from_step": step,
        "steps_lost": lost,
        "checkpoint_interval": INTERVAL,
        "steps_after": {node: st["step"] for node, st in found.items()},
    }
    write_figures(figures)
    return figures


def write_figures(figures: dict[str, Any]) -> None:
    out = REPO / "tests" / "output"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "multinode_faults.json"
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        document = {}
    document[figures["fault"]] = figures
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    print(f"\nFAULT FIGURES {json.dumps(figures, sort_keys=True)}", flush=True)


def journal_since(node: str, epoch: float) -> str:
    return sh(
        node,
        f"journalctl -u {UNIT} --since=@{int(epoch) - 1} --no-pager -o short-unix",
        check=False,
    )


def test_01_second_converge_restarted_no_node() -> None:
    """Fault 5: the idempotence converge (changed=0, checked by molecule) restarted nothing."""
    wait_training_both()
    for node in NODES:
        first = json.loads(sh(node, "cat /root/multinode-first-converge.json"))
        props = unit(node, "ExecMainStartTimestampMonotonic", "NRestarts")
        now = sh(node, f"docker inspect -f '{{{{.Id}}}} {{{{.State.StartedAt}}}}' {CONTAINER}")
        assert props["ExecMainStartTimestampMonotonic"] == first["main_start"], node
        assert props["NRestarts"] == first["restarts"], node
        assert now.strip() == first["container"], node
    # The job really spans both nodes: one world of two ranks, on the host network.
    for node in NODES:
        st = status(node) or {}
        assert st["extra"] == {"world_size": 2, "mode": "ddp"}, st
        inspect = sh(node, f"docker inspect -f '{{{{.HostConfig.NetworkMode}}}}' {CONTAINER}")
        assert inspect.strip() == "host"
        env = sh(node, f"docker exec {CONTAINER} env")
        assert re.search(r"^GLOO_SOCKET_IFNAME=\S+$", env, re.M), env


def test_02_container_killed_on_node_2_restarts_all_workers_from_one_step() -> None:
    """Fault 1: SIGKILL of node 2's container; node 1's workers restart too, same step."""
    wait_training_both()
    before = {node: float((status(node) or {})["started_at"]) for node in NODES}
    fault_at = time.time()
    sh(NODES[1], f"docker kill --signal KILL {CONTAINER}")
    step_before = last_step()
    figures = recovered(fault_at, step_before, "1: container killed on node 2")
    # Node 1's container was not touched, yet its worker is a new process (torchrun restarted
    # it): the status' started_at is that of the run that resumed.
    assert float((status(NODES[0]) or {})["started_at"]) > before[NODES[0]]
    # torchrun's own line for node 1's worker, which failed when its peer vanished (its
    # agent then re-rendezvouses, or exits for systemd to restart it).
    log = journal_since(NODES[0], fault_at)
    assert re.search(r"failed \(exitcode: -?\d+\) local_rank: 0", log), log
    assert figures["recovery_seconds"] < RECOVERY_BUDGET


def test_03_rendezvous_host_restarted_job_resumes_when_it_is_back() -> None:
    """Fault 2: ``docker restart`` of node 1, which hosts the c10d store."""
    wait_training_both()
    fault_at = time.time()
    subprocess.run(["docker", "restart", "-t", "0", NODES[0]], check=True, timeout=120)
    step_before = last_step()  # node 2's status: node 1's disk is back only with node 1
    figures = recovered(fault_at, step_before, "2: rendezvous host restarted")
    runs = json.loads(sh(NODES[0], f"cat /var/lib/unbroken/trainer/{NAME}/runs.json"))
    # The node's own record says why its run started: the host came back.
    assert runs["last_start"]["cause"] == "reboot", runs["last_start"]
    assert figures["recovery_seconds"] < RECOVERY_BUDGET


def _partition(on: bool) -> None:
    """Drop node 2's traffic to and from node 1 (inside node 2, as a broken switch would)."""
    peer = sh(NODES[1], f"getent ahostsv4 {NODES[0]} | awk 'NR==1{{print $1}}'").strip()
    assert peer, "cannot resolve node 1 from node 2"
    flag = "-I" if on else "-D"
    rules = f"iptables {flag} INPUT -s {peer} -j DROP && iptables {flag} OUTPUT -d {peer} -j DROP"
    sh(NODES[1], rules)


def test_04_partition_longer_than_the_collective_timeout_fails_fast_and_heals() -> None:
    """Fault 3: a partition outlasting the collective timeout; the job fails within it."""
    wait_training_both()
    fault_at = time.time()
    _partition(True)
    step_before = last_step()
    try:
        # The ranks wait COLLECTIVE_TIMEOUT for each other, then fail: a worker or agent
        # failure shows in a node's journal well before torch's 10-30 minute default.
        def failed() -> float | None:
            for node in NODES:
                for line in journal_since(node, fault_at).splitlines():
                    if re.search(
                        r"Worker group FAILED|ChildFailedError|Timed out|timed out|timeout",
                        line,
                    ):
                        stamp = float(line.split()[0])
                        if stamp >= fault_at - 1:
                            return stamp
            return None

        failed_at = wait_for("the partitioned job to fail", failed, COLLECTIVE_TIMEOUT + 90)
        failed_after = failed_at - fault_at
        assert failed_after <= COLLECTIVE_TIMEOUT + 60, failed_after
        # Hold the partition past the timeout, as the fault says, then heal it.
        remaining = fault_at + COLLECTIVE_TIMEOUT + 10 - time.time()
        if remaining > 0:
            time.sleep(remaining)
    finally:
        _partition(False)
    healed_at = time.time()
    figures = recovered(fault_at, step_before, "3: partition longer than the collective timeout")
    figures["failed_after_seconds"] = round(failed_after, 1)
    figures["partition_seconds"] = round(healed_at - fault_at, 1)
    figures["recovery_after_heal_seconds"] = round(
        figures["recovery_seconds"] - (healed_at - fault_at), 1
    )
    write_figures(figures)


def playbook(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    """ansible-playbook (the collection's root site.yml or playbooks/*) on both nodes."""
    ansible_playbook = str(Path(sys.executable).parent / "ansible-playbook")
    return subprocess.run(
        [ansible_playbook, "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(REPO / path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
    )


def test_05_bad_multinode_definitions_are_refused_before_anything_changes() -> None:
    """Validation: every bad value named at once, nothing written, no job restarted."""
    snapshot = "sha256sum /etc/unbroken/trainer/jobs/* /etc/systemd/system/unbroken-job-*"
    before = {node: (sh(node, snapshot), unit(node, "ExecMainPID")) for node in NODES}
    # The seed differs per host (templated per host): the nodes define the job differently.
    bad = dict(
        JOB,
        network_interface="ib9",
        rdzv_port=80,
        stop_grace=60,
        args=[*JOB["args"], "--seed", "{{ 1 if inventory_hostname == 'ut-mn-1' else 2 }}"],
    )
    run = playbook("site.yml", "-e", json.dumps({"trainer_jobs": [bad]}))
    assert run.returncode != 0, run.stdout[-3000:]
    out = " ".join(run.stdout.split())
    for message in (
        "network interface ib9 does not exist on ut-mn-1",
        "network interface ib9 does not exist on ut-mn-2",
        "rdzv_port=80 must be 1024-65535",
        "stop_grace=60 is too long for a multi-node job",
        "define it differently from ut-mn-1",
        "Nothing was changed.",
    ):
        assert message in out, (message, run.stdout[-4000:])
    for node in NODES:
        assert (sh(node, snapshot), unit(node, "ExecMainPID")) == before[node], node


def test_06_status_shows_the_job_as_one_row_and_each_node_on_request() -> None:
    """status.yml: one row for the job (nodes up 2/2), one per node with the detail switch."""
    wait_training_both()
    joined = ",".join(NODES)
    run = playbook("playbooks/status.yml", "-e", "unbroken_jobs=" + NAME)
    assert run.returncode == 0, run.stdout[-3000:]
    # A table line, as the YAML callback prints it or as a quoted JSON string.
    rows = re.findall(rf'^\s*"?(\S+)\s+{re.escape(NAME)}\s+(\S+)\s', run.stdout, re.M)
    assert rows == [(joined, "training")], run.stdout[-3000:]
    assert "nodes up 2/2" in run.stdout, run.stdout[-3000:]

    run = playbook(
        "playbooks/status.yml", "-e", "unbroken_jobs=" + NAME, "-e", "unbroken_status_detail=true"
    )
    assert run.returncode == 0, run.stdout[-3000:]
    rows = re.findall(rf'^\s*"?(\S+)\s+{re.escape(NAME)}\s+\S+', run.stdout, re.M)
    assert rows == list(NODES), run.stdout[-3000:]
