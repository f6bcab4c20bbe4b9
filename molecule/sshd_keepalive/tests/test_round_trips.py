# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""What the role does on a host that is already right, and that skipping hides nothing.

On an unchanged host the role changes, writes and reloads nothing, and its reads find the
configuration in force; a hand-edited drop-in is still rewritten and re-validated, and a
shadowing line is still refused with its file and line although none of our files
changes. Each test runs converge.yml with the JSON callback and looks at what the module
runs that reached the host did. How many module runs that takes is a cost, not a
behaviour: benchmarks/round_trips_bench.py counts them.
"""

from __future__ import annotations

import pytest
from helpers import (
    CLIENT_DROPIN,
    DROPIN,
    LOGIN,
    PRIMARY,
    assert_still_serving,
    effective,
    playbook,
    playbook_json,
    ran_on_host,
    reloads,
    snapshot,
)

testinfra_hosts = [f"ansible://{PRIMARY}"]

READ = "unbroken.training.sshd_config_info"
WRITES = {
    "unbroken.training.file_content",
    "ansible.builtin.template",
    "ansible.builtin.file",
    "ansible.builtin.lineinfile",
    "ansible.builtin.copy",
    "ansible.builtin.package",
    "ansible.builtin.apt",
}


def shadow_checks(results: list) -> list:
    """The shadowing checks (server and client) that were evaluated, not skipped."""
    return [
        result
        for result in results
        if result.get("action") in ("unbroken.training.validate", "validate")
        and "shadows" in result["task"]
        and not result.get("skipped")
    ]


def test_unchanged_host_is_left_alone_and_still_checked(host) -> None:
    before, reloaded = snapshot(host), reloads(host)
    status, results = playbook_json()
    assert status == 0, results[-3:]
    assert not [result["task"] for result in results if result.get("changed")]
    ran = ran_on_host(results)
    actions = [result["action"] for result in ran]
    # Each part's read carries the verdict: our drop-in included, every value in force.
    reads = [result for result in ran if result["action"] == READ]
    assert {read["command"][1] for read in reads} == {"-T", "-G"}, actions
    assert all(read["included"] is True and read["mismatches"] == [] for read in reads)
    # No write, no reload, no banner wait.
    assert not WRITES & set(actions), actions
    assert "ansible.builtin.systemd_service" not in actions
    assert "ansible.builtin.wait_for" not in actions
    assert len(shadow_checks(results)) == 2, "both parts' shadowing checks run on every run"
    assert snapshot(host) == before
    assert reloads(host) == reloaded


SHADOWS = {
    "server": (
        "/etc/ssh/sshd_config.d/00-aaa-site.conf",
        "ClientAliveInterval 0",
        "/etc/ssh/sshd_config.d/00-aaa-site.conf line 2 sets 'ClientAliveInterval 0' first",
    ),
    "client": (
        "/etc/ssh/ssh_config.d/00-aaa-site.conf",
        "Host *\\n    ServerAliveInterval 5",
        "/etc/ssh/ssh_config.d/00-aaa-site.conf line 3 sets 'ServerAliveInterval 5' first",
    ),
}


@pytest.mark.parametrize("part", list(SHADOWS))
def test_shadowing_line_is_refused_when_none_of_our_files_changes(host, part: str) -> None:
    """The first read is the verdict when nothing is written: it must still catch this."""
    path, line, message = SHADOWS[part]
    try:
        host.check_output(f"printf '# site\\n{line}\\n' > {path}")
        before, reloaded = snapshot(host), reloads(host)
        status, results = playbook_json()
        assert status != 0
        failed = [result for result in results if result.get("failed")]
        assert failed, "the run failed without a failed task"
        assert message in failed[-1]["msg"], failed[-1]["msg"]
        actions = [result["action"] for result in ran_on_host(results)]
        assert not WRITES & set(actions), actions
        assert snapshot(host) == before
        assert reloads(host) == reloaded
    finally:
        host.run(f"rm -f {path}")
    assert_still_serving(host)


def test_hand_edited_dropins_are_rewritten_and_revalidated(host) -> None:
    host.check_output(f"sed -i 's/^ClientAliveCountMax .*/ClientAliveCountMax 9/' {DROPIN}")
    host.check_output(f"chmod 0600 {CLIENT_DROPIN}")
    reloaded = reloads(host)
    try:
        status, results = playbook_json()
    finally:
        if "ClientAliveCountMax 9" in host.file(DROPIN).content_string:
            playbook()  # put the host back for the other tests
    assert status == 0, results[-3:]
    ran = ran_on_host(results)
    writes = [result for result in ran if result["action"] == "unbroken.training.file_content"]
    assert {result["path"] for result in writes} == {DROPIN, CLIENT_DROPIN}
    assert all(result["changed"] for result in writes)
    # Per part, the first read and the candidate after the write. The server's candidate
    # is sshd -T of the whole configuration: the validation (sshd -t's checks and more).
    reads = [result for result in ran if result["action"] == READ]
    server = [read for read in reads if read["command"][1] == "-T"]
    client = [read for read in reads if read["command"][1] == "-G"]
    server_before, server_candidate, client_candidate = server[0], server[-1], client[-1]
    assert server_candidate is not server_before, "the candidate is read after the write"
    assert "ClientAliveCountMax is 9, expected 3" in server_before["mismatches"][0]["message"]
    assert server_candidate["command"] == ["/usr/sbin/sshd", "-T", "-f", "/etc/ssh/sshd_config"]
    assert server_candidate["mismatches"] == []
    assert client_candidate["mismatches"] == []
    assert "ansible.builtin.wait_for" in [result["action"] for result in ran]
    assert reloads(host) == reloaded + 1
    assert effective(host, "sshd -T")["clientalivecountmax"] == "3"
    assert host.file(CLIENT_DROPIN).mode == 0o644
    assert host.check_output("find /etc/ssh -name '*~' | wc -l") == "0"
    assert host.check_output(LOGIN) == "login-ok"
