# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for unbroken.training.validate (documented in plugins/modules/validate.py).

Runs on the controller only: no connection, no module transfer, nothing on the host changes,
so the same task works in check mode and costs no round trip.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

# What a boolean check renders to when a templating engine hands back text (ansible-core
# before 2.19 may, for a template that is not a single expression).
_TEXT_BOOLEANS = {"true": True, "false": False}


def _as_bool(value: Any, where: str) -> bool:
    """value as a strict boolean: a typo such as ``ok: "{{ x }} "`` must not read as true."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TEXT_BOOLEANS:
        return _TEXT_BOOLEANS[value.strip().lower()]
    raise AnsibleActionFail(
        f"{where}: 'ok' must be a boolean (a template such as \"{{{{ x | int > 0 }}}}\"), "
        f"got {type(value).__name__} {value!r}"
    )


def evaluate(checks: Any, note: Optional[str] = None) -> Dict[str, Any]:
    """The task result for ``checks``: every failing check's message, in order, at once.

    ``checks`` is a list of mappings with ``ok`` (boolean), ``msg`` (text) and an optional
    ``name``. A malformed check raises AnsibleActionFail: a rule that cannot be read must
    stop the run, never pass.
    """
    if not isinstance(checks, list):
        raise AnsibleActionFail(f"'checks' must be a list of rules, got {type(checks).__name__}")
    errors: List[str] = []
    failed_names: List[str] = []
    for index, check in enumerate(checks, start=1):
        if not isinstance(check, dict):
            raise AnsibleActionFail(
                f"check {index} must be a mapping with ok and msg, got {type(check).__name__}"
            )
        name = check.get("name")
        where = f"check {index}" + (f" ({name})" if name else "")
        unknown = sorted(set(check) - {"ok", "msg", "name"})
        if unknown:
            raise AnsibleActionFail(
                f"{where}: unknown key(s) {', '.join(unknown)}; use ok, msg, name"
            )
        if "ok" not in check or "msg" not in check:
            raise AnsibleActionFail(f"{where}: both 'ok' and 'msg' are required")
        if _as_bool(check["ok"], where):
            continue
        message = " ".join(str(check["msg"]).split())
        if not message:
            raise AnsibleActionFail(f"{where} failed and its 'msg' is empty")
        errors.append(message)
        failed_names.append(str(name) if name else where)
    result: Dict[str, Any] = {"changed": False, "errors": errors, "failed_checks": failed_names}
    if errors:
        result["failed"] = True
        result["msg"] = " ".join(errors + ([" ".join(note.split())] if note else []))
    else:
        result["msg"] = f"All {len(checks)} checks passed."
    return result


class ActionModule(ActionBase):  # type: ignore[misc]  # ansible-core is untyped here
    """Evaluate every rule, then fail once with every message of the rules that do not hold."""

    TRANSFERS_FILES = False
    _requires_connection = False
    _VALID_ARGS = frozenset(("checks", "note"))

    def run(self, tmp: Any = None, task_vars: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        result: Dict[str, Any] = super().run(tmp, task_vars)
        del tmp
        note = self._task.args.get("note")
        try:
            if note is not None and not isinstance(note, str):
                raise AnsibleActionFail(f"'note' must be text, got {type(note).__name__}")
            if "checks" not in self._task.args:
                raise AnsibleActionFail("'checks' is required: a list of {ok, msg} rules")
            result.update(evaluate(self._task.args["checks"], note))
        except AnsibleActionFail as exc:
            result.update(exc.result)
        return result
