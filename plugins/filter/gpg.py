# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Filters over what ``gpg --with-colons`` printed, parsed in module_utils (tested there).

Documentation: the YAML file next to this one.
"""

from __future__ import annotations

from typing import Any, Dict, List

from ansible.errors import AnsibleFilterError
from ansible_collections.unbroken.training.plugins.module_utils.gpg_colons import primary_keys


def gpg_primary_keys(text: Any) -> List[Dict[str, Any]]:
    if not isinstance(text, str):
        raise AnsibleFilterError(
            "gpg_primary_keys expects the text gpg --with-colons printed, "
            f"got {type(text).__name__}"
        )
    return primary_keys(text)


class FilterModule:
    def filters(self) -> Dict[str, Any]:
        return {"gpg_primary_keys": gpg_primary_keys}
