# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Verify the sshd_keepalive role on every platform: effective values, and no lockout."""

from __future__ import annotations

from helpers import DROPIN, LOGIN, SLOW_PROBE_VERSIONS, effective, openssh_version


def test_sshd_effective_values(host) -> None:
    """60 s requested; OpenSSH 9.2-9.4 (platform 1, Debian 12) get 30 written because they
    probe every second interval; 10.0 (platform 2, Debian 13) gets 60."""
    config = effective(host, "sshd -T")
    slow = openssh_version(host) in SLOW_PROBE_VERSIONS
    assert config["clientaliveinterval"] == ("30" if slow else "60")
    assert config["clientalivecountmax"] == "3"
    assert config["tcpkeepalive"] == "yes"
    dropin = host.file(DROPIN).content_string
    assert ("sends a probe every second interval" in dropin) is slow
    # 60 s between probes, 3 unanswered, then one more period: measured 240 s, not 180.
    assert "A dead client is dropped after about 240 s" in dropin


def test_sshd_effective_values_for_a_connection(host) -> None:
    config = effective(host, "sshd -T -C user=root,host=client.example,addr=192.0.2.1")
    assert config["clientaliveinterval"] == effective(host, "sshd -T")["clientaliveinterval"]
    assert config["clientaliveinterval"] in ("30", "60")


def test_main_config_reads_the_dropin_dir_first(host) -> None:
    """Platform 2 starts without the Include: the role must add it above everything."""
    lines = host.file("/etc/ssh/sshd_config").content_string.splitlines()
    directives = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert directives[0] == "Include /etc/ssh/sshd_config.d/*.conf"


def test_sshd_active_and_host_keys_present(host) -> None:
    assert host.service("ssh").is_running
    assert host.file("/etc/ssh/ssh_host_ed25519_key").exists


def test_fresh_key_login_after_reload(host) -> None:
    assert host.check_output(LOGIN) == "login-ok"


def test_client_effective_values(host) -> None:
    config = effective(host, "ssh -G gpu01.example.org")
    assert config["serveraliveinterval"] == "60"
    assert config["serveralivecountmax"] == "3"
    assert config["tcpkeepalive"] == "yes"


def test_no_backup_files_left(host) -> None:
    assert host.check_output("find /etc/ssh -name '*~' | wc -l") == "0"
