# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The training status file: the single definition shared by its writer and its readers.

The training process (``unbroken_ckpt.StatusFile``) rewrites one small JSON object, by
default ``<checkpoint dir>/status.json``, every few steps and once more on its way out.
It is the job's heartbeat: the trainer role's hang watchdog (the host helper) and the
``training_status`` module compare ``updated_at`` with the start of the current run.

================== ============== ===========================================================
key                type           meaning
================== ============== ===========================================================
schema             str            always ``"unbroken.training/status"``
version            int            schema version, ``1``
state              str            ``starting``/``training``/``stopping`` while the process runs;
                                  terminal (its last write): ``stopped`` (graceful stop by a
                                  signal), ``finished``, ``failed``
step               int            optimizer steps completed
total_steps        int or null    steps the run is configured for
epoch              int or null    current data epoch
loss               float or null  loss of the latest step (null when not finite)
samples_per_second float or null  throughput since the previous status write
last_checkpoint    object or null ``{"name", "step", "created" (unix s), "size_bytes", "seconds"}``
checkpoint_error   str or null    message of the latest failed save (cleared by the next success)
resumed_from       object or null ``{"name", "step", "skipped": [[name, reason], ...]}``
exit_code          int or null    the process's exit code in a terminal state; null while running
reason             str or null    one line saying why it ended (terminal states); null while running
quarantined        list           checkpoints moved aside as invalid or unsafe, newest first:
                                  ``[{"name": "quarantine-step-...", "step", "reason"}]``
pid                int            trainer process id (inside its PID namespace)
hostname           str            host (container) name
started_at         float          unix time the process started
updated_at         float          unix time of this write: the heartbeat a watchdog compares
updated_at_iso     str            the same, ISO 8601 UTC
extra              object         script-specific additions
================== ============== ===========================================================

The file is replaced atomically (written to a temporary name beside it, then renamed) and
not fsynced, so a reader sees the old or the new document, or after a power loss a stale,
empty or missing file: readers treat anything that is not a status document as "no
heartbeat yet" (``read_status`` returns None) and ignore keys they do not know, so a
newer writer's additions never break an older reader.

This file is the Ansible module_utils ``training_status_file`` (for ``training_status``),
and is linked into the training runtime (``unbroken_ckpt/training_status_file.py``) and
beside the host helper (``runtime/helper/training_status_file.py``, installed next
to it), so it must stay standard library only and import on Python 3.8.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

SCHEMA = "unbroken.training/status"
VERSION = 1
# Written while the process lives.
RUNNING_STATES = ("starting", "training", "stopping")
# Written by the process on its way out (its last write): a run in one of these is not hung.
TERMINAL_STATES = ("stopped", "finished", "failed")
STATES = RUNNING_STATES + TERMINAL_STATES
# Every key of a document, in the order of the table above.
KEYS = (
    "schema",
    "version",
    "state",
    "step",
    "total_steps",
    "epoch",
    "loss",
    "samples_per_second",
    "last_checkpoint",
    "checkpoint_error",
    "resumed_from",
    "exit_code",
    "reason",
    "quarantined",
    "pid",
    "hostname",
    "started_at",
    "updated_at",
    "updated_at_iso",
    "extra",
)


# -- reading ------------------------------------------------------------------------------


def read_json(path: str) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable, torn or not an object.

    Also the reader of the small JSON files written beside a job by the role and its helper
    (job definitions, runs, failure and watchdog records), which are replaced the same way.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def read_status(path: str) -> dict[str, Any] | None:
    """The status document in ``path``, or None (absent, torn, or not a status file)."""
    document = read_json(path)
    if document is None or document.get("schema") != SCHEMA:
        return None
    return document


def updated_at(status: Mapping[str, Any] | None) -> float | None:
    """The heartbeat (unix time of the last write), None when the document has none."""
    value = status.get("updated_at") if status else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def one_line(text: Any) -> str | None:
    """``text`` on one line (runs of white space as one space); None when empty or None."""
    if text is None:
        return None
    return " ".join(str(text).split()) or None


# -- writing ------------------------------------------------------------------------------


def iso_time(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def finite(value: float | None) -> float | None:
    """A float, or None for None, NaN and infinities (JSON has no literal for them)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def new_document(
    state: str,
    step: int,
    *,
    pid: int,
    hostname: str,
    started_at: float,
    now: float,
    total_steps: int | None = None,
    epoch: int | None = None,
    loss: float | None = None,
    samples_per_second: float | None = None,
    last_checkpoint: Mapping[str, Any] | None = None,
    checkpoint_error: str | None = None,
    resumed_from: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    exit_code: int | None = None,
    reason: str | None = None,
    quarantined: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A status document with every key; ValueError for a state not in ``STATES``."""
    if state not in STATES:
        raise ValueError(
            "status state must be one of {}, got {!r}".format(", ".join(STATES), state)
        )
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "state": state,
        "step": int(step),
        "total_steps": total_steps,
        "epoch": epoch,
        "loss": finite(loss),
        "samples_per_second": finite(samples_per_second),
        "last_checkpoint": last_checkpoint,
        "checkpoint_error": checkpoint_error,
        "resumed_from": resumed_from,
        "exit_code": exit_code,
        "reason": one_line(reason),
        "quarantined": [dict(item) for item in quarantined or []],
        "pid": pid,
        "hostname": hostname,
        "started_at": started_at,
        "updated_at": now,
        "updated_at_iso": iso_time(now),
        "extra": dict(extra or {}),
    }


def replace_file(path: str, document: Mapping[str, Any], tmp_path: str) -> None:
    """Write ``document`` to ``tmp_path``, then rename it over ``path`` (atomic, no fsync).

    On OSError (a full disk, a read-only file system) ``path`` keeps its old content, the
    temporary file is removed and the error is raised for the writer to handle.
    """
    try:
        with open(tmp_path, "w", encoding="utf-8") as handle:
            json.dump(document, handle, sort_keys=True, allow_nan=False)
            handle.write("\n")
        os.replace(tmp_path, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise
