# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Shared by the scenario's testinfra modules: run one of its playbooks on one instance."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCENARIO = Path(__file__).resolve().parents[1]
REPO = SCENARIO.parents[1]


def run_playbook(name: str, limit: str, *args: str) -> subprocess.CompletedProcess:
    """ansible-playbook SCENARIO/name on one instance of the Molecule inventory, uncoloured
    and unwrapped so tests can search its output."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", COLUMNS="10000")
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(REPO / ".cache" / "collections"))
    return subprocess.run(
        [
            "ansible-playbook",
            "-i", os.environ["MOLECULE_INVENTORY_FILE"],
            "--limit", limit,
            str(SCENARIO / name),
            *args,
        ],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip
