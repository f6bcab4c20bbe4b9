# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Filters about OpenSSH versions and times, for sshd instances no module can run beside.

``sshd_keepalive_dropin`` is the sshd_keepalive role's public reuse interface: the text of
its sshd drop-in, for another sshd (a container image) or any other writer.

The sshd of a container image is only reachable through ``docker run``; these filters
read what it printed with the same code the ``sshd_config_info`` module uses on hosts,
and role variables in sshd's time format (``1m30s``) are read with that code too.
Documentation: the YAML files next to this one, one per filter.
"""

from __future__ import annotations

from typing import Any, Dict

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible_collections.unbroken.training.plugins.module_utils.sshd_config import (
    ConfigError,
    client_alive_probe_factor,
    parse_seconds,
    parse_version,
    probe_interval,
    server_dropin,
)

_RAISE = object()


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


def openssh_seconds(value: Any, invalid: Any = _RAISE) -> Any:
    """Seconds of an OpenSSH time (``90``, ``1m``, ``1m30s``), or ``invalid`` when given."""
    try:
        return parse_seconds(value)
    except ConfigError as exc:
        if invalid is not _RAISE:
            return invalid
        raise AnsibleFilterError(f"openssh_seconds: {exc}") from exc


def openssh_probe_interval(requested: Any, factor: Any) -> int:
    """The ClientAliveInterval to write for ``requested`` on an sshd with probe ``factor``."""
    try:
        return probe_interval(requested, int(factor))
    except (ConfigError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"openssh_probe_interval: {exc}") from exc


def sshd_keepalive_dropin(
    interval: Any,
    count_max: Any,
    idle_timeout: Any,
    tcp_keepalive: Any = True,
    factor: Any = 1,
    reason: Any = "",
) -> str:
    """The sshd keepalive drop-in text the sshd_keepalive role writes, for any sshd."""
    try:
        return server_dropin(
            interval,
            int(count_max),
            int(idle_timeout),
            tcp_keepalive=boolean(tcp_keepalive, strict=True),
            factor=int(factor),
            reason="" if reason is None else str(reason),
        )
    except (ConfigError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"sshd_keepalive_dropin: {exc}") from exc


class FilterModule:
    """OpenSSH version and time filters."""

    def filters(self) -> Dict[str, Any]:
        return {
            "openssh_probe_factor": openssh_probe_factor,
            "openssh_seconds": openssh_seconds,
            "openssh_probe_interval": openssh_probe_interval,
            "sshd_keepalive_dropin": sshd_keepalive_dropin,
        }
