# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Durable, atomic checkpoint directories: lock, write, commit, rotate, clean up.

Commit protocol for step N (see checkpoint_manifest for the directory layout):

1. free-space check; a fresh ``.tmp-step-N-<pid>-<n>`` directory;
2. ``state.pt`` written through ``torch.save`` into a file object that hashes each
   segment in worker threads while the same bytes are written (one pass) and starts the
   disk writeback of every 64 MiB written while the next bytes are produced, then fsynced;
3. ``MANIFEST.json`` (sizes + hashes) written and fsynced, then the directory fsynced;
4. ``rename`` to ``step-N`` and ``fsync`` of the checkpoint directory: the commit point;
5. rotation, which only now deletes older checkpoints (renamed to ``.trash-*`` first so a
   half-deleted one is never mistaken for a checkpoint).

Any error before 4 removes the temporary directory; older checkpoints are untouched.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import io
import itertools
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterable, Iterator
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


class Cancel:
    """Lets another thread abandon a write before its commit point, or learn it is too late.

    The commit (rename and directory fsync) and ``cancel`` exclude each other, so once
    ``cancel`` returns True the checkpoint will never appear, and when it returns False it
    has already been committed: a status written afterwards can say which one is on disk.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self.committed = False
        self.commit: Commit | None = None  # set at the commit point, before rotation

    def cancel(self) -> bool:
        with self._lock:
            if self.committed:
                return False
            self._event.set()
            return True

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self, name: str) -> None:
        if self._event.is_set():
            raise CheckpointWriteError(f"checkpoint {name} was abandoned before its commit")

    def sleep(self, seconds: float, name: str) -> None:
        self._event.wait(seconds)
        self.check(name)

    @contextlib.contextmanager
    def committing(self, name: str) -> Iterator[None]:
        with self._lock:
            self.check(name)
            yield
            self.committed = True


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
    algorithm: str = fmt.HASH_ALGORITHM,
    cancel: Cancel | None = None,
) -> Commit:
    """Write ``payload`` as checkpoint ``step`` following the commit protocol above."""
    started = time.monotonic()
    name = fmt.checkpoint_name(step)
    cancel = cancel or Cancel()
    check_free_space(directory, payload_bytes)
    tmp = _scratch_path(directory, fmt.TMP_PREFIX, name)
    try:
        os.mkdir(tmp, 0o755)
        entry = _write_state(os.path.join(tmp, STATE_FILE), payload, algorithm, cancel, name)
        created = time.time()
        manifest = fmt.build_manifest(
            step,
            {STATE_FILE: entry},
            epoch=epoch,
            config=config,
            created=created,
            writer=writer,
            algorithm=algorithm,
        )
        fmt.write_manifest(tmp, manifest)
        fmt.fsync_dir(tmp)
        if pause_before_commit > 0:
            cancel.sleep(pause_before_commit, name)
        with cancel.committing(name):
            final = _commit(directory, tmp, name)
            cancel.commit = Commit(
                name, step, final, entry["size"], time.monotonic() - started, created
            )
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
    assert cancel.commit is not None  # set inside the commit block above
    return cancel.commit


def _scratch_path(directory: str, prefix: str, name: str) -> str:
    return os.path.join(directory, f"{prefix}{name}-{os.getpid()}-{next(_counter)}")


_INLINE_HASH_BELOW = 2 * 1024 * 1024
# Start writing back to disk every this many bytes, so the closing fsync has little left.
_WRITEBACK_EVERY = 64 * 1024 * 1024
_FADVISE = getattr(os, "posix_fadvise", None)


class _HashingFile(io.RawIOBase):
    """A write-only file that checksums each segment while the bytes go to the kernel.

    ``torch.save`` hands over tensor storage in large writes; their segments are hashed by
    a thread pool (``zlib`` and ``hashlib`` release the GIL) while this thread runs
    ``os.write``, so hashing costs no extra pass over the data.  Each ``write`` waits for its hashes
    before returning, which keeps segment order and the caller's buffer valid.  It also
    keeps the OSError of a failed write: ``torch.save`` reports that as a RuntimeError
    ("unexpected pos") without errno, hiding that the disk is full.

    Every ``_WRITEBACK_EVERY`` bytes it gives ``POSIX_FADV_DONTNEED`` for everything
    written so far.  On Linux that starts an asynchronous writeback of the dirty pages
    (the range just written), so the disk works while ``torch.save`` and the checksums
    produce the next bytes instead of the whole file waiting for the final ``fsync``, and
    it drops the pages already written back, which a checkpoint never re-reads.  Without
    the drop, the page cache fills with old checkpoints and each later ``write`` first has
    to reclaim memory: measured side by side on 512 MiB, files kept as rotation keeps
    them, 0.31-0.33 s and 0.31-0.37 CPU-s per save against 0.35-0.39 s and 0.44-0.51
    CPU-s when only the new range was advised.  The closing ``fsync`` still makes the
    file durable and reports any write error.
    """

    def __init__(
        self, path: str, pool: ThreadPoolExecutor, algorithm: str, cancel: Cancel, name: str
    ) -> None:
        super().__init__()
        self._algorithm = algorithm
        self._cancel = cancel
        self._name = name
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._pool = pool
        self._hashes: list[Any] = []
        self.size = 0
        self._advised = 0
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def tell(self) -> int:
        # Append-only: the position is what was written (DCP records each item's offset).
        return self.size

    def write(self, data: Any) -> int:
        self._cancel.check(self._name)  # an abandoned save stops at its next write
        view = memoryview(data).cast("B")
        pieces = self._pieces(view)
        if len(view) < _INLINE_HASH_BELOW:
            for digest, piece in pieces:
                digest.update(piece)
            self._write_all(view)
        else:
            pending = [self._pool.submit(digest.update, piece) for digest, piece in pieces]
            try:
                self._write_all(view)
            finally:
                for future in pending:
                    future.result()
        self.size += len(view)
        if self.size - self._advised >= _WRITEBACK_EVERY:
            self._start_writeback()
        return len(view)

    def _start_writeback(self) -> None:
        # Advice only: if refused, the closing fsync writes whatever is left.
        if _FADVISE is not None:
            with contextlib.suppress(OSError):
                _FADVISE(self._fd, 0, self.size, os.POSIX_FADV_DONTNEED)
        self._advised = self.size

    def _pieces(self, view: memoryview) -> list[tuple[Any, memoryview]]:
        segment = fmt.SEGMENT_SIZE
        pieces, offset, position = [], self.size, 0
        while position < len(view):
            index = offset // segment
            while len(self._hashes) <= index:
                self._hashes.append(fmt.new_hasher(self._algorithm))
            piece = view[position : position + segment - offset % segment]
            pieces.append((self._hashes[index], piece))
            position += len(piece)
            offset += len(piece)
        return pieces

    def _write_all(self, view: memoryview) -> None:
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self.error = exc
            raise

    def digests(self) -> list[str]:
        hashes = self._hashes or [fmt.new_hasher(self._algorithm)]
        return [digest.hexdigest() for digest in hashes]

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def _without_zip_crc32() -> contextlib.AbstractContextManager[Any]:
    """Skip the CRC32 that ``torch.save``'s zip writer computes over every byte (torch >= 2.7).

    The manifest's segment checksums already cover every byte, so the CRC is a second pass for
    nothing: it cost 28 % of ``torch.save`` + fsync on 512 MiB (benchmarks/README.md).
    ``torch.load`` does not need it. Older torch has no switch and keeps computing it.
    """
    try:
        config = importlib.import_module("torch.utils.serialization.config")
    except ImportError:
        return contextlib.nullcontext()
    if not hasattr(getattr(config, "save", None), "compute_crc32"):
        return contextlib.nullcontext()
    patched: contextlib.AbstractContextManager[Any] = config.patch("save.compute_crc32", False)
    return patched


def _write_state(
    path: str, payload: dict[str, Any], algorithm: str, cancel: Cancel, name: str
) -> dict[str, Any]:
    with ThreadPoolExecutor(max_workers=fmt.default_threads()) as pool, _without_zip_crc32():
        raw = _HashingFile(path, pool, algorithm, cancel, name)
        try:
            with io.BufferedWriter(raw, buffer_size=1 << 20) as handle:
                torch.save(payload, handle)
                handle.flush()
                os.fsync(raw.fileno())
        except Exception as exc:
            cancel.check(name)  # torch reports the abandoning write as "unexpected pos"
            if raw.error is not None and exc is not raw.error:
                raise raw.error from None
            raise
    return fmt.file_entry(raw.size, raw.digests())


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
    by_step = dict(fmt.list_checkpoints(directory))
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
