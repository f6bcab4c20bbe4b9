# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The status/heartbeat file: the writer (format and readers in ``training_status_file``)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import time
from typing import Any

from . import training_status_file as fmt
from .training_status_file import STATES, TERMINAL_STATES, read_status

LOG = logging.getLogger("unbroken_ckpt")
STATUS_SCHEMA = fmt.SCHEMA
STATUS_VERSION = fmt.VERSION
# Room kept free next to the status file while the run lives, so the final status still
# fits when the disk fills up (a status document is about 1 KiB; file systems allocate
# whole blocks or pages, and the atomic replace needs the old and the new file at once).
RESERVE_BYTES = 64 * 1024
_REPEAT_FAILURE_LOG = 60.0

__all__ = [
    "RESERVE_BYTES",
    "STATES",
    "STATUS_SCHEMA",
    "STATUS_VERSION",
    "TERMINAL_STATES",
    "StatusFile",
    "read_status",
]


class StatusFile:
    """Replace a small JSON file atomically (write to a temporary name, then rename).

    Not fsynced: a heartbeat is rewritten every few steps, and waiting for the disk would
    stall training.  Readers see the old or the new content, never a torn one; after a
    power loss the file may be stale or missing, which readers must accept.

    A write that fails (a full disk, a read-only remount, ...) never raises: the old file
    stays, the temporary file is removed, the error is logged (once, then at most once a
    minute while it lasts) and kept in ``error``; the next write simply tries again.
    ``write_final`` is for the last write of a process: it first gives back the space
    ``reserve()`` set aside, so the terminal state gets written even on a full disk, and
    retries a few times.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.started_at = time.time()
        self.error: str | None = None
        self._tmp = os.path.join(
            os.path.dirname(self.path),
            f".{os.path.basename(self.path)}.tmp-{os.getpid()}",
        )
        self._reserve = os.path.join(
            os.path.dirname(self.path), f".{os.path.basename(self.path)}.reserve"
        )
        self._failed_since: float | None = None
        self._logged_at = 0.0

    def reserve(self) -> None:
        """Set ``RESERVE_BYTES`` aside for ``write_final`` (best effort, with the lock held)."""
        try:
            with open(self._reserve, "wb") as handle:
                handle.write(b"\0" * RESERVE_BYTES)
        except OSError as exc:
            LOG.warning("could not set space aside for the final status (%s)", exc)
            self.release()

    def release(self) -> None:
        """Give the reserved space back (the final write does it; so does a clean exit)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._reserve)

    def write(self, state: str, step: int, **fields: Any) -> dict[str, Any]:
        """Build the document and try to replace the file with it; return the document.

        ``fields`` are the optional keys of ``training_status_file.new_document`` (loss,
        last_checkpoint, exit_code, reason, ...); a misspelt one is a TypeError.
        """
        document = fmt.new_document(
            state,
            step,
            pid=os.getpid(),
            hostname=socket.gethostname(),
            started_at=self.started_at,
            now=time.time(),
            **fields,
        )
        self._replace(document)
        return document

    def write_final(self, attempts: int = 3, delay: float = 1.0, **fields: Any) -> bool:
        """Write a terminal status, using the reserved space and retrying; True if written."""
        self.release()
        for attempt in range(attempts):
            self.write(**fields)
            if self.error is None:
                return True
            if attempt + 1 < attempts:
                time.sleep(delay)
        LOG.error(
            "could not write the final status (%s) to %s: %s",
            fields.get("state"),
            self.path,
            self.error,
        )
        return False

    def _replace(self, document: dict[str, Any]) -> None:
        try:
            fmt.replace_file(self.path, document, self._tmp)
        except OSError as exc:
            self._report(exc)
            return
        if self._failed_since is not None:
            LOG.info(
                "status file %s written again after %.0fs of failed writes",
                self.path,
                time.monotonic() - self._failed_since,
            )
        self.error, self._failed_since = None, None

    def _report(self, exc: OSError) -> None:
        self.error = f"{exc.strerror or exc} (errno {exc.errno})"
        now = time.monotonic()
        if self._failed_since is None:
            self._failed_since = now
        elif now - self._logged_at < _REPEAT_FAILURE_LOG:
            return
        self._logged_at = now
        hint = "; free space there" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        LOG.warning(
            "could not write the status file %s: %s; it keeps its previous content, training "
            "goes on and the next status write retries%s",
            self.path,
            self.error,
            hint,
        )
