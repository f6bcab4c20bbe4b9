# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Reference training script of unbroken.training: a small real model, exactly resumable.

Trains an MLP (with dropout, AdamW, a step LR schedule and, on CUDA, mixed precision
with a GradScaler) on a synthetic regression data set generated from ``--seed``; the
inputs get NumPy and Python-``random`` noise so every RNG the library restores matters.
Runs on CUDA when available (``--device auto``), else on CPU.  Needs PyTorch and the
``unbroken_ckpt`` package next to this file (or on ``PYTHONPATH``).

Started by torchrun (``WORLD_SIZE`` > 1) it is one job of N ranks with the same command
line: ``gloo`` on CPU, ``nccl`` on CUDA, every collective bounded by
``--collective-timeout``; ``--mode ddp`` (default) replicates the model with
DistributedDataParallel, ``--mode sharded`` shards it with FSDP2 (``fully_shard``) and
checkpoints through ``torch.distributed.checkpoint``.  Each rank reads its own slice of
every global batch; rank 0 writes the status file.

Log lines the trainer role's tests look for::

    resumed from checkpoint step-000120 (step 120)
    checkpoint step-000140 is invalid (<reason>); falling back to step-000120
    received SIGTERM at step 133; writing a final checkpoint (stop budget 25s)

Exit codes: 0 finished, or stopped by a signal (after the final checkpoint, or when the
stop budget ran out without it); 1 an unexpected error (its traceback is in the log);
2 bad arguments; 3 a checkpoint could not be written (``--on-save-error stop``, or the
final one); 4 the checkpoint directory is locked by another trainer; 5 configuration
differs from the checkpoint's; 6 checkpoints exist but none verifies; 7 the only
checkpoints that verify hold objects unsafe to load; 8 other checkpoint errors.

Every exit except 2 and 4 ends with a final status write: state ``finished`` (0),
``stopped`` (0, a stop signal) or ``failed`` (the exit code), with ``exit_code`` and a
one-line ``reason``.  Exit 2 happens before the status file is known; exit 4 leaves the
file to the trainer that holds the directory.  A status write that fails (a full disk)
is logged and retried at the next interval, never fatal; the final one uses space set
aside at the start, so it is written even on a full disk.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unbroken_ckpt import (
    LAYOUTS,
    CheckpointError,
    CheckpointLockedError,
    CheckpointManager,
    CheckpointWriteError,
    ConfigMismatchError,
    DistributedJob,
    ModelOptimizerState,
    NoValidCheckpointError,
    ReplicatedCheckpointManager,
    ResumableBatchSampler,
    ShardedCheckpointManager,
    StatusFile,
    StopSignals,
    UnsafeCheckpointError,
    checkpoint_manifest,
    metrics,
    parse_signal,
    world_from_env,
)

try:
    import numpy as np
except ImportError:  # pragma: no cover - the library works without NumPy
    np = None  # type: ignore[assignment]

LOG = logging.getLogger("train")
EXIT_OK, EXIT_SAVE, EXIT_LOCKED, EXIT_CONFIG, EXIT_NO_VALID, EXIT_UNSAFE, EXIT_OTHER = (
    0,
    3,
    4,
    5,
    6,
    7,
    8,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    add = parser.add_argument
    add("--steps", type=int, default=1000, help="optimizer steps to train in total")
    add("--checkpoint-interval", type=int, default=100, help="steps between checkpoints")
    add("--checkpoint-dir", required=True, help="directory of this run's checkpoints")
    add("--seed", type=int, default=0, help="seed of data, initialisation and noise")
    add("--keep", type=int, default=3, help="newest checkpoints to keep")
    add(
        "--milestone-every",
        type=int,
        default=0,
        help="also keep every checkpoint whose step is a multiple (0: none)",
    )
    add(
        "--status-file",
        default=None,
        help="status/heartbeat JSON (default: <checkpoint-dir>/status.json)",
    )
    add("--status-interval", type=int, default=10, help="steps between status writes")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--async",
        dest="async_save",
        action="store_true",
        default=True,
        help="save in the background (default)",
    )
    mode.add_argument(
        "--sync",
        dest="async_save",
        action="store_false",
        help="save in the training thread",
    )
    add(
        "--overlap-copy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --async, copy the parameters and optimizer state while the next step's "
        "forward and backward run (the optimizer step waits for the copy)",
    )
    add(
        "--on-save-error",
        choices=("continue", "stop"),
        default="continue",
        help="keep training and retry at the next interval, or stop",
    )
    add(
        "--checksum",
        choices=sorted(checkpoint_manifest.HASH_ALGORITHMS),
        default=checkpoint_manifest.HASH_ALGORITHM,
        help="per-segment checksum of new checkpoints (crc32 is fastest; any verifies)",
    )
    add(
        "--stop-signal",
        default="SIGUSR1",
        help="preemption signal that also means checkpoint-and-exit",
    )
    add(
        "--stop-budget",
        type=float,
        default=25.0,
        help="seconds from a stop signal to exit, final checkpoint included",
    )
    add(
        "--allow-config-mismatch",
        action="store_true",
        help="resume even if the checkpoint's run configuration differs",
    )
    add(
        "--allow-fresh-start",
        action="store_true",
        help="start from step 0 when checkpoints exist but none verifies",
    )
    add("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add(
        "--mode",
        choices=("ddp", "sharded"),
        default="ddp",
        help="under torchrun: replicate the model (DDP) or shard it (FSDP2 fully_shard)",
    )
    add(
        "--layout",
        choices=LAYOUTS,
        default="shared",
        help="under torchrun: one checkpoint directory all ranks see, or one per node's disk "
        "(replicated state only)",
    )
    add(
        "--collective-timeout",
        type=float,
        default=300.0,
        help="seconds any collective may wait for the other ranks before the job fails",
    )
    add("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    add("--batch-size", type=int, default=32)
    add("--hidden", type=int, default=64, help="hidden width of the MLP")
    add("--samples", type=int, default=4096, help="size of the synthetic data set")
    add("--lr", type=float, default=3e-3)
    add("--log-interval", type=int, default=10, help="steps between progress log lines")
    add(
        "--step-sleep",
        type=float,
        default=0.0,
        help="seconds to sleep per step (to pace a demo or a test)",
    )
    add(
        "--inject-save-pause",
        type=float,
        default=0.0,
        help="fault injection: pause before each commit to widen the crash-during-save window",
    )
    args = parser.parse_args(argv)
    for name in (
        "steps",
        "checkpoint_interval",
        "keep",
        "status_interval",
        "batch_size",
        "hidden",
        "samples",
        "log_interval",
    ):
        if getattr(args, name) < 1:
            parser.error("--{} must be >= 1".format(name.replace("_", "-")))
    if args.collective_timeout <= 0:
        parser.error("--collective-timeout must be > 0")
    if args.mode == "sharded" and args.layout != "shared":
        parser.error(
            "--mode sharded needs --layout shared (DCP shards must be readable by every rank)"
        )
    try:
        args.stop_signal = parse_signal(args.stop_signal)
    except ValueError as exc:
        parser.error(str(exc))
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda given but CUDA is not available")
    return args


class Net(nn.Module):
    def __init__(self, features: int, hidden: int, outputs: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(features, hidden),
            nn.GELU(),
            nn.Dropout(0.1),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(x)
        return out


@dataclass
class Run:
    device: torch.device
    amp: bool
    inputs: torch.Tensor
    targets: torch.Tensor
    model: Any  # Net, wrapped in DDP or sharded by fully_shard under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    sampler: ResumableBatchSampler
    config: dict[str, Any]


FEATURES, OUTPUTS = 16, 4


def use_cuda(args: argparse.Namespace) -> bool:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but CUDA is not available")
    return args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())


def build(args: argparse.Namespace, job: DistributedJob | None = None) -> Run:
    rank, world = (job.rank, job.world_size) if job else (0, 1)
    cuda = use_cuda(args)
    device = torch.device("cuda", job.local_rank if job else 0) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    # Every rank draws its own noise; the model's initialisation is the same everywhere.
    random.seed(args.seed + rank)
    if np is not None:
        np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed)
    if cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)
    data_gen = torch.Generator().manual_seed(args.seed)
    inputs = torch.randn(args.samples, FEATURES, generator=data_gen)
    weights = torch.randn(FEATURES, OUTPUTS, generator=data_gen)
    targets = torch.tanh(inputs @ weights) + 0.05 * torch.randn(
        args.samples, OUTPUTS, generator=data_gen
    )
    model: Any = Net(FEATURES, args.hidden, OUTPUTS).to(device)
    if job is not None:
        torch.manual_seed(args.seed + 1 + rank)  # each rank's own dropout masks
        if args.mode == "sharded":
            # Imported only here: torch < 2.6 has no public fully_shard, and single-process
            # and DDP runs must not need it.
            from torch.distributed.fsdp import fully_shard  # noqa: PLC0415

            fully_shard(model)
        else:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if cuda else None
            )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=50, gamma=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    sampler = ResumableBatchSampler(
        args.samples, args.batch_size, seed=args.seed, rank=rank, world_size=world
    )
    config = {
        "model": "mlp",
        "features": FEATURES,
        "hidden": args.hidden,
        "outputs": OUTPUTS,
        "samples": args.samples,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "amp": cuda,
        "world_size": world,
    }
    if job is not None:
        config["mode"] = args.mode
    return Run(
        device,
        cuda,
        inputs.to(device),
        targets.to(device),
        model,
        optimizer,
        scheduler,
        scaler,
        sampler,
        config,
    )


def train_step(run: Run) -> float:
    index = torch.tensor(run.sampler.next_batch(), device=run.device)
    x, y = run.inputs[index], run.targets[index]
    if np is not None:
        noise = np.random.standard_normal(tuple(x.shape)).astype(np.float32)
        x = x + 0.01 * torch.from_numpy(noise).to(run.device)
    x = x * (1.0 + 0.02 * (random.random() - 0.5))
    run.model.train()
    with torch.autocast(device_type=run.device.type, dtype=torch.float16, enabled=run.amp):
        loss = nn.functional.mse_loss(run.model(x), y)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)
    nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return float(loss.detach())


def _commit_info(ckpt: CheckpointManager) -> dict[str, Any] | None:
    commit = ckpt.last_commit
    if commit is None:
        return None
    return {
        "name": commit.name,
        "step": commit.step,
        "created": commit.created,
        "size_bytes": commit.size,
        "seconds": commit.seconds,
    }


class Progress:
    """Status-file writes with samples/s measured between them; remembers the latest step."""

    def __init__(self, args: argparse.Namespace, ckpt: CheckpointManager) -> None:
        self.args = args
        self.ckpt = ckpt
        self.resumed: dict[str, Any] | None = None
        self.step = 0
        self.epoch: int | None = None
        self.loss: float | None = None
        self.file = StatusFile(args.status_file or os.path.join(args.checkpoint_dir, "status.json"))
        # One status file per directory: rank 0 writes it (the others would race on its
        # name); with node-local checkpoints each node's local rank 0 writes its own node's,
        # so every node's hang watchdog sees the job's heartbeat.
        rank, world, local_rank = world_from_env()[:3]
        self.enabled = rank == 0 or (args.layout == "node-local" and local_rank == 0)
        self.extra: dict[str, Any] = {"world_size": world, "mode": args.mode} if world > 1 else {}
        if self.enabled:
            self.file.reserve()
        self.metrics = metrics.open(os.path.dirname(self.file.path), checkpoints=ckpt)
        self._mark = (time.monotonic(), 0)

    def write(
        self,
        state: str,
        step: int,
        epoch: int | None,
        loss: float | None,
        lr: float | None = None,
    ) -> None:
        self.step, self.epoch, self.loss = step, epoch, loss
        if not self.enabled:
            return
        now = time.monotonic()
        then, then_step = self._mark
        rate = (
            (step - then_step) * self.args.batch_size / (now - then)
            if step > then_step and now > then
            else None
        )
        self._mark = (now, step)
        self.file.write(state, step, **self._fields(loss, rate))
        if loss is not None:
            self.metrics.log(step, loss=loss, lr=lr, samples_per_second=rate)

    def final(self, state: str, exit_code: int, reason: str, attempts: int = 3) -> None:
        """The process's last status: a terminal state, its exit code and why."""
        if not self.enabled:
            return
        self.file.write_final(
            attempts=attempts,
            state=state,
            step=self.step,
            exit_code=exit_code,
            reason=reason,
            **self._fields(self.loss, None),
        )
        self.metrics.end(self.step, state, reason)

    def _fields(self, loss: float | None, rate: float | None) -> dict[str, Any]:
        return {
            "total_steps": self.args.steps,
            "epoch": self.epoch,
            "loss": loss,
            "samples_per_second": rate,
            "last_checkpoint": _commit_info(self.ckpt),
            "checkpoint_error": self.ckpt.last_error,
            "resumed_from": self.resumed,
            "quarantined": self.ckpt.quarantined,
            "extra": self.extra,
        }


def train(
    args: argparse.Namespace,
    run: Run,
    ckpt: CheckpointManager,
    stop: StopSignals,
    progress: Progress,
    job: DistributedJob | None = None,
) -> int:
    def stop_requested() -> bool:
        # Under torchrun every rank stops at the same step, whichever rank got the signal.
        return job.agree_stop(stop.requested) if job is not None else stop.requested

    restored = ckpt.restore()
    step = 0
    if restored is None and ckpt.rejected:
        LOG.warning(
            "starting fresh (--allow-fresh-start): none of the %d checkpoint(s) in %s verifies; "
            "they were moved aside: %s",
            len(ckpt.rejected),
            ckpt.directory,
            ", ".join(item["name"] for item in ckpt.quarantined) or "(could not be moved)",
        )
    elif restored is None:
        LOG.info("starting fresh: no checkpoint in %s", ckpt.directory)
    else:
        step = restored.step
        progress.resumed = {
            "name": restored.name,
            "step": restored.step,
            "skipped": [list(s) for s in restored.skipped],
        }
    progress.metrics.start(step, restored=restored)
    progress.write("training", step, run.sampler.epoch, None)
    loss: float | None = None
    stopping = False
    while step < args.steps and not (stopping := stop_requested()):
        loss = train_step(run)
        step += 1
        if args.step_sleep > 0:
            time.sleep(args.step_sleep)
        ckpt.poll()
        if step % args.checkpoint_interval == 0 and step < args.steps:
            ckpt.save(step, epoch=run.sampler.epoch, extras={"loss": loss})
        if step % args.log_interval == 0:
            LOG.info("step %d loss %.6f lr %.3g", step, loss, run.scheduler.get_last_lr()[0])
        if step % args.status_interval == 0:
            progress.write(
                "training", step, run.sampler.epoch, loss, run.scheduler.get_last_lr()[0]
            )
    if stopping:
        LOG.info(
            "received %s at step %d; writing a final checkpoint (stop budget %.0fs)",
            stop.name or "a stop request on another rank",
            step,
            args.stop_budget,
        )
        progress.write("stopping", step, run.sampler.epoch, loss, run.scheduler.get_last_lr()[0])
        final_checkpoint(ckpt, step, run, loss, stop, args.stop_budget, progress)
        LOG.info("stopped at step %d after %s", step, stop.name or "a stop request")
        progress.final("stopped", EXIT_OK, _stop_reason(ckpt, stop, step), attempts=1)
        return EXIT_OK
    committed = ckpt.save(step, epoch=run.sampler.epoch, extras={"loss": loss}, blocking=True)
    progress.step, progress.epoch, progress.loss = step, run.sampler.epoch, loss
    if committed is None:
        reason = (
            f"training finished at step {step} but its final checkpoint could not be written: "
            f"{ckpt.last_error}"
        )
        LOG.error("%s", reason)
        progress.final("failed", EXIT_SAVE, reason)
        return EXIT_SAVE
    LOG.info("finished %d steps; final checkpoint %s", step, committed.name)
    progress.final("finished", EXIT_OK, f"finished {step} steps; final checkpoint {committed.name}")
    return EXIT_OK


def _stop_reason(ckpt: CheckpointManager, stop: StopSignals, step: int) -> str:
    commit = ckpt.last_commit
    if commit is not None and commit.step == step:
        return f"stopped by {stop.name} at step {step}; final checkpoint {commit.name}"
    resume = f"the next start resumes from {commit.name}" if commit else "no checkpoint yet"
    return f"stopped by {stop.name} at step {step} without a final checkpoint; {resume}"


def final_checkpoint(
    ckpt: CheckpointManager,
    step: int,
    run: Run,
    loss: float | None,
    stop: StopSignals,
    budget: float,
    progress: Progress,
) -> None:
    remaining = stop.remaining(budget)
    if remaining <= 0:
        LOG.warning(
            "stop budget of %.0fs already used up; exiting without a final checkpoint",
            budget,
        )
        ckpt.abandon()  # a save still in flight must not commit behind the final status
        return
    timer = threading.Timer(remaining, _budget_exhausted, args=(budget, ckpt, stop, progress))
    timer.daemon = True
    timer.start()
    try:
        ckpt.save(step, epoch=run.sampler.epoch, extras={"loss": loss}, blocking=True)
    finally:
        timer.cancel()


def _budget_exhausted(
    budget: float, ckpt: CheckpointManager, stop: StopSignals, progress: Progress
) -> None:
    LOG.warning(
        "stop budget of %.0fs ran out before the final checkpoint was committed; exiting now "
        "(the next start resumes from the previous checkpoint)",
        budget,
    )
    ckpt.abandon()  # after this nothing commits, so the status names what is on disk
    progress.final("stopped", EXIT_OK, _stop_reason(ckpt, stop, progress.step), attempts=1)
    logging.shutdown()
    os._exit(EXIT_OK)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    job = None
    if world_from_env()[1] > 1:
        job = DistributedJob.from_env("cuda" if use_cuda(args) else "cpu", args.collective_timeout)
        LOG.info(
            "rank %d of %d (%s, %s, collective timeout %.0fs)",
            job.rank,
            job.world_size,
            args.mode,
            job.backend,
            args.collective_timeout,
        )
    try:
        code = run_job(args, job)
    finally:
        if job is not None:
            job.close()
    if job is not None:
        # Everything is said and saved: leave without the interpreter's finalisation. The
        # groups live on in DDP and in the job object, and gloo's C++ teardown running there
        # sometimes aborted a worker ("terminate called without an active exception",
        # SIGABRT), so torchrun reported a finished job as failed.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def run_job(args: argparse.Namespace, job: DistributedJob | None) -> int:
    run = build(args, job)
    objects: dict[str, Any] = {
        "model": run.model,
        "optimizer": run.optimizer,
        "scheduler": run.scheduler,
        "scaler": run.scaler,
        "data": run.sampler,
    }
    stop = StopSignals((signal.SIGTERM, signal.SIGINT, args.stop_signal))
    common: dict[str, Any] = {}
    manager: Any = CheckpointManager
    if job is not None and args.mode == "sharded":
        del objects["optimizer"]
        objects["model"] = ModelOptimizerState(run.model, run.optimizer)
        manager = ShardedCheckpointManager
        common = {"job": job, "layout": args.layout}
    elif job is not None:
        manager = ReplicatedCheckpointManager
        common = {"job": job, "layout": args.layout}
    ckpt = manager(
        directory=args.checkpoint_dir,
        objects=objects,
        **common,
        config=run.config,
        keep=args.keep,
        milestone_every=args.milestone_every,
        async_save=args.async_save,
        on_error=args.on_save_error,
        allow_config_mismatch=args.allow_config_mismatch,
        allow_fresh_start=args.allow_fresh_start,
        pause_before_commit=args.inject_save_pause,
        hash_algorithm=args.checksum,
        overlap_copy=args.overlap_copy,
    )
    LOG.info(
        "training on %s: %d steps, checkpoint every %d into %s",
        run.device,
        args.steps,
        args.checkpoint_interval,
        ckpt.directory,
    )
    try:
        with stop, ckpt:
            progress = Progress(args, ckpt)
            try:
                return train(args, run, ckpt, stop, progress, job)
            except BaseException as exc:
                return _failed(exc, ckpt, progress)
            finally:
                progress.file.release()
    except CheckpointLockedError as exc:
        LOG.error("%s", exc)  # the status file belongs to the trainer that holds the lock
        return EXIT_LOCKED


def _exit_code(exc: BaseException) -> int | None:
    """The documented exit code of a checkpoint error; None for anything unexpected."""
    for kind, code in (
        (ConfigMismatchError, EXIT_CONFIG),
        (NoValidCheckpointError, EXIT_NO_VALID),
        (UnsafeCheckpointError, EXIT_UNSAFE),
        (CheckpointWriteError, EXIT_SAVE),
        (CheckpointError, EXIT_OTHER),
    ):
        if isinstance(exc, kind):
            return code
    return None


def _failed(exc: BaseException, ckpt: CheckpointManager, progress: Progress) -> int:
    """Write the final ``failed`` status; return the exit code or re-raise the unexpected."""
    code = _exit_code(exc)
    try:
        ckpt.wait()  # a save still in flight commits first, so the status names it
    except CheckpointError as late:
        LOG.error("%s", late)
    if code is None:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise exc
        exit_code = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1
        progress.final("failed", exit_code, f"{type(exc).__name__}: {exc}")
        raise exc
    LOG.error("%s", exc)
    progress.final("failed", code, str(exc))
    return code


if __name__ == "__main__":
    sys.exit(main())
