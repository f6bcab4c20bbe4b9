# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests for docker_cli: pulls with retries, credentials and progress."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

# conftest makes ansible_collections.unbroken.training importable from a plain checkout.
from ansible_collections.unbroken.training.plugins.module_utils import docker_cli as c
from ansible_collections.unbroken.training.plugins.module_utils import image_reference as r
from ansible_collections.unbroken.training.plugins.module_utils.image_registry import Layer

DIGEST = "sha256:" + "a" * 64


def no_run(args: list[str], **_: Any) -> tuple[int, str, str]:
    raise AssertionError(f"only streamed pulls expected here: {args}")


class FakeDocker:
    """`docker pull` as streamed: scripted (rc, stdout, stderr) per attempt."""

    def __init__(self) -> None:
        self.pull_results: list[tuple[int, str, str]] = []
        self.calls: list[list[str]] = []
        self.during: Callable[[str], None] | None = None

    def __call__(self, args: list[str], on_line: Callable[[str], None]) -> tuple[int, str]:
        args = args[1:]
        self.calls.append(args)
        if args[:1] == ["--config"]:
            config = os.path.join(args[1], "config.json")
            with open(config) as handle:
                self.seen_config = json.load(handle)
            self.seen_mode = os.stat(config).st_mode & 0o777
        rc, out, err = self.pull_results.pop(0) if self.pull_results else (0, "", "")
        for line in out.splitlines():
            on_line(line)
            if self.during:
                self.during(line)
        return rc, err


def test_transient_failures_are_retried_with_exponential_backoff():
    docker = FakeDocker()
    docker.pull_results = [(1, "", "net/http: TLS handshake timeout")] * 3 + [(0, "", "")]
    sleeps: list[float] = []
    ref = r.Reference("reg.example:5000/ml/pytorch")
    attempts = c.pull(
        c.Docker(no_run, "docker", docker), ref, "x@" + DIGEST, None, 5, (2, 5), sleeps.append
    )
    assert attempts == 4
    assert sleeps == [2, 4, 5]


def test_retries_are_bounded():
    docker = FakeDocker()
    docker.pull_results = [(1, "", "connection reset by peer")] * 3
    ref = r.Reference("reg.example:5000/ml/pytorch")
    with pytest.raises(r.ImageError, match="after 3 attempts"):
        c.pull(c.Docker(no_run, "docker", docker), ref, "x", None, 2, (1, 1), lambda _s: None)


def test_permanent_failures_are_not_retried():
    docker = FakeDocker()
    docker.pull_results = [(1, "", "Error response from daemon: manifest unknown")]
    sleeps: list[float] = []
    ref = r.Reference("reg.example:5000/ml/pytorch")
    with pytest.raises(r.ImageError, match="manifest unknown"):
        c.pull(c.Docker(no_run, "docker", docker), ref, "x", None, 5, (1, 1), sleeps.append)
    assert sleeps == []


def test_credentials_go_to_a_private_temporary_config_and_never_into_messages():
    docker = FakeDocker()
    docker.pull_results = [(1, "", "unauthorized: bad password hunter2")]
    ref = r.Reference("reg.example:5000/ml/pytorch")
    with pytest.raises(r.ImageError) as err:
        c.pull(c.Docker(no_run, "docker", docker), ref, "x", ("user", "hunter2"), 0, (1, 1), print)
    assert "hunter2" not in str(err.value)
    assert docker.seen_mode == 0o600
    assert list(docker.seen_config["auths"]) == ["reg.example:5000"]
    config_dir = docker.calls[0][1]
    assert not os.path.exists(config_dir)


# --- progress ------------------------------------------------------------------------------

LAYERS = [Layer("sha256:" + "1" * 64, 3000), Layer("sha256:" + "2" * 64, 1000)]
PULL_OUTPUT = """sha256:aaaa: Pulling from ml/pytorch
111111111111: Pulling fs layer
222222222222: Pulling fs layer
222222222222: Verifying Checksum
222222222222: Download complete
111111111111: Download complete
111111111111: Pull complete
222222222222: Pull complete
Digest: sha256:aaaa
Status: Downloaded newer image for reg.example:5000/ml/pytorch@sha256:aaaa
"""


def test_progress_counts_layers_and_bytes_from_the_manifest_sizes():
    reports: list[dict[str, Any]] = []
    progress = c.PullProgress("x", LAYERS, reports.append, clock=lambda: 0.0)
    for line in PULL_OUTPUT.splitlines():
        progress.feed(line)
    done = [(s["layers_done"], s["bytes_done"]) for s in reports]
    assert done[0] == (0, 0)
    assert (1, 1000) in done
    assert done[-1] == (2, 4000)
    assert reports[-1]["bytes_total"] == 4000 and reports[-1]["layers_total"] == 2


def test_progress_without_a_manifest_still_counts_layers():
    reports: list[dict[str, Any]] = []
    progress = c.PullProgress("x", [], reports.append)
    for line in PULL_OUTPUT.splitlines():
        progress.feed(line)
    assert reports[-1]["layers_done"] == 2
    assert reports[-1]["layers_total"] == 2
    assert reports[-1]["bytes_total"] == 0


def test_progress_file_grows_while_the_pull_runs_and_holds_no_secret(tmp_path):
    path = str(tmp_path / "progress.json")
    docker = FakeDocker()
    docker.pull_results = [(0, PULL_OUTPUT, "")]
    seen: list[dict[str, Any]] = []
    docker.during = lambda _line: seen.append(json.loads(Path(path).read_text()))
    progress = c.PullProgress("x", LAYERS, lambda state: c.write_progress(path, state))
    ref = r.Reference("reg.example:5000/ml/pytorch")
    c.pull(
        c.Docker(no_run, "docker", docker), ref, "x", ("u", "s3cret"), 0, (1, 1), print, progress
    )
    assert seen[0]["layers_done"] == 0
    assert seen[-1]["layers_done"] == 2 and seen[-1]["bytes_done"] == 4000
    assert all("s3cret" not in json.dumps(state) for state in seen)
    assert os.listdir(tmp_path) == ["progress.json"]


def test_stream_command_hands_over_each_line_and_keeps_stderr_apart():
    lines: list[str] = []
    rc, err = c.stream_command(
        ["sh", "-c", "echo one; echo oops >&2; echo two; exit 3"], lines.append
    )
    assert (rc, lines, err.strip()) == (3, ["one", "two"], "oops")
