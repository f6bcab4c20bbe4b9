# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""unbroken_ckpt.metrics: the one-line API, train.py's stream across a kill, TensorBoard."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from runtime_helpers import ROOT, RUNTIME_DIR, Trainer, train_in_process
from unbroken_ckpt import metrics, training_metrics

PACKAGE = RUNTIME_DIR / "unbroken_ckpt"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "UNBROKEN_STATUS_FILE")}
    return {**env, "PYTHONPATH": str(RUNTIME_DIR), "OMP_NUM_THREADS": "1", **extra}


HELPER_DIR = RUNTIME_DIR / "helper"


@pytest.mark.parametrize(
    "link",
    [
        PACKAGE / "checkpoint_manifest.py",
        PACKAGE / "training_metrics.py",
        PACKAGE / "training_status_file.py",
        HELPER_DIR / "training_status_file.py",
        HELPER_DIR / "training_job_files.py",
    ],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_the_runtime_links_the_format_files_never_copies_them(link: Path) -> None:
    name = link.name
    assert link.is_symlink(), f"{link} must stay a symlink to plugins/module_utils/{name}"
    target = os.readlink(link)
    assert not os.path.isabs(target), "a relative link survives a moved checkout and the tarball"
    assert link.resolve() == ROOT / "plugins" / "module_utils" / name


def test_the_runtime_imports_without_ansible() -> None:
    check = textwrap.dedent(
        """
        import importlib.abc, sys

        class NoAnsible(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "ansible" or name.startswith(("ansible.", "ansible_collections")):
                    raise ImportError("Ansible is not installed in a training container")
                return None

        sys.meta_path.insert(0, NoAnsible())
        import unbroken_ckpt
        from unbroken_ckpt import metrics, training_metrics, checkpoint_manifest, status
        from unbroken_ckpt import training_status_file
        assert status.read_status is training_status_file.read_status
        assert not [m for m in sys.modules if m.startswith("ansible")]
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", check],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr


def test_the_helper_runs_with_the_format_file_installed_beside_it(tmp_path: Path) -> None:
    """The layout the trainer role installs: the helper and the format files copied (not
    linked) into one directory, the helper without its .py suffix, run by a Python without
    Ansible."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "unbroken-trainer-helper"
    helper.write_bytes((HELPER_DIR / "unbroken_trainer_helper.py").read_bytes())
    formats = sorted(p.name for p in HELPER_DIR.glob("*.py") if p.is_symlink())
    assert formats == ["training_job_files.py", "training_status_file.py"]
    for name in formats:
        (bin_dir / name).write_bytes((HELPER_DIR / name).read_bytes())
    jobs = tmp_path / "config" / "jobs"
    jobs.mkdir(parents=True)
    job = {
        "name": "demo",
        "container": "unbroken-job-demo",
        "image": "img@sha256:abc",
        "command": ["python3", "train.py"],
        "user": "1000:1000",
        "unit": "unbroken-job-demo.service",
        "checkpoint_dir": str(tmp_path / "ckpt"),
        "status_file": str(tmp_path / "ckpt" / "status.json"),
        "state_dir": str(tmp_path / "state"),
    }
    (jobs / "demo.json").write_text(json.dumps(job))
    argv = [sys.executable, "-S", str(helper), "--config-dir", str(tmp_path / "config")]

    def show_command() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*argv, "show-command", "demo"],
            cwd=tmp_path,
            env={"PATH": os.environ.get("PATH", "")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    result = show_command()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["docker", "run"]
    assert "unbroken-job-demo" in result.stdout
    # Without a format file beside it the helper cannot start: it really imports each.
    for name in formats:
        kept = (bin_dir / name).read_bytes()
        (bin_dir / name).unlink()
        missing = show_command()
        assert missing.returncode != 0
        assert name[: -len(".py")] in missing.stderr
        (bin_dir / name).write_bytes(kept)


USER_SCRIPT = """
import os, torch
from unbroken_ckpt import metrics

m = metrics.open()
for step in range(1, 21):
    loss = torch.tensor(1.0 / step)
    m.log(step, loss=loss, lr=1e-3, accuracy=step / 20, **{"eval/perplexity": 2.0})
print(m.path, m.enabled)
"""


def test_a_users_script_logs_with_one_line(tmp_path: Path) -> None:
    script = tmp_path / "my_train.py"
    script.write_text(USER_SCRIPT)
    status = tmp_path / "ckpt" / "status.json"
    env = _env(UNBROKEN_STATUS_FILE=str(status))
    result = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(status.parent / "metrics.jsonl"), "True"]
    history = training_metrics.read_metrics(str(status.parent))
    assert [r["step"] for r in history.records] == list(range(1, 21))
    assert history.records[3]["loss"] == pytest.approx(0.25)
    assert history.scalars == ["accuracy", "eval/perplexity", "loss", "lr"]


def test_other_torchrun_ranks_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNBROKEN_STATUS_FILE", str(tmp_path / "ckpt" / "status.json"))
    monkeypatch.setenv("RANK", "1")
    m = metrics.open()
    m.start(0)
    m.log(1, loss=1.0)
    m.end(1, "finished")
    m.close()
    assert not m.enabled and m.path is None
    assert not (tmp_path / "ckpt").exists()
    monkeypatch.setenv("RANK", "0")
    assert metrics.open().path == str(tmp_path / "ckpt" / "metrics.jsonl")


STEPS, INTERVAL = 60, 10


def _scalars(directory: Path) -> list[tuple[int, float, float]]:
    history = training_metrics.read_metrics(str(directory))
    return [(r["step"], r["loss"], r["lr"]) for r in history.records]


def test_train_py_killed_and_resumed_has_every_step_once_as_in_a_straight_run(
    tmp_path: Path,
) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # A metrics record every step, so the kill below shows in the stream wherever it lands.
    args = ["--steps", STEPS, "--checkpoint-interval", INTERVAL, "--seed", 5]
    args += ["--status-interval", 1]
    assert train_in_process(straight, *args) == 0

    # Killed between step-000030 and step-000040: the slow steps leave the kill 0.7 s to land
    # before step-000040 commits, even on a loaded machine (at 0.01 s a step, the kill at
    # step 36 sometimes came after that commit, and then no step was redone).
    child = Trainer(killed, *args, "--step-sleep", "0.1")
    child.wait_for(r"step (\d+) loss", lambda m: int(m.group(1)) >= 33)
    child.signal(signal.SIGKILL)
    child.finish()
    before = _scalars(killed)
    assert before[-1][0] >= 32
    assert train_in_process(killed, *args) == 0  # resumes

    history = training_metrics.read_metrics(str(killed))
    resumed = history.runs[-1]["step"]
    assert resumed < before[-1][0]  # the killed run logged steps that were then redone
    assert _scalars(killed) == _scalars(straight)  # each step once, bit-exact values
    assert history.dropped_records > 0
    runs = history.runs
    assert [(r["cause"], r["step"], r["previous_end"]) for r in runs] == [
        ("start", 0, None),
        ("resume", resumed, training_metrics.INTERRUPTED),
    ]
    assert runs[1]["checkpoint"] == f"step-{resumed:06d}"
    committed = [c["step"] for c in history.checkpoints if not c["abandoned"]]
    assert committed[-1] == STEPS and resumed in committed
    assert history.events[-1]["kind"] == "end" and history.events[-1]["state"] == "finished"


def test_tensorboard_is_silently_off_when_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    m = metrics.open(str(tmp_path))
    assert not m.tensorboard
    m.start(0)
    m.log(1, loss=0.5)
    m.close()
    assert not (tmp_path / metrics.TENSORBOARD_DIR).exists()
    assert [r["step"] for r in training_metrics.read_metrics(str(tmp_path)).records] == [1]
    with pytest.raises(metrics.MetricsError, match="tensorboard"):
        metrics.open(str(tmp_path), tensorboard=True)


def test_tensorboard_event_files_hide_the_abandoned_steps_on_resume(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = metrics.open(str(tmp_path), tensorboard=True)
    first.start(0)
    for step in range(1, 31):
        first.log(step, loss=100.0 + step)
    first.close()  # a killed run's events reach the disk within flush_secs; close is sooner
    second = metrics.open(str(tmp_path), tensorboard=True)
    second.start(20)
    for step in range(21, 26):
        second.log(step, loss=200.0 + step)
    second.close()
    events = EventAccumulator(str(tmp_path / metrics.TENSORBOARD_DIR))
    events.Reload()
    points = [(e.step, e.value) for e in events.Scalars("loss")]
    assert [step for step, _value in points] == list(range(1, 26))
    assert [v for s, v in points if s > 20] == [200.0 + s for s in range(21, 26)]


def test_a_failed_write_is_logged_once_and_training_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "metrics.jsonl").mkdir()  # the stream cannot be opened
    m = metrics.open(str(tmp_path), tensorboard=False)
    with caplog.at_level(logging.WARNING, logger="unbroken_ckpt.metrics"):
        for step in range(1, 4):
            m.log(step, loss=1.0)
    assert [r.getMessage() for r in caplog.records if "metrics" in r.getMessage()] == [
        caplog.records[0].getMessage()
    ]
    assert "could not write the log record" in caplog.records[0].getMessage()
    with pytest.raises(metrics.MetricsError):
        m.log(4, loss="high")  # bad input is still refused loudly


def test_an_exception_in_the_with_block_is_recorded_as_a_failed_end(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), metrics.open(str(tmp_path), tensorboard=False) as m:
        m.start(0)
        m.log(3, loss=1.0)
        raise RuntimeError("CUDA error: an illegal memory access")
    end = training_metrics.read_metrics(str(tmp_path)).events[-1]
    assert (end["kind"], end["step"], end["state"]) == ("end", 3, "failed")
    assert end["reason"] == "RuntimeError: CUDA error: an illegal memory access"
