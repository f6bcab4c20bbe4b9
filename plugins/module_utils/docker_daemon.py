# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read, merge and safely write Docker's daemon.json; find options that the
service unit also passes to dockerd as flags (dockerd refuses to start then).

Standard library only: this runs on managed hosts (Python >= 3.8).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

PATH_SEPARATOR = "/"

# daemon.json keys whose dockerd flag is not simply "--<key>".
_IRREGULAR_FLAGS: Dict[str, Tuple[str, ...]] = {
    "hosts": ("-H", "--host"),
    "runtimes": ("--add-runtime",),
    "log-opts": ("--log-opt",),
    "storage-driver": ("-s", "--storage-driver"),
    "storage-opts": ("--storage-opt",),
    "data-root": ("--data-root", "-g", "--graph"),
    "exec-opts": ("--exec-opt",),
    "insecure-registries": ("--insecure-registry",),
    "registry-mirrors": ("--registry-mirror",),
    "labels": ("--label",),
    "dns-opts": ("--dns-opt",),
    "default-ulimits": ("--default-ulimit",),
    "debug": ("-D", "--debug"),
    "group": ("-G", "--group"),
    "log-level": ("-l", "--log-level"),
    "authorization-plugins": ("--authorization-plugin",),
    "allow-nondistributable-artifacts": ("--allow-nondistributable-artifacts",),
    "node-generic-resources": ("--node-generic-resource",),
    "features": ("--feature",),
}

_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class DaemonConfigError(Exception):
    """daemon.json cannot be used as it is (not JSON, not an object)."""


def parse_config(text: str, path: str = "daemon.json") -> Dict[str, Any]:
    """Parse daemon.json text; an empty file counts as an empty object (as dockerd does)."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", "?")
        col = getattr(exc, "colno", "?")
        msg = getattr(exc, "msg", str(exc))
        raise DaemonConfigError(
            f"{path} is not valid JSON (line {line}, column {col}: {msg})"
        ) from exc
    if not isinstance(data, dict):
        raise DaemonConfigError(
            f"{path} must hold a JSON object at the top level, found {type(data).__name__}"
        )
    return data


def dump_config(config: Mapping[str, Any]) -> str:
    """The text written to daemon.json: two-space indent, key order kept, final newline."""
    return json.dumps(config, indent=2) + "\n"


def deep_merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> Dict[str, Any]:
    """Return base with patch merged in: objects merge key by key, anything else is replaced."""
    result: Dict[str, Any] = dict(base)
    for key, value in patch.items():
        current = result.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            result[key] = deep_merge(current, value)
        else:
            result[key] = value
    return result


def split_path(path: str) -> List[str]:
    """'runtimes/nvidia' -> ['runtimes', 'nvidia'] (daemon.json keys never hold '/')."""
    parts = path.split(PATH_SEPARATOR)
    if not path or any(not part for part in parts):
        raise ValueError(f"invalid key path {path!r}: use 'key' or 'parent/child'")
    return parts


def _parent_of(config: Dict[str, Any], parts: Sequence[str]) -> Optional[Dict[str, Any]]:
    node: Any = config
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node if isinstance(node, dict) else None


def remove_path(config: Dict[str, Any], path: str) -> bool:
    """Delete one key path in place; True when something was removed."""
    parts = split_path(path)
    parent = _parent_of(config, parts)
    if parent is None or parts[-1] not in parent:
        return False
    del parent[parts[-1]]
    return True


def get_path(config: Mapping[str, Any], path: str) -> Tuple[bool, Any]:
    """(found, value) for a key path."""
    node: Any = config
    for part in split_path(path):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def apply_changes(
    config: Mapping[str, Any],
    merge: Mapping[str, Any],
    remove: Sequence[str],
    remove_if_equal: Mapping[str, Any],
) -> Dict[str, Any]:
    """The desired configuration: removals first, then the merge (a fresh object)."""
    result = json.loads(json.dumps(config))
    for path in remove:
        remove_path(result, path)
    for path, expected in remove_if_equal.items():
        found, value = get_path(result, path)
        if found and value == expected:
            remove_path(result, path)
    return deep_merge(result, merge)


def flags_for_key(key: str) -> Tuple[str, ...]:
    """Every dockerd command-line spelling of a daemon.json key."""
    return _IRREGULAR_FLAGS.get(key, ("--" + key,))


def parse_exec_start(value: str) -> List[List[str]]:
    """argv lists from `systemctl show -p ExecStart` ('{ path=... ; argv[]=... ; ... }')."""
    commands = []
    for match in re.finditer(r"argv\[\]=(.*?) ; ", value):
        try:
            commands.append(shlex.split(match.group(1)))
        except ValueError:
            commands.append(match.group(1).split())
    return commands


def parse_environment_file(text: str) -> Dict[str, str]:
    """KEY=value lines as systemd reads an EnvironmentFile (comments and blanks skipped)."""
    env: Dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export ") :].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


def expand_argv(argv: Sequence[str], env: Mapping[str, str]) -> List[str]:
    """Expand $VAR / ${VAR} the way systemd does: a bare $VAR word splits on spaces."""
    result: List[str] = []
    for word in argv:
        bare = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if bare:
            result.extend(env.get(bare.group(1), "").split())
            continue
        result.append(_VAR_RE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), word))
    return result


def find_flag_conflicts(config: Mapping[str, Any], argv: Sequence[str]) -> List[Dict[str, str]]:
    """daemon.json keys that dockerd's argv also sets; dockerd refuses to start on these."""
    given: Dict[str, str] = {}
    for word in argv[1:]:
        if word.startswith("-"):
            given.setdefault(word.split("=", 1)[0], word)
    conflicts = []
    for key in config:
        for flag in flags_for_key(key):
            if flag in given:
                conflicts.append({"key": key, "flag": given[flag]})
                break
    return conflicts


def write_atomically(path: str, text: str, mode: int, uid: int = -1, gid: int = -1) -> None:
    """Write text to path so that readers see the old or the new file, never a torn one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=".daemon.json.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_path, mode)
        if uid != -1 or gid != -1:
            os.chown(tmp_path, uid, gid)
        os.rename(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
