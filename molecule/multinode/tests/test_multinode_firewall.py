# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The trainer role's firewall opening for the multi-node job, against a real firewall.

prepare.yml gives both nodes an nftables ruleset whose input policy is drop (loopback and
replies excepted), and the converge leaves trainer_firewall at auto. So the job can train
across the nodes only through the rules the role inserted; these tests show that it does,
that the rules name the other node only, and that a source that is not a node of the job
(the Docker host, on the same network) is still dropped on the very same ports. They run
after tests/test_multinode.py's faults, so the rules also survived the rendezvous host's
restart (nftables.service reloading the configuration with the role's drop-in file).
"""

from __future__ import annotations

import json
import socket
import subprocess

from test_multinode import JOB, NAME, NODES, sh, wait_training_both

COMMENT = f"unbroken.training trainer-{NAME}"
RDZV_PORT = int(JOB.get("rdzv_port", 29400))
OUTSIDE_PORT = RDZV_PORT + 1  # neither the rendezvous port nor in the ephemeral range
CONNECT_TIMEOUT = 3.0

PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("connected")
except ConnectionRefusedError:
    print("refused")
except OSError as error:
    print("dropped", error)
"""


def address(node: str) -> str:
    out = subprocess.run(
        ["docker", "inspect", node], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    networks = json.loads(out)[0]["NetworkSettings"]["Networks"]
    return str(networks["ut-multinode"]["IPAddress"])


def reaches_from_node(node: str, target: str, port: int) -> bool:
    """A TCP connection from ``node`` gets an answer (accepted, or refused: no listener)."""
    out = sh(node, f"python3 -c '{PROBE}' {target} {port} {CONNECT_TIMEOUT}", timeout=30)
    return out.split()[0] in ("connected", "refused")


def reaches_from_docker_host(target: str, port: int) -> bool:
    try:
        socket.create_connection((target, port), timeout=CONNECT_TIMEOUT).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return True


def ephemeral_port(node: str) -> int:
    """A port in the node's ip_local_port_range, where gloo's listeners live (a listener
    there or not: a reached port accepts or refuses, a dropped one stays silent)."""
    low, high = (int(x) for x in sh(node, "cat /proc/sys/net/ipv4/ip_local_port_range").split())
    assert not low <= OUTSIDE_PORT <= high, (low, high)
    return high - 7


def test_the_job_trains_through_a_drop_policy_because_the_role_opened_its_ports() -> None:
    """Each node's input chain: policy drop, and the role's accept rules for the other node."""
    found = wait_training_both()
    assert {st["extra"]["world_size"] for st in found.values()} == {2}, found
    for node, peer in ((NODES[0], NODES[1]), (NODES[1], NODES[0])):
        chain = sh(node, "nft list chain inet filter input")
        assert "policy drop;" in chain, chain
        ours = [line.strip() for line in chain.splitlines() if COMMENT in line]
        assert ours, chain
        # Source-restricted: the other node's address, and no other source.
        for rule in ours:
            assert rule.startswith(f"ip saddr {address(peer)} ") or rule.startswith(
                f"ip saddr {{ {address(peer)} }} "
            ), rule
        low, high = sh(node, "cat /proc/sys/net/ipv4/ip_local_port_range").split()
        assert f"{low}-{high}" in " ".join(ours), ours
        # The rendezvous port only where the c10d store runs.
        assert (str(RDZV_PORT) in " ".join(ours)) == (node == NODES[0]), ours
        # The same rules load at every boot (the drop-in file the configuration includes).
        dropin = sh(node, f"cat /etc/nftables.d/50-unbroken-trainer-{NAME}.nft")
        assert f"insert rule inet filter input ip saddr {{ {address(peer)} }}" in dropin, dropin
        assert 'include "/etc/nftables.d/*.nft"' in sh(node, "cat /etc/nftables.conf")


def test_the_peer_reaches_the_job_ports_and_a_non_peer_is_dropped() -> None:
    """Node 2 reaches node 1's rendezvous port and ephemeral range; the Docker host does not."""
    wait_training_both()
    target = address(NODES[0])
    ephemeral = ephemeral_port(NODES[0])
    # The peer: the c10d store's port and the range gloo listens in.
    assert reaches_from_node(NODES[1], target, RDZV_PORT)
    assert reaches_from_node(NODES[1], target, ephemeral)
    # The firewall is really there for the peer too: any other port is dropped.
    assert not reaches_from_node(NODES[1], target, OUTSIDE_PORT)
    # A non-peer on the same network (the Docker host, the network's gateway): dropped on the
    # very ports that are open to node 2.
    assert not reaches_from_docker_host(target, RDZV_PORT)
    assert not reaches_from_docker_host(target, ephemeral)
