# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The role on a host without apt package lists (a fresh cloud or container image)."""

from __future__ import annotations

import pytest
from helpers import run_playbook

testinfra_hosts = ["all"]

PACKAGES = ["tmux", "mosh"]


def test_missing_package_lists_are_fetched_before_installing(host):
    """With no lists, apt knows no package: the role must refresh the index itself (the
    role alone, outside site.yml), then install, and a re-run must not refresh again."""
    if "no_firewall" not in host.ansible.get_variables()["group_names"]:
        pytest.skip("one host is enough; the other keeps its firewall packages")
    name = host.backend.get_hostname()
    host.run_expect([0], "dpkg --purge " + " ".join(PACKAGES))
    host.run_expect([0], "find /var/lib/apt/lists -maxdepth 1 -type f -delete")
    assert host.run("apt-cache policy tmux").stdout.strip() == ""
    result = run_playbook("converge.yml", name)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    for package in PACKAGES:
        assert host.package(package).is_installed, package
    assert host.run("ls /var/lib/apt/lists | grep -c _Packages").stdout.strip() != "0"
    stamp = host.check_output("stat -c %Y /var/lib/apt/lists")
    again = run_playbook("converge.yml", name)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert host.check_output("stat -c %Y /var/lib/apt/lists") == stamp
