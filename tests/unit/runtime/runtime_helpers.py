# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Helpers shared by the runtime tests: run the reference script, compare checkpoints."""

from __future__ import annotations

import importlib.util
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[3]
RUNTIME_DIR = ROOT / "runtime"
TRAIN = RUNTIME_DIR / "train.py"
# Tiny and single-threaded: the suite shares two cores with other work.
SMALL = ["--threads", "1", "--samples", "512", "--batch-size", "16", "--hidden", "32"]
SMALL += ["--log-interval", "1", "--status-interval", "5"]
WAIT = 120.0  # upper bound for a tiny run, not a performance assertion


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(RUNTIME_DIR)
    return env


def command(ckpt_dir: Path, *extra: object) -> list[str]:
    return [sys.executable, str(TRAIN), "--checkpoint-dir", str(ckpt_dir), *SMALL, *map(str, extra)]


def run_to_end(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a command (the script, or torchrun with it) to completion; return its output."""
    return subprocess.run(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        timeout=WAIT,
        check=False,
    )


def run_train(ckpt_dir: Path, *extra: object) -> subprocess.CompletedProcess[str]:
    """Run the reference script to completion and return its output."""
    return run_to_end(command(ckpt_dir, *extra))


class Trainer:
    """The reference script as a child process whose log lines can be awaited."""

    def __init__(self, ckpt_dir: Path, *extra: object) -> None:
        self.proc = subprocess.Popen(
            command(ckpt_dir, *extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, accept: Any = None) -> re.Match[str]:
        """Return the first new log line matching ``pattern`` (and ``accept``)."""
        deadline = time.monotonic() + WAIT
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"trainer exited before {pattern!r}:\n{self.output()}")
            self.lines.append(line)
            match = regex.search(line)
            if match and (accept is None or accept(match)):
                return match
        self.stop()
        raise AssertionError(f"no {pattern!r} within {WAIT}s:\n{self.output()}")

    def wait_for_path(self, directory: Path, glob: str) -> Path:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            found = sorted(directory.glob(glob)) if directory.exists() else []
            if found:
                return found[0]
            if self.proc.poll() is not None:
                raise AssertionError(f"trainer exited before {glob} appeared:\n{self.finish()}")
            time.sleep(0.005)
        self.stop()
        raise AssertionError(f"{glob} never appeared in {directory}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self) -> str:
        """Wait for exit and return the whole output."""
        self.proc.wait(timeout=WAIT)
        self._reader.join(timeout=WAIT)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return self.output()

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=WAIT)


def train_in_process(ckpt_dir: Path, *extra: object) -> int:
    """Run the reference script's main() in this process (saves a torch import)."""
    spec = importlib.util.spec_from_file_location("unbroken_reference_train", TRAIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return int(module.main(command(ckpt_dir, *extra)[2:]))


def load_payload(state_file: Path) -> dict[str, Any]:
    from unbroken_ckpt import load_state_file

    return load_state_file(str(state_file))


def assert_bitwise_equal(a: Any, b: Any, where: str = "state") -> None:
    """Fail unless two nested state structures are identical, tensors bit for bit."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: dtype/shape differ"
        assert a.flatten().view(torch.uint8).equal(b.flatten().view(torch.uint8)), (
            f"{where}: bits differ"
        )
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a, key=str)} != {sorted(b, key=str)}"
        for key in a:
            assert_bitwise_equal(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for index, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{where}[{index}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
