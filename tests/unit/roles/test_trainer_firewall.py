# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The trainer closes a removed job's firewall opening as it opened it.

molecule/multinode proves the closing on real hosts; this keeps the two include_role calls in
roles/trainer/tasks/firewall.yml from drifting apart (a closing under another name, backend or
chain would leave the job's ports open).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
ROLE = "unbroken.training.host_firewall"


def _includes(path: str) -> list[dict[str, Any]]:
    tasks = yaml.safe_load((ROOT / path).read_text())
    return [t for t in tasks if t.get("ansible.builtin.include_role", {}).get("name") == ROLE]


def test_removed_jobs_close_their_opening_with_the_settings_it_was_opened_with() -> None:
    by_state = {
        t["vars"].get("host_firewall_state", "present"): t
        for t in _includes("roles/trainer/tasks/firewall.yml")
    }
    opened, closed = by_state["present"], by_state["absent"]
    assert "__trainer_jobs_absent" in closed["loop"]
    assert closed["loop_control"]["loop_var"] == opened["loop_control"]["loop_var"]
    for key in ("host_firewall_name", "host_firewall_backend", "host_firewall_nftables_chain"):
        assert closed["vars"][key] == opened["vars"][key], key


def test_jobs_are_stopped_before_their_ports_close() -> None:
    tasks = yaml.safe_load((ROOT / "roles/trainer/tasks/configure.yml").read_text())
    order = [
        t.get("ansible.builtin.include_tasks") or t.get("ansible.builtin.import_tasks")
        for t in tasks
    ]
    assert order.index("job_absent.yml") < order.index("firewall.yml")
