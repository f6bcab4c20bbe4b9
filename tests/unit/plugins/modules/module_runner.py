# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The one way module unit tests run a module: ``run_module(module, args)``.

It runs the module's ``main()`` in this process the way the controller would see it: the
arguments go in through ``ansible.module_utils.testing.patch_module_args`` and the result
is the JSON the module prints on exit, read back, so ``exit_json``/``fail_json`` run for
real (``no_log`` masking, ``invocation``, warnings) instead of being patched out.
``tests/unit/conftest.py`` makes ``ansible_collections.unbroken.training`` importable.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

from ansible.module_utils import _internal
from ansible.module_utils.common import warnings
from ansible.module_utils.testing import patch_module_args

REPO_ROOT = Path(__file__).resolve().parents[4]


def run_module(
    module: ModuleType,
    args: dict[str, Any] | None = None,
    *,
    check_mode: bool = False,
    diff: bool = False,
    fails: bool = False,
) -> dict[str, Any]:
    """Run ``module.main()`` with ``args``; return its result, with ``failed`` always set
    and ``warnings`` always a list of the warning messages.

    ``fails`` says which outcome the test expects: a module that exits the other way is an
    AssertionError carrying the whole result, so a test never reads a failure as a result.
    """
    args = dict(args or {})
    if check_mode:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    out = io.StringIO()
    # Warnings and deprecations are process-wide in ansible-core: start each run empty so
    # one test's warnings never show up in the next one's result.
    with contextlib.ExitStack() as stack:
        stack.enter_context(patch_module_args(args))
        # pylint: disable=protected-access
        # A module runs on a host: once a test has imported controller code (an action
        # plugin's tests), ansible-core would send its warnings to the controller's display.
        stack.enter_context(mock.patch.object(_internal, "is_controller", False))
        stack.enter_context(mock.patch.dict(warnings._global_warnings, clear=True))
        stack.enter_context(mock.patch.dict(warnings._global_deprecations, clear=True))
        # pylint: enable=protected-access
        stack.enter_context(contextlib.redirect_stdout(out))
        try:
            module.main()
        except SystemExit:
            pass
        else:
            raise AssertionError(f"{module.__name__}.main() returned without exit_json/fail_json")
    result: dict[str, Any] = json.loads(out.getvalue())
    result.setdefault("failed", False)
    # On the wire a warning is a structured summary; tests read its message, as a user does.
    result["warnings"] = [w["event"]["msg"] for w in result.get("warnings", [])]
    if result["failed"] is not fails:
        expected = "fail" if fails else "succeed"
        raise AssertionError(f"{module.__name__} was expected to {expected}: {result}")
    return result
