# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Effective behaviour of session_tools: mosh starts in range, tmux uses the config."""

from __future__ import annotations

import json
import re
import shlex
import subprocess

import pytest
from helpers import run_playbook

testinfra_hosts = ["all"]

RANGE = (61000, 61010)  # molecule.yml group_vars
HISTORY = 250000


def start_mosh_server(host, env: str, command: str = "mosh-server new") -> int:
    """Start mosh-server like a mosh client does over ssh, return its UDP port, stop it."""
    out = host.run(f"env -i PATH=/usr/local/bin:/usr/bin:/bin {env} {command} -- /bin/true")
    assert out.rc == 0, out.stdout + out.stderr
    port = re.search(r"MOSH CONNECT (\d+) ", out.stdout)
    pid = re.search(r"detached, pid = (\d+)", out.stderr)
    assert port and pid, out.stdout + out.stderr
    host.run(f"kill {pid.group(1)}")
    return int(port.group(1))


def test_tools_are_installed(host):
    for pkg in ("tmux", "mosh", "screen", "locales"):
        assert host.package(pkg).is_installed, pkg


def test_utf8_locale_is_loadable(host):
    assert "en_US.utf8" in host.check_output("locale -a").split()
    charmap = host.check_output("LC_ALL=en_US.UTF-8 locale charmap 2>&1")
    assert charmap.strip() == "UTF-8"


def test_mosh_server_with_the_locale_starts_in_the_range(host):
    port = start_mosh_server(
        host, "LANG=en_US.UTF-8", f"/usr/bin/mosh-server new -p {RANGE[0]}:{RANGE[1]}"
    )
    assert RANGE[0] <= port <= RANGE[1]


def test_plain_mosh_server_uses_the_range_and_the_fallback_locale(host):
    # What `mosh host` runs on the server: no -p, and a session locale that is not UTF-8.
    # Without the wrapper this either fails (no UTF-8 locale) or binds 60001+.
    port = start_mosh_server(host, "LANG=C")
    assert RANGE[0] <= port <= RANGE[1]


def test_system_tmux_config_is_in_effect(host):
    out = host.check_output(
        "tmux -L verify-root new-session -d \\; show-options -gv history-limit \\; kill-server"
    )
    assert out.strip() == str(HISTORY)


def test_user_tmux_config_is_untouched_and_still_wins(host):
    assert host.file("/home/alice/.tmux.conf").content_string == "set -g history-limit 4242\n"
    out = host.check_output(
        "su alice -c 'tmux -L verify-alice new-session -d \\; show-options -gv history-limit"
        " \\; kill-server'"
    )
    assert out.strip() == "4242"


def test_firewall_rule_only_where_a_firewall_is_active(host):
    groups = host.ansible.get_variables()["group_names"]
    if "iptables_firewall" in groups:
        rules = host.check_output("iptables -S INPUT")
        assert f"--dports {RANGE[0]}:{RANGE[1]}" in rules and "-j ACCEPT" in rules
        assert f"{RANGE[0]}:{RANGE[1]}" in host.check_output("ip6tables -S INPUT")
        saved = host.file("/etc/iptables/rules.v4").content_string
        assert f"--dports {RANGE[0]}:{RANGE[1]}" in saved and "unbroken.training mosh" in saved
    else:
        # No firewall was active: the role must not have installed or started one.
        assert not host.exists("iptables")
        assert not host.package("ufw").is_installed


def _apply_role(host, extra: dict) -> subprocess.CompletedProcess:
    return run_playbook("apply.yml", host.backend.get_hostname(), "-e", json.dumps(extra))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"session_tools_mosh_port_range_start": 61010, "session_tools_mosh_port_range_end": 61000},
         "the start must not be greater than the end"),
        ({"session_tools_mosh_port_range_start": 80}, "must lie within 1024-65535"),
        ({"session_tools_mosh_port_range_end": 70000}, "must lie within 1024-65535"),
        ({"session_tools_locale": "xx_YY.UTF-8"}, "is not a supported UTF-8 locale"),
        ({"session_tools_locale": "en_US.ISO-8859-1"}, "is not a supported UTF-8 locale"),
        ({"session_tools_nftables_chain": "inet filter input; flush ruleset"},
         "give the family (ip, ip6 or inet), table and input chain"),
        ({"session_tools_tmux_extra_options": ["set -g mouse on", "set -g status off\nrun x"]},
         "must each be a single non-empty tmux option line"),
        # Two bad values: the one refusal names both.
        ({"session_tools_tmux_history_limit": 0, "session_tools_locale": "xx_YY.UTF-8"},
         "is not a supported UTF-8 locale. mosh-server refuses to start without a UTF-8 locale,"
         " so the value must be one of glibc's UTF-8 locales written as <name>.UTF-8, e.g."
         " en_US.UTF-8, de_DE.UTF-8 or C.UTF-8. session_tools_tmux_history_limit is 0"),
    ],
)  # fmt: skip
def test_bad_input_fails_before_anything_changes(host, bad, message):
    if "iptables_firewall" in host.ansible.get_variables()["group_names"]:
        pytest.skip("bad input is checked on the controller; one host is enough")
    watched = ["/etc/tmux.conf", "/usr/local/bin/mosh-server"]
    before = {p: host.file(p).sha256sum for p in watched}
    # Values that would change both files if validation let the run through.
    extra = {
        "session_tools_tmux_config_manage": True,
        "session_tools_tmux_history_limit": 777,
        "session_tools_mosh_port_range_start": 61000,
        "session_tools_mosh_port_range_end": 61010,
        **bad,
    }
    proc = _apply_role(host, extra)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert message in " ".join(output.split()), output
    assert "Install tmux, mosh" not in output
    assert {p: host.file(p).sha256sum for p in watched} == before


def test_verification_names_every_program_that_does_not_work(host):
    """Faults injected after a good converge: mosh-server and tmux replaced by stand-ins
    that fail. The configuration is unchanged, so only the role's verification can notice;
    it must fail and name both programs. The real binaries are put back afterwards."""
    if "iptables_firewall" in host.ansible.get_variables()["group_names"]:
        pytest.skip("one host is enough")
    stand_in = "#!/bin/sh\necho 'test stand-in: broken on purpose' >&2\nexit 3\n"
    programs = ["/usr/bin/mosh-server", "/usr/bin/tmux"]
    try:
        for path in programs:
            host.run_test(f"mv {path} {path}.test-real")
            host.run_test(f"printf %s {shlex.quote(stand_in)} > {path} && chmod 755 {path}")
        proc = _apply_role(host, {})
    finally:
        for path in programs:
            host.run(f"test -e {path}.test-real && mv -f {path}.test-real {path}")
    output = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, output
    assert "mosh-server did not start on a port in 61000-61010 (exit 3)" in output, output
    assert "test stand-in: broken on purpose" in output, output
    assert "tmux reports history-limit test stand-in: broken on purpose (exit 3)" in output, output
    assert "is not in 'locale -a'" not in output, output
    # The real programs are back and work.
    assert RANGE[0] <= start_mosh_server(host, "LANG=C") <= RANGE[1]
