# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests for the image_* Jinja tests: the grammar the docker_image_digest module uses."""

from __future__ import annotations

import pytest

# conftest makes ansible_collections.unbroken.training importable from a plain checkout.
from ansible_collections.unbroken.training.plugins.test import image_reference as t

DIGEST = "sha256:" + "0" * 64


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("image_repository", "pytorch/pytorch", True),
        ("image_repository", "nvcr.io/nvidia/pytorch", True),
        ("image_repository", "reg:5000/ml/pytorch", True),
        ("image_repository", "PyTorch/pytorch", False),
        ("image_repository", "pytorch/pytorch:2.1", False),
        ("image_repository", "a//b", False),
        ("image_repository", 42, False),
        ("image_tag", "2.13.0-cuda12.6", True),
        ("image_tag", "-x", False),
        ("image_tag", "a" * 129, False),
        ("image_digest", DIGEST, True),
        ("image_digest", DIGEST.upper(), False),
        ("image_digest", "sha256:abc", False),
    ],
)
def test_image_reference_tests(name, value, expected):
    assert t.TestModule().tests()[name](value) is expected
