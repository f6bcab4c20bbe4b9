# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests for the lines docker_pull_progress prints while a pull runs."""

from __future__ import annotations

# conftest makes ansible_collections.unbroken.training importable from a plain checkout.
from ansible_collections.unbroken.training.plugins.action import docker_pull_progress as p

GIB = 1024**3
STATE = {
    "target": "nvcr.io/nvidia/pytorch@sha256:abc",
    "attempt": 1,
    "layers_done": 17,
    "layers_total": 41,
    "bytes_done": 3 * GIB,
    "bytes_total": 10 * GIB,
    "elapsed_s": 212.4,
}


def test_announce_names_the_size_and_the_layers():
    line = p.announce(STATE)
    assert line == "pulling nvcr.io/nvidia/pytorch@sha256:abc: 10.0 GiB compressed, 41 layers"


def test_progress_line_has_layers_bytes_percent_and_time():
    line = p.describe(STATE)
    assert line == (
        "pulling nvcr.io/nvidia/pytorch@sha256:abc: 17/41 layers, 3.0 GiB of 10.0 GiB (30 %), "
        "212.4 s"
    )


def test_retry_and_unknown_size_are_said():
    line = p.describe({**STATE, "attempt": 2, "bytes_total": 0, "bytes_done": 0})
    assert "size unknown" in line
    assert line.endswith(", attempt 2")
    assert p.announce({**STATE, "bytes_total": 0}).endswith("size unknown, 41 layers")
