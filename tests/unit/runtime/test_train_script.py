# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The reference script under crashes and signals: resumed runs equal straight ones."""

from __future__ import annotations

import importlib.util
import json
import random
import signal
from pathlib import Path

import pytest
from runtime_helpers import Trainer, assert_bitwise_equal, load_payload, run_train, train_in_process

STEPS, INTERVAL = 60, 10
PACE = ["--step-sleep", "0.01"]  # keeps the child alive long enough to be hit mid-run


def _final_state(ckpt_dir: Path) -> dict:
    return load_payload(ckpt_dir / f"step-{STEPS:06d}" / "state.pt")


def _run(*args: object) -> list[object]:
    return ["--steps", STEPS, "--checkpoint-interval", INTERVAL, *args]


@pytest.mark.parametrize("seed", [11, 22, 33])
def test_sigkill_at_random_points_and_during_a_save_resumes_bit_exact(
    tmp_path: Path, seed: int
) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert train_in_process(straight, *_run("--seed", seed)) == 0
    chooser = random.Random(seed)

    # 1. SIGKILL after a random step.
    target = chooser.randint(INTERVAL + 1, STEPS - 5)
    child = Trainer(killed, *_run("--seed", seed, *PACE))
    child.wait_for(r"step (\d+) loss", lambda m: int(m.group(1)) >= target)
    child.signal(signal.SIGKILL)
    child.finish()
    assert child.proc.returncode == -signal.SIGKILL

    # 2. SIGKILL while a checkpoint is being written (the pause holds it uncommitted).
    child = Trainer(killed, *_run("--seed", seed, "--inject-save-pause", "0.5", *PACE))
    partial = child.wait_for_path(killed, ".tmp-step-*")
    child.signal(signal.SIGKILL)
    output = child.finish()
    assert "resumed from checkpoint step-" in output
    assert partial.exists(), "the kill was meant to land during a save"

    # 3. Resume to the end.
    final = run_train(killed, *_run("--seed", seed))
    assert final.returncode == 0, final.stdout
    assert "removed 1 incomplete checkpoint write" in final.stdout
    assert "resumed from checkpoint step-" in final.stdout
    assert not partial.exists()

    expected, actual = _final_state(straight), _final_state(killed)
    for part in ("model", "optimizer", "scheduler", "scaler", "data"):
        assert_bitwise_equal(expected["objects"][part], actual["objects"][part], part)
    assert_bitwise_equal(expected["rng"], actual["rng"], "rng")
    assert_bitwise_equal(expected["extras"], actual["extras"], "extras")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_stop_signal_writes_a_checkpoint_at_the_current_step_and_exits_zero(
    tmp_path: Path, signum: int
) -> None:
    ckpt = tmp_path / "ckpt"
    child = Trainer(ckpt, "--steps", 100000, "--checkpoint-interval", 100000, *PACE)
    child.wait_for(r"step 7 loss")
    child.signal(signum)
    stopped = child.wait_for(r"received (SIG\w+) at step (\d+); writing a final checkpoint")
    output = child.finish()
    assert child.proc.returncode == 0, output
    step = int(stopped.group(2))
    assert stopped.group(1) == signal.Signals(signum).name
    assert sorted(p.name for p in ckpt.glob("step-*")) == [f"step-{step:06d}"]
    status = json.loads((ckpt / "status.json").read_text())
    assert (status["state"], status["step"], status["last_checkpoint"]["step"]) == (
        "stopped",
        step,
        step,
    )
    assert status["exit_code"] == 0
    stopped_by = signal.Signals(signum).name
    assert (
        status["reason"]
        == f"stopped by {stopped_by} at step {step}; final checkpoint step-{step:06d}"
    )

    resumed = run_train(ckpt, "--steps", step + 3, "--checkpoint-interval", 100000)
    assert resumed.returncode == 0, resumed.stdout
    assert f"resumed from checkpoint step-{step:06d} (step {step})" in resumed.stdout


def test_stop_budget_bounds_the_exit_even_when_the_final_save_is_slow(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = run_train(ckpt, "--steps", 5, "--checkpoint-interval", 100)
    assert first.returncode == 0, first.stdout
    child = Trainer(
        ckpt,
        "--steps",
        100000,
        "--checkpoint-interval",
        100000,
        "--stop-budget",
        1,
        "--inject-save-pause",
        60,
        *PACE,
    )
    child.wait_for(r"step 8 loss")
    child.signal(signal.SIGTERM)
    output = child.finish()
    assert child.proc.returncode == 0, output
    assert "stop budget of 1s ran out before the final checkpoint was committed" in output
    assert sorted(p.name for p in ckpt.glob("step-*")) == ["step-000005"]
    status = json.loads((ckpt / "status.json").read_text())
    assert (status["state"], status["exit_code"]) == ("stopped", 0)
    assert status["last_checkpoint"]["name"] == "step-000005", "what is on disk"


def test_corrupt_newest_checkpoint_falls_back_and_says_so(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    assert run_train(ckpt, "--steps", 30, "--checkpoint-interval", 10).returncode == 0
    state = ckpt / "step-000030" / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0x01
    state.write_bytes(bytes(data))
    resumed = run_train(ckpt, "--steps", 40, "--checkpoint-interval", 10)
    assert resumed.returncode == 0, resumed.stdout
    assert "checkpoint step-000030 is invalid (state.pt: crc32 mismatch" in resumed.stdout
    assert "; falling back to step-000020" in resumed.stdout
    assert "resumed from checkpoint step-000020 (step 20)" in resumed.stdout


def test_second_trainer_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = Trainer(ckpt, "--steps", 100000, "--checkpoint-interval", 100000, *PACE)
    try:
        first.wait_for(r"step 2 loss")
        second = run_train(ckpt, "--steps", 10)
        assert second.returncode == 4, second.stdout
        assert (
            f"checkpoint directory {ckpt} is already in use by another writer (pid {first.proc.pid}"
            in second.stdout
        )
    finally:
        first.signal(signal.SIGTERM)
        first.finish()
    assert first.proc.returncode == 0


def test_status_file_and_a_changed_configuration(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    status_file = tmp_path / "status" / "job.json"
    status_file.parent.mkdir()
    done = run_train(ckpt, "--steps", 20, "--checkpoint-interval", 10, "--status-file", status_file)
    assert done.returncode == 0, done.stdout
    status = json.loads(status_file.read_text())
    assert status["schema"] == "unbroken.training/status"
    assert (status["state"], status["step"], status["total_steps"]) == ("finished", 20, 20)
    assert status["last_checkpoint"]["name"] == "step-000020"
    assert status["updated_at"] >= status["started_at"]
    # Beside the status file: the metrics stream (and TensorBoard's event files where the
    # package imports), and no temporary status files.
    written = {"job.json", "metrics.jsonl"}
    if importlib.util.find_spec("tensorboard") is not None:
        written.add("tensorboard")
    assert {p.name for p in status_file.parent.iterdir()} == written

    refused = run_train(ckpt, "--steps", 30, "--hidden", 48)
    assert refused.returncode == 5, refused.stdout
    assert "different configuration (hidden: 32 -> 48)" in refused.stdout
    assert sorted(p.name for p in ckpt.glob("step-*")) == ["step-000010", "step-000020"]
