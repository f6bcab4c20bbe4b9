# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""unbroken_ckpt: checkpoints that make a killed-and-resumed run identical to an uninterrupted one.

Needs PyTorch (>= 2.4) and the standard library; NumPy's RNG is saved when NumPy is
installed.  Never imports Ansible.  Put the directory that contains this package on
``PYTHONPATH`` (the trainer role mounts it read-only into the training container).

Usage::

    from unbroken_ckpt import CheckpointManager, ResumableBatchSampler, StatusFile, StopSignals

    objects = {"model": model, "optimizer": opt, "scheduler": sched, "data": sampler}
    ckpt = CheckpointManager("/ckpt", objects, config=run_config, keep=3)
    with ckpt, StopSignals() as stop:
        restored = ckpt.restore()                 # None on a fresh directory
        step = restored.step if restored else 0
        while step < total and not stop.requested:
            ...train one step...; step += 1
            ckpt.poll()                           # collect a finished background save
            if step % interval == 0:
                ckpt.save(step, extras={...})     # async: copies to CPU, writes in background
        ckpt.save(step, blocking=True)            # final / on signal

Under torchrun (DDP or FSDP2) use the rank-aware managers of ``unbroken_ckpt.distributed``
with the same calls, made on every rank::

    job = DistributedJob.from_env("cuda", timeout=300)   # init_process_group, bounded collectives
    ckpt = ReplicatedCheckpointManager(job, "/ckpt", objects, config=run_config)   # DDP
    # FSDP2: ShardedCheckpointManager(job, "/ckpt", {"model": ModelOptimizerState(model, opt),
    #                                                 "data": sampler}, config=run_config)
    ...same loop, with ``while ... and not job.agree_stop(stop.requested)``...

The resume step is the newest that verifies on every rank; sharded state is written by
``torch.distributed.checkpoint`` with this library's manifest on top (see that module).

``CheckpointManager(..., overlap_copy=True)`` moves the copy of the parameters and the
optimizer state out of ``save()``: the writer thread copies them while the next forward
and backward run, and the optimizer's ``step()`` waits for it.  Use it when only
``optimizer.step()`` changes parameters in place (``train.py`` does).

What a checkpoint holds (``state.pt``, loaded with ``torch.load(weights_only=True)``):
every registered object's ``state_dict`` (model, optimizer, LR scheduler, GradScaler,
``ResumableBatchSampler`` position, ...), the Python/NumPy/torch-CPU/CUDA RNG states as
tensors and scalars, the step and epoch, and user extras (tensors, numbers, strings,
lists, dicts; anything else is refused when saving, not at resume).  The manifest
(``MANIFEST.json``, format in ``checkpoint_manifest``) records sizes, per-segment
checksums (CRC-32 by default, SHA-256 on request), the run configuration and its
fingerprint; a resume with a different
configuration fails with ``ConfigMismatchError`` unless explicitly allowed.

Status file (``StatusFile``; JSON object, replaced atomically, not fsynced): the schema,
the state names and the readers are in ``training_status_file`` (shared with the Ansible
module ``training_status`` and the host helper).
A missing or unparsable file means "no heartbeat yet"; readers use ``read_status``.
A status write that fails (e.g. a full disk) never stops training: the old file stays
and the next write retries; the final write uses space set aside at the start.

Metrics (``metrics``; format and reader in ``training_metrics``): ``metrics.jsonl`` beside
the status file, appended, rotated by size, resumed without duplicate steps, plus
TensorBoard event files when TensorBoard is installed::

    from unbroken_ckpt import metrics
    m = metrics.open(); m.log(step, loss=loss, lr=lr, **any_scalars)
"""

from __future__ import annotations

from . import checkpoint_manifest, metrics, training_metrics, training_status_file
from .distributed import (
    LAYOUTS,
    DistributedJob,
    ModelOptimizerState,
    ReplicatedCheckpointManager,
    ShardedCheckpointManager,
    world_from_env,
)
from .errors import (
    CheckpointError,
    CheckpointLockedError,
    CheckpointSpaceError,
    CheckpointWriteError,
    ConfigMismatchError,
    NoValidCheckpointError,
    UnsafeCheckpointError,
)
from .manager import LIBRARY_VERSION, CheckpointManager, Restored, load_state_file
from .sampler import ResumableBatchSampler
from .signals import StopSignals, parse_signal
from .status import STATES, STATUS_SCHEMA, STATUS_VERSION, TERMINAL_STATES, StatusFile, read_status
from .storage import Commit

__version__ = LIBRARY_VERSION

__all__ = [
    "LAYOUTS",
    "STATES",
    "STATUS_SCHEMA",
    "STATUS_VERSION",
    "TERMINAL_STATES",
    "CheckpointError",
    "CheckpointLockedError",
    "CheckpointManager",
    "CheckpointSpaceError",
    "CheckpointWriteError",
    "Commit",
    "ConfigMismatchError",
    "DistributedJob",
    "ModelOptimizerState",
    "NoValidCheckpointError",
    "ReplicatedCheckpointManager",
    "Restored",
    "ResumableBatchSampler",
    "ShardedCheckpointManager",
    "StatusFile",
    "StopSignals",
    "UnsafeCheckpointError",
    "checkpoint_manifest",
    "load_state_file",
    "metrics",
    "parse_signal",
    "read_status",
    "training_metrics",
    "training_status_file",
    "world_from_env",
]
