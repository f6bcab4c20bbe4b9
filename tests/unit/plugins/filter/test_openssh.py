# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests for the OpenSSH filters (plugins/filter/openssh.py)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

# tests/unit/conftest.py makes the collection importable by its real name.
from ansible_collections.unbroken.training.plugins.filter.openssh import (
    FilterModule,
    openssh_probe_factor,
    openssh_probe_interval,
    openssh_seconds,
    sshd_keepalive_dropin,
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


def test_filters_are_registered_under_their_documented_names() -> None:
    assert FilterModule().filters() == {
        "openssh_probe_factor": openssh_probe_factor,
        "openssh_seconds": openssh_seconds,
        "openssh_probe_interval": openssh_probe_interval,
        "sshd_keepalive_dropin": sshd_keepalive_dropin,
    }


def test_seconds_reads_sshd_time_formats_and_refuses_the_rest() -> None:
    assert openssh_seconds("1m30s") == 90
    assert openssh_seconds(60) == 60
    assert openssh_seconds("1.5", None) is None
    assert openssh_seconds(True, -1) == -1
    with pytest.raises(AnsibleFilterError, match="not an OpenSSH time"):
        openssh_seconds("1 m")


def test_probe_interval_is_the_modules_rule() -> None:
    """One rule for the role, the module and pytorch_image: halve, round down, at least 1."""
    assert openssh_probe_interval(60, 2) == 30
    assert openssh_probe_interval("1m", "2") == 30
    assert openssh_probe_interval(45, 2) == 22
    assert openssh_probe_interval(1, 2) == 1
    assert openssh_probe_interval(60, 1) == 60
    with pytest.raises(AnsibleFilterError):
        openssh_probe_interval("soon", 2)


# The drop-in the sshd_keepalive role wrote before its template rendered through the filter
# (role defaults, an sshd that probes every interval), after the managed-file header.
DEFAULT_DROPIN = """\
# unbroken.training.sshd_keepalive: keep idle SSH sessions alive through NAT/firewall
# paths that drop connections idle for 300 s.
# sshd uses the first value it reads: this file must sort first in sshd_config.d and
# no line above the Include in sshd_config may set these keywords.
# A dead client is dropped after about 240 s without answers: the first probe
# goes out after 60 s of silence, and sshd gives up one period after the last of 3 probes.
ClientAliveInterval 60
ClientAliveCountMax 3
TCPKeepAlive yes
"""


def test_dropin_is_the_text_the_role_writes() -> None:
    assert sshd_keepalive_dropin(60, 3, 300) == DEFAULT_DROPIN
    assert sshd_keepalive_dropin("1m", "3", "300", tcp_keepalive="yes", factor=1) == DEFAULT_DROPIN


def test_dropin_halves_the_interval_where_sshd_probes_every_second_one() -> None:
    """OpenSSH 9.2-9.4 (factor 2): half of 45 is written, probes still go out every 44 s,
    the comment says why, and the drop time counts whole probe periods."""
    text = sshd_keepalive_dropin(
        45, 2, 300, tcp_keepalive=False, factor=2, reason="OpenSSH_9.2p1 probes  slowly\n"
    )
    lines = text.splitlines()
    assert lines[4:6] == [
        "# Requested interval 45 s, but OpenSSH_9.2p1 probes slowly",
        "# (fixed in OpenSSH 9.5): 22 is written, so probes go out every 44 s.",
    ]
    assert "# A dead client is dropped after about 132 s without answers: the first probe" in lines
    assert lines[-3:] == ["ClientAliveInterval 22", "ClientAliveCountMax 2", "TCPKeepAlive no"]
    # Halving uses the same rule as openssh_probe_interval, and says nothing when 1 stays 1.
    assert f"ClientAliveInterval {openssh_probe_interval(45, 2)}" in lines
    assert "Requested" not in sshd_keepalive_dropin(1, 3, 300, factor=2)


def test_dropin_refuses_what_it_cannot_read() -> None:
    with pytest.raises(AnsibleFilterError, match=r"sshd_keepalive_dropin: .*not an OpenSSH time"):
        sshd_keepalive_dropin("1 m", 3, 300)
    with pytest.raises(AnsibleFilterError, match="sshd_keepalive_dropin"):
        sshd_keepalive_dropin(60, "three", 300)
    with pytest.raises(AnsibleFilterError, match="sshd_keepalive_dropin"):
        sshd_keepalive_dropin(60, 3, 300, tcp_keepalive="maybe")
