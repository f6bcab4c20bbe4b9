# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests for the openssh_probe_factor filter (plugins/filter/openssh.py)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

# tests/unit/conftest.py makes the collection importable by its real name.
from ansible_collections.unbroken.training.plugins.filter.openssh import (
    FilterModule,
    openssh_probe_factor,
)

# What `sshd -V` prints (on stderr) in the images the dev container is built from.
DEBIAN_12 = "OpenSSH_9.2p1 Debian-2+deb12u7, OpenSSL 3.0.17 1 Jul 2025\n"
UBUNTU_24_04 = "OpenSSH_9.6p1 Ubuntu-3ubuntu13.5, OpenSSL 3.0.13 30 Jan 2024\n"
# OpenSSH 8.x has no -V: "unknown option -- V", the usage text, and the version first.
UBUNTU_22_04 = (
    "unknown option -- V\nOpenSSH_8.9p1 Ubuntu-3ubuntu0.10, OpenSSL 3.0.2 15 Mar 2022\n"
    "usage: sshd [-46DdeGiqTtV] [-C connection_spec] [-c host_cert_file]\n"
)


@pytest.mark.parametrize(
    ("text", "factor"),
    [
        (DEBIAN_12, 2),
        ("OpenSSH_9.4p1, OpenSSL 3.1.2", 2),
        ("OpenSSH_9.3p2 Ubuntu-1ubuntu3", 2),
        ("OpenSSH_9.5p1, OpenSSL 3.1.4", 1),
        ("OpenSSH_9.1p1, OpenSSL 3.0.7", 1),
        (UBUNTU_24_04, 1),
        (UBUNTU_22_04, 1),
        ("OpenSSH_10.0p2 Debian-7", 1),
    ],
)
def test_probe_factor_is_two_only_on_openssh_9_2_to_9_4(text: str, factor: int) -> None:
    assert openssh_probe_factor(text) == factor


def test_text_without_a_version_or_not_text_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="found no OpenSSH version in 'sshd: not found"):
        openssh_probe_factor("sshd: not found\n")
    with pytest.raises(AnsibleFilterError, match="expects the text sshd -V printed, got int"):
        openssh_probe_factor(2)


def test_filter_is_registered_under_its_documented_name() -> None:
    assert FilterModule().filters() == {"openssh_probe_factor": openssh_probe_factor}
