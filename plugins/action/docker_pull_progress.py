# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wait for an async docker_image_digest run, printing its pull progress as it goes.

Ansible prints a task's result only when the task ends; a 10-20 GB pull would be silent for
many minutes. This polls the async job and the module's progress file on the host and
prints a line whenever layers complete, then returns the module's own result.
Documentation: plugins/modules/docker_pull_progress.py.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Dict, Optional

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

GIB = 1024**3
MIB = 1024**2
# Keys async_status adds that are not part of the module's result.
_ASYNC_KEYS = ("ansible_job_id", "started", "finished", "results_file", "erased")


def human(size: int) -> str:
    return f"{size / GIB:.1f} GiB" if size >= GIB else f"{size / MIB:.0f} MiB"


def describe(state: Dict[str, Any]) -> str:
    """One line for the log: layers and bytes done of the image being pulled."""
    target = state.get("target", "the image")
    total = int(state.get("bytes_total") or 0)
    layers = f"{state.get('layers_done', 0)}/{state.get('layers_total', 0)} layers"
    if total:
        done = int(state.get("bytes_done") or 0)
        size = f"{human(done)} of {human(total)} ({100 * done // total} %)"
    else:
        size = "size unknown"
    attempt = int(state.get("attempt") or 1)
    retry = f", attempt {attempt}" if attempt > 1 else ""
    return f"pulling {target}: {layers}, {size}, {state.get('elapsed_s', 0)} s{retry}"


def announce(state: Dict[str, Any]) -> str:
    total = int(state.get("bytes_total") or 0)
    size = human(total) + " compressed" if total else "size unknown"
    return (
        f"pulling {state.get('target', 'the image')}: {size}, {state.get('layers_total', 0)} layers"
    )


class ActionModule(ActionBase):  # type: ignore[misc]  # ansible-core is untyped here
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp: Any = None, task_vars: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        super().run(tmp, task_vars)
        _valid, args = self.validate_argument_spec(
            argument_spec={
                "job": {"type": "dict", "required": True},
                "progress_file": {"type": "path", "required": True},
                "poll_interval": {"type": "int", "default": 5},
                "timeout": {"type": "int", "default": 7200},
            }
        )
        job = args["job"]
        jid = job.get("ansible_job_id")
        if not jid:
            # Ran without async (check mode cannot be async): its result is already final.
            return dict(job)
        async_dir = self._remote_expand_user(
            self.get_shell_option("async_dir", default="~/.ansible_async")
        )
        host = (task_vars or {}).get("inventory_hostname", "")
        deadline = time.monotonic() + args["timeout"]
        shown = ""
        while True:
            status = self._execute_module(
                module_name="ansible.legacy.async_status",
                module_args={"jid": jid, "_async_dir": async_dir},
                task_vars=task_vars,
            )
            if status.get("finished"):
                self._execute_module(
                    module_name="ansible.legacy.async_status",
                    module_args={"jid": jid, "mode": "cleanup", "_async_dir": async_dir},
                    task_vars=task_vars,
                )
                return {k: v for k, v in status.items() if k not in _ASYNC_KEYS}
            if status.get("failed"):
                return dict(status)
            state = self._progress(args["progress_file"], task_vars)
            if state:
                line = describe(state) if shown else announce(state)
                if line != shown:
                    display.display(f"[{host}] {line}")
                    shown = line
            if time.monotonic() > deadline:
                raise AnsibleActionFail(
                    f"the pull (async job {jid}) did not end within {args['timeout']} s"
                )
            time.sleep(args["poll_interval"])

    def _progress(self, path: str, task_vars: Any) -> Optional[Dict[str, Any]]:
        """The module's progress document, or None before it exists or after it is gone."""
        read = self._execute_module(
            module_name="ansible.legacy.slurp", module_args={"src": path}, task_vars=task_vars
        )
        if read.get("failed") or "content" not in read:
            return None
        try:
            state = json.loads(base64.b64decode(read["content"]))
        except ValueError:
            return None
        return state if isinstance(state, dict) else None
