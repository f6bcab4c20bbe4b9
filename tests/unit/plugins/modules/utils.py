# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Shared helpers for module unit tests: module args, and exit/fail captured as exceptions.

``tests/unit/conftest.py`` makes ``ansible_collections.unbroken.training`` importable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ansible.module_utils import basic

REPO_ROOT = Path(__file__).resolve().parents[4]


class AnsibleExitJson(Exception):
    """Raised instead of exit_json; ``.result`` holds the module's result."""

    def __init__(self, result: dict) -> None:
        super().__init__(result)
        self.result = result


class AnsibleFailJson(Exception):
    """Raised instead of fail_json; ``.result`` holds the failure (``msg`` and extras)."""

    def __init__(self, result: dict) -> None:
        super().__init__(result)
        self.result = result


def set_module_args(args: dict[str, Any]) -> None:
    """Hand ``args`` to the next AnsibleModule created (as the controller would)."""
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()  # type: ignore[attr-defined]
    basic._ANSIBLE_PROFILE = "legacy"  # type: ignore[attr-defined]


def exit_json(self: basic.AnsibleModule, **kwargs: Any) -> None:
    kwargs.setdefault("changed", False)
    raise AnsibleExitJson(kwargs)


def fail_json(self: basic.AnsibleModule, **kwargs: Any) -> None:
    kwargs["failed"] = True
    raise AnsibleFailJson(kwargs)


def patch_module(monkeypatch: Any) -> None:
    """Make exit_json/fail_json raise (use with pytest's monkeypatch fixture)."""
    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
