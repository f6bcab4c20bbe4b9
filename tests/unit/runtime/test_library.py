# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""unbroken_ckpt in-process: integrity, fallback, rotation, disk full, safety, locking."""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from runtime_helpers import RUNTIME_DIR, assert_bitwise_equal
from torch import nn
from unbroken_ckpt import (
    CheckpointLockedError,
    CheckpointManager,
    CheckpointSpaceError,
    ConfigMismatchError,
    NoValidCheckpointError,
    ResumableBatchSampler,
    StopSignals,
    UnsafeCheckpointError,
    checkpoint_manifest,
    load_state_file,
    storage,
)
from unbroken_ckpt.rng import capture_rng, restore_rng

CONFIG = {"model": "tiny", "width": 8}


def make_objects(width: int = 8, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Dropout(0.2), nn.Linear(width, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    return {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "data": ResumableBatchSampler(64, 8, seed=0),
    }


def train(objects: dict, steps: int) -> None:
    generator = torch.Generator().manual_seed(1)
    inputs, targets = (
        torch.randn(64, 4, generator=generator),
        torch.randn(64, 2, generator=generator),
    )
    for _i in range(steps):
        index = torch.tensor(objects["data"].next_batch())
        loss = nn.functional.mse_loss(objects["model"](inputs[index]), targets[index])
        objects["optimizer"].zero_grad()
        loss.backward()
        objects["optimizer"].step()
        objects["scheduler"].step()


def manager(directory: Path, objects: dict, **options: object) -> CheckpointManager:
    options.setdefault("config", CONFIG)
    options.setdefault("async_save", False)
    return CheckpointManager(str(directory), objects, **options)  # type: ignore[arg-type]


def weights(objects: dict) -> dict:
    return {k: v.clone() for k, v in objects["model"].state_dict().items()}


@pytest.fixture
def three_checkpoints(tmp_path: Path) -> tuple[Path, dict]:
    """Checkpoints at steps 10, 20, 30; returns the directory and the weights at step 20."""
    objects = make_objects()
    at_20: dict = {}
    with manager(tmp_path, objects, keep=5) as ckpt:
        for step in (10, 20, 30):
            train(objects, 10)
            ckpt.save(step)
            if step == 20:
                at_20 = weights(objects)
    return tmp_path, at_20


def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "bit-flip": (lambda d: _flip_bit(d / "state.pt"), "state.pt: crc32 mismatch"),
    "truncated": (lambda d: os.truncate(d / "state.pt", 1000), "truncated or torn"),
    "state-missing": (lambda d: (d / "state.pt").unlink(), "state.pt: No such file"),
    "never-committed": (lambda d: (d / "MANIFEST.json").unlink(), "MANIFEST.json is missing"),
    "manifest-edited": (lambda d: _flip_bit(d / "MANIFEST.json"), "MANIFEST.json"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_damaged_newest_checkpoint_is_skipped_for_the_previous_one(
    three_checkpoints: tuple[Path, dict], kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    directory, at_20 = three_checkpoints
    damage, reason = CORRUPTIONS[kind]
    damage(directory / "step-000030")
    objects = make_objects(seed=99)
    with caplog.at_level(logging.INFO, "unbroken_ckpt"), manager(directory, objects) as ckpt:
        restored = ckpt.restore()
    assert restored is not None and restored.step == 20
    assert_bitwise_equal(at_20, weights(objects))
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert warning.startswith("checkpoint step-000030 is invalid (")
    assert reason in warning
    assert warning.endswith("; falling back to step-000020")
    assert "resumed from checkpoint step-000020 (step 20)" in caplog.text


def test_sha256_checkpoints_written_on_request_still_restore_and_verify(tmp_path: Path) -> None:
    """``hash_algorithm="sha256"`` checkpoints restore under the crc32 default, corrupt too."""
    objects = make_objects()
    with manager(tmp_path, objects, hash_algorithm="sha256") as ckpt:
        for step in (10, 20):
            train(objects, 10)
            ckpt.save(step)
            if step == 10:
                at_10 = weights(objects)
    manifest = checkpoint_manifest.read_manifest(str(tmp_path / "step-000020"))
    assert manifest["hash"]["algorithm"] == "sha256"
    _flip_bit(tmp_path / "step-000020" / "state.pt")
    resumed = make_objects(seed=5)
    with manager(tmp_path, resumed) as ckpt:
        restored = ckpt.restore()
        assert restored is not None and restored.step == 10
        assert restored.skipped[0][0] == "step-000020"
        assert "state.pt: sha256 mismatch" in restored.skipped[0][1]
        ckpt.save(11)
    assert_bitwise_equal(at_10, weights(resumed))
    newest = checkpoint_manifest.read_manifest(str(tmp_path / "step-000011"))
    assert newest["hash"]["algorithm"] == "crc32"
    with pytest.raises(ValueError, match="hash_algorithm must be one of crc32, sha256, got 'md5'"):
        manager(tmp_path, resumed, hash_algorithm="md5")


def test_uncommitted_write_is_ignored_and_cleared(three_checkpoints: tuple[Path, dict]) -> None:
    directory, _steps = three_checkpoints
    partial = directory / ".tmp-step-000040-123-1"
    shutil.copytree(directory / "step-000030", partial)
    os.truncate(partial / "state.pt", 10)
    with manager(directory, make_objects()) as ckpt:
        restored = ckpt.restore()
    assert restored is not None and restored.step == 30
    assert not partial.exists()


def test_no_valid_checkpoint_refuses_a_fresh_start_unless_allowed(
    three_checkpoints: tuple[Path, dict],
) -> None:
    directory, _steps = three_checkpoints
    for name in ("step-000010", "step-000020", "step-000030"):
        _flip_bit(directory / name / "state.pt")
    with manager(directory, make_objects()) as ckpt, pytest.raises(NoValidCheckpointError) as err:
        ckpt.restore()
    assert "3 checkpoint(s)" in str(err.value) and "none verifies" in str(err.value)
    with manager(directory, make_objects(), allow_fresh_start=True) as ckpt:
        assert ckpt.restore() is None


def test_a_step_saved_again_replaces_its_corrupt_copy(three_checkpoints: tuple[Path, dict]) -> None:
    directory, _steps = three_checkpoints
    _flip_bit(directory / "step-000030" / "state.pt")
    objects = make_objects()
    with manager(directory, objects) as ckpt:
        assert ckpt.restore().step == 20  # type: ignore[union-attr]
        train(objects, 10)
        assert ckpt.save(30) is not None
    status = checkpoint_manifest.inspect_checkpoint(str(directory), "step-000030")
    assert status.valid, status.problems
    assert not list(directory.glob(".trash-*"))


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("step-*"))


def test_rotation_keeps_exactly_the_last_k(tmp_path: Path) -> None:
    objects = make_objects()
    with manager(tmp_path, objects, keep=3) as ckpt:
        for step in range(1, 9):
            train(objects, 1)
            ckpt.save(step)
            assert len(_names(tmp_path)) == min(step, 3)
    assert _names(tmp_path) == ["step-000006", "step-000007", "step-000008"]


def test_rotation_keeps_milestones(tmp_path: Path) -> None:
    objects = make_objects()
    with manager(tmp_path, objects, keep=2, milestone_every=3) as ckpt:
        for step in range(1, 11):
            ckpt.save(step)
    assert _names(tmp_path) == ["step-000003", "step-000006", "step-000009", "step-000010"]


def test_a_failed_save_deletes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = make_objects()
    with manager(tmp_path, objects, keep=2) as ckpt:
        ckpt.save(1)
        ckpt.save(2)

        def broken_disk(path: str, payload: dict, *_args: object) -> dict:
            Path(path).write_bytes(b"partial")
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(storage, "_write_state", broken_disk)
        assert ckpt.save(3) is None  # on_error="continue"
        assert "Input/output error" in (ckpt.last_error or "")
    assert _names(tmp_path) == ["step-000001", "step-000002"]
    assert not list(tmp_path.glob(".tmp-*"))
    for name in _names(tmp_path):
        assert checkpoint_manifest.inspect_checkpoint(str(tmp_path), name).valid


def test_injected_enospc_is_reported_and_stops_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = make_objects()
    with manager(tmp_path, objects, on_error="stop") as ckpt:
        ckpt.save(1)

        def full_disk(path: str, payload: dict, *_args: object) -> dict:
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(storage, "_write_state", full_disk)
        with pytest.raises(CheckpointSpaceError) as err:
            ckpt.save(2)
    message = str(err.value)
    assert "No space left on device" in message and "older checkpoints are intact" in message
    assert _names(tmp_path) == ["step-000001"] and not list(tmp_path.glob(".tmp-*"))


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs: a real full disk (needs root and CAP_SYS_ADMIN, else skipped)."""
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip()}); injected ENOSPC covers it"
        )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_full_disk_keeps_older_checkpoints_and_retries(small_tmpfs: Path) -> None:
    objects = make_objects()
    with manager(small_tmpfs, objects, on_error="continue") as ckpt:
        ckpt.save(1)
        # Bytes in extras are not tensors, so the free-space estimate misses them: the
        # write itself runs into ENOSPC.
        assert ckpt.save(2, extras={"ballast": os.urandom(10 << 20)}) is None
        assert "No space left on device" in (ckpt.last_error or "")
        assert not list(small_tmpfs.glob(".tmp-*"))
        assert _names(small_tmpfs) == ["step-000001"]
        assert checkpoint_manifest.inspect_checkpoint(str(small_tmpfs), "step-000001").valid
        assert ckpt.save(3) is not None  # retried later, with the space available again
        assert ckpt.last_error is None


def test_free_space_is_checked_before_writing(small_tmpfs: Path) -> None:
    big = {"model": nn.Linear(1024, 1024)}  # 4 MiB of weights: one fits, two do not
    with manager(small_tmpfs, big, on_error="stop") as ckpt:
        ckpt.save(1)
        with pytest.raises(CheckpointSpaceError) as err:
            ckpt.save(2)
    assert "not enough free space" in str(err.value)
    assert _names(small_tmpfs) == ["step-000001"] and not list(small_tmpfs.glob(".tmp-*"))


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    evil = directory / "step-000050"
    evil.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"objects": {"model": _Exploit(marker)}}, evil / "state.pt")
    size, segments = checkpoint_manifest.hash_file(str(evil / "state.pt"))
    files = {"state.pt": checkpoint_manifest.file_entry(size, segments)}
    manifest = checkpoint_manifest.build_manifest(50, files, config=CONFIG)
    checkpoint_manifest.write_manifest(str(evil), manifest)  # hashes match: only loading can refuse

    with manager(directory, make_objects()) as ckpt, pytest.raises(UnsafeCheckpointError) as err:
        ckpt.restore()
    assert "refusing to load" in str(err.value)
    assert "GLOBAL posix.system" in str(err.value)
    assert "weights_only` set to `False`" not in str(err.value)
    assert not marker.exists()

    # The payload is real: an unsafe load runs it.
    unsafe = evil / "state.pt"
    subprocess.run(
        [sys.executable, "-c", f"import torch; torch.load({str(unsafe)!r}, weights_only=False)"],
        check=False,
        timeout=60,
    )
    assert marker.exists(), "the crafted pickle should execute when loaded unsafely"


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    first = manager(tmp_path, make_objects()).open()
    try:
        with pytest.raises(CheckpointLockedError) as err:
            manager(tmp_path, make_objects()).open()
        assert f"already in use by another writer (pid {os.getpid()} on" in str(err.value)
    finally:
        first.close()
    manager(tmp_path, make_objects()).open().close()


def test_configuration_mismatch_is_refused_unless_allowed(
    three_checkpoints: tuple[Path, dict], caplog: pytest.LogCaptureFixture
) -> None:
    directory, _steps = three_checkpoints
    other = {"model": "tiny", "width": 8, "world_size": 2}
    with manager(directory, make_objects(), config=other) as ckpt, pytest.raises(
        ConfigMismatchError
    ) as err:
        ckpt.restore()
    assert "different configuration (world_size: <unset> -> 2)" in str(err.value)
    with manager(directory, make_objects(), config=other, allow_config_mismatch=True) as ckpt:
        assert ckpt.restore().step == 30  # type: ignore[union-attr]
    assert "continuing because the mismatch is allowed" in caplog.text


def test_async_save_writes_the_state_of_its_step_not_later_updates(tmp_path: Path) -> None:
    objects = make_objects()
    train(objects, 3)
    expected = weights(objects)
    with manager(tmp_path, objects, async_save=True, pause_before_commit=0.3) as ckpt:
        assert ckpt.save(3) is None
        assert ckpt.in_flight
        with torch.no_grad():
            for parameter in objects["model"].parameters():
                parameter.fill_(42.0)
        commit = ckpt.wait()
    assert commit is not None and commit.step == 3
    saved = load_state_file(str(tmp_path / "step-000003" / "state.pt"))
    assert_bitwise_equal(dict(expected), dict(saved["objects"]["model"]))


def _slow_fill(monkeypatch: pytest.MonkeyPatch, seconds: float = 0.3) -> list[int]:
    """Make the writer's deferred copy start late; return the sizes of what it copied."""
    from unbroken_ckpt import manager as manager_module

    real_fill, copied = manager_module.fill, []

    def fill(pending: list) -> None:
        time.sleep(seconds)
        copied.extend(source.numel() for _buffer, source in pending)
        real_fill(pending)

    monkeypatch.setattr(manager_module, "fill", fill)
    return copied


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict:
    state = optimizer.state_dict()["state"]
    return {(i, k): v.clone() for i, s in state.items() for k, v in s.items()}


def test_overlapped_copy_saves_the_state_from_before_the_next_optimizer_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parameters and Adam's state are copied by the writer thread; the next step's
    optimizer.step() must wait for that copy, so the checkpoint holds the saved step."""
    copied = _slow_fill(monkeypatch)
    objects = make_objects()
    train(objects, 3)
    expected, expected_optimizer = weights(objects), _optimizer_tensors(objects["optimizer"])
    with manager(tmp_path, objects, async_save=True, overlap_copy=True) as ckpt:
        assert ckpt.save(3) is None
        train(objects, 2)  # forward and backward overlap the copy; step() waits for it
        assert ckpt.last_copy_wait > 0
        commit = ckpt.wait()
    assert commit is not None and commit.step == 3
    params = sum(p.numel() for p in objects["model"].parameters())
    assert sum(copied) == 3 * params + 4  # params, exp_avg, exp_avg_sq and 4 step counters
    saved = load_state_file(str(tmp_path / "step-000003" / "state.pt"))
    assert_bitwise_equal(dict(expected), dict(saved["objects"]["model"]))
    saved_optimizer = saved["objects"]["optimizer"]["state"]
    assert {(i, k): v for i, s in saved_optimizer.items() for k, v in s.items()}.keys() == (
        expected_optimizer.keys()
    )
    for (index, key), value in expected_optimizer.items():
        assert torch.equal(saved_optimizer[index][key], value), (index, key)


def test_overlapped_copy_takes_what_the_optimizer_does_not_own_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Buffers (changed by forward) and frozen parameters are not guarded by the optimizer
    step, so save() copies them itself."""
    _slow_fill(monkeypatch)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    model[2].weight.requires_grad_(False)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    objects = {"model": model, "optimizer": optimizer}
    model(torch.randn(16, 4)).sum().backward()
    optimizer.step()
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    with manager(tmp_path, objects, async_save=True, overlap_copy=True) as ckpt:
        ckpt.save(1)
        with torch.no_grad():
            model[1].running_mean.fill_(42.0)
            model[2].weight.fill_(42.0)
        ckpt.wait()
    saved = load_state_file(str(tmp_path / "step-000001" / "state.pt"))
    assert_bitwise_equal(expected, dict(saved["objects"]["model"]))


def test_a_failed_overlapped_copy_releases_the_optimizer_and_is_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unbroken_ckpt import manager as manager_module

    def fill(pending: list) -> None:
        raise RuntimeError("copy failed")

    monkeypatch.setattr(manager_module, "fill", fill)
    objects = make_objects()
    ckpt = manager(tmp_path, objects, async_save=True, overlap_copy=True).open()
    ckpt.save(1)
    train(objects, 1)  # must not hang on the failed copy
    with pytest.raises(RuntimeError, match="copy failed"):
        ckpt.wait()
    ckpt.close()
    assert _names(tmp_path) == []


def _step_in_thread(optimizer: torch.optim.Optimizer) -> threading.Thread:
    stepping = threading.Thread(target=optimizer.step, daemon=True)
    stepping.start()
    return stepping


def test_the_optimizer_hook_goes_with_close(tmp_path: Path) -> None:
    """While the manager is open, a step waits for a pending copy; after close() no step
    waits on the manager any more, even with a copy marked pending."""
    objects = make_objects()
    optimizer = objects["optimizer"]
    with manager(tmp_path, objects, async_save=True, overlap_copy=True) as ckpt:
        ckpt._copied.clear()  # as save() leaves it until the writer has copied
        stepping = _step_in_thread(optimizer)
        stepping.join(0.5)
        assert stepping.is_alive(), "the step did not wait for the pending copy"
        ckpt._copied.set()
        stepping.join(10)
        assert not stepping.is_alive()
    ckpt._copied.clear()
    stepping = _step_in_thread(optimizer)
    stepping.join(10)
    assert not stepping.is_alive(), "the step still waits on a closed manager"


def test_save_skips_the_zip_crc32_the_manifest_makes_redundant(tmp_path: Path) -> None:
    """torch.save's zip CRC32 over every byte is skipped (the SHA-256 manifest covers the
    bytes); the switch is torch's global config, so it must be back on afterwards, and a
    fresh process must still load and verify the file."""
    config = pytest.importorskip("torch.utils.serialization.config")
    objects = make_objects()
    with manager(tmp_path, objects) as ckpt:
        ckpt.save(1)
    assert config.save.compute_crc32 is True
    state_file = tmp_path / "step-000001" / "state.pt"
    with zipfile.ZipFile(state_file) as archive:
        data = [i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 0]
    assert data and all(info.CRC == 0 for info in data)
    check = (
        "import sys, torch; "
        "from unbroken_ckpt.checkpoint_manifest import find_newest_valid; "
        "newest, bad = find_newest_valid(sys.argv[1], full=True); "
        "assert newest is not None and newest.step == 1 and not bad; "
        "torch.load(sys.argv[2], weights_only=True)"
    )
    subprocess.run(
        [sys.executable, "-c", check, str(tmp_path), str(state_file)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(RUNTIME_DIR)},
        timeout=120,
    )


def test_at_most_one_async_save_is_in_flight(tmp_path: Path) -> None:
    objects = make_objects()
    with manager(tmp_path, objects, async_save=True, pause_before_commit=0.2) as ckpt:
        ckpt.save(1)
        ckpt.save(2)  # waits for step 1 first
        assert ckpt.last_commit is not None and ckpt.last_commit.step == 1
    assert _names(tmp_path) == ["step-000001", "step-000002"]  # close() waited for step 2


def test_state_that_weights_only_cannot_load_is_refused_when_saving(tmp_path: Path) -> None:
    with manager(tmp_path, make_objects()) as ckpt, pytest.raises(TypeError) as err:
        ckpt.save(1, extras={"mask": np.zeros(3)})
    assert "checkpoint state['extras']['mask'] is a ndarray" in str(err.value)
    assert _names(tmp_path) == []


def test_every_rng_is_restored_through_a_weights_only_round_trip(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    np.random.standard_normal()
    torch.save(capture_rng(), tmp_path / "rng.pt")
    before = (random.random(), np.random.standard_normal(4).tolist(), torch.rand(4))
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    after = (random.random(), np.random.standard_normal(4).tolist(), torch.rand(4))
    assert before[:2] == after[:2]
    assert torch.equal(before[2], after[2])


class CudaStandIn:
    """Stands in for ``torch.cuda`` on this GPU-less machine: two devices' RNG states.

    Only the calls ``unbroken_ckpt.rng`` makes; the real CUDA generators are not exercised.
    """

    def __init__(self, devices: int) -> None:
        self.states = [torch.randint(0, 255, (16,), dtype=torch.uint8) for _d in range(devices)]
        self.restored: list[torch.Tensor] | None = None

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(self.states))
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(self.states))
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self._set)

    def _set(self, states: list[torch.Tensor]) -> None:
        self.restored = list(states)


def test_cuda_rng_states_are_captured_and_restored_per_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With (stand-in) CUDA, every device's generator state round-trips weights_only."""
    gpus = CudaStandIn(2)
    gpus.install(monkeypatch)
    torch.save(capture_rng(), tmp_path / "rng.pt")
    saved = [s.clone() for s in gpus.states]
    gpus.states = [torch.zeros(16, dtype=torch.uint8)] * 2  # the generators moved on
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert gpus.restored is not None and len(gpus.restored) == 2
    assert all(torch.equal(a, b) for a, b in zip(gpus.restored, saved))

    fewer = CudaStandIn(1)  # resumed on a host with fewer GPUs: not restored, said so
    fewer.install(monkeypatch)
    with caplog.at_level(logging.WARNING, "unbroken_ckpt"):
        restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert fewer.restored is None
    assert "CUDA RNG states for 2 device(s), this process sees 1; not restored" in caplog.text


def test_grad_scaler_state_is_restored_exactly(tmp_path: Path) -> None:
    """An enabled GradScaler (CPU AMP here) resumes with its scale and growth tracker."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=10)
    for step in range(5):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        if step == 1:
            loss = loss * float("inf")  # an overflow: the scaler backs off and skips the step
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    expected = scaler.state_dict()
    assert (expected["scale"], expected["_growth_tracker"]) == (2.0**11, 3)
    objects = {"model": model, "optimizer": optimizer, "scaler": scaler}
    with manager(tmp_path, objects) as ckpt:
        ckpt.save(5)
    fresh = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=10)
    resumed = {"model": nn.Linear(4, 2), "optimizer": None, "scaler": fresh}
    resumed["optimizer"] = torch.optim.SGD(resumed["model"].parameters(), lr=0.1)
    with manager(tmp_path, resumed) as ckpt:
        assert ckpt.restore() is not None
    assert fresh.state_dict() == expected


def test_sampler_resumes_with_the_same_next_batch() -> None:
    sampler = ResumableBatchSampler(40, 8, seed=5)
    for _i in range(7):  # into the second epoch
        sampler.next_batch()
    state = sampler.state_dict()
    expected = [sampler.next_batch() for _i in range(5)]
    resumed = ResumableBatchSampler(40, 8, seed=5)
    resumed.load_state_dict(state)
    assert [resumed.next_batch() for _i in range(5)] == expected
    assert state["epoch"] == 1


def test_stop_signal_only_raises_a_flag(tmp_path: Path) -> None:
    previous = signal.getsignal(signal.SIGUSR1)
    with StopSignals((signal.SIGTERM, signal.SIGUSR1)) as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.requested and stop.name == "SIGUSR1"
        assert stop.remaining(30.0) <= 30.0
    assert signal.getsignal(signal.SIGUSR1) == previous
    assert list(tmp_path.iterdir()) == []
