# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Checkpoints for one job of N ranks started by torchrun (DDP or FSDP2).

Two managers, both ``CheckpointManager`` subclasses with the same ``restore``/``save``/
``poll``/``wait``/``close`` interface:

* ``ReplicatedCheckpointManager`` (DDP: every rank holds the same state).  One writer
  per directory writes the usual ``state.pt`` (rank 0 on a shared file system, local rank
  0 of each node with node-local disks); the RNG states of every rank are gathered into
  it, so each rank resumes its own random streams.
* ``ShardedCheckpointManager`` (FSDP2 ``fully_shard`` or any DTensor state).  The payload
  is written and read by ``torch.distributed.checkpoint`` (DCP); this library adds the
  manifest with per-file checksums (each rank hashes its own shard files), the atomic
  commit (rank 0 writes ``MANIFEST.json`` and renames the step directory only after every
  rank reported its files durable), rotation and fallback.

What every rank does together (collectives on a gloo group of their own, with the
timeout given, never torch's default):

* ``open``: the writer(s) take the directory lock for the job; if any writer is refused,
  every rank raises ``CheckpointLockedError`` (a second job on the same directory);
* ``restore``: each rank verifies what it will read of each candidate step, newest first
  (the sharded manager hashes its shard files, agrees, and only then reads each tensor
  straight into the state); the step chosen is the newest one that verifies on **every**
  rank, so a corrupt shard on one rank makes all ranks fall back to the same older step;
* ``save``: called at the same step on every rank; a blocking save returns the same
  commit (or None) on every rank;
* ``agree_stop``: a stop signal seen by any rank stops all ranks at the same step.

Layouts (``layout=``):

* ``shared``: one directory that every rank sees (NFS, Lustre, one node's disk).  Survives
  losing any node; the file system is the single point of loss.
* ``node-local`` (replicated state only): the same path on each node's own disk, one
  writer per node, so each node holds a full copy.  Resume takes the newest step that is
  present and valid on every node; a node whose disk died must be replaced by one seeded
  with a copy from another node (the rest resume from their own copies).  Sharded state
  needs ``shared``: DCP places each piece of state in one rank's file, so a rank's node
  may need files another node wrote.

Usage in one's own DDP script (``torchrun --nproc-per-node N script.py``)::

    job = DistributedJob.from_env(timeout=300)          # init_process_group: gloo/nccl
    model = DDP(model)
    sampler = ResumableBatchSampler(n, batch, seed, rank=job.rank, world_size=job.world_size)
    ckpt = ReplicatedCheckpointManager(job, "/ckpt", {"model": model, "optimizer": opt,
                                       "data": sampler}, config=config)
    with ckpt, StopSignals() as stop:
        restored = ckpt.restore()                       # same step on every rank
        step = restored.step if restored else 0
        while step < total and not job.agree_stop(stop.requested):
            ...train one step...; step += 1
            ckpt.poll()
            if step % interval == 0:
                ckpt.save(step)
        ckpt.save(step, blocking=True)

For FSDP2 register ``{"model": ModelOptimizerState(model, opt), ...}`` with
``ShardedCheckpointManager`` (DCP reads and writes the DTensor shards in place).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import io
import logging
import os
import shutil
import struct
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any, cast

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.filesystem import FileSystem, FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, ReadItem
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import async_save
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from . import checkpoint_manifest as fmt
from . import storage
from .errors import (
    CheckpointError,
    CheckpointLockedError,
    CheckpointWriteError,
    ConfigMismatchError,
    NoValidCheckpointError,
)
from .manager import CheckpointManager, Restored, Stateful, _Job, load_state_file
from .rng import capture_rng, restore_rng

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; the runtime also runs on older images

LOG = logging.getLogger("unbroken_ckpt")
LAYOUTS = ("shared", "node-local")
DEFAULT_TIMEOUT = 300.0


def world_from_env() -> tuple[int, int, int, int]:
    """(rank, world size, local rank, local world size) as torchrun sets them; 0/1 without."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return rank, world, local_rank, local_world


class DistributedJob:
    """The process group of one torchrun job and the collectives this library needs.

    ``timeout`` (seconds) bounds every collective, including the training's own: a lost
    rank fails the others within it instead of torch's default of 10-30 minutes.
    """

    def __init__(self, backend: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        if timeout <= 0:
            raise ValueError(f"collective timeout must be > 0 seconds, got {timeout}")
        self.rank, self.world_size, self.local_rank, self.local_world_size = world_from_env()
        self.backend = backend
        self.timeout = timeout
        delta = datetime.timedelta(seconds=timeout)
        if not dist.is_initialized():
            dist.init_process_group(
                backend,
                timeout=delta,
                store=_attempt_store(delta),
                rank=self.rank if "RANK" in os.environ else -1,
                world_size=self.world_size if "WORLD_SIZE" in os.environ else -1,
            )
        # Our control messages (objects, flags) go over gloo on the CPU whatever the training
        # backend; a second group serves background writes so they never interleave with
        # the main thread's collectives.
        self.control = dist.new_group(backend="gloo", timeout=delta)
        self.io = dist.new_group(backend="gloo", timeout=delta)
        self.job_id = "{} ({}:{})".format(
            os.environ.get("TORCHELASTIC_RUN_ID", "none"),
            os.environ.get("MASTER_ADDR", "?"),
            os.environ.get("MASTER_PORT", "?"),
        )

    @classmethod
    def from_env(cls, device_type: str = "cpu", timeout: float = DEFAULT_TIMEOUT) -> Self:
        """Join the job torchrun started: ``nccl`` for CUDA devices, ``gloo`` otherwise."""
        return cls("nccl" if device_type == "cuda" else "gloo", timeout)

    @property
    def node(self) -> int:
        return self.rank // max(self.local_world_size, 1)

    def gather(self, value: Any, group: Any = None) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value, group=group or self.control)
        return out

    def agree_stop(self, requested: bool) -> bool:
        """True on every rank when any rank was asked to stop (call once per step)."""
        flag = torch.tensor([1 if requested else 0], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.control)
        return bool(flag.item())

    def barrier(self) -> None:
        dist.barrier(group=self.control)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def _attempt_store(timeout: datetime.timedelta) -> Any:
    """A store whose keys belong to this restart of the job only (None: torch's default).

    Under torchrun the agent keeps one TCPStore across restarts of the worker group, and
    ``init_process_group`` would put each attempt's keys under the same names: a restarted
    rank that starts before its peers can read a dead peer's address from the previous
    attempt and fail with "Connection refused" (seen here on every other restart).
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(  # type: ignore[attr-defined]  # re-exported from torch._C
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        int(os.environ["WORLD_SIZE"]),
        is_master=False,
        timeout=timeout,
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    prefix = f"unbroken_ckpt/attempt_{attempt}/"
    return dist.PrefixStore(prefix, store)  # type: ignore[attr-defined]  # from torch._C


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _subset(manifest: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """The manifest restricted to ``names`` (what one rank checks)."""
    return dict(manifest, files={name: manifest["files"][name] for name in names})


class _Rejected(Exception):
    """Every rank learnt that a checkpoint failed verification while it was being read."""


class _RankAware(CheckpointManager):
    """What both managers share: the job lock, the agreed restore step, agreed commits."""

    def __init__(
        self,
        job: DistributedJob,
        directory: str,
        objects: Mapping[str, Stateful],
        layout: str = "shared",
        **kwargs: Any,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(
                "layout must be one of {}, got {!r}".format(", ".join(LAYOUTS), layout)
            )
        super().__init__(directory, objects, **kwargs)
        self.job = job
        self.layout = layout

    @property
    def is_writer(self) -> bool:
        """Whether this rank owns the lock, cleans up, commits and rotates its directory."""
        return self.job.local_rank == 0 if self.layout == "node-local" else self.job.rank == 0

    # -- lifecycle -------------------------------------------------------------
    def open(self) -> _RankAware:
        refusal = ""
        if self.is_writer:
            try:
                super().open()
                self._lock_note()
            except (CheckpointLockedError, OSError) as exc:
                refusal = str(exc)
        refusals = [(r, m) for r, m in enumerate(self.job.gather(refusal)) if m]
        if refusals:
            self._lock.release()
            rank, message = refusals[0]
            raise CheckpointLockedError(
                message if rank == self.job.rank else f"rank {rank} of this job: {message}"
            )
        return self

    def _lock_note(self) -> None:
        # The lock file says which job holds it, for whoever is refused next.
        with open(self._lock.path, "a", encoding="utf-8") as handle:
            handle.write(
                f"job {self.job.job_id}, {self.job.world_size} ranks, writer rank {self.job.rank}\n"
            )

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._lock.held:
                super().close()

    # -- restore: agreed by every rank ----------------------------------------------
    def _verify(self, name: str) -> tuple[str, str, fmt.CheckpointStatus | None]:
        """This rank's verdict on checkpoint ``name``: ``ok``, ``invalid`` or ``mismatch``."""
        if not os.path.isdir(os.path.join(self.directory, name)):
            return "invalid", "missing on this rank's node", None
        status = fmt.CheckpointStatus(name, fmt.parse_step(name) or 0, "")
        status.path = os.path.join(self.directory, name)
        try:
            status.manifest = fmt.read_manifest(status.path)
        except fmt.ManifestError as exc:
            return "invalid", str(exc), None
        wanted = self._files_to_verify(status.manifest)
        later = set(self._hashed_while_loading(wanted))
        problems: list[str] = []
        for names, full in ((sorted(later), False), ([n for n in wanted if n not in later], True)):
            if names:  # sizes only for what _load hashes (before it reads them)
                subset = _subset(status.manifest, names)
                problems += fmt.verify_files(status.path, subset, full=full)
        if problems:
            return "invalid", "; ".join(problems), None
        status.verified = True
        try:
            self._check_config(status)
        except ConfigMismatchError as exc:
            return "mismatch", str(exc), None
        return "ok", "", status

    def _files_to_verify(self, manifest: Mapping[str, Any]) -> list[str]:
        return sorted(manifest["files"])

    def _hashed_while_loading(self, names: list[str]) -> list[str]:
        """Files whose hashes ``_load`` checks (before any state changes) instead of here."""
        return []

    def _agree(
        self, exclude: set[str] | frozenset[str] = frozenset()
    ) -> tuple[fmt.CheckpointStatus | None, list[tuple[str, str]]]:
        """The newest checkpoint every rank verified, and the newer ones skipped (why)."""
        local = [name for _step, name in fmt.list_checkpoints(self.directory)]
        names = sorted(
            set().union(*map(set, self.job.gather(local))) - exclude,
            key=lambda name: fmt.parse_step(name) or -1,
            reverse=True,
        )
        skipped: list[tuple[str, str]] = []
        for name in names:
            verdict, message, status = self._verify(name)
            verdicts = self.job.gather((verdict, message))
            mismatch = [m for v, m in verdicts if v == "mismatch"]
            if mismatch:
                raise ConfigMismatchError(mismatch[0])
            bad = [f"rank {r}: {m}" for r, (v, m) in enumerate(verdicts) if v != "ok"]
            if not bad:
                return status, skipped
            skipped.append((name, "; ".join(bad)))
        return None, skipped

    def restore(self) -> Restored | None:
        skipped: list[tuple[str, str]] = []
        told = 0
        while True:
            best, newer = self._agree({name for name, _reason in skipped})
            skipped += newer
            if best is None:
                break
            for name, reason in skipped[told:]:
                LOG.warning(
                    "checkpoint %s is invalid (%s); falling back to %s", name, reason, best.name
                )
            told = len(skipped)
            try:
                return self._restore_from(best, skipped)
            except _Rejected as exc:  # raised on every rank: a shard failed its hash
                skipped.append((best.name, str(exc)))
        self.rejected = list(skipped)
        for name, reason in skipped:
            LOG.warning("checkpoint %s is invalid (%s); no older valid checkpoint", name, reason)
        if skipped and not self.allow_fresh_start:
            raise NoValidCheckpointError(
                f"{len(skipped)} checkpoint(s) in {self.directory} but none verifies on "
                "every rank; refusing to start from step 0 over them: move them away or "
                "allow a fresh start (allow_fresh_start / --allow-fresh-start)"
            )
        self._quarantine_agreed(skipped)
        return None

    def _restore_from(self, best: fmt.CheckpointStatus, skipped: list[tuple[str, str]]) -> Restored:
        """Load ``best`` on every rank, then move aside what was passed over for it."""
        error: BaseException | None = None
        restored: Restored | None = None
        try:
            restored = self._load(best)
        except CheckpointError as exc:
            error = exc
        self.rejected = list(skipped)
        moved = self._quarantine_agreed(skipped)
        failures = [(r, m) for r, m in enumerate(self.job.gather(error and str(error))) if m]
        if error is not None:
            raise error
        if failures:
            rank, message = failures[0]
            raise CheckpointError(f"rank {rank} could not load checkpoint {best.name}: {message}")
        assert restored is not None
        restored.skipped = skipped
        restored.quarantined = moved
        manifest = best.manifest or {}
        self.last_commit = storage.Commit(
            best.name, best.step, best.path, best.size, 0.0, manifest.get("created", 0.0)
        )
        LOG.info("resumed from checkpoint %s (step %d)", best.name, best.step)
        return restored

    def _load(self, best: fmt.CheckpointStatus) -> Restored:
        raise NotImplementedError

    def _quarantine_agreed(self, skipped: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Move aside what every rank agreed to pass over: its directory's writer does it,
        after all ranks are done reading those checkpoints (the agreement was a collective)."""
        if not self.is_writer:
            return []
        passed = []
        for name, reason in skipped:
            path = os.path.join(self.directory, name)
            if os.path.isdir(path):
                passed.append((fmt.CheckpointStatus(name, fmt.parse_step(name) or 0, path), reason))
        return self._quarantine(passed)

    def _agreed_commit(self, mine: storage.Commit | None, error: str) -> storage.Commit | None:
        """Every rank's view of a save: the commit only if every writer committed."""
        results = self.job.gather((self.is_writer, mine, error))
        writers = [(r, c, e) for r, (w, c, e) in enumerate(results) if w]
        failed = [(r, e or "no commit") for r, c, e in writers if c is None]
        if failed:
            self.last_error = f"rank {failed[0][0]}: {failed[0][1]}"
            return None
        commit = mine if mine is not None else writers[0][1]
        self.last_commit = commit
        self.last_error = None
        return commit


class ReplicatedCheckpointManager(_RankAware):
    """DDP: one writer per directory saves the replicated state plus every rank's RNGs.

    ``save`` must be called at the same step on every rank (it gathers the RNG states).
    Asynchronous saves work as in ``CheckpointManager`` on the writer; ``save(...,
    blocking=True)`` returns the same result on every rank.
    """

    _rng_ranks: list[Any] | None = None

    def save(
        self,
        step: int,
        epoch: int | None = None,
        extras: dict[str, Any] | None = None,
        blocking: bool | None = None,
    ) -> storage.Commit | None:
        if self.is_writer:
            self.wait()
        self._rng_ranks = self.job.gather(capture_rng())
        sync = not (self.async_save if blocking is None else not blocking)
        commit, error = None, ""
        if self.is_writer:
            try:
                commit = super().save(step, epoch, extras, blocking)
            except CheckpointWriteError as exc:
                error = str(exc)
                if not sync:
                    raise
            finally:
                self._rng_ranks = None
        if not sync:
            return None
        return self._agreed_commit(commit, error or (self.last_error or ""))

    def _payload(
        self, step: int, epoch: int | None, extras: dict[str, Any] | None
    ) -> dict[str, Any]:
        payload = super()._payload(step, epoch, extras)
        payload["rng_ranks"] = self._rng_ranks
        payload["world_size"] = self.job.world_size
        return payload

    def _writer_info(self) -> dict[str, Any]:
        info = super()._writer_info()
        info.update(world_size=self.job.world_size, rank=self.job.rank, layout=self.layout)
        return info

    def _load(self, best: fmt.CheckpointStatus) -> Restored:
        payload = load_state_file(os.path.join(best.path, storage.STATE_FILE))
        ranks = payload.get("rng_ranks")
        if isinstance(ranks, list) and len(ranks) == self.job.world_size:
            payload = dict(payload, rng=ranks[self.job.rank])
        self._apply(payload, best.name)
        return Restored(
            name=best.name,
            step=best.step,
            epoch=payload.get("epoch"),
            extras=payload.get("extras") or {},
            path=best.path,
        )


class ModelOptimizerState:
    """A model and its optimizer as one DCP ``Stateful`` (FSDP2, DDP or plain modules).

    Uses ``torch.distributed.checkpoint.state_dict``, which gives sharded (DTensor) state
    for FSDP2 and fills a fresh optimizer's state before loading into it.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        return {"model": model_state, "optim": optim_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_state_dict(
            self.model,
            self.optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optim"],
        )


def _blob(value: Any) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return buffer


def _unblob(buffer: io.BytesIO) -> Any:
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=True)


class _HashingFileSystem(FileSystem):
    """DCP's file system, except that each shard file DCP writes is checksummed on the way.

    The segments are hashed by worker threads while the same bytes go to the kernel
    (``storage._HashingFile``, as for ``state.pt``): no second pass reading the files back
    before the commit.  It also starts the disk writeback every 64 MiB, so DCP's closing
    fsync has little left to wait for.  While a shard file is written, ``torch.save``
    skips its zip CRC-32 (which our segment checksums make redundant and which cost more
    than they do: 0.03-0.05 s per 64 MiB here); like the single-process writer thread,
    this switch is process-wide while it lasts.  Other files (DCP's ``.metadata``) pass
    through.
    """

    def __init__(self, algorithm: str) -> None:
        super().__init__()
        self.algorithm = algorithm
        self.entries: dict[str, dict[str, Any]] = {}

    @contextlib.contextmanager
    def create_stream(self, path: str | os.PathLike[str], mode: str) -> Iterator[io.IOBase]:
        name = os.path.basename(os.fspath(path))
        if mode != "wb" or not name.endswith(".distcp"):
            with super().create_stream(path, mode) as stream:
                yield stream
            return
        threads = fmt.default_threads()
        with ThreadPoolExecutor(max_workers=threads) as pool, storage._without_zip_crc32():
            raw = storage._HashingFile(
                os.fspath(path), pool, self.algorithm, storage.Cancel(), name
            )
            with io.BufferedWriter(raw, buffer_size=1 << 20) as stream:
                yield stream
        self.entries[name] = fmt.file_entry(raw.size, raw.digests())


def _narrow(tensor: torch.Tensor, offsets: Sequence[int], lengths: Sequence[int]) -> torch.Tensor:
    for dim, (offset, length) in enumerate(zip(offsets, lengths)):
        if length < tensor.size(dim):
            tensor = tensor.narrow(dim, offset, length)
    return tensor


def _pread_exactly(fd: int, buffer: memoryview, offset: int, path: str) -> None:
    done = 0
    while done < len(buffer):
        got = os.preadv(fd, [buffer[done:]], offset + done)
        if got == 0:
            raise CheckpointError(f"{path}: ends before byte {offset + len(buffer)} (truncated)")
        done += got


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    """A writable view of a contiguous CPU tensor's memory (any dtype, bfloat16 included)."""
    size = tensor.numel() * tensor.element_size()
    return memoryview((ctypes.c_char * size).from_address(tensor.data_ptr())).cast("B")


class _VerifyingReader(FileSystemReader):
    """DCP's file reader, except that nothing is read into the state before every rank's
    files verified, and each tensor's bytes are read straight into the state.

    ``check()`` waits for this rank's hashes and agrees with the other ranks (a collective,
    called exactly once per load on every rank, before anything is read); it raises
    ``_Rejected`` on every rank when any rank's files failed.  Then each tensor item is read:
    ``torch.load`` with ``map_location="meta"`` reads the item's pickled header (dtype,
    shape, strides and where its storage lies in the file) but no data, and the bytes are
    read with ``preadv`` into the target tensor when it is a contiguous CPU tensor of that
    shape (otherwise into a buffer, copied into the target).  DCP's reader instead lets
    ``torch.load`` allocate a fresh tensor per item and then copies it: on the CI machine the
    page faults of that fresh memory cost five times the read itself (benchmarks/README.md).
    Items written with DCP's stream transforms, or by a machine of the other byte order,
    take DCP's way.
    """

    def __init__(self, path: str, check: Callable[[], None]) -> None:
        super().__init__(path)
        self._check = check
        self.rejected: str | None = None

    def _verdict(self) -> None:
        try:
            self._check()
        except _Rejected as exc:
            self.rejected = str(exc)
            raise

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Any:
        self._verdict()
        per_file: dict[str, list[ReadItem]] = {}
        for item in plan.items:
            path = self.storage_data[item.storage_index].relative_path
            per_file.setdefault(path, []).append(item)
        for relative_path, items in per_file.items():
            path = str(self.fs.concat_path(self.path, relative_path))
            with open(path, "rb") as stream:
                for item in items:
                    self._read_item(stream, path, item, planner)
        done: torch.futures.Future[None] = torch.futures.Future()
        done.set_result(None)
        return done

    def _read_item(self, f: Any, path: str, item: ReadItem, planner: LoadPlanner) -> None:
        info = self.storage_data[item.storage_index]
        if item.type == LoadItemType.BYTE_IO:
            stream = self.transforms.transform_load_stream(
                item, info.transform_descriptors or (), self._slice_file(f, info)
            )
            planner.load_bytes(item, io.BytesIO(stream.read(-1)))
            return
        target = planner.resolve_tensor(item).detach()
        value = self._read_tensor(f, path, item, target)
        if value is not None:
            value = _narrow(value, item.storage_offsets, item.lengths)
            if target.size() != value.size():
                raise CheckpointError(
                    f"{item.storage_index.fqn}: size {tuple(value.size())} in the checkpoint, "
                    f"{tuple(target.size())} in this run"
                )
            target.copy_(value)
        planner.commit_tensor(item, target)

    def _read_tensor(
        self, f: Any, path: str, item: ReadItem, target: torch.Tensor
    ) -> torch.Tensor | None:
        """Read a tensor item straight into ``target`` (None), or return its whole stored
        tensor for the caller to narrow and copy."""
        info = self.storage_data[item.storage_index]
        if info.transform_descriptors:
            return self._load_whole(
                self.transforms.transform_load_stream(
                    item, info.transform_descriptors, self._slice_file(f, info)
                )
            )
        span = _Span(f.fileno(), info.offset, info.length)
        header = torch.load(cast(IO[bytes], span), map_location="meta", weights_only=True)
        start = getattr(header.untyped_storage(), "_checkpoint_offset", None)
        if isinstance(start, int) and sys.byteorder == _byte_order(span) == "little":
            end = info.offset + info.length
            return self._read_raw(
                f.fileno(), path, (info.offset + start, end), header, target, item
            )
        span.seek(0)
        return self._load_whole(span)

    @staticmethod
    def _load_whole(stream: Any) -> torch.Tensor:
        if not stream.seekable():
            stream = io.BytesIO(stream.read(-1))
        value: torch.Tensor = torch.load(stream, map_location="cpu", weights_only=True)
        return value

    @staticmethod
    def _read_raw(
        fd: int,
        path: str,
        span: tuple[int, int],
        header: torch.Tensor,
        target: torch.Tensor,
        item: Any,
    ) -> torch.Tensor | None:
        """Read a tensor whose storage lies at ``span[0]`` of the file, before its item's end
        ``span[1]``: into ``target`` itself when it can (and return None), else into a buffer
        (returned, not narrowed)."""
        start, end = span
        nbytes = header.untyped_storage().nbytes()
        if start + nbytes > end:
            raise CheckpointError(f"{path}: {item.storage_index.fqn}: data outside its item")
        view = _narrow(header, item.storage_offsets, item.lengths)
        size = header.element_size()
        if (
            target.device.type == "cpu"
            and target.dtype == view.dtype
            and target.size() == view.size()
            and target.is_contiguous()
            and view.is_contiguous()
        ):
            if target.numel():
                _pread_exactly(
                    fd, _bytes_of(target), start + int(view.storage_offset()) * size, path
                )
            return None
        buffer = torch.empty(nbytes, dtype=torch.uint8)
        if buffer.numel():
            _pread_exactly(fd, _bytes_of(buffer), start, path)
        value = torch.empty(0, dtype=header.dtype)
        return value.set_(
            buffer.untyped_storage(), header.storage_offset(), header.size(), header.stride()
        )


class _Span(io.RawIOBase):
    """Bytes ``start`` to ``start + length`` of an open file, read with ``pread`` (DCP's
    own file view cannot seek from the end, which ``zipfile`` needs)."""

    def __init__(self, fd: int, start: int, length: int) -> None:
        super().__init__()
        self._fd, self._start, self._length, self._pos = fd, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")[: max(0, self._length - self._pos)]
        got = os.preadv(self._fd, [view], self._start + self._pos) if len(view) else 0
        self._pos += got
        return got


def _byte_order(span: _Span) -> str:
    """The byte order a ``torch.save`` archive says its data has (little when unsaid).

    Read from the entry's bytes: ``ZipFile.read`` would check the zip's CRC-32, which our
    writer lets ``torch.save`` leave out (the manifest's checksums cover every byte)."""
    span.seek(0)
    with zipfile.ZipFile(span) as archive:
        for entry in archive.infolist():
            if entry.filename.endswith("/byteorder") and entry.file_size <= 16:
                span.seek(entry.header_offset + 26)
                name_length, extra_length = struct.unpack("<HH", span.read(4))
                span.seek(entry.header_offset + 30 + name_length + extra_length)
                return span.read(entry.file_size).decode("ascii", "replace")
    return "little"


def _reused_stager() -> DefaultStager:
    """A stager that keeps its CPU copies from one async save to the next.

    ``async_save`` without one makes a new stager per call, which allocates fresh CPU memory
    for the whole state each time: the page faults cost more than the copy itself (the stall
    was 3x longer, benchmarks/README.md).  The price is that the copies stay allocated
    between saves, as the single-process manager's buffers do.  With CUDA they are pinned
    (registered once) and filled by non-blocking copies, synchronised before ``save``
    returns.
    """
    cuda = torch.cuda.is_available()
    return DefaultStager(
        StagingOptions(
            use_pinned_memory=cuda,
            use_shared_memory=False,
            use_async_staging=False,
            use_non_blocking_copy=cuda,
        )
    )


class ShardedCheckpointManager(_RankAware):
    """FSDP2 / DTensor state written by ``torch.distributed.checkpoint`` with our manifest on top.

    Each step directory holds DCP's files (``.metadata`` and one ``__<rank>_<n>.distcp``
    per rank) and ``MANIFEST.json``.  ``objects`` are DCP ``Stateful`` objects (wrap a
    model and its optimizer in ``ModelOptimizerState``); every rank's RNG states and the
    extras travel as small blobs.  Needs ``layout="shared"``.  Asynchronous saves keep
    their CPU staging copy of the state allocated between saves (pinned with CUDA), as the
    single-process manager keeps its buffers; ``close`` frees it.
    """

    def __init__(
        self,
        job: DistributedJob,
        directory: str,
        objects: Mapping[str, Stateful],
        layout: str = "shared",
        **kwargs: Any,
    ) -> None:
        if layout != "shared":
            raise ValueError(
                "sharded checkpoints need layout='shared': DCP puts each piece of state in "
                "one rank's file, which ranks on other nodes must be able to read"
            )
        kwargs.pop("overlap_copy", None)
        super().__init__(job, directory, objects, layout=layout, **kwargs)
        self._future: Any = None
        self._stager: DefaultStager | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._stager is not None:
                self._stager.close()
                self._stager = None

    def _state(self, step: int, epoch: int | None, extras: Any) -> dict[str, Any]:
        state: dict[str, Any] = dict(self.objects)
        state[f"rng_rank{self.job.rank}"] = _blob(capture_rng())
        state["meta"] = _blob({"step": int(step), "epoch": epoch, "extras": dict(extras or {})})
        return state

    def _tmp(self, step: int) -> str:
        return os.path.join(self.directory, f"{fmt.TMP_PREFIX}{fmt.checkpoint_name(step)}-dcp")

    def save(
        self,
        step: int,
        epoch: int | None = None,
        extras: dict[str, Any] | None = None,
        blocking: bool | None = None,
    ) -> storage.Commit | None:
        self.wait()
        sync = not (self.async_save if blocking is None else not blocking)
        if self.last_commit is not None and self.last_commit.step == step:
            return self.last_commit
        tmp = self._tmp(step)
        if self.is_writer:
            shutil.rmtree(tmp, ignore_errors=True)
            os.mkdir(tmp, 0o755)
        self.job.barrier()
        state = self._state(step, epoch, extras)
        # DCP's FileSystemWriter (files fsynced) with our hashing streams; an async save is
        # staged by our reused stager, never by the writer (its staging allocates anew).
        writer = FileSystemWriter(tmp, sync_files=True)
        hashing = writer.fs = _HashingFileSystem(self.hash_algorithm)
        job = _Job(step, threading.current_thread())
        started = time.monotonic()
        if not self._register(job):
            return None
        if sync:
            try:
                dcp_save(state, storage_writer=writer, process_group=self.job.io)
            except Exception as exc:  # DCP raises on every rank when any rank failed
                job.error = exc
            self._commit(job, tmp, epoch, started, hashing.entries)
            return self.wait()
        if self._stager is None:
            self._stager = _reused_stager()
        future = async_save(
            state, storage_writer=writer, process_group=self.job.io, async_stager=self._stager
        )
        job.thread = threading.Thread(
            target=self._finish_async,
            args=(job, future, tmp, epoch, started, hashing.entries),
            name=f"unbroken-ckpt-dcp-{step}",
        )
        job.thread.start()
        return None

    def _finish_async(
        self,
        job: _Job,
        future: Any,
        tmp: str,
        epoch: int | None,
        started: float,
        hashed: Mapping[str, Any],
    ) -> None:
        try:
            future.result()
        except BaseException as exc:
            job.error = exc
        self._commit(job, tmp, epoch, started, hashed)

    def _commit(
        self, job: _Job, tmp: str, epoch: int | None, started: float, hashed: Mapping[str, Any]
    ) -> None:
        """Collect this rank's file hashes; rank 0 writes the manifest last and renames."""
        entries: dict[str, Any] = {}
        error = f"rank {self.job.rank}: {_first_line(job.error)}" if job.error else ""
        if not error:
            try:
                prefix = f"__{self.job.rank}_"
                for name in sorted(os.listdir(tmp)):
                    if not name.startswith(prefix):
                        continue
                    entry = hashed.get(name)
                    if entry is None:  # not written through our stream: read it back
                        size, segments = fmt.hash_file(
                            os.path.join(tmp, name), algorithm=self.hash_algorithm
                        )
                        entry = fmt.file_entry(size, segments)
                    entries[name] = entry
            except OSError as exc:
                error = f"rank {self.job.rank}: {exc}"
        gathered = self.job.gather((entries, error), group=self.job.io)
        errors = [e for _files, e in gathered if e]
        outcome: Any = None
        if self.is_writer:
            outcome = self._write_manifest(job, tmp, gathered, errors, epoch, started)
        outcome = self.job.gather(outcome, group=self.job.io)[0]
        if isinstance(outcome, storage.Commit):
            job.commit = outcome
        else:
            job.error = CheckpointWriteError(
                f"checkpoint {fmt.checkpoint_name(job.step)} could not be written to "
                f"{self.directory}: {outcome}; the partial write was removed and older "
                "checkpoints are intact"
            )

    def _write_manifest(
        self,
        job: _Job,
        tmp: str,
        gathered: list[tuple[dict[str, Any], str]],
        errors: list[str],
        epoch: int | None,
        started: float,
    ) -> storage.Commit | str:
        step = job.step
        name = fmt.checkpoint_name(step)
        try:
            if errors:
                raise CheckpointWriteError("; ".join(errors))
            files: dict[str, Any] = {}
            for rank_files, _error in gathered:
                files.update(rank_files)
            # Files no rank claimed (DCP's .metadata): the coordinator hashes them.
            for other in sorted(set(os.listdir(tmp)) - set(files) - {fmt.MANIFEST_NAME}):
                size, segments = fmt.hash_file(
                    os.path.join(tmp, other), algorithm=self.hash_algorithm
                )
                files[other] = fmt.file_entry(size, segments)
            created = time.time()
            manifest = fmt.build_manifest(
                step,
                files,
                epoch=epoch,
                config=self.config,
                created=created,
                writer=self._writer_info(),
                algorithm=self.hash_algorithm,
            )
            manifest["sharded"] = {
                "engine": "torch.distributed.checkpoint",
                "world_size": self.job.world_size,
            }
            fmt.fsync_dir(tmp)
            fmt.write_manifest(tmp, manifest)
            fmt.fsync_dir(tmp)
            if self.pause_before_commit > 0:
                job.cancel.sleep(self.pause_before_commit, name)
            size = sum(int(entry["size"]) for entry in files.values())
            with job.cancel.committing(name):  # abandon() (stop budget over) excludes this
                final = storage._commit(self.directory, tmp, name)
                job.cancel.commit = storage.Commit(
                    name, step, final, size, time.monotonic() - started, created
                )
            storage.rotate(self.directory, step, self.keep, self.milestone_every)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            return _first_line(exc)
        return job.cancel.commit

    def _writer_info(self) -> dict[str, Any]:
        info = super()._writer_info()
        info.update(world_size=self.job.world_size, layout=self.layout, engine="dcp")
        return info

    def _hashed_while_loading(self, names: list[str]) -> list[str]:
        return [name for name in names if name.startswith(f"__{self.job.rank}_")]

    def _files_to_verify(self, manifest: Mapping[str, Any]) -> list[str]:
        """What this rank reads: its own shard files, DCP's metadata, and (rank 0) the rest."""
        names = sorted(manifest["files"])
        owned = [n for n in names if n.startswith("__") and n[2:].split("_", 1)[0].isdigit()]
        mine = [n for n in owned if n.startswith(f"__{self.job.rank}_")]
        rest = [n for n in names if n not in owned]
        return mine + rest if self.job.rank == 0 else mine + [n for n in rest if n == ".metadata"]

    def _load(self, best: fmt.CheckpointStatus) -> Restored:
        state: dict[str, Any] = dict(self.objects)
        rng_key = f"rng_rank{self.job.rank}"
        state[rng_key] = io.BytesIO()
        state["meta"] = io.BytesIO()
        manifest = best.manifest or {"files": {}}
        mine = self._hashed_while_loading(self._files_to_verify(manifest))
        with ThreadPoolExecutor(max_workers=1) as pool:
            # One thread: one sequential stream per file keeps the kernel's read-ahead going
            # (two threads on one file were slower from the disk, barely faster from memory).
            hashes = pool.submit(fmt.verify_files, best.path, _subset(manifest, mine), True, 1)
            reader = _VerifyingReader(best.path, lambda: self._agree_hashes(hashes))
            try:
                dcp_load(state, storage_reader=reader, process_group=self.job.io)
                meta = _unblob(state["meta"])
                restore_rng(_unblob(state[rng_key]))
            except (Exception, CheckpointException) as exc:  # the latter is a BaseException
                if reader.rejected is not None:
                    raise _Rejected(reader.rejected) from None
                if isinstance(exc, CheckpointError):
                    raise
                raise CheckpointError(
                    f"checkpoint {best.name} could not be loaded: {_first_line(exc)}"
                ) from exc
        return Restored(
            name=best.name,
            step=best.step,
            epoch=meta.get("epoch"),
            extras=meta.get("extras") or {},
            path=best.path,
        )

    def _agree_hashes(self, hashes: Future[list[str]]) -> None:
        """Every rank's verdict on the shard files it hashed before reading them."""
        try:
            problems = hashes.result()
        except Exception as exc:
            problems = [f"verification failed: {_first_line(exc)}"]
        verdicts = self.job.gather("; ".join(problems))
        bad = [f"rank {rank}: {problem}" for rank, problem in enumerate(verdicts) if problem]
        if bad:
            raise _Rejected("; ".join(bad))


__all__ = [
    "LAYOUTS",
    "DistributedJob",
    "ModelOptimizerState",
    "ReplicatedCheckpointManager",
    "ShardedCheckpointManager",
    "world_from_env",
]
