# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Faults found by trying the role as a new user would (issue 17, items 10, 11 and 13).

A Match block that switches keepalive off for some users, an sshd that is not running
(stopped and disabled, or socket-activated), check mode in front of a shadowing line,
and sshd's time formats. Each asserts the effective values ``sshd -T -C`` shows, and puts
the host back the way it found it. First platform only: these drive whole playbooks.
"""

from __future__ import annotations

import json

import pytest
from helpers import (
    DROPIN,
    LOGIN,
    PRIMARY,
    SLOW_PROBE_VERSIONS,
    assert_still_serving,
    effective,
    openssh_version,
    playbook,
    reloads,
    snapshot,
    written_interval,
)

testinfra_hosts = [f"ansible://{PRIMARY}"]

ROOT_LOGIN = "sshd -T -C user=root,host=x,addr=192.0.2.1"
ALICE_LOGIN = "sshd -T -C user=alice,host=x,addr=198.51.100.7"


def line_count(host, path: str) -> int:
    return int(host.check_output(f"wc -l < {path}"))


def test_match_block_that_turns_keepalive_off_is_refused_with_its_line(host) -> None:
    """Item 10: `Match User root` / `ClientAliveInterval 0` at the end of sshd_config. sshd -T
    shows our value, sshd -T -C for root shows 0: the role must refuse, in a real run and
    in check mode, naming the file and line, and change nothing."""
    host.check_output("cp -p /etc/ssh/sshd_config /root/sshd_config.orig")
    try:
        host.check_output(
            "printf 'Match User root\\n    ClientAliveInterval 0\\n' >> /etc/ssh/sshd_config"
        )
        last = line_count(host, "/etc/ssh/sshd_config")
        assert effective(host, ROOT_LOGIN)["clientaliveinterval"] == "0"
        before, reloaded = snapshot(host), reloads(host)
        where = (
            f"/etc/ssh/sshd_config line {last} sets 'ClientAliveInterval 0' in the block of"
            f" /etc/ssh/sshd_config line {last - 1}: Match User root"
        )
        for args in ((), ("--check",)):
            result = playbook(*args)
            assert result.returncode != 0, result.stdout[-3000:]
            assert where in result.stdout, result.stdout[-3000:]
            assert "ClientAliveInterval is 0 for connections like user=root" in result.stdout
            assert snapshot(host) == before
            assert reloads(host) == reloaded
        # A connection the user names is checked even with the Match lines' own check off.
        named = playbook(
            "-e",
            json.dumps(
                {
                    "sshd_keepalive_check_match_blocks": False,
                    "sshd_keepalive_match_contexts": [{"user": "root", "addr": "203.0.113.9"}],
                }
            ),
        )
        assert named.returncode != 0, named.stdout[-3000:]
        assert "for connections like user=root,host=client.invalid,addr=203.0.113.9" in (
            named.stdout
        )
    finally:
        host.check_output("mv /root/sshd_config.orig /etc/ssh/sshd_config")
    assert_still_serving(host)


def test_match_block_that_keeps_our_values_passes(host) -> None:
    """A Match block on other keywords, or on ours with our values, is no reason to refuse;
    the connection made up for `Match Address` is checked and agrees."""
    host.check_output("cp -p /etc/ssh/sshd_config /root/sshd_config.orig")
    try:
        host.check_output(
            "printf 'Match Address 198.51.100.0/24\\n    X11Forwarding no\\n'"
            " >> /etc/ssh/sshd_config"
        )
        result = playbook("-e", "sshd_keepalive_client_alive_interval=1m")
        assert result.returncode == 0, result.stdout[-3000:]
        # 1m is sshd's own spelling of 60 s: the same drop-in as the default.
        assert effective(host, ALICE_LOGIN)["clientaliveinterval"] == written_interval(host, 60)
        assert (
            f"ClientAliveInterval {written_interval(host, 60)}" in host.file(DROPIN).content_string
        )
    finally:
        host.check_output("mv /root/sshd_config.orig /etc/ssh/sshd_config")
    assert_still_serving(host)


STOPPED = {
    # Stopping ssh.service removes /run/sshd (its RuntimeDirectory): sshd -T then fails.
    "stopped and disabled": "systemctl disable --now ssh.service",
    # Socket activation: ssh.socket listens, each connection gets its own sshd -i.
    "socket-activated": "systemctl disable --now ssh.service && systemctl start ssh.socket",
}


@pytest.mark.parametrize("case", list(STOPPED))
def test_host_whose_sshd_is_not_running_is_configured_without_starting_it(host, case: str) -> None:
    """Item 11: the role creates what sshd -T needs, writes and verifies the values, and
    neither reloads nor starts a service the user stopped."""
    host.check_output(f"cp -p {DROPIN} /root/dropin.orig")
    host.check_output(STOPPED[case])
    try:
        assert not host.file("/run/sshd").exists
        assert host.run("sshd -T").rc != 0, "sshd -T should need /run/sshd"
        result = playbook("-e", "sshd_keepalive_client_alive_interval=45")
        assert result.returncode == 0, result.stdout[-3000:]
        assert effective(host, "sshd -T")["clientaliveinterval"] == written_interval(host, 45)
        assert effective(host, ROOT_LOGIN)["clientaliveinterval"] == written_interval(host, 45)
        assert host.run("systemctl is-enabled ssh.service").stdout.strip() == "disabled"
        if case == "socket-activated":
            # The banner wait's connection let the socket start sshd (Accept=no on Debian),
            # which read the new files: a fresh login works.
            assert host.run("systemctl is-active ssh.socket").stdout.strip() == "active"
            assert host.check_output(LOGIN) == "login-ok"
        else:
            assert host.run("systemctl is-active ssh.service").stdout.strip() == "inactive"
    finally:
        # Back to the converged drop-in without another run: the service reads it at start.
        host.run("systemctl stop ssh.socket ssh.service")
        host.check_output(f"mv /root/dropin.orig {DROPIN}")
        host.run_expect([0], "systemctl enable --now ssh.service")
    assert_still_serving(host)


def test_check_mode_predicts_the_refusal_of_a_shadowing_line(host) -> None:
    """Item 13: --check used to report success where the real run fails. It must fail the
    same way, say it is a prediction, and name requested and written interval."""
    path = "/etc/ssh/sshd_config.d/00-aaa-site.conf"
    try:
        host.check_output(f"printf '# site\\nClientAliveInterval 0\\n' > {path}")
        before, reloaded = snapshot(host), reloads(host)
        result = playbook("--check", "--diff", "-e", "sshd_keepalive_client_alive_interval=45")
        assert result.returncode != 0, result.stdout[-3000:]
        assert "Check mode: a real run would refuse" in result.stdout, result.stdout[-3000:]
        assert f"{path} line 2 sets 'ClientAliveInterval 0'" in result.stdout
        written = written_interval(host, 45)
        if openssh_version(host) in SLOW_PROBE_VERSIONS:
            assert f"expected {written} (45 requested" in result.stdout, result.stdout[-3000:]
        assert snapshot(host) == before
        assert reloads(host) == reloaded
    finally:
        host.run(f"rm -f {path}")
    assert_still_serving(host)
