# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The nftables chain test: what the roles let into nft command lines."""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.unbroken.training.plugins.test import nftables
from ansible_collections.unbroken.training.plugins.test.nftables import nftables_chain


@pytest.mark.parametrize("chain", ["inet filter input", "ip6 my-fw IN_1", "ip filter INPUT"])
def test_family_table_and_chain_pass(chain: str) -> None:
    assert nftables_chain(chain)


@pytest.mark.parametrize(
    "chain",
    [
        "inet filter input; flush ruleset",  # nft would run the second command
        "inet filter input\nflush ruleset",
        "inet filter input\n",
        "inet  filter input",
        "bridge filter input",
        "inet filter",
        "",
        None,
        ["inet", "filter", "input"],
    ],
)
def test_anything_else_fails(chain: Any) -> None:
    assert not nftables_chain(chain)
    assert nftables.TestModule().tests()["nftables_chain"] is nftables_chain
