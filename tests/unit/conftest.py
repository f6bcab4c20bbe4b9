# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Import order shared by all unit tests: torch's compiler stack before Ansible.

ansible-core 2.19 replaces ``sys.intern`` with a patch object when its module_utils are
imported; ``torch._dynamo`` (imported lazily, e.g. by ``torch.optim``) then fails with
"substitute_in_graph expects a function" in the same process.  ``pytest tests/unit``
collects the module tests (which import Ansible) before the training-runtime tests, so
load torch's side first when torch is installed.
"""

from __future__ import annotations

import contextlib

with contextlib.suppress(ImportError):
    import torch._dynamo  # noqa: F401  # pylint: disable=unused-import
