# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Side-by-side sharded checkpoint benchmark under torchrun: unbroken_ckpt against plain DCP.

Each rank holds --size-mb (256 MiB by default) of fp32 state as DTensor shards (one
``Shard(0)`` tensor per 64 MiB), the shape FSDP2 gives a model's parameters.  For 1 and
2 ranks (--ranks) on CPU (gloo) it measures, --repeat times (median of the slowest rank):

* ``dcp.save`` (FileSystemWriter, files fsynced) against our ``ShardedCheckpointManager``
  synchronous save (the same DCP write through streams that CRC-32 each shard file while
  it is written, the manifest written last by rank 0 after a gather, the rename: the
  commit);
* the training stall of ``dcp.async_save`` (staging into fresh CPU memory) against ours
  (the same async_save with a stager that reuses its CPU memory; the writes, hashes and
  commit run in a background thread), and the time until the save is durable (future /
  ``wait()``).  Our first save allocates like DCP's: its stall is shown on its own row;
* ``dcp.load`` against our ``restore()`` (the ranks agree on the newest step whose
  manifest and file sizes check out; each rank hashes its shard files, the ranks agree on
  the hashes, and only then each tensor is read straight into the state), both with the
  checkpoint's files in the page cache and with them dropped from it ("from disk").

Every save writes a new step directory; none is deleted while timed.  Prints a table and
writes JSON (--json).  Needs about 3x --size-mb of RAM per rank and 2x --repeat x
--size-mb per rank of free disk in --dir.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RUNTIME = Path(__file__).resolve().parents[1] / "runtime"
sys.path.insert(0, str(RUNTIME))
MiB = 1 << 20
CHUNK_MB = 64


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--size-mb", type=int, default=256, help="state per rank (MiB)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


class Shards:
    """A DCP ``Stateful`` of DTensors, loaded in place (like FSDP2 parameters)."""

    def __init__(self, tensors: dict[str, Any]) -> None:
        self.tensors = tensors

    def state_dict(self) -> dict[str, Any]:
        return dict(self.tensors)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if value is not self.tensors[key]:
                self.tensors[key].to_local().copy_(value.to_local())


def worker(args: argparse.Namespace) -> None:
    import faulthandler

    faulthandler.dump_traceback_later(60, exit=True)
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard
    from unbroken_ckpt import DistributedJob, ShardedCheckpointManager

    job = DistributedJob.from_env("cpu", timeout=600)
    torch.set_num_threads(1)
    mesh = init_device_mesh("cpu", (job.world_size,))
    rows = CHUNK_MB * MiB // 4 // 1024
    generator = torch.Generator().manual_seed(job.rank)
    tensors = {
        f"w{i}": DTensor.from_local(
            torch.randn(rows, 1024, generator=generator), mesh, [Shard(0)], run_check=False
        )
        for i in range(max(1, args.size_mb // CHUNK_MB))
    }
    state = Shards(tensors)
    # DCP's async save runs collectives in its thread: a group of its own, as DCP advises.
    async_group = dist.new_group(backend="gloo")
    root = Path(args.dir)
    results: dict[str, list[float]] = {}

    def timed(name: str, action: Any) -> Any:
        dist.barrier()
        start = time.perf_counter()
        out = action()
        seconds = time.perf_counter() - start
        slowest = [0.0] * job.world_size
        dist.all_gather_object(slowest, seconds)
        results.setdefault(name, []).append(max(slowest))
        return out

    def clean(path: Path) -> None:
        dist.barrier()
        if job.rank == 0:
            shutil.rmtree(path, ignore_errors=True)
        dist.barrier()

    ours = ShardedCheckpointManager(
        job, str(root / "ours"), {"state": state}, keep=1000, async_save=False
    )
    ours_async = ShardedCheckpointManager(
        job, str(root / "ours-async"), {"state": state}, keep=1000, async_save=True
    )

    def cached(path: Path, warm: bool) -> None:
        """The same start for both readers: every file of the checkpoint in the page cache
        (read once), or none of it (dropped: both writers fsynced, so the pages are clean).
        Our save drops what it wrote as it goes and DCP's does not, so without this our
        restore would read from the disk where DCP's load reads from memory."""
        dist.barrier()
        for file in sorted(path.iterdir()):
            with open(file, "rb") as handle:
                if warm:
                    while handle.read(16 << 20):
                        pass
                else:
                    os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)

    def plain_side(round_: int) -> None:
        path = root / f"dcp-{round_}"
        timed("dcp.save", lambda: dcp.save({"state": state}, checkpoint_id=str(path)))
        for warm, name in ((True, "dcp.load"), (False, "dcp.load, from disk")):
            cached(path, warm)
            timed(name, lambda: dcp.load({"state": state}, checkpoint_id=str(path)))
        clean(path)
        path = root / f"dcp-async-{round_}"
        future = timed(
            "dcp.async_save stall",
            lambda: dcp.async_save(
                {"state": state}, checkpoint_id=str(path), process_group=async_group
            ),
        )
        timed("dcp.async_save until durable", future.result)
        clean(path)

    def ours_side(round_: int) -> None:
        commit = timed("ours sync save", lambda: ours.save(round_ + 1, blocking=True))
        for warm, name in ((True, "ours restore (verified)"), (False, "ours restore, from disk")):
            cached(Path(commit.path), warm)
            ours.last_commit = None  # restore() reads the newest again
            timed(name, ours.restore)
        timed("ours async save stall", lambda: ours_async.save(round_ + 1))
        timed("ours async save until committed", ours_async.wait)

    with ours, ours_async:
        for round_ in range(args.repeat):
            # Alternate which side goes first: the page cache and the memory one side
            # leaves behind otherwise decide the other side's time.
            sides = [plain_side, ours_side] if round_ % 2 == 0 else [ours_side, plain_side]
            for side in sides:
                side(round_)
    if job.rank == 0:
        Path(args.worker).write_text(json.dumps(results))
    job.close()


def main() -> int:
    args = parse_args()
    if args.worker:
        worker(args)
        return 0
    base = Path(args.dir or tempfile.mkdtemp(prefix="dist-ckpt-bench-"))
    report: dict[str, Any] = {"size_mb_per_rank": args.size_mb, "repeat": args.repeat, "runs": {}}
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(RUNTIME))
    for ranks in args.ranks:
        work = base / f"ranks-{ranks}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        out = work / "results.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(ranks),
            __file__,
            "--worker",
            str(out),
            "--dir",
            str(work),
            "--size-mb",
            str(args.size_mb),
            "--repeat",
            str(args.repeat),
        ]
        subprocess.run(command, env=env, check=True)
        runs = json.loads(out.read_text())
        report["runs"][str(ranks)] = {k: statistics.median(v) for k, v in runs.items()}
        report["runs"][str(ranks)]["ours async save stall, first save"] = runs[
            "ours async save stall"
        ][0]
        report["runs"][str(ranks) + "_all"] = runs
        shutil.rmtree(work, ignore_errors=True)
    print_table(report, args.ranks)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    return 0


ROWS = [
    ("dcp.save", "ours sync save"),
    ("dcp.async_save stall", "ours async save stall"),
    ("dcp.async_save stall", "ours async save stall, first save"),
    ("dcp.async_save until durable", "ours async save until committed"),
    ("dcp.load", "ours restore (verified)"),
    ("dcp.load, from disk", "ours restore, from disk"),
]


def print_table(report: dict[str, Any], ranks: list[int]) -> None:
    size = report["size_mb_per_rank"]
    print(f"\nstate per rank: {size} MiB; median of {report['repeat']} (slowest rank), seconds")
    print(f"{'ranks':>5}  {'DCP':<30} {'s':>7}  {'unbroken_ckpt':<34} {'s':>7}  {'ratio':>6}")
    for world in ranks:
        run = report["runs"][str(world)]
        for plain, ours in ROWS:
            ratio = run[ours] / run[plain] if run[plain] > 0 else float("nan")
            print(
                f"{world:>5}  {plain:<30} {run[plain]:7.3f}  {ours:<34} {run[ours]:7.3f}  "
                f"{ratio:6.2f}"
            )


if __name__ == "__main__":
    sys.exit(main())
