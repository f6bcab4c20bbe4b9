# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Jinja tests for image references, so role validation uses the module's own grammar.

One implementation: ``module_utils/image_reference.py``, which the docker_image_digest
module runs on the host. Documentation: the YAML files next to this one, one per test.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from ansible_collections.unbroken.training.plugins.module_utils.image_reference import (
    is_digest,
    is_tag,
    repository_problem,
)


def image_repository(value: Any) -> bool:
    return isinstance(value, str) and repository_problem(value) is None


def image_tag(value: Any) -> bool:
    return isinstance(value, str) and is_tag(value)


def image_digest(value: Any) -> bool:
    return isinstance(value, str) and is_digest(value)


class TestModule:
    """Image reference tests."""

    def tests(self) -> Dict[str, Callable[[Any], bool]]:
        return {
            "image_repository": image_repository,
            "image_tag": image_tag,
            "image_digest": image_digest,
        }
