# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Check mode on a host that has none of the role's packages yet (a fresh node)."""

from __future__ import annotations

import re

import pytest
from helpers import run_playbook

testinfra_hosts = ["all"]

# locales too: without it there is no /etc/locale.gen, which locale-gen must not be asked
# about in check mode (locale_locale_gen.yml's check-mode guard).
PACKAGES = ["tmux", "mosh", "screen", "locales"]
MANAGED = ["/usr/local/bin/mosh-server", "/etc/tmux.conf"]


def task_status(output: str, task: str) -> str:
    """The status Ansible printed for the first task whose name starts with ``task`` (a
    diff may come between the task's header and its status line)."""
    header = re.search(r"TASK \[[^\]:]*: " + re.escape(task), output)
    assert header, output[-3000:]
    block = output[header.end() :].split("\nTASK [", 1)[0]
    status = re.search(r"^(ok|changed|skipping|fatal): \[", block, re.MULTILINE)
    assert status, block
    return status.group(1)


def test_check_mode_on_a_host_without_the_packages_predicts_and_changes_nothing(host):
    """--check --diff must succeed, say it would install the packages and write the files,
    and leave the host as it was; a real run afterwards installs and configures again."""
    if "no_firewall" not in host.ansible.get_variables()["group_names"]:
        pytest.skip("one host is enough; the other keeps its firewall packages")
    name = host.backend.get_hostname()
    host.run_expect([0], "dpkg --purge " + " ".join(PACKAGES))
    host.run_expect([0], "rm -f " + " ".join(MANAGED))
    try:
        result = run_playbook("converge.yml", name, "--check", "--diff")
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        assert task_status(output, "Install tmux, mosh") == "changed"
        assert task_status(output, "Install the mosh-server wrapper") == "changed"
        assert task_status(output, "Write the system-wide tmux configuration") == "changed"
        for package in PACKAGES:
            assert not host.package(package).is_installed, package
        for path in MANAGED:
            assert not host.file(path).exists, path
    finally:
        restored = run_playbook("converge.yml", name)
        assert restored.returncode == 0, (restored.stdout + restored.stderr)[-3000:]
    for package in PACKAGES:
        assert host.package(package).is_installed, package
    assert host.file("/usr/local/bin/mosh-server").mode == 0o755
