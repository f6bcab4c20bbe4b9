# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Durable, atomic checkpoint directories: lock, write, commit, rotate, clean up.

Commit protocol for step N (see checkpoint_manifest for the directory layout):

1. free-space check; a fresh ``.tmp-step-N-<pid>-<n>`` directory;
2. ``state.pt`` written through ``torch.save``; then, in parallel, ``fsync`` of the file
   and its segment hashes (read back from the page cache, so hashing overlaps the disk
   write-back instead of adding to it);
3. ``MANIFEST.json`` (sizes + hashes) written and fsynced, then the directory fsynced;
4. ``rename`` to ``step-N`` and ``fsync`` of the checkpoint directory: the commit point;
5. rotation, which only now deletes older checkpoints (renamed to ``.trash-*`` first so a
   half-deleted one is never mistaken for a checkpoint).

Any error before 4 removes the temporary directory; older checkpoints are untouched.
"""

from __future__ import annotations

import errno
import fcntl
import io
import itertools
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from . import checkpoint_manifest as fmt
from .errors import CheckpointLockedError, CheckpointSpaceError, CheckpointWriteError

LOG = logging.getLogger("unbroken_ckpt")
STATE_FILE = "state.pt"
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_counter = itertools.count(1)


class DirectoryLock:
    """An exclusive ``flock`` on ``<directory>/.lock``, held while a writer lives."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, fmt.LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise CheckpointLockedError(
                "checkpoint directory {} is already in use by another writer ({}); two "
                "trainers must not write the same directory: stop the other one or give "
                "this run its own --checkpoint-dir".format(
                    os.path.dirname(self.path), holder or "holder unknown"
                )
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            f"pid {os.getpid()} on {socket.gethostname()} since {_iso(time.time())}\n".encode(),
            0,
        )
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def cleanup_incomplete(directory: str) -> list[str]:
    """Remove writes and deletions left by a crashed writer (call with the lock held)."""
    removed = fmt.list_incomplete(directory)
    for name in removed:
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    if removed:
        LOG.info(
            "removed %d incomplete checkpoint write(s) left by an earlier crash: %s",
            len(removed),
            ", ".join(removed),
        )
    return removed


def free_bytes(directory: str) -> int:
    """Bytes an unprivileged writer may still use on the directory's file system."""
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


def check_free_space(directory: str, needed: int) -> None:
    """Refuse to start a write that cannot fit (the estimate has 5 % + 1 MiB slack)."""
    available = free_bytes(directory)
    want = int(needed * 1.05) + (1 << 20)
    if available < want:
        raise CheckpointSpaceError(
            f"not enough free space in {directory} for a checkpoint: about {want >> 20} MiB "
            f"needed, {available >> 20} MiB available; free space or keep fewer checkpoints"
        )


@dataclass
class Commit:
    """A checkpoint that was committed."""

    name: str
    step: int
    path: str
    size: int
    seconds: float
    created: float


def write_checkpoint(
    directory: str,
    step: int,
    payload: dict[str, Any],
    payload_bytes: int,
    epoch: int | None,
    config: dict[str, Any],
    writer: dict[str, Any],
    pause_before_commit: float = 0.0,
) -> Commit:
    """Write ``payload`` as checkpoint ``step`` following the commit protocol above."""
    started = time.monotonic()
    name = fmt.checkpoint_name(step)
    check_free_space(directory, payload_bytes)
    tmp = _scratch_path(directory, fmt.TMP_PREFIX, name)
    try:
        os.mkdir(tmp, 0o755)
        entry = _write_state(os.path.join(tmp, STATE_FILE), payload)
        created = time.time()
        manifest = fmt.build_manifest(
            step,
            {STATE_FILE: entry},
            epoch=epoch,
            config=config,
            created=created,
            writer=writer,
        )
        fmt.write_manifest(tmp, manifest)
        fmt.fsync_dir(tmp)
        if pause_before_commit > 0:
            time.sleep(pause_before_commit)
        final = _commit(directory, tmp, name)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _write_error(directory, name, exc) from exc
        if isinstance(exc, Exception) and not isinstance(exc, CheckpointWriteError):
            raise CheckpointWriteError(
                f"checkpoint {name} could not be written to {directory}: {exc}; the partial "
                "write was removed and older checkpoints are intact"
            ) from exc
        raise
    return Commit(name, step, final, entry["size"], time.monotonic() - started, created)


def _scratch_path(directory: str, prefix: str, name: str) -> str:
    return os.path.join(directory, f"{prefix}{name}-{os.getpid()}-{next(_counter)}")


class _RecordingFile(io.FileIO):
    """A file that remembers the OSError of a failed write.

    ``torch.save`` turns a failing write into a RuntimeError without errno; keeping the
    original lets the caller say "No space left on device" rather than "unexpected pos".
    """

    error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return super().write(data)
        except OSError as exc:
            self.error = exc
            raise


def _write_state(path: str, payload: dict[str, Any]) -> dict[str, Any]:
    raw = _RecordingFile(path, "wb")
    try:
        with io.BufferedWriter(raw, buffer_size=1 << 20) as handle:
            torch.save(payload, handle)
            handle.flush()
            with ThreadPoolExecutor(max_workers=1) as pool:
                # Hash (read back from the page cache) while the disk absorbs the fsync.
                synced = pool.submit(os.fsync, raw.fileno())
                size, segments = fmt.hash_file(path)
                synced.result()
    except Exception as exc:
        if raw.error is not None and exc is not raw.error:
            raise raw.error from None
        raise
    return fmt.file_entry(size, segments)


def _commit(directory: str, tmp: str, name: str) -> str:
    final = os.path.join(directory, name)
    trash = None
    if os.path.lexists(final):
        # Same step written again (e.g. after falling back past a corrupt one): replace it.
        trash = _scratch_path(directory, fmt.TRASH_PREFIX, name)
        os.rename(final, trash)
    os.rename(tmp, final)
    fmt.fsync_dir(directory)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return final


def _write_error(directory: str, name: str, exc: OSError) -> CheckpointWriteError:
    detail = f"{exc.strerror or exc} (errno {exc.errno})"
    if exc.errno in _SPACE_ERRNOS:
        return CheckpointSpaceError(
            f"checkpoint {name} could not be written to {directory}: {detail}; the partial "
            "write was removed and older checkpoints are intact"
        )
    return CheckpointWriteError(
        f"checkpoint {name} could not be written to {directory}: {detail}; the partial "
        "write was removed and older checkpoints are intact"
    )


def rotation_victims(
    steps: Iterable[int], newest: int, keep: int, milestone_every: int
) -> list[int]:
    """Steps to delete after committing ``newest``: keep the last ``keep`` up to it and milestones.

    Checkpoints newer than ``newest`` (left by a run that fell back past them) are kept:
    they are replaced when training reaches their step again.
    """
    older = sorted((s for s in steps if s <= newest), reverse=True)
    victims = older[max(keep, 1) :]
    if milestone_every > 0:
        victims = [s for s in victims if s % milestone_every != 0]
    return sorted(victims)


def rotate(directory: str, newest: int, keep: int, milestone_every: int) -> list[str]:
    """Delete checkpoints rotation no longer keeps; return their names."""
    by_step = {step: name for step, name in fmt.list_checkpoints(directory)}
    deleted = []
    for step in rotation_victims(by_step, newest, keep, milestone_every):
        name = by_step[step]
        trash = _scratch_path(directory, fmt.TRASH_PREFIX, name)
        try:
            os.rename(os.path.join(directory, name), trash)
        except OSError as exc:
            LOG.warning("could not rotate out checkpoint %s: %s", name, exc)
            continue
        shutil.rmtree(trash, ignore_errors=True)
        deleted.append(name)
    if deleted:
        fmt.fsync_dir(directory)
    return deleted
