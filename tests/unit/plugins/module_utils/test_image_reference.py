# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests for image_reference: Docker's reference grammar and how a repository resolves."""

from __future__ import annotations

import pytest

# conftest makes ansible_collections.unbroken.training importable from a plain checkout.
from ansible_collections.unbroken.training.plugins.module_utils import image_reference as r


@pytest.mark.parametrize(
    ("repository", "registry", "path", "familiar"),
    [
        ("pytorch/pytorch", "docker.io", "pytorch/pytorch", "pytorch/pytorch"),
        ("ubuntu", "docker.io", "library/ubuntu", "ubuntu"),
        ("nvcr.io/nvidia/pytorch", "nvcr.io", "nvidia/pytorch", "nvcr.io/nvidia/pytorch"),
        ("reg:5000/a/b", "reg:5000", "a/b", "reg:5000/a/b"),
        ("localhost/x", "localhost", "x", "localhost/x"),
    ],
)
def test_reference_resolves_like_docker(repository, registry, path, familiar):
    ref = r.Reference(repository)
    assert (ref.registry, ref.path, ref.familiar) == (registry, path, familiar)


@pytest.mark.parametrize("bad", ["PyTorch/pytorch", "pytorch/pytorch:2.1", "a//b", "x@sha256:1"])
def test_invalid_repository_is_refused(bad):
    with pytest.raises(r.ImageError, match="not a valid image repository"):
        r.Reference(bad)


def test_docker_hub_uses_its_api_host_and_auth_key():
    ref = r.Reference("pytorch/pytorch")
    assert ref.api_host == "registry-1.docker.io"
    assert ref.auth_key == "https://index.docker.io/v1/"


@pytest.mark.parametrize(
    "good", ["pytorch/pytorch", "nvcr.io/nvidia/pytorch", "Reg.Example:5000/a/b"]
)
def test_repository_problem_is_none_for_valid_repositories(good):
    assert r.repository_problem(good) is None


def test_upper_case_path_names_the_rule():
    problem = r.repository_problem("Foo/bar")
    assert problem is not None and "path components must be lower case" in problem


@pytest.mark.parametrize(
    ("value", "tag", "digest"),
    [("v1.0", True, False), (".hidden", False, False), ("sha256:" + "a" * 64, False, True)],
)
def test_tag_and_digest_shapes(value, tag, digest):
    assert (r.is_tag(value), r.is_digest(value)) == (tag, digest)
