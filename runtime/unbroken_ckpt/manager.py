# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""CheckpointManager: save and restore complete training state."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import torch

from . import checkpoint_manifest as fmt
from . import storage
from .errors import (
    CheckpointError,
    CheckpointWriteError,
    ConfigMismatchError,
    NoValidCheckpointError,
    UnsafeCheckpointError,
)
from .rng import capture_rng, restore_rng
from .snapshot import Pending, SnapshotBuffers, check_weights_only_safe, fill, tensor_bytes

LOG = logging.getLogger("unbroken_ckpt")
ON_ERROR_CHOICES = ("continue", "stop")
PAYLOAD_FORMAT = "unbroken_ckpt/state-v1"
LIBRARY_VERSION = "1.0.0"


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> Any: ...


@dataclass
class Restored:
    """What ``restore`` brought back."""

    name: str
    step: int
    epoch: int | None
    extras: dict[str, Any]
    path: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Job:
    step: int
    thread: threading.Thread
    commit: storage.Commit | None = None
    error: BaseException | None = None
    cancel: storage.Cancel = field(default_factory=storage.Cancel)


class CheckpointManager:
    """Own one checkpoint directory: lock it, restore from it, save into it.

    ``objects`` maps names to things with ``state_dict``/``load_state_dict`` (model,
    optimizer, LR scheduler, GradScaler, data sampler, ...).  ``config`` is the JSON
    description of the run whose fingerprint must match on resume.  ``hash_algorithm``
    names the per-segment checksum of new checkpoints (``crc32``, the fast default, or
    ``sha256``); restore verifies whichever one a checkpoint's manifest names.

    ``overlap_copy`` (asynchronous saves only) shortens the training stall further: the
    CPU tensors that only a registered ``torch.optim.Optimizer`` changes (its parameters
    and its state, usually nearly all the bytes) are copied by the writer thread while the
    next step's forward and backward run, and each registered optimizer's ``step()`` waits
    (a step pre-hook) until that copy is done.  Everything else is copied in ``save()`` as
    usual.  Turn it on only where nothing but ``optimizer.step()`` changes parameters in
    place between a save and the next step; tensors on a GPU are always copied in
    ``save()``.  ``last_copy_wait`` is how long the optimizer step after the last save
    waited for the copy (0 when it did not wait).

    Quarantine: ``restore`` renames every checkpoint it passes over (it fails
    verification, or its hashes verify but ``torch.load(weights_only=True)`` refuses its
    pickle) to ``quarantine-step-<N>-<UTC time>`` with a ``QUARANTINE.json`` saying why,
    so it is never tried again, never counts toward ``keep`` and is kept for inspection;
    ``quarantined`` lists those on disk (newest first).  It does so only when it has
    something to resume from instead, or ``allow_fresh_start`` says to start over: when
    nothing else verifies it raises and moves nothing, so a restart cannot silently train
    from step 0 over a run that a person may still rescue.  An unsafe pickle is treated
    like corruption rather than stopping the job for good, because it is never loaded
    either way, an older checkpoint is the best state left, and a person can inspect the
    kept file (the status and the log say loudly what happened); with nothing to fall back
    to it still fails (``UnsafeCheckpointError``), naming the command that moves it aside.
    """

    def __init__(
        self,
        directory: str,
        objects: Mapping[str, Stateful],
        config: Mapping[str, Any] | None = None,
        keep: int = 3,
        milestone_every: int = 0,
        async_save: bool = True,
        on_error: str = "continue",
        allow_config_mismatch: bool = False,
        allow_fresh_start: bool = False,
        pause_before_commit: float = 0.0,
        hash_algorithm: str = fmt.HASH_ALGORITHM,
        overlap_copy: bool = False,
    ) -> None:
        if keep < 1:
            raise ValueError(
                f"keep must be >= 1 (the newest checkpoint is always kept), got {keep}"
            )
        if milestone_every < 0:
            raise ValueError(
                f"milestone_every must be >= 0 (0 disables milestones), got {milestone_every}"
            )
        if hash_algorithm not in fmt.HASH_ALGORITHMS:
            raise ValueError(
                "hash_algorithm must be one of {}, got {!r}".format(
                    ", ".join(sorted(fmt.HASH_ALGORITHMS)), hash_algorithm
                )
            )
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(
                "on_error must be one of {}, got {!r}".format(", ".join(ON_ERROR_CHOICES), on_error)
            )
        self.directory = os.path.abspath(directory)
        self.objects = dict(objects)
        self.config = dict(config or {})
        self.fingerprint = fmt.config_fingerprint(self.config)
        self.keep = keep
        self.milestone_every = milestone_every
        self.async_save = async_save
        self.on_error = on_error
        self.allow_config_mismatch = allow_config_mismatch
        self.allow_fresh_start = allow_fresh_start
        self.pause_before_commit = pause_before_commit
        self.hash_algorithm = hash_algorithm
        self.last_commit: storage.Commit | None = None
        self.last_error: str | None = None
        self.quarantined: list[dict[str, Any]] = []
        self.rejected: list[tuple[str, str]] = []
        self.failures = 0
        self._lock = storage.DirectoryLock(self.directory)
        self._buffers = SnapshotBuffers(pin_memory=True)
        self._job: _Job | None = None
        self.overlap_copy = overlap_copy
        self.last_copy_wait = 0.0
        self._copied = threading.Event()
        self._abandoned = False
        self._registry = threading.Lock()  # orders abandon() against starting a save
        self._copied.set()
        self._hooks: list[Any] = []

    # -- lifecycle -------------------------------------------------------------
    def open(self) -> Self:
        """Create the directory, take the writer lock and clear crashed writes."""
        os.makedirs(self.directory, exist_ok=True)
        self._lock.acquire()
        storage.cleanup_incomplete(self.directory)
        self.quarantined = fmt.list_quarantined(self.directory)
        if self.overlap_copy and self.async_save and not self._hooks:
            self._hooks = [
                optimizer.register_step_pre_hook(self._before_optimizer_step)
                for optimizer in self._optimizers()
            ]
        return self

    def abandon(self) -> storage.Commit | None:
        """Give up the save in flight without waiting for it; return ``last_commit``.

        The save stops at its next write (or at its commit point) and removes its partial
        write; if it had already committed, that commit becomes ``last_commit``.  Either
        way ``last_commit`` then names the newest checkpoint on disk.  For a stop whose
        time is up; ``close`` then has nothing to wait for.
        """
        with self._registry:
            self._abandoned = True
            job, self._job = self._job, None
        if job is None:
            return self.last_commit
        if job.cancel.cancel():
            LOG.warning("abandoned the checkpoint of step %d before its commit", job.step)
        elif job.cancel.commit is not None:
            self.last_commit = job.cancel.commit  # committed before time ran out
        return self.last_commit

    def close(self) -> None:
        """Wait for an in-flight save, then release the lock."""
        try:
            if self._lock.held:
                self.wait()
        finally:
            for hook in self._hooks:
                hook.remove()
            self._hooks = []
            self._lock.release()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- restore ---------------------------------------------------------------
    def restore(self) -> Restored | None:
        """Load the newest checkpoint that verifies into the registered objects.

        Returns None when the directory holds no checkpoint at all, or when none verifies
        and ``allow_fresh_start`` is set (``rejected`` then says which ones were passed over).
        Checkpoints passed over are quarantined (see the class docstring).
        """
        passed: list[tuple[fmt.CheckpointStatus, str]] = []
        unsafe: UnsafeCheckpointError | None = None
        for _step, name in fmt.list_checkpoints(self.directory):
            status = fmt.inspect_checkpoint(self.directory, name, full=True)
            if not status.valid:
                passed.append((status, status.reason()))
                continue
            self._check_config(status)
            try:
                payload = load_state_file(os.path.join(status.path, storage.STATE_FILE))
            except UnsafeCheckpointError as exc:
                LOG.error("checkpoint %s verifies but is unsafe to load: %s", name, exc)
                unsafe = unsafe or exc
                passed.append((status, f"unsafe to load: {exc}"))
                continue
            return self._resume(status, payload, passed)
        self.rejected = [(status.name, reason) for status, reason in passed]
        for status, reason in passed:
            LOG.warning(
                "checkpoint %s is invalid (%s); no older valid checkpoint", status.name, reason
            )
        if passed and not self.allow_fresh_start:
            where = os.path.join(self.directory, passed[0][0].name)
            aside = os.path.join(self.directory, fmt.quarantine_name(passed[0][0].step))
            if unsafe is not None:
                raise UnsafeCheckpointError(
                    f"{unsafe}; no other checkpoint verifies, so the job cannot resume: inspect "
                    f"it, then move it aside (mv {where} {aside}) to resume from an older one "
                    "or start fresh"
                )
            raise NoValidCheckpointError(
                f"{len(passed)} checkpoint(s) in {self.directory} but none verifies; refusing "
                "to start from step 0 over them: move them away or allow a fresh start "
                "(allow_fresh_start / --allow-fresh-start)"
            )
        self._quarantine(passed)
        return None

    def _resume(
        self,
        best: fmt.CheckpointStatus,
        payload: dict[str, Any],
        passed: list[tuple[fmt.CheckpointStatus, str]],
    ) -> Restored:
        self.rejected = [(status.name, reason) for status, reason in passed]
        for status, reason in passed:
            LOG.warning(
                "checkpoint %s is invalid (%s); falling back to %s", status.name, reason, best.name
            )
        moved = self._quarantine(passed)
        self._apply(payload, best.name)
        manifest = best.manifest or {}
        self.last_commit = storage.Commit(
            best.name,
            best.step,
            best.path,
            best.size,
            0.0,
            manifest.get("created", 0.0),
        )
        LOG.info("resumed from checkpoint %s (step %d)", best.name, best.step)
        return Restored(
            name=best.name,
            step=best.step,
            epoch=payload.get("epoch"),
            extras=payload.get("extras") or {},
            path=best.path,
            skipped=list(self.rejected),
            quarantined=moved,
        )

    def _quarantine(self, passed: list[tuple[fmt.CheckpointStatus, str]]) -> list[dict[str, Any]]:
        """Move passed-over checkpoints aside (a rename: nothing is lost, nothing to load)."""
        moved = []
        for status, reason in passed:
            base = fmt.quarantine_name(status.step)
            target = base
            suffix = 0
            while os.path.lexists(os.path.join(self.directory, target)):
                suffix += 1
                target = f"{base}-{suffix}"
            try:
                os.rename(status.path, os.path.join(self.directory, target))
            except OSError as exc:
                LOG.error("could not move invalid checkpoint %s aside: %s", status.name, exc)
                continue
            with contextlib.suppress(OSError):  # a note for people; on a full disk it may fail
                fmt.write_quarantine_note(
                    os.path.join(self.directory, target),
                    {"name": status.name, "step": status.step, "reason": reason, "at": time.time()},
                )
            LOG.warning(
                "moved checkpoint %s aside as %s (kept for inspection, never loaded, not counted "
                "toward keep)",
                status.name,
                target,
            )
            moved.append({"name": target, "step": status.step, "reason": reason})
        if moved:
            with contextlib.suppress(OSError):
                fmt.fsync_dir(self.directory)
            known = {item["name"]: item["reason"] for item in moved}
            self.quarantined = [
                dict(item, reason=known.get(item["name"], item["reason"]))
                for item in fmt.list_quarantined(self.directory)
            ]
        return moved

    def _check_config(self, status: fmt.CheckpointStatus) -> None:
        manifest = status.manifest or {}
        if manifest.get("config_fingerprint") == self.fingerprint:
            return
        message = (
            "checkpoint {} was written by a run with a different configuration ({}); resuming "
            "would mix two different runs: restore the original configuration, use a new "
            "checkpoint directory, or allow it explicitly (allow_config_mismatch / "
            "--allow-config-mismatch)".format(
                status.name,
                describe_config_diff(manifest.get("config", {}), self.config),
            )
        )
        if not self.allow_config_mismatch:
            raise ConfigMismatchError(message)
        LOG.warning("%s; continuing because the mismatch is allowed", message)

    def _apply(self, payload: dict[str, Any], name: str) -> None:
        states = payload.get("objects")
        if payload.get("format") != PAYLOAD_FORMAT or not isinstance(states, dict):
            raise CheckpointError(f"checkpoint {name} has no state written by this library")
        missing = sorted(set(self.objects) - set(states))
        if missing:
            raise CheckpointError(
                f"checkpoint {name} has no state for {', '.join(missing)}; it was written by a "
                "run with other objects"
            )
        for key, obj in self.objects.items():
            try:
                obj.load_state_dict(states[key])
            except (RuntimeError, ValueError, KeyError, TypeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise CheckpointError(
                    f"checkpoint {name} does not fit {key!r} of this run ({first}); its "
                    "configuration differs in a way the state cannot follow"
                ) from exc
        restore_rng(payload["rng"])

    # -- save ------------------------------------------------------------------
    def save(
        self,
        step: int,
        epoch: int | None = None,
        extras: dict[str, Any] | None = None,
        blocking: bool | None = None,
    ) -> storage.Commit | None:
        """Checkpoint the registered objects at ``step``.

        Asynchronous (unless ``blocking`` or ``async_save`` is false): the state is copied
        to CPU buffers and written by a background thread; at most one save is in flight,
        so this first waits for the previous one.  Returns the commit of a blocking save.
        """
        self.wait()
        if self.last_commit is not None and self.last_commit.step == step:
            return self.last_commit
        payload = self._payload(step, epoch, extras)
        nbytes = tensor_bytes(payload)
        if not (self.async_save if blocking is None else not blocking):
            job = _Job(step, threading.current_thread())
            if not self._register(job):  # abandon() from a stop timer must find it
                return None
            self._write(job, payload, nbytes, epoch)
            return self.wait()  # None when abandoned meanwhile
        if self._hooks:
            self.last_copy_wait = 0.0
            guarded = self._guarded_storages()
            snapshot, pending = self._buffers.copy(
                payload, lambda tensor: _storage_key(tensor) in guarded
            )
        else:
            snapshot, pending = self._buffers.copy(payload)
        job = _Job(step, threading.current_thread())
        # Not a daemon: interpreter exit waits for a save in flight even without close().
        job.thread = threading.Thread(
            target=self._copy_and_write,
            args=(job, pending, snapshot, nbytes, epoch),
            name=f"unbroken-ckpt-writer-{step}",
        )
        if not self._register(job):
            return None
        if pending:
            self._copied.clear()
        try:
            job.thread.start()
        except BaseException:
            self._copied.set()  # no thread will copy: the optimizer must not wait for it
            self._job = None
            raise
        return None

    def _register(self, job: _Job) -> bool:
        with self._registry:
            if self._abandoned:
                LOG.warning("not saving step %d: saving was abandoned (stop)", job.step)
                return False
            self._job = job
            return True

    # -- overlapped copy -----------------------------------------------------------
    def _optimizers(self) -> list[torch.optim.Optimizer]:
        return [obj for obj in self.objects.values() if isinstance(obj, torch.optim.Optimizer)]

    def _guarded_storages(self) -> set[int]:
        """Storages that only the registered optimizers' ``step()`` changes."""
        keys: set[int] = set()
        for optimizer in self._optimizers():
            for group in optimizer.param_groups:
                keys.update(_storage_key(param) for param in group["params"])
            for state in optimizer.state.values():
                keys.update(
                    _storage_key(value)
                    for value in state.values()
                    if isinstance(value, torch.Tensor)
                )
        keys.discard(0)
        return keys

    def _before_optimizer_step(self, *_args: Any) -> None:
        if self._copied.is_set():
            return
        start = time.perf_counter()
        self._copied.wait()
        self.last_copy_wait = time.perf_counter() - start

    def _copy_and_write(
        self, job: _Job, pending: Pending, snapshot: dict[str, Any], nbytes: int, epoch: int | None
    ) -> None:
        try:
            fill(pending)
        except BaseException as exc:
            job.error = exc
            return
        finally:
            self._copied.set()
        self._write(job, snapshot, nbytes, epoch)

    def _payload(
        self, step: int, epoch: int | None, extras: dict[str, Any] | None
    ) -> dict[str, Any]:
        payload = {
            "format": PAYLOAD_FORMAT,
            "step": int(step),
            "epoch": epoch,
            "objects": {key: obj.state_dict() for key, obj in self.objects.items()},
            "rng": capture_rng(),
            "extras": dict(extras or {}),
        }
        check_weights_only_safe(payload, "checkpoint state")
        return payload

    def _write(self, job: _Job, payload: dict[str, Any], nbytes: int, epoch: int | None) -> None:
        try:
            job.commit = storage.write_checkpoint(
                self.directory,
                job.step,
                payload,
                nbytes,
                epoch,
                self.config,
                self._writer_info(),
                pause_before_commit=self.pause_before_commit,
                algorithm=self.hash_algorithm,
                cancel=job.cancel,
            )
            deleted = storage.rotate(self.directory, job.step, self.keep, self.milestone_every)
            if deleted:
                LOG.debug("rotated out %s", ", ".join(deleted))
        except BaseException as exc:
            job.error = exc

    def _writer_info(self) -> dict[str, Any]:
        return {
            "library": "unbroken_ckpt",
            "library_version": LIBRARY_VERSION,
            "torch": torch.__version__,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
        }

    @property
    def in_flight(self) -> bool:
        return self._job is not None and self._job.thread.is_alive()

    def poll(self) -> storage.Commit | None:
        """Collect a finished background save without blocking (errors per ``on_error``)."""
        if self._job is None or self._job.thread.is_alive():
            return None
        return self.wait()

    def wait(self) -> storage.Commit | None:
        """Wait for the in-flight save; return its commit, None if it failed or none ran."""
        job = self._job
        if job is None:
            return None
        if job.thread is not threading.current_thread():
            job.thread.join()
        with self._registry:
            if self._job is not job:
                return None  # abandoned meanwhile: abandon() reported what is on disk
            self._job = None
        if job.error is not None:
            self._failed(job.error)
            return None
        self.last_commit = job.commit
        self.last_error = None
        if job.commit is not None:
            LOG.info(
                "checkpoint %s committed (%.1f MiB in %.2fs)",
                job.commit.name,
                job.commit.size / 2**20,
                job.commit.seconds,
            )
        return job.commit

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = str(exc)
        if not isinstance(exc, CheckpointWriteError) or self.on_error == "stop":
            raise exc
        LOG.error(
            "%s; training continues and the next checkpoint retries (on_error=continue)",
            exc,
        )


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def load_state_file(path: str) -> dict[str, Any]:
    """``torch.load`` a state file with ``weights_only=True``; refuse anything else clearly."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError or RuntimeError subclasses
        text = str(exc)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if "weights_only" in text.lower().replace(" ", "_") or "global" in text.lower():
            # Quote what was blocked, not torch's hint to retry with weights_only=False.
            blocked = [line for line in lines if "global" in line.lower()]
            detail = blocked[0] if blocked else "forbidden pickle content"
            raise UnsafeCheckpointError(
                f"refusing to load {path}: it holds pickled objects that "
                "torch.load(weights_only=True) does not allow (it was not written by this "
                f"library and could run code if loaded unsafely): {detail}"
            ) from None
        first = lines[0] if lines else type(exc).__name__
        raise CheckpointError(f"could not load {path}: {first}") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} does not hold a checkpoint state dictionary")
    return payload


_UNSET = object()


def describe_config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Say which configuration keys differ, e.g. ``hidden: 64 -> 128``."""
    parts = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, _UNSET), new.get(key, _UNSET)
        if before != after:
            parts.append(f"{key}: {_show(before)} -> {_show(after)}")
    return ", ".join(parts) or "fingerprints differ"


def _show(value: Any) -> str:
    if value is _UNSET:
        return "<unset>"
    return repr(value) if isinstance(value, str) else str(value)


__all__ = ["CheckpointManager", "Restored", "describe_config_diff", "load_state_file"]
