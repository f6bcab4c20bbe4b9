# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Training metrics any script and any tool can read: ``metrics.jsonl`` (+ TensorBoard).

One line in a user's script::

    from unbroken_ckpt import metrics

    m = metrics.open()                        # <dir of $UNBROKEN_STATUS_FILE>/metrics.jsonl
    m.log(step, loss=loss, lr=lr, tokens_per_second=tps)   # any named scalars

With the checkpoint library, say where the run starts and let it record commits::

    m = metrics.open(ckpt_dir, checkpoints=ckpt)   # ckpt: a CheckpointManager
    restored = ckpt.restore()
    m.start(restored.step if restored else 0, restored=restored)
    ...
    m.log(step, loss=...)                     # also records a checkpoint committed since
    m.end(step, "finished")                   # or "stopped"/"failed"; a kill writes nothing

``start`` on resume is what keeps the history free of duplicate steps: readers drop the
records the killed run wrote after the checkpoint it resumes from (scripts that skip it
still get a de-duplicated history once they log again).  The format, the rotation and the
reader (``read_metrics``) are in ``training_metrics``.

Under torchrun only rank 0 writes (``RANK`` from the environment, or
``torch.distributed``); on other ranks the object does nothing, so the same line works on
every rank.

TensorBoard: when ``torch.utils.tensorboard`` imports (the ``tensorboard`` package is
installed) the same scalars go to ``<dir>/tensorboard`` as event files, with
``purge_step`` set on resume so TensorBoard hides the abandoned steps too.  Without it, or
with ``tensorboard=False``, it is silently off.

Writing metrics never stops training: a failed write (a full disk) is logged once and the
next ``log`` tries again.

Weights & Biases: give the run a stable id per job and let it resume, e.g.
``wandb.init(project=..., id=os.environ["UNBROKEN_JOB"], resume="allow")`` (or set
``WANDB_RUN_ID`` and ``WANDB_RESUME=allow`` in the job's ``env``); log with the same step
numbers, and W&B continues the run after each restart.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from . import training_metrics as fmt
from .training_metrics import FILE_NAME, MetricsError, read_metrics

LOG = logging.getLogger(__name__)
TENSORBOARD_DIR = "tensorboard"

__all__ = ["FILE_NAME", "Metrics", "MetricsError", "open", "read_metrics"]


def default_directory() -> str:
    """The directory of ``$UNBROKEN_STATUS_FILE``, else ``$UNBROKEN_CHECKPOINT_DIR``."""
    status = os.environ.get("UNBROKEN_STATUS_FILE")
    if status:
        return os.path.dirname(os.path.abspath(status))
    directory = os.environ.get("UNBROKEN_CHECKPOINT_DIR")
    if directory:
        return directory
    raise MetricsError(
        "metrics.open() needs a directory outside a trainer job "
        "(UNBROKEN_STATUS_FILE and UNBROKEN_CHECKPOINT_DIR are not set)"
    )


def process_rank() -> int:
    """This process's rank: ``RANK`` (torchrun), else torch.distributed's, else 0."""
    text = os.environ.get("RANK")
    if text and text.strip().isdigit():
        return int(text)
    try:
        import torch.distributed as dist  # noqa: PLC0415  # only where torch is
    except ImportError:
        return 0
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return 0


def open(
    directory: str | None = None,
    *,
    checkpoints: Any = None,
    file_name: str = FILE_NAME,
    max_bytes: int = fmt.DEFAULT_MAX_BYTES,
    backups: int = fmt.DEFAULT_BACKUPS,
    tensorboard: bool | None = None,
    rank: int | None = None,
) -> Metrics:
    """Open the metrics stream ``<directory>/<file_name>`` for appending (see the module doc).

    ``checkpoints``: a CheckpointManager whose commits become ``checkpoint`` events.
    ``tensorboard``: None writes event files when TensorBoard is installed, False never,
    True requires it.  ``rank``: None reads it from the environment; not 0 → does nothing.
    """
    directory = directory or default_directory()
    enabled = (process_rank() if rank is None else rank) == 0
    writer = None
    if enabled:
        writer = fmt.MetricsWriter(os.path.join(directory, file_name), max_bytes, backups)
    summary_class = _summary_writer_class(tensorboard) if enabled else None
    return Metrics(writer, checkpoints, summary_class, os.path.join(directory, TENSORBOARD_DIR))


def _summary_writer_class(wanted: bool | None) -> Any:
    if wanted is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415  # optional
    except ImportError as exc:
        if wanted:
            raise MetricsError(
                f"tensorboard=True but TensorBoard is not importable ({exc}); "
                "install the 'tensorboard' package"
            ) from exc
        return None
    return SummaryWriter


class Metrics:
    """A training process's metrics stream (``open`` makes one)."""

    def __init__(
        self,
        writer: fmt.MetricsWriter | None,
        checkpoints: Any = None,
        summary_class: Any = None,
        tensorboard_dir: str | None = None,
    ) -> None:
        self.writer = writer
        self.checkpoints = checkpoints
        self.tensorboard_dir = tensorboard_dir
        self._summary_class = summary_class
        self._summary: Any = None
        self._start_step: int | None = None
        self._step = 0
        self._seen_commit: int | None = None
        self._failed: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    @property
    def path(self) -> str | None:
        return None if self.writer is None else self.writer.path

    @property
    def tensorboard(self) -> bool:
        """Whether TensorBoard event files are (or will be) written."""
        return self._summary_class is not None

    def start(self, step: int = 0, restored: Any = None, cause: str | None = None) -> None:
        """Record that this run starts at ``step`` (resumed from ``restored``, a Restored)."""
        self._start_step = self._step = fmt.check_step(step)
        commit = getattr(self.checkpoints, "last_commit", None)
        if commit is not None:
            self._seen_commit = commit.step  # the checkpoint resumed from is not news
        if self.writer is None:
            return
        self._write(
            "start",
            self.writer.start,
            step,
            cause=cause,
            checkpoint=getattr(restored, "name", None),
            skipped=getattr(restored, "skipped", None),
        )

    def log(self, step: int, **scalars: Any) -> None:
        """Record named scalars (loss=, lr=, samples_per_second=, anything) for ``step``."""
        if self.writer is None:
            return
        self.record_checkpoint()
        record = fmt.scalars_record(step, self.writer.clock(), scalars)  # bad input raises
        self._step = record["step"]
        self._write("log", self.writer.append, record)
        self._tensorboard(record["step"], record)

    def record_checkpoint(self, commit: Any = None) -> None:
        """Record ``commit`` (default: the CheckpointManager's newest) unless already done."""
        if self.writer is None:
            return
        commit = commit or getattr(self.checkpoints, "last_commit", None)
        if commit is None or commit.step == self._seen_commit:
            return
        self._seen_commit = commit.step
        self._write(
            "checkpoint",
            self.writer.checkpoint,
            commit.step,
            name=commit.name,
            seconds=commit.seconds,
            size_bytes=commit.size,
            when=commit.created or None,
        )

    def end(self, step: int, state: str, reason: str | None = None) -> None:
        """Record a clean end: ``finished``, ``stopped`` (by a signal) or ``failed``."""
        if self.writer is None:
            return
        if state not in fmt.END_STATES:
            raise MetricsError(
                "state must be one of {}, got {!r}".format(", ".join(fmt.END_STATES), state)
            )
        self.record_checkpoint()
        self._step = fmt.check_step(step)
        self._write("end", self.writer.end, step, state, reason)
        self._flush_tensorboard()

    def close(self) -> None:
        if self._summary is not None:
            try:
                self._summary.close()
            except Exception as exc:  # viewer output must never fail a run
                self._warn("tensorboard", exc)
            self._summary = None
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> Metrics:
        return self

    def __exit__(self, exc_type: Any, exc: Any, _tb: Any) -> None:
        if exc_type is not None and self.writer is not None:
            self._write("end", self.writer.end, self._step, "failed", f"{exc_type.__name__}: {exc}")
        self.close()

    # -- internals -------------------------------------------------------------------
    def _write(self, what: str, method: Any, *args: Any, **kwargs: Any) -> None:
        try:
            method(*args, **kwargs)
        except OSError as exc:
            self._warn(what, exc)
        else:
            self._failed.discard(what)

    def _warn(self, what: str, exc: BaseException) -> None:
        if what not in self._failed:
            self._failed.add(what)
            LOG.warning("metrics: could not write the %s record (%s); training goes on", what, exc)

    def _tensorboard(self, step: int, record: dict[str, Any]) -> None:
        if self._summary_class is None:
            return
        try:
            if self._summary is None:
                # Hide the abandoned timeline: events at or after the first new step.
                purge = step if self._start_step is None else self._start_step + 1
                self._summary = self._summary_class(log_dir=self.tensorboard_dir, purge_step=purge)
            for name, value in record.items():
                if name not in fmt.RESERVED_KEYS:
                    self._summary.add_scalar(name, float(value), global_step=step)
        except Exception as exc:  # viewer output must never fail a run
            self._warn("tensorboard", exc)

    def _flush_tensorboard(self) -> None:
        if self._summary is not None:
            try:
                self._summary.flush()
            except Exception as exc:
                self._warn("tensorboard", exc)
