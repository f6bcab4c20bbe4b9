# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Faults that must leave a truthful status: a full disk, error exits, quarantine, stops."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from runtime_helpers import TRAIN, Trainer, command, train_in_process
from unbroken_ckpt import StatusFile, checkpoint_manifest, read_status

PACE = ["--step-sleep", "0.02"]


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a real full disk (needs root and CAP_SYS_ADMIN, else skipped)."""
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(mountpoint: Path) -> Path:
    """Fill the file system from another process, as a runaway log or data copy would."""
    filler = mountpoint / "filler"
    done = subprocess.run(
        ["dd", "if=/dev/zero", f"of={filler}", "bs=64k"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert "No space left on device" in done.stderr, done.stderr
    return filler


def status_of(directory: Path) -> dict:
    document = read_status(str(directory / "status.json"))
    assert document is not None, f"no status file in {directory}"
    return document


def on_disk(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("step-*"))


# -- 1. a status write that fails never kills training ----------------------------------


def test_a_failing_status_write_keeps_the_old_file_and_retries(
    small_tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    status = StatusFile(str(small_tmpfs / "status.json"))
    status.reserve()
    status.write("training", 5)
    filler = fill(small_tmpfs)
    with caplog.at_level(logging.WARNING, "unbroken_ckpt"):
        status.write("training", 10)  # ENOSPC: logged, not raised
        status.write("training", 15)
    assert "No space left on device" in (status.error or "")
    assert status_of(small_tmpfs)["step"] == 5, "the previous status must stay readable"
    assert sorted(p.name for p in small_tmpfs.iterdir()) == [
        ".status.json.reserve",
        "filler",
        "status.json",
    ], "the temporary file must be removed"
    warnings = [r.getMessage() for r in caplog.records if "status file" in r.getMessage()]
    assert len(warnings) == 1 and "next status write retries" in warnings[0]

    # The final write gets the reserved room although the disk is still full.
    assert status.write_final(state="failed", step=15, exit_code=3, reason="disk\nfull")
    final = status_of(small_tmpfs)
    assert (final["state"], final["step"], final["exit_code"], final["reason"]) == (
        "failed",
        15,
        3,
        "disk full",
    )
    filler.unlink()
    status.write("training", 20)
    assert status.error is None and status_of(small_tmpfs)["step"] == 20


@pytest.mark.parametrize("on_error", ["continue", "stop"])
def test_full_disk_during_training_never_kills_it_through_the_status_file(
    small_tmpfs: Path, on_error: str
) -> None:
    ckpt = small_tmpfs / "ckpt"
    child = Trainer(
        ckpt, "--steps", 60, "--checkpoint-interval", 10, "--on-save-error", on_error, *PACE
    )
    child.wait_for(r"checkpoint step-000010 committed")
    fill(small_tmpfs)
    output = child.finish()
    status = status_of(ckpt)
    assert child.proc.returncode == 3, output
    assert "Traceback" not in output
    assert (status["state"], status["exit_code"]) == ("failed", 3)
    assert (
        "No space left on device" in status["reason"]
        or "not enough free space" in (status["reason"])
    )
    assert "\n" not in status["reason"]
    assert status["last_checkpoint"]["name"] == on_disk(ckpt)[-1]
    assert not list(ckpt.glob(".status.json.*")), "temporary or reserve files left behind"
    if on_error == "continue":
        assert "could not write the status file" in output
        assert status["step"] == 60, "training must go on to the end"
        assert "final checkpoint could not be written" in status["reason"]


# -- 2. every exit path writes a final status ------------------------------------------


def _seed(ckpt: Path) -> None:
    """A finished earlier run whose status a later failure must replace."""
    assert train_in_process(ckpt, "--steps", 20, "--checkpoint-interval", 10) == 0
    assert status_of(ckpt)["state"] == "finished"


def _flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x01
    path.write_bytes(bytes(data))


def _foreign_checkpoint(ckpt: Path, step: int, payload: object) -> None:
    """A checkpoint whose hashes and configuration verify, holding ``payload``."""
    config = checkpoint_manifest.read_manifest(str(ckpt / "step-000020"))["config"]
    target = ckpt / checkpoint_manifest.checkpoint_name(step)
    target.mkdir()
    torch.save(payload, target / "state.pt")
    size, segments = checkpoint_manifest.hash_file(str(target / "state.pt"))
    files = {"state.pt": checkpoint_manifest.file_entry(size, segments)}
    checkpoint_manifest.write_manifest(
        str(target), checkpoint_manifest.build_manifest(step, files, config=config)
    )


class _Exploit:
    def __reduce__(self) -> tuple:
        return (os.system, ("false",))


def _no_valid(ckpt: Path) -> list[object]:
    for state in ckpt.glob("step-*/state.pt"):
        _flip(state)
    return ["--steps", 30]


def _unsafe_only(ckpt: Path) -> list[object]:
    _foreign_checkpoint(ckpt, 25, {"objects": _Exploit()})
    for name in ("step-000010", "step-000020"):
        _flip(ckpt / name / "state.pt")
    return ["--steps", 30]


def _not_ours(ckpt: Path) -> list[object]:
    _foreign_checkpoint(ckpt, 25, {"format": "unbroken_ckpt/state-v1", "objects": {}})
    return ["--steps", 30]


EXITS = {
    "config-5": (lambda ckpt: ["--steps", 30, "--hidden", 48], 5, "different configuration"),
    "no-valid-6": (_no_valid, 6, "none verifies"),
    "unsafe-7": (_unsafe_only, 7, "refusing to load"),
    "other-8": (_not_ours, 8, "checkpoint step-000025 has no state for"),
}


@pytest.mark.parametrize("case", sorted(EXITS))
def test_every_error_exit_writes_a_failed_status_with_code_and_reason(
    tmp_path: Path, case: str
) -> None:
    ckpt = tmp_path / "ckpt"
    _seed(ckpt)
    prepare, code, reason = EXITS[case]
    argv = prepare(ckpt)
    assert train_in_process(ckpt, *argv) == code
    status = status_of(ckpt)
    assert (status["state"], status["exit_code"]) == ("failed", code)
    assert reason in status["reason"] and "\n" not in status["reason"]
    assert status["pid"] == os.getpid() and not list(ckpt.glob(".status.json.*"))


def test_an_unexpected_error_writes_a_failed_status_and_keeps_its_traceback(
    tmp_path: Path,
) -> None:
    ckpt = tmp_path / "ckpt"
    _seed(ckpt)
    spec = importlib.util.spec_from_file_location("unbroken_reference_train_oom", TRAIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    real_step, calls = module.train_step, []

    def out_of_memory_at_the_fourth_step(run: object) -> float:
        # Stand-in for a GPU out-of-memory error, which this machine cannot produce.
        calls.append(1)
        if len(calls) == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(run)

    module.train_step = out_of_memory_at_the_fourth_step
    with pytest.raises(torch.OutOfMemoryError):
        module.main(command(ckpt, "--steps", 40, "--checkpoint-interval", 10)[2:])
    status = status_of(ckpt)
    assert (status["state"], status["exit_code"]) == ("failed", 1)
    assert status["reason"] == ("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")


# -- 3. and 5. quarantine ------------------------------------------------------------


def test_a_corrupt_checkpoint_is_quarantined_and_keeps_no_retention_slot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = tmp_path / "ckpt"
    interval = ["--checkpoint-interval", 5, "--keep", 3]
    assert train_in_process(ckpt, "--steps", 62, *interval) == 0
    assert on_disk(ckpt) == ["step-000055", "step-000060", "step-000062"]
    _flip(ckpt / "step-000062" / "state.pt")

    with caplog.at_level(logging.INFO):
        assert train_in_process(ckpt, "--steps", 65, *interval) == 0
    assert "resumed from checkpoint step-000060 (step 60)" in caplog.text
    assert on_disk(ckpt) == ["step-000055", "step-000060", "step-000065"]
    aside = sorted(ckpt.glob("quarantine-step-000062-*"))
    assert len(aside) == 1 and (aside[0] / "state.pt").exists(), "kept for inspection"
    quarantined = status_of(ckpt)["quarantined"]
    assert [(q["name"], q["step"]) for q in quarantined] == [(aside[0].name, 62)]
    assert quarantined[0]["reason"].startswith("state.pt: crc32 mismatch in 1 of 1 segment(s)")
    note = json.loads((aside[0] / "QUARANTINE.json").read_text())
    assert note["name"] == "step-000062" and note["reason"] == quarantined[0]["reason"]

    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert train_in_process(ckpt, "--steps", 70, *interval) == 0
    assert "is invalid" not in caplog.text, "warned again at a later start"
    assert "resumed from checkpoint step-000065 (step 65)" in caplog.text
    assert on_disk(ckpt) == ["step-000060", "step-000065", "step-000070"]
    assert status_of(ckpt)["quarantined"] == quarantined, "still reported while it is kept"


def test_an_invalid_checkpoint_beyond_the_last_step_is_moved_aside_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = tmp_path / "ckpt"
    assert train_in_process(ckpt, "--steps", 30, "--checkpoint-interval", 10) == 0
    _flip(ckpt / "step-000030" / "state.pt")
    with caplog.at_level(logging.INFO):
        assert train_in_process(ckpt, "--steps", 25, "--checkpoint-interval", 10) == 0
    assert "checkpoint step-000030 is invalid" in caplog.text
    assert on_disk(ckpt) == ["step-000010", "step-000020", "step-000025"]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert train_in_process(ckpt, "--steps", 25, "--checkpoint-interval", 10) == 0
    assert "is invalid" not in caplog.text and "step-000030" not in caplog.text


def test_a_fresh_start_over_invalid_checkpoints_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = tmp_path / "ckpt"
    assert train_in_process(ckpt, "--steps", 20, "--checkpoint-interval", 10) == 0
    for state in ckpt.glob("step-*/state.pt"):
        _flip(state)
    with caplog.at_level(logging.INFO):
        code = train_in_process(
            ckpt, "--steps", 5, "--checkpoint-interval", 10, "--allow-fresh-start"
        )
    assert code == 0
    assert "no checkpoint in" not in caplog.text
    assert "starting fresh (--allow-fresh-start): none of the 2 checkpoint(s)" in caplog.text
    assert on_disk(ckpt) == ["step-000005"]
    assert [q["step"] for q in status_of(ckpt)["quarantined"]] == [20, 10]


def test_a_crc_mismatch_names_the_segment_and_its_byte_range(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    assert train_in_process(ckpt, "--steps", 10, "--checkpoint-interval", 10) == 0
    state = ckpt / "step-000010" / "state.pt"
    size = state.stat().st_size
    _flip(state, offset=size - 100)
    problems = checkpoint_manifest.inspect_checkpoint(str(ckpt), "step-000010").problems
    assert problems == [
        f"state.pt: crc32 mismatch in 1 of 1 segment(s): segment 0 (bytes 0-{size - 1}) (corrupted)"
    ]


# -- 4. stops ---------------------------------------------------------------------------


def test_a_stop_with_its_budget_used_up_abandons_the_save_in_flight(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    assert train_in_process(ckpt, "--steps", 5, "--checkpoint-interval", 5) == 0
    child = Trainer(
        ckpt,
        "--steps",
        100000,
        "--checkpoint-interval",
        10,
        "--stop-budget",
        0,
        "--inject-save-pause",
        60,
        *PACE,
    )
    child.wait_for_path(ckpt, ".tmp-step-000010-*")  # the save of step 10 waits to commit
    child.wait_for(r"step 12 loss")
    sent = time.monotonic()
    child.signal(signal.SIGTERM)
    output = child.finish()
    elapsed = time.monotonic() - sent
    assert child.proc.returncode == 0, output
    assert elapsed < 30, f"exit took {elapsed:.1f}s: it waited for the paused save"
    assert "stop budget of 0s already used up" in output
    assert on_disk(ckpt) == ["step-000005"] and not list(ckpt.glob(".tmp-*"))
    status = status_of(ckpt)
    assert status["state"] == "stopped" and status["exit_code"] == 0
    assert status["last_checkpoint"]["name"] == "step-000005"
    assert (
        "without a final checkpoint; the next start resumes from step-000005" in (status["reason"])
    )


# -- library level: an unsafe pickle, an abandoned save ----------------------------------


def _objects() -> dict:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    return {"model": model, "optimizer": torch.optim.Adam(model.parameters(), lr=0.01)}


def _unsafe_checkpoint(directory: Path, step: int, marker: Path) -> None:
    class Exploit:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    target = directory / checkpoint_manifest.checkpoint_name(step)
    target.mkdir()
    torch.save({"objects": {"model": Exploit()}}, target / "state.pt")
    size, segments = checkpoint_manifest.hash_file(str(target / "state.pt"))
    files = {"state.pt": checkpoint_manifest.file_entry(size, segments)}
    manifest = checkpoint_manifest.build_manifest(step, files, config={"k": 1})
    checkpoint_manifest.write_manifest(str(target), manifest)


def test_an_unsafe_checkpoint_that_verifies_is_quarantined_and_the_run_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from unbroken_ckpt import CheckpointManager, UnsafeCheckpointError

    objects = _objects()
    with CheckpointManager(str(tmp_path), objects, config={"k": 1}, async_save=False) as ckpt:
        ckpt.save(10)
    marker = tmp_path.parent / "pwned"
    _unsafe_checkpoint(tmp_path, 20, marker)
    with caplog.at_level(logging.INFO), CheckpointManager(
        str(tmp_path), _objects(), config={"k": 1}
    ) as ckpt:
        restored = ckpt.restore()
    assert restored is not None and restored.step == 10
    assert not marker.exists(), "never loaded unsafely"
    assert "checkpoint step-000020 verifies but is unsafe to load: refusing to load" in caplog.text
    assert on_disk(tmp_path) == ["step-000010"]
    assert [q["step"] for q in ckpt.quarantined] == [20]
    assert ckpt.quarantined[0]["reason"].startswith("unsafe to load: refusing to load")
    assert "GLOBAL posix.system" in ckpt.quarantined[0]["reason"]

    # With nothing to fall back to it still refuses, moves nothing and names the command.
    alone = tmp_path / "alone"
    alone.mkdir()
    _unsafe_checkpoint(alone, 20, marker)
    with CheckpointManager(str(alone), _objects(), config={"k": 1}) as ckpt, pytest.raises(
        UnsafeCheckpointError
    ) as err:
        ckpt.restore()
    assert f"(mv {alone}/step-000020 {alone}/quarantine-step-000020-" in str(err.value)
    assert on_disk(alone) == ["step-000020"] and not marker.exists()


@pytest.mark.parametrize("commit_first", [False, True], ids=["in-flight", "committed"])
def test_abandon_returns_at_once_and_names_what_is_on_disk(
    tmp_path: Path, commit_first: bool
) -> None:
    from unbroken_ckpt import CheckpointManager

    ckpt = CheckpointManager(str(tmp_path), _objects(), config={"k": 1}).open()
    try:
        assert ckpt.save(5, blocking=True) is not None
        ckpt.pause_before_commit = 0.0 if commit_first else 60.0
        ckpt.save(10)  # asynchronous
        writer = next(t for t in threading.enumerate() if t.name == "unbroken-ckpt-writer-10")
        if commit_first:
            writer.join()
        else:
            while not list(tmp_path.glob(".tmp-step-000010-*/MANIFEST.json")):
                time.sleep(0.01)  # the save waits at its commit point
        started = time.monotonic()
        last = ckpt.abandon()
        assert ckpt.save(15) is None, "no save starts after abandon()"
    finally:
        ckpt.close()
    writer.join(timeout=10)
    elapsed = time.monotonic() - started
    assert not writer.is_alive() and elapsed < 10, f"abandon/close took {elapsed:.1f}s"
    expected = "step-000010" if commit_first else "step-000005"
    assert last is not None and last.name == expected
    assert on_disk(tmp_path)[-1] == expected and not list(tmp_path.glob(".tmp-*"))
