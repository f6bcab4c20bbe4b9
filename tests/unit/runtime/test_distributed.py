# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The reference script as one torchrun job of 2 ranks on CPU (gloo), DDP and sharded (FSDP2).

Real torchrun, real process groups, real SIGKILLs of a worker; torchrun restarts the group
(``--max-restarts``) and the resumed job must end bit-identical to its uninterrupted twin.
"""

from __future__ import annotations

import functools
import io
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from runtime_helpers import (
    SMALL,
    TRAIN,
    WAIT,
    Trainer,
    _env,
    assert_bitwise_equal,
    load_payload,
    run_to_end,
)

STEPS, INTERVAL = 40, 10
PACE = ["--step-sleep", "0.02"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def torchrun_command(ckpt_dir: Path, *extra: object, restarts: int = 0) -> list[str]:
    return [
        *TORCHRUN,
        "--max-restarts",
        str(restarts),
        "--monitor-interval",
        "0.2",
        str(TRAIN),
        "--checkpoint-dir",
        str(ckpt_dir),
        *SMALL,
        "--collective-timeout",
        "60",
        *map(str, extra),
    ]


class Job(Trainer):
    """A torchrun job (the agent and its 2 workers) whose log lines can be awaited."""

    def __init__(self, ckpt_dir: Path, *extra: object, restarts: int = 0) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            torchrun_command(ckpt_dir, *extra, restarts=restarts),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def workers(self) -> dict[int, int]:
        """{rank: pid} of the agent's live worker processes."""
        found: dict[int, int] = {}
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        for pid in path.read_text().split():
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            for item in environ:
                if item.startswith(b"RANK="):
                    found[int(item[5:])] = int(pid)
        return found

    def wait_workers(self) -> dict[int, int]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            found = self.workers()
            if len(found) == 2:
                return found
            time.sleep(0.05)
        raise AssertionError(f"workers never appeared:\n{self.output()}")


def run_job(ckpt_dir: Path, *extra: object) -> subprocess.CompletedProcess[str]:
    return run_to_end(torchrun_command(ckpt_dir, *extra))


def _plain(value: Any) -> Any:
    """DCP's saved values with blobs (RNG states, extras) opened, for comparison."""
    if isinstance(value, io.BytesIO):
        return _plain(torch.load(io.BytesIO(value.getvalue()), weights_only=True))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def final_state(ckpt_dir: Path, mode: str, tmp: Path) -> dict[str, Any]:
    step_dir = ckpt_dir / f"step-{STEPS:06d}"
    if mode == "ddp":
        return load_payload(step_dir / "state.pt")
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = tmp / f"{ckpt_dir.name}.pt"
    dcp_to_torch_save(str(step_dir), str(out))
    # The file is our own test output, holding DCP's BytesIO values: not weights-only.
    return _plain(torch.load(out, weights_only=False))


def _mode_args(mode: str) -> list[object]:
    return ["--mode", mode, "--steps", STEPS, "--checkpoint-interval", INTERVAL]


@pytest.mark.parametrize("mode", ["ddp", "sharded"])
def test_worker_sigkills_at_random_moments_resume_bit_exact(tmp_path: Path, mode: str) -> None:
    """Sharded: then a corrupt shard on rank 1 makes both ranks fall back to the same step."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    twin = run_job(straight, *_mode_args(mode))
    assert twin.returncode == 0, twin.stdout

    chooser = random.Random(f"{mode}-{os.getpid()}")
    job = Job(killed, *_mode_args(mode), *PACE, restarts=3)
    try:
        seen = 0
        for _kill in range(2):
            target = chooser.randint(seen + 3, seen + INTERVAL + 6)
            job.wait_for(r"step (\d+) loss", lambda m, t=target: int(m.group(1)) >= t)
            rank, pid = chooser.choice(sorted(job.wait_workers().items()))
            print(f"SIGKILL to rank {rank} (pid {pid}) after step {target}")
            os.kill(pid, signal.SIGKILL)
            seen = target
            job.wait_for(r"resumed from checkpoint step-\d+|starting fresh")
        output = job.finish()
    finally:
        job.stop()
    assert job.proc.returncode == 0, output
    assert output.count(f"finished {STEPS} steps") == 2, output

    expected, actual = (final_state(d, mode, tmp_path) for d in (straight, killed))
    assert_bitwise_equal(expected, actual, "final")
    if mode == "sharded":
        _corrupt_shard_on_one_rank_makes_every_rank_fall_back(killed, expected, tmp_path)


def _corrupt_shard_on_one_rank_makes_every_rank_fall_back(
    killed: Path, expected: dict[str, Any], tmp_path: Path
) -> None:
    shard = killed / f"step-{STEPS:06d}" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in rank 1's shard only
    shard.write_bytes(bytes(data))

    again = run_job(killed, *_mode_args("sharded"))
    assert again.returncode == 0, again.stdout
    previous = f"step-{STEPS - INTERVAL:06d}"
    falling = re.findall(
        rf"checkpoint step-{STEPS:06d} is invalid \((.*)\); falling back to {previous}",
        again.stdout,
    )
    assert len(falling) == 2, again.stdout  # said by both ranks
    assert all(reason.startswith("rank 1: __1_0.distcp: crc32 mismatch") for reason in falling)
    assert again.stdout.count(f"resumed from checkpoint {previous}") == 2, again.stdout
    assert len(list(killed.glob(f"quarantine-step-{STEPS:06d}-*"))) == 1  # moved aside once
    # Both ranks redid the last interval from the same step: the result is the twin's again.
    assert_bitwise_equal(expected, final_state(killed, "sharded", tmp_path), "redone")


def test_second_job_on_the_same_directory_is_refused_and_a_stop_is_coordinated(
    tmp_path: Path,
) -> None:
    ckpt = tmp_path / "ckpt"
    first = Job(ckpt, "--steps", 100000, "--checkpoint-interval", 100000, *PACE)
    try:
        first.wait_for(r"step 2 loss")
        # Ranks of one job share the directory; a second job is refused on every rank.
        second = run_job(ckpt, "--steps", 10)
        assert second.returncode != 0, second.stdout
        # Both ranks are refused (one collective verdict); the first to exit may take the
        # other's log line with it, as torchrun stops the group when a worker fails.
        refusals = re.findall(r"checkpoint directory \S+ is already in use", second.stdout)
        assert 1 <= len(refusals) <= 2, second.stdout
        assert re.search(r"job \S+ \(\S+\), 2 ranks, writer rank 0", second.stdout)
        assert not (ckpt / "step-000010").exists()

        # A stop signal that reaches rank 1 only stops both ranks at the same step.
        workers = first.wait_workers()
        os.kill(workers[1], signal.SIGUSR1)
        output = first.finish()
    finally:
        first.stop()
    assert first.proc.returncode == 0, output
    stops = re.findall(r"received (.+) at step (\d+); writing a final checkpoint", output)
    assert sorted(name for name, _step in stops) == ["SIGUSR1", "a stop request on another rank"]
    steps = {int(step) for _name, step in stops}
    assert len(steps) == 1, stops
    step = steps.pop()
    assert [p.name for p in ckpt.glob("step-*")] == [f"step-{step:06d}"]
    payload = load_payload(ckpt / f"step-{step:06d}" / "state.pt")
    assert payload["step"] == step
    assert len(payload["rng_ranks"]) == 2


def test_sigterm_to_torchrun_gives_one_coordinated_final_checkpoint(tmp_path: Path) -> None:
    """docker/systemd stop: torchrun forwards SIGTERM to every worker; one checkpoint results."""
    ckpt = tmp_path / "ckpt"
    job = Job(ckpt, "--steps", 100000, "--checkpoint-interval", 100000, *PACE)
    try:
        job.wait_for(r"step 5 loss")
        job.signal(signal.SIGTERM)
        output = job.finish()
    finally:
        job.stop()
    steps = re.findall(r"received SIGTERM at step (\d+); writing a final checkpoint", output)
    assert len(steps) == 2 and len(set(steps)) == 1, output
    step = int(steps[0])
    assert output.count(f"stopped at step {step} after SIGTERM") == 2, output
    assert [p.name for p in ckpt.glob("step-*")] == [f"step-{step:06d}"]
    status = json.loads((ckpt / "status.json").read_text())
    assert (status["state"], status["step"], status["exit_code"]) == ("stopped", step, 0)
    assert status["extra"] == {"world_size": 2, "mode": "ddp"}


def test_sampler_gives_each_rank_its_own_slice_of_every_global_batch() -> None:
    from unbroken_ckpt import ResumableBatchSampler

    single = ResumableBatchSampler(64, 8, seed=5)
    ranks = [ResumableBatchSampler(64, 4, seed=5, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].batches_per_epoch == single.batches_per_epoch == 8
    for _batch in range(20):  # into the third epoch
        parts = [sampler.next_batch() for sampler in ranks]
        assert parts[0] + parts[1] == single.next_batch()  # disjoint, the same global batch
    assert ranks[0].state_dict() == ranks[1].state_dict()  # one rank's copy restores both
    resumed = ResumableBatchSampler(64, 4, seed=5, rank=1, world_size=2)
    resumed.load_state_dict(ranks[0].state_dict())
    assert resumed.next_batch() == ranks[1].next_batch()
    with pytest.raises(ValueError, match="world_size differs"):
        ResumableBatchSampler(64, 4, seed=5).load_state_dict(ranks[0].state_dict())
    with pytest.raises(ValueError, match="rank 2 of 2"):
        ResumableBatchSampler(64, 4, seed=5, rank=2, world_size=2)


def test_two_nodes_with_node_local_checkpoints_each_write_their_own_status(
    tmp_path: Path,
) -> None:
    """Two torchrun agents (nnodes 2, c10d) as two nodes: each node's disk gets the status.

    Every node's hang watchdog reads its own disk's status file, so with node-local
    checkpoints the heartbeat must be there on every node, not only on global rank 0's.
    """
    port = 29400 + random.randrange(500)
    procs = []
    for node in (0, 1):
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            f"127.0.0.1:{port}",
            "--rdzv-id",
            "status-test",
            "--rdzv-conf",
            f"is_host={'true' if node == 0 else 'false'}",
            "--nnodes",
            "2",
            "--nproc-per-node",
            "1",
            str(TRAIN),
            "--checkpoint-dir",
            str(tmp_path / f"node{node}"),
            *SMALL,
            "--layout",
            "node-local",
            "--collective-timeout",
            "60",
            "--steps",
            "10",
            "--checkpoint-interval",
            "5",
        ]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=_env()))
    outputs = [p.communicate(timeout=WAIT)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    for node in (0, 1):
        status = json.loads((tmp_path / f"node{node}" / "status.json").read_text())
        assert (status["state"], status["step"]) == ("finished", 10), status
        assert status["extra"] == {"world_size": 2, "mode": "ddp"}
        assert (tmp_path / f"node{node}" / "step-000010" / "MANIFEST.json").exists()


@pytest.fixture
def one_rank_job(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A real 1-rank gloo job in this process (what torchrun's environment would give)."""
    import socket

    from unbroken_ckpt import DistributedJob

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    job = DistributedJob.from_env("cpu", timeout=60)
    try:
        yield job
    finally:
        job.close()


class _Tensors:
    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def state_dict(self) -> dict[str, Any]:
        return dict(self.tensors)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if value is not self.tensors[key]:
                self.tensors[key].copy_(value)


def test_sharded_save_hashes_shards_while_writing_and_reuses_its_staging_memory(
    one_rank_job: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch.distributed.checkpoint import load
    from unbroken_ckpt import ShardedCheckpointManager, distributed
    from unbroken_ckpt import checkpoint_manifest as fmt

    hash_file = fmt.hash_file

    def no_read_back(path: str, *args: Any, **kwargs: Any) -> Any:
        assert not path.endswith(".distcp"), f"{path} was read back to be hashed"
        return hash_file(path, *args, **kwargs)

    monkeypatch.setattr(distributed.fmt, "hash_file", no_read_back)
    weights = torch.arange(3 << 20, dtype=torch.float32)  # 12 MiB: a file of several writes
    state = _Tensors({"w": weights})
    manager = ShardedCheckpointManager(one_rank_job, str(tmp_path), {"state": state}, keep=5)
    staged: list[int] = []
    with manager:
        assert manager.save(1, blocking=True) is not None
        for step in (2, 3):
            weights.add_(1)
            manager.save(step)  # async: staged, then written in the background
            assert manager._stager is not None
            staged.append(
                manager._stager._state_dict_stager._cached_storage_mapping[
                    weights.untyped_storage()
                ].data_ptr()
            )
            weights.add_(100)  # training goes on while the save is written
            assert manager.wait() is not None
    monkeypatch.undo()
    assert staged[0] == staged[1]  # the second save copied into the first one's memory
    for step, first in ((1, 0.0), (2, 1.0), (3, 102.0)):
        path = tmp_path / fmt.checkpoint_name(step)
        manifest = fmt.read_manifest(str(path))
        assert any(name.endswith(".distcp") for name in manifest["files"])
        assert fmt.verify_files(str(path), manifest) == []  # the hashes are of the bytes on disk
        loaded = _Tensors({"w": torch.zeros_like(weights)})
        load({"state": loaded}, checkpoint_id=str(path), process_group=one_rank_job.io)
        assert loaded.tensors["w"][0].item() == first  # the state at save(), not later


def test_sharded_restore_touches_no_state_before_the_shards_verify(
    one_rank_job: Any, tmp_path: Path
) -> None:
    """The shard hashes are checked before anything is read into the state: a corrupt
    newest checkpoint leaves the state as the older one set it, and with nothing valid left
    (fresh start allowed) the state stays as it was."""
    from unbroken_ckpt import ShardedCheckpointManager

    weights = torch.zeros(3 << 20)
    objects = {"state": _Tensors({"w": weights})}
    with ShardedCheckpointManager(one_rank_job, str(tmp_path), objects, keep=5) as manager:
        for step in (1, 2):
            weights.fill_(step)
            assert manager.save(step, blocking=True) is not None

    def corrupt(step: int) -> None:
        shard = tmp_path / f"step-{step:06d}" / "__0_0.distcp"
        data = bytearray(shard.read_bytes())
        data[-4096] ^= 0xFF  # inside the last tensor's bytes
        shard.write_bytes(bytes(data))

    corrupt(2)
    weights.fill_(-1)
    with ShardedCheckpointManager(one_rank_job, str(tmp_path), objects, keep=5) as manager:
        restored = manager.restore()
    assert restored is not None and restored.step == 1
    assert [name for name, _reason in restored.skipped] == ["step-000002"]
    assert "rank 0: __0_0.distcp: crc32 mismatch" in restored.skipped[0][1]
    assert torch.equal(weights, torch.ones_like(weights))  # step 1 exactly, nothing of step 2

    corrupt(1)
    weights.fill_(-1)
    with ShardedCheckpointManager(
        one_rank_job, str(tmp_path), objects, keep=5, allow_fresh_start=True
    ) as manager:
        assert manager.restore() is None
    assert torch.equal(weights, torch.full_like(weights, -1.0))  # untouched
    assert len(list(tmp_path.glob("quarantine-step-*"))) == 2


def test_sharded_restore_reads_each_tensor_once_straight_into_the_state(
    one_rank_job: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the hashes agree, each tensor's bytes are read into the state's own memory
    (no ``torch.load`` of the data into a fresh tensor, as DCP's reader does), whatever
    the dtype; strided tensors go through a buffer; the other byte order takes DCP's way."""
    from unbroken_ckpt import ShardedCheckpointManager, distributed

    saved = {
        "w": torch.randn(1 << 18),
        "half": torch.randn(64, 32).to(torch.bfloat16),  # no numpy dtype: raw bytes all the same
        "strided": torch.randn(48, 16).t(),  # saved with its strides, loaded into a view
        "empty": torch.zeros(0, 3),
    }
    state = {key: value.clone() if key != "strided" else value for key, value in saved.items()}
    with ShardedCheckpointManager(one_rank_job, str(tmp_path), {"s": _Tensors(state)}) as manager:
        assert manager.save(7, blocking=True) is not None

    real_load = torch.load
    data_loads: list[Any] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        value = real_load(*args, **kwargs)
        if isinstance(value, torch.Tensor) and kwargs.get("map_location") != "meta":
            data_loads.append(kwargs.get("map_location"))
        return value

    # DCP reads nothing for an empty tensor.
    for order, expect_loads in (("little", 0), ("big", len(saved) - 1)):
        data_loads.clear()
        targets = {
            key: torch.zeros(48, 16).t() if key == "strided" else torch.zeros_like(value)
            for key, value in saved.items()
        }
        pointers = {key: value.data_ptr() for key, value in targets.items()}
        objects = {"s": _Tensors(targets)}
        with monkeypatch.context() as patch:
            patch.setattr(distributed, "_byte_order", lambda span, order=order: order)
            patch.setattr(torch, "load", spy)
            with ShardedCheckpointManager(one_rank_job, str(tmp_path), objects) as manager:
                restored = manager.restore()
        assert restored is not None and restored.step == 7
        assert len(data_loads) == expect_loads, (order, data_loads)
        for key, value in saved.items():
            assert targets[key].data_ptr() == pointers[key], key
            assert torch.equal(targets[key], value), (order, key)


def test_raw_reads_narrow_like_dcp_and_stay_inside_the_item(tmp_path: Path) -> None:
    """What a rank reads of a tensor saved by another world size: its rows (contiguous:
    straight into the target), its columns (strided: through a buffer)."""
    from types import SimpleNamespace

    from unbroken_ckpt import CheckpointError
    from unbroken_ckpt.distributed import _byte_order, _narrow, _Span, _VerifyingReader

    saved = torch.arange(60, dtype=torch.float32).reshape(10, 6)
    blob = io.BytesIO()
    torch.save(saved, blob)
    path = tmp_path / "__0_0.distcp"
    path.write_bytes(b"x" * 100 + blob.getvalue() + b"y" * 50)  # the item inside a bigger file
    with open(path, "rb") as f:
        span = _Span(f.fileno(), 100, len(blob.getvalue()))
        header = torch.load(span, map_location="meta", weights_only=True)  # type: ignore[arg-type]
        assert _byte_order(span) == sys.byteorder
        start = 100 + header.untyped_storage()._checkpoint_offset
        item = (start, 100 + len(blob.getvalue()))
        read = functools.partial(_VerifyingReader._read_raw, f.fileno(), str(path))
        index = SimpleNamespace(fqn="s.w")

        rows = SimpleNamespace(storage_offsets=[2, 0], lengths=[3, 6], storage_index=index)
        target = torch.zeros(3, 6)
        assert read(item, header, target, rows) is None
        assert torch.equal(target, saved[2:5])

        columns = SimpleNamespace(storage_offsets=[0, 1], lengths=[10, 4], storage_index=index)
        value = read(item, header, torch.zeros(10, 4), columns)
        assert value is not None
        assert torch.equal(_narrow(value, columns.storage_offsets, columns.lengths), saved[:, 1:5])

        with pytest.raises(CheckpointError, match=r"s\.w: data outside its item"):
            read((item[1] - 8, item[1]), header, torch.zeros(3, 6), rows)
