# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Set-up shared by all unit tests, done once before any test module is imported.

1. ``ansible_collections.unbroken.training`` is made importable from a plain checkout (not
   only from an ``ansible_collections/unbroken/training`` path), so tests import modules by
   their real FQCN.
2. Import order: torch's compiler stack before Ansible.

ansible-core 2.19 replaces ``sys.intern`` with a patch object when its module_utils are
imported; ``torch._dynamo`` (imported lazily, e.g. by ``torch.optim``) then fails with
"substitute_in_graph expects a function" in the same process.  ``pytest tests/unit``
collects the module tests (which import Ansible) before the training-runtime tests, so
load torch's side first when torch is installed.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _collections_root() -> Path:
    """A directory holding ansible_collections/unbroken/training -> this checkout."""
    if REPO_ROOT.parent.name == "unbroken" and REPO_ROOT.parents[1].name == "ansible_collections":
        return REPO_ROOT.parents[2]
    cached = REPO_ROOT / ".cache" / "collections"
    if (cached / "ansible_collections" / "unbroken" / "training").exists():
        return cached
    root = Path(tempfile.mkdtemp(prefix="unbroken-collections-"))
    (root / "ansible_collections" / "unbroken").mkdir(parents=True)
    (root / "ansible_collections" / "unbroken" / "training").symlink_to(REPO_ROOT)
    return root


if not any((Path(p) / "ansible_collections" / "unbroken").exists() for p in sys.path if p):
    sys.path.insert(0, str(_collections_root()))

with contextlib.suppress(ImportError):
    import torch._dynamo  # noqa: F401  # pylint: disable=unused-import
