# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The fleet converged by site.yml: each group got its roles and values, the jobs train.

Effective state only: ``sshd -T``, ``ssh -G``, binaries on PATH, the jobs' status files and
checkpoints, and the operator playbooks run as an operator would run them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import testinfra

ROOT = Path(__file__).resolve().parents[3]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
LOGIN, WORKSTATION = "ut-site-login", "ut-site-workstation"
GPU_NODES = ("ut-site-gpu-1", "ut-site-gpu-2")
JOB, UNIT = "site-ref", "unbroken-job-site-ref.service"
CHECKPOINTS = "/srv/ut-site/checkpoints"
# Group values from molecule.yml: (ClientAliveInterval, ServerAliveInterval); None = not managed.
EXPECTED = {LOGIN: (45, 44), "ut-site-gpu-1": (50, 51), "ut-site-gpu-2": (50, 51)}


def host(name: str) -> Any:
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def effective(cmd: str, name: str) -> dict[str, str]:
    out = host(name).check_output(cmd)
    pairs = (line.split(None, 1) for line in out.splitlines() if line.strip())
    return {p[0].lower(): (p[1] if len(p) > 1 else "") for p in pairs}


def playbook(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a playbook as an operator would; stdout carries stderr too (where errors go)."""
    return subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, str(ROOT / name), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
    )


def status(name: str) -> dict[str, Any]:
    raw = host(name).run(f"cat {CHECKPOINTS}/status.json")
    return json.loads(raw.stdout) if raw.rc == 0 else {}


def wait_for(predicate: Any, what: str, limit: float = 180.0) -> Any:
    """Poll until predicate() returns a truthy value (a liveness bound, not a timing test)."""
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {limit:.0f} s")
        time.sleep(2)


@pytest.mark.parametrize("name", [LOGIN, *GPU_NODES])
def test_sshd_serves_the_groups_keepalive_values(name: str) -> None:
    config = effective("sshd -T -C user=root,host=client,addr=127.0.0.1", name)
    # The instances run Debian 12's OpenSSH 9.2, which probes every second interval: the
    # sshd_keepalive role writes half the group's value there.
    assert "OpenSSH_9.2" in host(name).run("sshd -V").stderr
    assert config["clientaliveinterval"] == str(EXPECTED[name][0] // 2)
    assert config["clientalivecountmax"] == "3"
    assert config["tcpkeepalive"] == "yes"
    assert host(name).service("ssh").is_running


@pytest.mark.parametrize("name", [LOGIN, *GPU_NODES])
def test_ssh_client_uses_the_groups_keepalive_values(name: str) -> None:
    config = effective("ssh -G anywhere.example", name)
    assert config["serveraliveinterval"] == str(EXPECTED[name][1])
    assert config["serveralivecountmax"] == "3"


def test_workstation_gets_client_keepalive_for_the_cluster_only() -> None:
    assert effective("ssh -G gpu01.cluster.test", WORKSTATION)["serveraliveinterval"] == "33"
    # ssh's own default elsewhere: the Host pattern from the group's variables is honoured.
    assert effective("ssh -G elsewhere.example", WORKSTATION)["serveraliveinterval"] == "0"


def test_workstation_gets_no_server_and_no_session_tools() -> None:
    ws = host(WORKSTATION)
    assert not ws.exists("sshd")
    assert not ws.file("/usr/sbin/sshd").exists
    assert not ws.exists("tmux")
    assert not ws.exists("mosh-server")


@pytest.mark.parametrize("name", [LOGIN, *GPU_NODES])
def test_login_and_gpu_nodes_get_tmux_and_mosh(name: str) -> None:
    node = host(name)
    assert node.run("tmux -V").rc == 0
    assert node.exists("mosh-server")


@pytest.mark.parametrize("name", GPU_NODES)
def test_switched_off_role_left_docker_alone(name: str) -> None:
    """unbroken_enable_nvidia_container_toolkit: false means no toolkit, no nvidia runtime."""
    node = host(name)
    assert not node.package("nvidia-container-toolkit").is_installed
    runtimes = node.check_output("docker info --format '{{json .Runtimes}}'")
    assert "nvidia" not in json.loads(runtimes)


def test_login_node_runs_no_training() -> None:
    login = host(LOGIN)
    assert not login.file("/etc/unbroken/trainer").exists
    assert not login.exists("docker")


@pytest.mark.parametrize("name", GPU_NODES)
def test_job_trains_and_checkpoints_on_every_gpu_node(name: str) -> None:
    node = host(name)
    assert node.service(UNIT).is_enabled
    first = wait_for(lambda: status(name).get("step"), f"{name} to report a step")
    wait_for(lambda: (status(name).get("step") or 0) > first, f"{name} to advance past {first}")
    info = node.ansible("unbroken.training.checkpoint_info", f"path={CHECKPOINTS}", check=False)

    def committed() -> Any:
        nonlocal info
        info = node.ansible("unbroken.training.checkpoint_info", f"path={CHECKPOINTS}", check=False)
        return info.get("latest")

    wait_for(committed, f"a committed checkpoint on {name}")
    assert info["latest"]["step"] > 0
    assert info["corrupt"] == []


def test_status_playbook_prints_one_row_per_host_and_job() -> None:
    run = playbook("playbooks/status.yml")
    assert run.returncode == 0, run.stdout[-3000:]
    rows = [line for line in run.stdout.splitlines() if JOB in line and "ut-site-gpu" in line]
    assert {name for name in GPU_NODES if any(name in row for row in rows)} == set(GPU_NODES)
    assert all("training" in row for row in rows), rows
    assert "LAST CKPT AGE" in run.stdout


def test_operator_playbooks_refuse_to_act_without_job_names() -> None:
    assert all(host(name).service(UNIT).is_running for name in GPU_NODES)
    run = playbook("playbooks/job_stop.yml")
    assert run.returncode != 0
    assert "Name the jobs to stop" in run.stdout
    assert all(host(name).service(UNIT).is_running for name in GPU_NODES)


def test_operator_playbooks_refuse_unknown_job_names() -> None:
    run = playbook("playbooks/job_restart.yml", "-e", "unbroken_jobs=no-such-job")
    assert run.returncode != 0
    assert "no-such-job" in run.stdout and "Nothing was changed" in run.stdout


def test_job_stop_checkpoints_and_job_start_resumes_there() -> None:
    name = GPU_NODES[0]
    node = host(name)
    stop = playbook("playbooks/job_stop.yml", "-l", name, "-e", f"unbroken_jobs={JOB}")
    assert stop.returncode == 0, stop.stdout[-3000:]
    assert not node.service(UNIT).is_running
    stopped = status(name)
    assert stopped["state"] == "stopped"
    # The final checkpoint holds the step the trainer stopped at.
    assert stopped["last_checkpoint"]["step"] == stopped["step"]
    assert host(GPU_NODES[1]).service(UNIT).is_running, "the other node's job was touched"

    start = playbook("playbooks/job_start.yml", "-l", name, "-e", f"unbroken_jobs={JOB}")
    assert start.returncode == 0, start.stdout[-3000:]
    resumed = wait_for(lambda: status(name).get("resumed_from"), "the resumed run's status")
    assert resumed["step"] == stopped["step"]


def test_report_playbook_writes_html_with_curves_for_every_job() -> None:
    report = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "site-report.html"
    report.unlink(missing_ok=True)
    run = playbook("playbooks/report.yml", "-e", f"unbroken_report_path={report}")
    assert run.returncode == 0, run.stdout[-3000:]
    html = report.read_text()
    for name in GPU_NODES:
        assert f"{JOB} on {name}" in html
    # Loss, samples/s and the learning rate, from each job's metrics stream.
    assert html.count("<svg") == 3 * len(GPU_NODES)
    # Curves drawn from real data, not the "no data" placeholder.
    assert html.count("<polyline") >= 3 * len(GPU_NODES)
    assert "<script" not in html


def test_site_refuses_a_misspelt_role_switch_before_changing_anything() -> None:
    run = playbook("site.yml", "-e", "unbroken_enable_sesion_tools=false")
    assert run.returncode != 0
    assert "unbroken_enable_sesion_tools" in run.stdout
    assert "Unknown role switch" in run.stdout
    assert "Gathering Facts" not in run.stdout


def test_site_names_every_bad_role_switch_in_one_refusal() -> None:
    run = playbook(
        "site.yml",
        "-e",
        "unbroken_enable_trainer=maybe",
        "-e",
        "unbroken_enable_sesion_tools=false",
    )
    assert run.returncode != 0
    out = " ".join(run.stdout.split())
    assert "Unknown role switch(es) unbroken_enable_sesion_tools" in out, out[-3000:]
    assert 'unbroken_enable_trainer=\\"maybe\\"' in out, out[-3000:]
    assert "must be a boolean" in out, out[-3000:]
    assert "Gathering Facts" not in run.stdout
