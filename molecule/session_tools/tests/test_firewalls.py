# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""iptables, ufw, firewalld and nftables, each made the active firewall in turn on the NET_ADMIN
instance, with a policy that drops or rejects what no rule accepts.

For each one: the role (firewall auto-detection, the scenario's converge.yml, which opens
the range through host_firewall) opens the mosh range in it, a second run changes nothing,
and UDP datagrams sent from the Docker host reach a listener on a port inside the range but
not one outside it. Then host_firewall itself (host_firewall.yml): a port opened for another
source only stays closed to the Docker host, opened for the Docker host's address it
arrives (and the other source's rule is gone), closed (state absent) it is dropped again,
now and in the firewall's persistent configuration, and a second close changes nothing.
Each test restores the instance's iptables firewall (netfilter-persistent), so the order of
the tests does not matter.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from helpers import run_playbook

INSTANCE = "ut-session-tools-2"  # the iptables_firewall instance: it has NET_ADMIN
testinfra_hosts = [f"ansible://{INSTANCE}"]

RANGE = (61000, 61010)  # molecule.yml group_vars
INSIDE, OUTSIDE = RANGE[0] + 5, RANGE[1] + 10
# host_firewall's own opening: a port outside the mosh range, and a source that is not the
# Docker host (TEST-NET-1, documentation only).
PROBE_NAME, PROBE_PORT, ELSEWHERE = "probe", RANGE[1] + 100, "192.0.2.10"

LISTEN = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(4)
print("ready", flush=True)
try:
    print("got", s.recv(64).decode())
except socket.timeout:
    print("nothing")
"""

# Each firewall starts from a clean slate: the iptables firewall off and the role's earlier
# iptables accept rule gone (it would let the probe through whatever ufw or nftables say).
CLEAN_SLATE = (
    "systemctl stop netfilter-persistent; iptables -F INPUT; ip6tables -F INPUT; "
    "iptables -P INPUT ACCEPT; ip6tables -P INPUT ACCEPT"
)
# ufw conflicts with netfilter-persistent (apt removes it): put it back and reload its rules.
RESTORE_IPTABLES = (
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -q netfilter-persistent "
    "iptables-persistent && systemctl restart netfilter-persistent"
)


NFTABLES_CONF = """#!/usr/sbin/nft -f
flush ruleset
table inet filter {
    chain input {
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        iif "lo" accept
    }
}
"""


def converge(*args: str) -> subprocess.CompletedProcess:
    return run_playbook("converge.yml", INSTANCE, *args)


def recap_changed(output: str) -> int:
    line = next(x for x in output.splitlines() if x.startswith(INSTANCE) and "changed=" in x)
    return int(line.split("changed=", 1)[1].split()[0])


def instance_network() -> dict:
    out = subprocess.run(
        ["docker", "inspect", INSTANCE], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    networks = json.loads(out)[0]["NetworkSettings"]["Networks"]
    return next(n for n in networks.values() if n.get("IPAddress"))


def instance_address() -> str:
    return str(instance_network()["IPAddress"])


def docker_host_address() -> str:
    """The source address of what the Docker host sends to the instance: its bridge's."""
    return str(instance_network()["Gateway"])


def udp_arrives(port: int) -> bool:
    """Send a few datagrams from the Docker host to a listener on the instance's port."""
    listener = subprocess.Popen(
        ["docker", "exec", INSTANCE, "python3", "-c", LISTEN, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "ready"
        address = instance_address()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _attempt in range(5):
                sender.sendto(b"mosh-probe", (address, port))
                time.sleep(0.2)
        out, _err = listener.communicate(timeout=15)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.communicate(timeout=10)
    return "got mosh-probe" in out


def apt_install(host, package: str) -> None:
    host.check_output(
        f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {package}"
    )


def assert_opened_and_idempotent() -> None:
    first = converge()
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = converge()
    assert second.returncode == 0, second.stdout[-3000:]
    assert recap_changed(second.stdout) == 0, second.stdout[-3000:]


def host_firewall(*args: str, **opening: object) -> subprocess.CompletedProcess:
    """host_firewall.yml with the probe opening (UDP PROBE_PORT) and ``opening`` on top;
    ``args`` go to ansible-playbook."""
    extra = {
        "host_firewall_name": PROBE_NAME,
        "host_firewall_proto": "udp",
        "host_firewall_ports": [str(PROBE_PORT)],
        **{f"host_firewall_{key}": value for key, value in opening.items()},
    }
    result = run_playbook("host_firewall.yml", INSTANCE, "-e", json.dumps(extra), *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def assert_sources_honoured_and_closed(host, listings: str) -> None:
    """host_firewall's opening of PROBE_PORT in the active firewall: for another source only,
    for the Docker host, then closed twice. ``listings`` is a shell command that prints the
    firewall's rules, running and persistent."""

    def rules() -> str:
        return host.run(listings).stdout

    me = docker_host_address()
    assert not udp_arrives(PROBE_PORT), "the firewall should drop the probe before any opening"
    host_firewall(sources=[ELSEWHERE])
    assert ELSEWHERE in rules()
    assert not udp_arrives(PROBE_PORT), "opened for another source only, yet the probe arrived"

    host_firewall(sources=[me])
    assert udp_arrives(PROBE_PORT)
    listed = rules()
    assert me in listed
    assert ELSEWHERE not in listed, "the rule for the source no longer wanted should be deleted"

    closed = host_firewall(state="absent")
    assert recap_changed(closed.stdout) > 0
    listed = rules()
    assert me not in listed and str(PROBE_PORT) not in listed, listed
    assert not udp_arrives(PROBE_PORT)
    again = host_firewall(state="absent")
    assert recap_changed(again.stdout) == 0, again.stdout[-3000:]


@contextlib.contextmanager
def the_active_firewall(host, package: str, start: str, stop: str) -> Iterator[None]:
    """Make ``package`` the only active firewall from a clean slate (``start``); afterwards
    ``stop`` it, purge it and give the instance its iptables firewall back."""
    host.run(CLEAN_SLATE)
    apt_install(host, package)
    host.check_output(start)
    try:
        yield
    finally:
        host.run(stop)
        host.run(f"DEBIAN_FRONTEND=noninteractive apt-get purge -y -q {package}")
        host.run(RESTORE_IPTABLES)


@pytest.fixture
def ufw(host) -> Iterator[None]:
    with the_active_firewall(
        host, "ufw", start="ufw --force enable", stop="ufw --force reset; ufw --force disable"
    ):
        yield


@pytest.fixture
def firewalld(host) -> Iterator[None]:
    # The zone files firewall-cmd wrote are not conffiles: purge would leave them behind.
    with the_active_firewall(
        host,
        "firewalld",
        start="systemctl start firewalld && firewall-cmd --state",
        stop="systemctl stop firewalld; rm -rf /etc/firewalld",
    ):
        yield


@pytest.fixture
def iptables(host) -> Iterator[None]:
    """The instance's own iptables firewall (netfilter-persistent), with a drop policy; its
    saved rules are put back afterwards."""
    host.run("cp /etc/iptables/rules.v4 /tmp/rules.v4.test; cp /etc/iptables/rules.v6 /tmp/v6.test")
    host.run(CLEAN_SLATE)
    host.check_output(
        "systemctl start netfilter-persistent && iptables -F INPUT && ip6tables -F INPUT"
        " && iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
        " && iptables -A INPUT -i lo -j ACCEPT && iptables -P INPUT DROP"
    )
    try:
        yield
    finally:
        host.run(
            "iptables -P INPUT ACCEPT; mv /tmp/rules.v4.test /etc/iptables/rules.v4;"
            " mv /tmp/v6.test /etc/iptables/rules.v6; systemctl restart netfilter-persistent"
        )


@pytest.mark.usefixtures("iptables")
def test_iptables_gets_the_mosh_range_and_host_firewall_honours_sources(host) -> None:
    assert not udp_arrives(INSIDE), "the drop policy should apply before the role ran"
    assert_opened_and_idempotent()
    rules = host.check_output("iptables -S INPUT")
    assert f"--dports {RANGE[0]}:{RANGE[1]}" in rules and "unbroken.training mosh" in rules
    assert udp_arrives(INSIDE)
    assert not udp_arrives(OUTSIDE)
    # Check mode on a host without the records' directory predicts and changes nothing.
    host.run_test("rm -rf /var/lib/unbroken/host_firewall")
    checked = host_firewall("--check", sources=[docker_host_address()])
    assert recap_changed(checked.stdout) > 0
    assert str(PROBE_PORT) not in host.check_output("iptables -S INPUT")
    assert not host.file("/var/lib/unbroken/host_firewall").exists
    assert_sources_honoured_and_closed(host, "iptables -S INPUT; cat /etc/iptables/rules.v4")


@pytest.mark.usefixtures("ufw")
def test_ufw_gets_the_mosh_range_and_host_firewall_honours_sources(host) -> None:
    assert not udp_arrives(INSIDE), "ufw's default policy should drop before the role ran"
    assert_opened_and_idempotent()
    status = host.check_output("ufw status")
    assert f"{RANGE[0]}:{RANGE[1]}/udp" in status
    assert f"{RANGE[0]}:{RANGE[1]}/udp (v6)" in status
    assert udp_arrives(INSIDE)
    assert not udp_arrives(OUTSIDE)
    assert_sources_honoured_and_closed(host, "ufw status; cat /etc/ufw/user.rules")


@pytest.mark.usefixtures("firewalld")
def test_firewalld_gets_the_mosh_range_and_host_firewall_honours_sources(host) -> None:
    assert not udp_arrives(INSIDE), "firewalld's default zone should reject before the role ran"
    assert_opened_and_idempotent()
    port = f"{RANGE[0]}-{RANGE[1]}/udp"
    assert port in host.check_output("firewall-cmd --list-ports").split()
    assert port in host.check_output("firewall-cmd --permanent --list-ports").split()
    assert udp_arrives(INSIDE)
    assert not udp_arrives(OUTSIDE)
    assert_sources_honoured_and_closed(
        host,
        "firewall-cmd --list-ports; firewall-cmd --list-rich-rules;"
        " firewall-cmd --permanent --list-ports; firewall-cmd --permanent --list-rich-rules",
    )


@pytest.fixture
def nftables(host) -> Iterator[None]:
    """nftables alone: a hand-written ruleset that drops input."""
    with the_active_firewall(
        host,
        "nftables",
        start=f"cat > /etc/nftables.conf <<'EOF'\n{NFTABLES_CONF}EOF\nsystemctl restart nftables",
        stop="systemctl stop nftables; nft flush ruleset; "
        "rm -rf /etc/nftables.d /etc/nftables.conf",
    ):
        yield


@pytest.mark.usefixtures("nftables")
def test_nftables_gets_the_mosh_range_and_host_firewall_honours_sources(host) -> None:
    assert not udp_arrives(INSIDE), "the ruleset's drop policy should apply before the role ran"
    before = host.file("/etc/nftables.conf").sha256sum
    bad = converge("-e", "session_tools_nftables_chain='inet filter nosuch'")
    assert bad.returncode != 0
    output = " ".join((bad.stdout + bad.stderr).split())
    assert 'has no chain "inet filter nosuch"' in output, output[-3000:]
    assert host.file("/etc/nftables.conf").sha256sum == before
    assert not host.file("/etc/nftables.d").exists
    # Check mode on this fresh nftables host (no drop-in directory yet) predicts and changes
    # nothing.
    chain = host.check_output("nft list chain inet filter input")
    checked = converge("--check", "--diff")
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    assert recap_changed(checked.stdout) > 0
    assert host.check_output("nft list chain inet filter input") == chain
    assert host.file("/etc/nftables.conf").sha256sum == before
    assert not host.file("/etc/nftables.d").exists

    assert_opened_and_idempotent()
    rule = f"udp dport {RANGE[0]}-{RANGE[1]} accept"
    assert rule in host.check_output("nft list chain inet filter input")
    assert udp_arrives(INSIDE)
    assert not udp_arrives(OUTSIDE)
    # The next load of the ruleset (a reboot, `systemctl reload nftables`) keeps it open.
    host.check_output("systemctl restart nftables")
    assert host.check_output("nft list chain inet filter input").count(rule) == 1
    assert udp_arrives(INSIDE)
    # A new range replaces our rule in the running chain instead of adding a second one.
    narrowed = converge("-e", "session_tools_mosh_port_range_end=61008")
    assert narrowed.returncode == 0, narrowed.stdout[-3000:] + narrowed.stderr[-3000:]
    chain = host.check_output("nft list chain inet filter input")
    assert f"udp dport {RANGE[0]}-61008 accept" in chain
    assert rule not in chain
    assert chain.count('comment "unbroken.training mosh"') == 1
    assert "61000-61008" in host.file("/etc/nftables.d/50-unbroken-mosh.nft").content_string

    assert_sources_honoured_and_closed(
        host, "nft list chain inet filter input; cat /etc/nftables.d/50-unbroken-probe.nft"
    )
    assert not host.file("/etc/nftables.d/50-unbroken-probe.nft").exists
    # The next load of the ruleset (its include now matches only the mosh file) keeps it closed.
    host.check_output("systemctl restart nftables")
    assert not udp_arrives(PROBE_PORT)
