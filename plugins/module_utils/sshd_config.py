# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Parse OpenSSH configuration: ``sshd -T`` / ``ssh -G`` dumps and the files behind them.

OpenSSH takes the *first* value it reads for most keywords, so a line in a file
that sorts before ours, or a line in the main file above its ``Include``, silently
wins. ``sshd -T`` tells what is in force but not why; :func:`walk_config`
re-reads the files in OpenSSH's order so a caller can name the file and line
that sets a keyword first.

Standard library only, Python 3.8 syntax: this runs on managed hosts.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Union

EffectiveValue = Union[str, List[str]]

# Keys ``sshd -T -C`` understands (sshd(8), "-C connection_spec").
CONNECTION_KEYS = ("user", "host", "addr", "laddr", "lport", "rdomain")

_LINE_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)(?:\s*=\s*|\s+)(.*?)\s*$")
_SPEC_VALUE_RE = re.compile(r"^[^\s,=\x00-\x1f\x7f]+$")
_MAX_INCLUDE_DEPTH = 16
_VERSION_RE = re.compile(r"\bOpenSSH_(\d+)\.(\d+)")

# OpenSSH 9.2 to 9.4 probe a silent client only every second ClientAliveInterval: after
# ppoll() times out, the whole-second clock reads exactly "last + interval" and the check
# wants it strictly greater. Fixed in 9.5 by upstream commit 9d7193a8 ("correct math for
# ClientAliveInterval that caused the probes to be sent less frequently than configured").
_SLOW_PROBE_VERSIONS = ((9, 2), (9, 4))


class ConfigError(Exception):
    """A configuration could not be read or a request was malformed."""


class Directive(NamedTuple):
    """One keyword line as OpenSSH reads it, in reading order."""

    file: str
    line: int
    keyword: str  # lower case, as ``sshd -T`` prints it
    value: str
    conditional: bool  # inside a Match/Host block that may or may not apply


def parse_effective(text: str) -> Dict[str, EffectiveValue]:
    """Turn ``sshd -T`` or ``ssh -G`` output into a dict.

    Keys are lower case. A keyword printed once maps to its value string; a
    keyword printed several times (hostkey, listenaddress, acceptenv, ...) maps
    to the list of its values in output order.
    """
    result: Dict[str, EffectiveValue] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        key, _sep, value = line.partition(" ")
        key = key.lower()
        value = value.strip()
        if key not in result:
            result[key] = value
            continue
        previous = result[key]
        if isinstance(previous, list):
            previous.append(value)
        else:
            result[key] = [previous, value]
    return result


def parse_version(text: str) -> Optional[str]:
    """Return ``major.minor`` from ``sshd -V`` / ``ssh -V`` output, or None."""
    match = _VERSION_RE.search(text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def client_alive_probe_factor(version: Optional[str]) -> int:
    """How many ClientAliveIntervals this sshd version waits between probes (1 or 2)."""
    if not version:
        return 1
    major, minor = (int(part) for part in version.split(".", 1))
    first, last = _SLOW_PROBE_VERSIONS
    return 2 if first <= (major, minor) <= last else 1


def build_connection_spec(connection: Optional[Dict[str, object]]) -> Optional[str]:
    """Build the ``-C`` argument of ``sshd -T`` from a dict, refusing injection.

    Empty values are dropped; keys keep the canonical order of CONNECTION_KEYS.
    Returns None when nothing is left.
    """
    if not connection:
        return None
    unknown = sorted(set(connection) - set(CONNECTION_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown connection key(s) {', '.join(unknown)}; allowed: {', '.join(CONNECTION_KEYS)}"
        )
    parts = []
    for key in CONNECTION_KEYS:
        value = connection.get(key)
        if value is None or value == "":
            continue
        text = str(value)
        if not _SPEC_VALUE_RE.match(text):
            raise ConfigError(
                f"connection {key}={text!r} must not contain spaces, commas, '='"
                " or control characters"
            )
        parts.append(f"{key}={text}")
    return ",".join(parts) if parts else None


def split_args(value: str) -> List[str]:
    """Split a directive's arguments like OpenSSH: whitespace, double quotes, '#' comments."""
    args: List[str] = []
    current: List[str] = []
    in_token = False
    quoted = False
    for char in value:
        if quoted:
            if char == '"':
                quoted = False
            else:
                current.append(char)
            continue
        if char == '"':
            quoted = True
            in_token = True
        elif char.isspace():
            if in_token:
                args.append("".join(current))
                current, in_token = [], False
        elif char == "#" and not in_token:
            break
        else:
            current.append(char)
            in_token = True
    if in_token:
        args.append("".join(current))
    return args


def host_matches(patterns: Sequence[str], host: str) -> bool:
    """ssh_config ``Host`` semantics: any positive pattern matches and no negated one does."""
    host = host.lower()
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        if fnmatch.fnmatchcase(host, body.lower()):
            if negated:
                return False
            matched = True
    return matched


def _expand_include(pattern: str, base_dir: str) -> List[str]:
    path = _resolve(pattern, base_dir)
    if glob.has_magic(path):
        # glob(3) sorts its results; OpenSSH reads them in that order.
        return sorted(glob.glob(path))
    return [path] if os.path.exists(path) else []


class _Walker:
    """Reads a config file tree in OpenSSH's order (Includes expanded in place)."""

    def __init__(self, base_dir: str, client_host: Optional[str]) -> None:
        self.base_dir = base_dir
        self.client_host = client_host
        self.files: List[str] = []

    def _block_state(self, keyword: str, args: List[str]) -> Optional[bool]:
        """State after a Match/Host line: True applies, False never, None unknown."""
        if keyword == "host":
            if self.client_host is None:
                return None
            return host_matches(args, self.client_host)
        if [a.lower() for a in args] == ["all"]:
            return True
        if self.client_host is not None and len(args) == 2 and args[0].lower() == "host":
            return host_matches(args[1].split(","), self.client_host)
        return None

    def walk(self, path: str, state: Optional[bool], depth: int) -> Iterator[Directive]:
        if depth > _MAX_INCLUDE_DEPTH:
            raise ConfigError(f"{path}: Include nested too deep")
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        self.files.append(path)
        # A Match/Host block opened in a file ends with that file (OpenSSH >= 8.x).
        current = state
        for number, raw in enumerate(lines, start=1):
            if raw.lstrip().startswith("#"):
                continue
            found = _LINE_RE.match(raw)
            if not found:
                continue
            keyword = found.group(1).lower()
            value = found.group(2)
            if keyword in ("match", "host"):
                block = self._block_state(keyword, split_args(value))
                current = _combine(state, block)
                continue
            if current is False:
                continue
            if keyword == "include":
                # Reported too, so callers can tell whether a path would be read.
                yield Directive(path, number, keyword, value, current is not True)
                for pattern in split_args(value):
                    for included in _expand_include(pattern, self.base_dir):
                        yield from self.walk(included, current, depth + 1)
                continue
            yield Directive(path, number, keyword, value, current is not True)


def _combine(outer: Optional[bool], inner: Optional[bool]) -> Optional[bool]:
    if outer is False or inner is False:
        return False
    if outer is True and inner is True:
        return True
    return None


def walk_config(
    config_file: str, base_dir: Optional[str] = None, client_host: Optional[str] = None
) -> tuple[List[Directive], List[str]]:
    """Every directive of ``config_file`` and its Includes in reading order, and the files read.

    For sshd (``client_host`` None) lines inside ``Match`` blocks are returned
    as conditional. For ssh (``client_host`` set) ``Host`` blocks are evaluated
    against that host; lines in non-matching blocks are left out and
    ``Match`` blocks other than ``Match all``/``Match host`` are conditional.
    Relative Include paths resolve against ``base_dir`` (default: the
    directory of ``config_file``, /etc/ssh for the system files).
    """
    walker = _Walker(base_dir or os.path.dirname(os.path.abspath(config_file)), client_host)
    directives = list(walker.walk(config_file, True, 0))
    return directives, walker.files


def sources_for(
    directives: Sequence[Directive], keywords: Sequence[str]
) -> Dict[str, List[Dict[str, Any]]]:
    """Per keyword (lower case): every line that may set it, in reading order."""
    wanted = {k.lower() for k in keywords}
    result: Dict[str, List[Dict[str, Any]]] = {k: [] for k in sorted(wanted)}
    for directive in directives:
        if directive.keyword in wanted:
            result[directive.keyword].append(
                {
                    "file": directive.file,
                    "line": directive.line,
                    "value": directive.value,
                    "conditional": directive.conditional,
                }
            )
    return result


def origin_of(sources: Sequence[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The line whose value is in force: the first unconditional one (first value wins)."""
    for source in sources:
        if not source["conditional"]:
            return source
    return None


def is_included(
    config_file: str,
    target: str,
    base_dir: Optional[str] = None,
    client_host: Optional[str] = None,
) -> bool:
    """Whether a file at ``target`` (existing or not) would be read unconditionally."""
    base = base_dir or os.path.dirname(os.path.abspath(config_file))
    wanted = os.path.abspath(target)
    directives = walk_config(config_file, base, client_host)[0]
    for directive in directives:
        if directive.keyword != "include" or directive.conditional:
            continue
        for pattern in split_args(directive.value):
            if _glob_match(_resolve(pattern, base), wanted):
                return True
    return False


def _resolve(pattern: str, base_dir: str) -> str:
    path = os.path.expanduser(pattern)
    return path if os.path.isabs(path) else os.path.join(base_dir, path)


def _glob_match(pattern: str, path: str) -> bool:
    """glob(3) matching: wildcards never cross '/'; a leading dot needs an explicit dot."""
    pattern_parts = os.path.normpath(pattern).split("/")
    path_parts = os.path.normpath(path).split("/")
    if len(pattern_parts) != len(path_parts):
        return False
    for want, have in zip(pattern_parts, path_parts):
        if have.startswith(".") and not want.startswith("."):
            return False
        if not fnmatch.fnmatchcase(have, want):
            return False
    return True


def normalize_expected(value: object) -> str:
    """The spelling ``sshd -T``/``ssh -G`` uses for a value we set."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).strip().lower()


def compare(
    effective: Dict[str, EffectiveValue],
    expected: Dict[str, object],
    sources: Dict[str, List[Dict[str, Any]]],
) -> List[Dict[str, Any]]:
    """Keywords whose effective value differs from the expected one, with the line that wins."""
    mismatches = []
    for keyword in sorted(expected, key=str.lower):
        key = keyword.lower()
        want = normalize_expected(expected[keyword])
        have = effective.get(key)
        have_text = " ".join(have) if isinstance(have, list) else have
        if have_text is not None and have_text.lower() == want:
            continue
        origin = origin_of(sources.get(key, []))
        if origin is None:
            where = "no configuration line sets it (a built-in default or a Match block wins)"
        else:
            where = (
                f"{origin['file']} line {origin['line']} sets '{keyword} {origin['value']}'"
                " first and OpenSSH uses the first value it reads"
            )
        mismatches.append(
            {
                "keyword": keyword,
                "expected": want,
                "effective": have_text,
                "origin": origin,
                "message": f"{keyword} is {have_text}, expected {want}: {where}",
            }
        )
    return mismatches


def listen_endpoints(effective: Dict[str, EffectiveValue]) -> List[Dict[str, Any]]:
    """``listenaddress`` entries of ``sshd -T`` with a loopback address to probe each one."""
    raw = effective.get("listenaddress", [])
    values = raw if isinstance(raw, list) else [raw]
    endpoints = []
    for value in values:
        address, port = _split_host_port(value.split()[0] if value else "")
        if not address:
            continue
        probe = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)
        endpoints.append({"address": address, "port": port, "connect_address": probe})
    # Prefer IPv4 loopback first: it is the one most containers and hosts have.
    endpoints.sort(key=lambda e: 0 if e["connect_address"] == "127.0.0.1" else 1)
    return endpoints


def _split_host_port(value: str) -> tuple[str, int]:
    if value.startswith("["):
        host, _sep, rest = value[1:].partition("]")
        port = rest.lstrip(":")
    elif value.count(":") == 1:
        host, _sep, port = value.partition(":")
    else:
        host, port = value, ""
    return host, int(port) if port.isdigit() else 22
