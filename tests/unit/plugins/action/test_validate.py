# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests for the unbroken.training.validate action plugin: the rule evaluation, and one
real ansible-playbook run that shows every bad value named at once, in check mode too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleActionFail

# tests/unit/conftest.py makes the collection importable by its real name.
from ansible_collections.unbroken.training.plugins.action.validate import evaluate

REPO_ROOT = Path(__file__).resolve().parents[4]


def test_every_failing_rule_is_named_in_order_and_the_note_closes_the_message() -> None:
    result = evaluate(
        [
            {"name": "port", "ok": False, "msg": "port is 80:\n  it must be\n  at least 1024."},
            {"name": "locale", "ok": True, "msg": "never shown"},
            {"ok": False, "msg": "history is 0."},
        ],
        note="Nothing was changed.",
    )
    assert result["failed"] is True
    assert result["changed"] is False
    assert result["errors"] == ["port is 80: it must be at least 1024.", "history is 0."]
    assert result["failed_checks"] == ["port", "check 3"]
    assert (
        result["msg"] == "port is 80: it must be at least 1024. history is 0. Nothing was changed."
    )


def test_all_rules_holding_passes_without_the_note() -> None:
    result = evaluate([{"ok": True, "msg": "a"}, {"ok": "True", "msg": "b"}], note="Nothing.")
    assert "failed" not in result
    assert result["errors"] == [] and result["failed_checks"] == []
    assert result["msg"] == "All 2 checks passed."


def test_text_false_from_an_older_templating_engine_fails_the_rule() -> None:
    assert evaluate([{"ok": "False", "msg": "bad"}])["errors"] == ["bad"]


@pytest.mark.parametrize(
    ("checks", "reason"),
    [
        ("not a list", "'checks' must be a list"),
        (["ok"], "check 1 must be a mapping"),
        ([{"msg": "no ok"}], "both 'ok' and 'msg' are required"),
        ([{"ok": True}], "both 'ok' and 'msg' are required"),
        ([{"name": "x", "ok": "yes please", "msg": "m"}], "check 1 (x): 'ok' must be a boolean"),
        ([{"ok": 1, "msg": "m"}], "'ok' must be a boolean"),
        ([{"ok": False, "msg": "  "}], "failed and its 'msg' is empty"),
        ([{"ok": True, "msg": "m", "that": "x"}], "unknown key(s) that"),
    ],
)
def test_a_rule_that_cannot_be_read_never_passes(checks: object, reason: str) -> None:
    with pytest.raises(AnsibleActionFail, match=__import__("re").escape(reason)):
        evaluate(checks)


PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars:
    port: 80
    history: 0
  tasks:
    - name: Validate
      unbroken.training.validate:
        note: Nothing was changed.
        checks:
          - name: port
            ok: "{{ port | int >= 1024 }}"
            msg: >-
              port is {{ port }}:
              it must be at least 1024.
          - name: history
            ok: "{{ history | int >= 1 }}"
            msg: history is {{ history }}.
    - name: Never reached
      ansible.builtin.file:
        path: "{{ marker }}"
        state: touch
        mode: "0644"
"""


@pytest.mark.parametrize("check_mode", [False, True])
def test_a_playbook_run_names_both_bad_values_and_stops_before_the_next_task(
    tmp_path: Path, check_mode: bool
) -> None:
    book = tmp_path / "book.yml"
    book.write_text(PLAYBOOK)
    marker = tmp_path / "marker"
    collections = REPO_ROOT / ".cache" / "collections"
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(collections)),
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
    )
    if not (
        Path(env["ANSIBLE_COLLECTIONS_PATH"]) / "ansible_collections/unbroken/training"
    ).exists():
        pytest.skip(
            "no collections path holding this checkout (make test creates .cache/collections)"
        )
    args = [
        str(Path(sys.executable).with_name("ansible-playbook")),
        str(book),
        "-e",
        f"marker={marker}",
    ]
    proc = subprocess.run(
        args + (["--check"] if check_mode else []),
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    task = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert task["failed"] is True
    assert task["failed_checks"] == ["port", "history"]
    assert task["msg"] == "port is 80: it must be at least 1024. history is 0. Nothing was changed."
    assert not marker.exists()
