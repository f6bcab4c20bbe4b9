# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The rules host_firewall puts into ufw, firewalld and iptables (and records, to delete them
later). molecule/session_tools proves them in the real firewalls."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

# tests/unit/conftest.py makes the collection importable by its real name.
from ansible_collections.unbroken.training.plugins.filter.host_firewall import (
    host_firewall_rules,
)


def test_iptables_takes_one_rule_per_source_and_ip_version_with_all_the_ports() -> None:
    assert host_firewall_rules([], [29400, "40000-40010"], "tcp", "iptables") == [
        {"family": "ipv4", "source": "", "proto": "tcp", "ports": ["29400", "40000-40010"]},
        {"family": "ipv6", "source": "", "proto": "tcp", "ports": ["29400", "40000-40010"]},
    ]
    assert host_firewall_rules(["10.0.0.2", "fd00::2/64"], ["22"], "udp", "iptables") == [
        {"family": "ipv4", "source": "10.0.0.2", "proto": "udp", "ports": ["22"]},
        {"family": "ipv6", "source": "fd00::2/64", "proto": "udp", "ports": ["22"]},
    ]


@pytest.mark.parametrize("backend", ["ufw", "firewalld"])
def test_ufw_and_firewalld_take_one_rule_per_source_and_port(backend: str) -> None:
    # Their rule for any address covers both IP versions: one rule per port, no family.
    assert host_firewall_rules([], ["60000-61000"], "udp", backend) == [
        {"family": "", "source": "", "proto": "udp", "port": "60000-61000"}
    ]
    assert host_firewall_rules(["10.0.0.2", "fd00::2"], ["1", "2"], "tcp", backend) == [
        {"family": "ipv4", "source": "10.0.0.2", "proto": "tcp", "port": "1"},
        {"family": "ipv4", "source": "10.0.0.2", "proto": "tcp", "port": "2"},
        {"family": "ipv6", "source": "fd00::2", "proto": "tcp", "port": "1"},
        {"family": "ipv6", "source": "fd00::2", "proto": "tcp", "port": "2"},
    ]


def test_anything_but_lists_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="list of sources and of ports"):
        host_firewall_rules("10.0.0.2", ["1"], "tcp", "ufw")
