# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The rules the host_firewall role puts into ufw, firewalld or iptables for one opening.
Documentation: the YAML file next to this one.
"""

from __future__ import annotations

from typing import Any, Dict, List

from ansible.errors import AnsibleFilterError

# No sources: any address, on both IP versions ("::/0" marks IPv6's any).
_ANY = ("", "::/0")


def host_firewall_rules(sources: Any, ports: Any, proto: str, backend: str) -> List[Dict[str, Any]]:
    if not isinstance(sources, list) or not isinstance(ports, list):
        raise AnsibleFilterError("host_firewall_rules expects a list of sources and of ports")
    ports = [str(port) for port in ports]
    rules: List[Dict[str, Any]] = []
    for source in [str(s) for s in sources] or list(_ANY):
        family = "ipv6" if ":" in source else "ipv4"
        address = "" if source in _ANY else source
        if backend == "iptables":
            # One rule per source and IP version, with all the ports (multiport).
            rules.append({"family": family, "source": address, "proto": proto, "ports": ports})
        elif address or family == "ipv4":
            # ufw's "any" source and firewalld's plain port cover both IP versions in one rule.
            rules.extend(
                {"family": family if address else "", "source": address, "proto": proto, "port": p}
                for p in ports
            )
    return rules


class FilterModule:
    def filters(self) -> Dict[str, Any]:
        return {"host_firewall_rules": host_firewall_rules}
