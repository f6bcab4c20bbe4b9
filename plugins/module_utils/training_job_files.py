# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The files a trainer job has on its host, besides its status file: one definition.

=============================== ===============================================================
file                            written by, read by
=============================== ===============================================================
``<config_dir>/jobs/<name>.json`` the job definition: the trainer role (``job_present.yml``)
                                writes it; the host helper (every unit start and stop, the
                                watchdog) and ``training_status`` read it with ``read_job``.
                                Keys: those of ``__trainer_job_config`` in ``job_present.yml``
                                (``name``, ``unit``, ``container``, ``checkpoint_dir``,
                                ``status_file``, ``state_dir``, ... see ``REQUIRED_KEYS``).
``<state_dir>/runs.json``       the helper, at every start and stop (``RUNS_KEYS``); the
                                module and the report read the counts and the causes.
``<state_dir>/failure.json``    the helper when the unit has failed (``FAILURE_KEYS``).
``<state_dir>/watchdog.json``   the helper's hang watchdog at each check (``WATCHDOG_KEYS``).
=============================== ===============================================================

Readers of the state files treat a missing or unreadable file as "no record" and ignore keys
they do not know: they read ``state_path(job, ...)`` with ``training_status_file.read_json``,
the one reader of these small atomically replaced JSON files (this file does not import it:
the helper loads both as top-level modules, the module as module_utils). A job definition
that cannot be read is an error with the path in it.

This file is the Ansible module_utils ``training_job_files`` (for ``training_status``) and is
linked beside the host helper (``runtime/helper/training_job_files.py``, installed next to
it), so it must stay standard library only and import on Python 3.8.
"""

from __future__ import annotations

import json
import os
from typing import Any

JOBS_DIR = "jobs"
RUNS_FILE = "runs.json"
FAILURE_FILE = "failure.json"
WATCHDOG_FILE = "watchdog.json"

# What every reader of a definition relies on; the role always writes all of them.
REQUIRED_KEYS = ("name", "unit", "container", "checkpoint_dir", "status_file", "state_dir")

# Why a run started (``runs.json``: ``last_start.cause`` and each ``history`` entry):
# a deliberate start, or one nobody asked for (these count as restarts).
DELIBERATE_CAUSE = "operator"
AUTOMATIC_CAUSES = ("crash", "hang", "reboot")
START_CAUSES = (DELIBERATE_CAUSE, *AUTOMATIC_CAUSES)
RUN_HISTORY = 50  # starts kept in runs.json (the report matches them to its start events)

# runs.json: run counts and the causes of the recent starts.
#   runs                 int    starts in total
#   restarts             int    automatic starts since the last deliberate one
#   last_start           object {run, at (unix s), cause, detail, boot_id}
#   last_end             object {run, at, service_result, exit_code_kind, exit_status}
#   last_operator_start  float  unix time of the last deliberate start
#   history              list   [{run, at, cause, detail}], the newest RUN_HISTORY starts
RUNS_KEYS = ("runs", "restarts", "last_start", "last_end", "last_operator_start", "history")
# failure.json: why the unit failed (systemd's result, the crash loop, the last log lines).
FAILURE_KEYS = (
    "job",
    "unit",
    "failed_at",
    "result",
    "crash_loop",
    "exit_code",
    "exit_code_kind",
    "restarts",
    "message",
    "last_log_lines",
)
# watchdog.json: the last verdict and the kills. ``waiting``: at ``checked_at`` the
# container of a multi-node job ran its torchrun agent without workers (a rendezvous round
# for the other nodes): not hung, not killed, whatever the heartbeat's age.
WATCHDOG_KEYS = (
    "job",
    "checked_at",
    "heartbeat_age",
    "hang_timeout",
    "limit",
    "started",
    "hung",
    "waiting",
    "step",
    "kills",
    "last_kill_at",
    "last_kill_step",
    "last_kill_run",
)


class JobDefinitionError(Exception):
    """A job definition that is missing, not JSON, or not the named job's."""


def jobs_dir(config_dir: str) -> str:
    return os.path.join(config_dir, JOBS_DIR)


def job_names(config_dir: str) -> list[str]:
    """The jobs defined on this host, sorted; none when the directory does not exist."""
    try:
        names = os.listdir(jobs_dir(config_dir))
    except FileNotFoundError:
        return []
    return sorted(n[: -len(".json")] for n in names if n.endswith(".json"))


def read_job(config_dir: str, name: str) -> dict[str, Any]:
    """The definition of job ``name``; JobDefinitionError says what is wrong and where."""
    path = os.path.join(jobs_dir(config_dir), name + ".json")
    try:
        with open(path, encoding="utf-8") as handle:
            job = json.load(handle)
    except OSError as exc:
        raise JobDefinitionError(
            f"no definition for job {name!r} ({path}): {exc.strerror}"
        ) from None
    except ValueError as exc:
        raise JobDefinitionError(
            f"definition of job {name!r} ({path}) is not JSON: {exc}"
        ) from None
    if not isinstance(job, dict) or job.get("name") != name:
        raise JobDefinitionError(f"{path} does not define job {name!r}")
    missing = [key for key in REQUIRED_KEYS if not isinstance(job.get(key), str)]
    if missing:
        raise JobDefinitionError(f"{path} lacks {', '.join(missing)}")
    return job


def state_path(job: dict[str, Any], file_name: str) -> str:
    """Where one of the helper's records (RUNS_FILE, FAILURE_FILE, WATCHDOG_FILE) lives."""
    return os.path.join(job["state_dir"], file_name)


def run_history(runs: dict[str, Any]) -> list[dict[str, Any]]:
    """The start records of a runs.json document that carry a time and a cause."""
    history = runs.get("history")
    return [
        entry
        for entry in (history if isinstance(history, list) else [])
        if isinstance(entry, dict)
        and isinstance(entry.get("at"), (int, float))
        and not isinstance(entry.get("at"), bool)
        and entry.get("cause")
    ]
