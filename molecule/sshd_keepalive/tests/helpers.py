# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Shared by the scenario's testinfra modules: commands, snapshots and playbook runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

SCENARIO = Path(__file__).resolve().parents[1]
PRIMARY = "ut-sshd-keepalive-1"
DROPIN = "/etc/ssh/sshd_config.d/00-unbroken-keepalive.conf"
CLIENT_DROPIN = "/etc/ssh/ssh_config.d/00-unbroken-keepalive.conf"
LOGIN = (
    "ssh -i /root/.ssh/ut_login_key -o BatchMode=yes -o StrictHostKeyChecking=no"
    " -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10 root@127.0.0.1 echo login-ok"
)


# OpenSSH versions whose sshd sends a ClientAlive probe only every second interval (the
# whole-second check after ppoll() wants now > last + interval; fixed in 9.5, upstream commit
# 9d7193a8). On them the role writes half the requested interval.
SLOW_PROBE_VERSIONS = ("9.2", "9.3", "9.4")


def openssh_version(host) -> str:
    out = host.run("sshd -V")
    return re.search(r"OpenSSH_(\d+\.\d+)", out.stdout + out.stderr).group(1)


def written_interval(host, requested: int = 60) -> str:
    """The ClientAliveInterval the role must write for ``requested`` on this host's sshd."""
    if openssh_version(host) in SLOW_PROBE_VERSIONS:
        return str(max(1, requested // 2))
    return str(requested)


def effective(host, command: str) -> dict:
    out = host.check_output(command)
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def snapshot(host) -> str:
    """Content hashes of everything under /etc/ssh (configs, drop-ins, host keys)."""
    return host.check_output("cd /etc/ssh && find . -type f -print0 | sort -z | xargs -0 sha256sum")


def reloads(host) -> int:
    """How many times sshd was told to reload (it logs each SIGHUP)."""
    out = host.run("journalctl -q -u ssh --no-pager -o cat | grep -c 'Received SIGHUP'")
    return int(out.stdout.strip() or 0)


def playbook(
    *args: str, name: str = "converge.yml", extra_env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run a scenario playbook on the first platform; stdout holds the whole output,
    with whitespace collapsed so messages wrapped by Ansible's display still match."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_PIPELINING="1")
    env.update(extra_env or {})
    env["COLUMNS"] = "10000"  # no wrapping (it may split words at hyphens)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(SCENARIO.parents[1] / ".cache/collections"))
    command = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        "--limit",
        PRIMARY,
        str(SCENARIO / name),
        *args,
    ]
    result = subprocess.run(
        command,
        check=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        env=env,
    )
    result.stdout = " ".join(result.stdout.split())
    return result


def assert_still_serving(host) -> None:
    """sshd answers a fresh key login and its files still give our previous value."""
    assert host.check_output(LOGIN) == "login-ok"
    assert effective(host, "sshd -T")["clientaliveinterval"] == written_interval(host, 60)


def playbook_json(*args: str) -> tuple:
    """Run converge.yml with the JSON callback alone; return (exit status, every task result
    of the first platform in order, handlers included, each with its task's name as "task")."""
    result = playbook(
        *args,
        # The scenario enables profile_tasks, which would print into the JSON; an empty
        # list is refused, so name the stdout callback itself (loaded once).
        extra_env={
            "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.json",
        },
    )
    report = json.loads(result.stdout[result.stdout.index("{") :])
    results = [
        dict(task["hosts"][PRIMARY], task=task["task"]["name"])
        for play in report["plays"]
        for task in play["tasks"]
        if PRIMARY in task["hosts"]
    ]
    return result.returncode, results


def ran_on_host(results: list) -> list:
    """The results of module runs on the host: not skipped, and not one of the actions that
    run on the controller alone."""
    local = {"set_fact", "assert", "debug", "include_vars", "meta", "include_tasks", "fail"}
    local |= {f"ansible.builtin.{action}" for action in local | {"validate_argument_spec"}}
    local |= {"validate", "unbroken.training.validate"}  # the collection's action plugin
    return [
        result
        for result in results
        if not result.get("skipped") and result.get("action") not in local
    ]
