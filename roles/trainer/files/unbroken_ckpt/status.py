# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The status/heartbeat file (schema in the package docstring)."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from typing import Any

STATUS_SCHEMA = "unbroken.training/status"
STATUS_VERSION = 1
STATES = ("starting", "training", "stopping", "finished", "failed")


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


class StatusFile:
    """Replace a small JSON file atomically (write to a temporary name, then rename).

    Not fsynced: a heartbeat is rewritten every few steps, and waiting for the disk would
    stall training.  Readers see the old or the new content, never a torn one; after a
    power loss the file may be stale or missing, which readers must accept.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.started_at = time.time()
        self._tmp = os.path.join(
            os.path.dirname(self.path),
            f".{os.path.basename(self.path)}.tmp-{os.getpid()}",
        )

    def write(
        self,
        state: str,
        step: int,
        total_steps: int | None = None,
        epoch: int | None = None,
        loss: float | None = None,
        samples_per_second: float | None = None,
        last_checkpoint: dict[str, Any] | None = None,
        checkpoint_error: str | None = None,
        resumed_from: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if state not in STATES:
            raise ValueError(
                "status state must be one of {}, got {!r}".format(", ".join(STATES), state)
            )
        now = time.time()
        document = {
            "schema": STATUS_SCHEMA,
            "version": STATUS_VERSION,
            "state": state,
            "step": int(step),
            "total_steps": total_steps,
            "epoch": epoch,
            "loss": _finite(loss),
            "samples_per_second": _finite(samples_per_second),
            "last_checkpoint": last_checkpoint,
            "checkpoint_error": checkpoint_error,
            "resumed_from": resumed_from,
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "started_at": self.started_at,
            "updated_at": now,
            "updated_at_iso": _iso(now),
            "extra": dict(extra or {}),
        }
        with open(self._tmp, "w", encoding="utf-8") as handle:
            json.dump(document, handle, sort_keys=True, allow_nan=False)
            handle.write("\n")
        os.replace(self._tmp, self.path)
        return document


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def read_status(path: str) -> dict[str, Any] | None:
    """Return the status document, or None when absent or not (yet) a status file."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("schema") != STATUS_SCHEMA:
        return None
    return document
