# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Filters about OpenSSH versions, for sshd instances no module can run beside.

The sshd of a container image is only reachable through ``docker run``; these filters
read what it printed with the same code the ``sshd_config_info`` module uses on hosts.
Documentation: the YAML files next to this one, one per filter.
"""

from __future__ import annotations

from typing import Any, Dict

from ansible.errors import AnsibleFilterError
from ansible_collections.unbroken.training.plugins.module_utils.sshd_config import (
    client_alive_probe_factor,
    parse_version,
)


def openssh_probe_factor(text: Any) -> int:
    """How many ClientAliveIntervals the sshd that printed ``text`` (``sshd -V``) waits."""
    if not isinstance(text, str):
        raise AnsibleFilterError(
            f"openssh_probe_factor expects the text sshd -V printed, got {type(text).__name__}"
        )
    version = parse_version(text)
    if version is None:
        raise AnsibleFilterError(f"openssh_probe_factor found no OpenSSH version in {text[:200]!r}")
    return client_alive_probe_factor(version)


class FilterModule:
    """OpenSSH version filters."""

    def filters(self) -> Dict[str, Any]:
        return {"openssh_probe_factor": openssh_probe_factor}
