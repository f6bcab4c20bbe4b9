# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The Jinja test for an nftables chain name, written once for every role that opens ports.

Documentation: the YAML file next to this one.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict

# Family, table and chain, single spaces: the value becomes part of `nft` command lines (nft
# joins its arguments and parses them as a script, so a ';' would start a second command)
# and of the nftables configuration.
_CHAIN = re.compile(r"(ip|ip6|inet) [A-Za-z0-9_-]+ [A-Za-z0-9_-]+")


def nftables_chain(value: Any) -> bool:
    return isinstance(value, str) and _CHAIN.fullmatch(value) is not None


class TestModule:
    """nftables tests."""

    def tests(self) -> Dict[str, Callable[[Any], bool]]:
        return {"nftables_chain": nftables_chain}
