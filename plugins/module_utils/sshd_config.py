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
import ipaddress
import os
import re
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Union

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

# Keywords whose value OpenSSH reads with convtime(): "90", "1m30s", "2H".
TIME_KEYWORDS = frozenset({"clientaliveinterval", "serveraliveinterval", "logingracetime"})
_TIME_PART_RE = re.compile(r"([0-9]+)([sSmMhHdDwW]?)")
_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# convtime() refuses what does not fit an int.
_TIME_MAX = 2**31 - 1

# What -C needs besides the criteria a Match line names: sshd wants user, host and addr
# together, and an address from TEST-NET-1 never belongs to a real client.
DEFAULT_CONNECTION = {"user": "root", "host": "client.invalid", "addr": "192.0.2.1"}
# Match criterion -> -C key. Group has no key: it is matched through the user's groups.
_MATCH_KEYS = {
    "user": "user",
    "host": "host",
    "address": "addr",
    "localaddress": "laddr",
    "localport": "lport",
    "rdomain": "rdomain",
}


class ConfigError(Exception):
    """A configuration could not be read or a request was malformed."""


class Directive(NamedTuple):
    """One keyword line as OpenSSH reads it, in reading order."""

    file: str
    line: int
    keyword: str  # lower case, as ``sshd -T`` prints it
    value: str
    conditional: bool  # inside a Match/Host block that may or may not apply
    block: str = ""  # "FILE line N: Match ..." for a line inside a Match block


class MatchLine(NamedTuple):
    """One ``Match`` line of an sshd configuration."""

    file: str
    line: int
    criteria: str

    def describe(self) -> str:
        return f"{self.file} line {self.line}: Match {self.criteria}"


def parse_seconds(value: object) -> int:
    """Seconds of an OpenSSH time value (sshd_config(5), TIME FORMATS), like convtime().

    ``90``, ``1m``, ``1m30s`` and ``2H`` are accepted (a bare number is seconds; units
    s, m, h, d, w in either case, concatenated). Signs, spaces, fractions, booleans and
    values over INT_MAX are refused with ConfigError.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{value!r} is a boolean, not a time")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise ConfigError(f"{value!r} is not a time")
    if not text:
        raise ConfigError("an empty value is not a time")
    total = 0
    position = 0
    while position < len(text):
        part = _TIME_PART_RE.match(text, position)
        if not part:
            raise ConfigError(
                f"{text!r} is not an OpenSSH time: use seconds (90) or numbers with the units"
                " s, m, h, d, w (1m30s)"
            )
        total += int(part.group(1)) * _TIME_UNITS[part.group(2).lower()]
        position = part.end()
    if total > _TIME_MAX:
        raise ConfigError(f"{text!r} is longer than OpenSSH accepts ({_TIME_MAX} s)")
    return total


def probe_interval(requested: object, factor: int) -> int:
    """The ClientAliveInterval to write so probes come every ``requested`` seconds.

    ``factor`` is :func:`client_alive_probe_factor`'s: 2 halves the interval (at least 1).
    """
    return max(1, parse_seconds(requested) // max(1, factor))


def server_dropin(
    requested: object,
    count_max: int,
    idle_timeout: int,
    tcp_keepalive: bool = True,
    factor: int = 1,
    reason: str = "",
) -> str:
    """The text of the sshd keepalive drop-in (without a managed-file header).

    The one source of that text: the sshd_keepalive role's template and every other writer
    (the dev image of pytorch_image) render it through this function, via the
    ``sshd_keepalive_dropin`` filter. ``requested`` is the wanted probe period (an OpenSSH
    time); on an sshd with probe ``factor`` 2 (OpenSSH 9.2 to 9.4) the written
    ClientAliveInterval is :func:`probe_interval`'s, and ``reason`` (why it differs) is
    said in a comment. The text ends with a newline.
    """
    wanted = parse_seconds(requested)
    factor = max(1, int(factor))
    written = probe_interval(wanted, factor)
    period = written * factor
    count = int(count_max)
    lines = [
        "# unbroken.training.sshd_keepalive: keep idle SSH sessions alive through NAT/firewall",
        f"# paths that drop connections idle for {int(idle_timeout)} s.",
        "# sshd uses the first value it reads: this file must sort first in sshd_config.d and",
        "# no line above the Include in sshd_config may set these keywords.",
    ]
    if written != wanted:
        why = " ".join(reason.split()) or "this sshd sends a probe every second interval"
        lines += [
            f"# Requested interval {wanted} s, but {why}",
            f"# (fixed in OpenSSH 9.5): {written} is written, so probes go out every {period} s.",
        ]
    lines += [
        f"# A dead client is dropped after about {period * (count + 1)} s without answers:"
        " the first probe",
        f"# goes out after {period} s of silence, and sshd gives up one period after the last"
        f" of {count} probes.",
        f"ClientAliveInterval {written}",
        f"ClientAliveCountMax {count}",
        f"TCPKeepAlive {'yes' if tcp_keepalive else 'no'}",
    ]
    return "\n".join(lines) + "\n"


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

    def __init__(
        self, base_dir: str, client_host: Optional[str], pretend: Optional[str] = None
    ) -> None:
        self.base_dir = base_dir
        self.client_host = client_host
        self.pretend = os.path.abspath(pretend) if pretend else None
        self.files: List[str] = []
        self.matches: List[MatchLine] = []

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
        block = ""
        for number, raw in enumerate(lines, start=1):
            if raw.lstrip().startswith("#"):
                continue
            found = _LINE_RE.match(raw)
            if not found:
                continue
            keyword = found.group(1).lower()
            value = found.group(2)
            if keyword in ("match", "host"):
                args = split_args(value)
                current = _combine(state, self._block_state(keyword, args))
                block = ""
                if (
                    keyword == "match"
                    and self.client_host is None
                    and [a.lower() for a in args] != ["all"]
                ):
                    found_match = MatchLine(path, number, " ".join(args))
                    self.matches.append(found_match)
                    block = found_match.describe()
                continue
            if current is False:
                continue
            if keyword == "include":
                # Reported too, so callers can tell whether a path would be read.
                yield Directive(path, number, keyword, value, current is not True, block)
                for pattern in split_args(value):
                    for included in self._expand(pattern):
                        if included == self.pretend and not os.path.exists(included):
                            # Where the file would be read once written: a marker line.
                            self.files.append(included)
                            yield Directive(included, 0, "", "", current is not True, block)
                            continue
                        yield from self.walk(included, current, depth + 1)
                continue
            yield Directive(path, number, keyword, value, current is not True, block)

    def _expand(self, pattern: str) -> List[str]:
        found = _expand_include(pattern, self.base_dir)
        resolved = _resolve(pattern, self.base_dir)
        if self.pretend and self.pretend not in found and _glob_match(resolved, self.pretend):
            found = sorted([*found, self.pretend])
        return found


def _combine(outer: Optional[bool], inner: Optional[bool]) -> Optional[bool]:
    if outer is False or inner is False:
        return False
    if outer is True and inner is True:
        return True
    return None


def walk_config(
    config_file: str,
    base_dir: Optional[str] = None,
    client_host: Optional[str] = None,
    pretend: Optional[str] = None,
) -> tuple[List[Directive], List[str]]:
    """Every directive of ``config_file`` and its Includes in reading order, and the files read.

    For sshd (``client_host`` None) lines inside ``Match`` blocks are returned
    as conditional. For ssh (``client_host`` set) ``Host`` blocks are evaluated
    against that host; lines in non-matching blocks are left out and
    ``Match`` blocks other than ``Match all``/``Match host`` are conditional.
    Relative Include paths resolve against ``base_dir`` (default: the
    directory of ``config_file``, /etc/ssh for the system files).
    ``pretend`` names a file that does not exist yet: where an Include would read it, a
    marker directive (keyword ``""``, line 0) stands for it.
    """
    walker = _Walker(
        base_dir or os.path.dirname(os.path.abspath(config_file)), client_host, pretend
    )
    directives = list(walker.walk(config_file, True, 0))
    return directives, walker.files


def match_lines(config_file: str, base_dir: Optional[str] = None) -> List[MatchLine]:
    """Every sshd ``Match`` line (other than ``Match all``) in reading order."""
    walker = _Walker(base_dir or os.path.dirname(os.path.abspath(config_file)), None)
    for _directive in walker.walk(config_file, True, 0):
        pass
    return walker.matches


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
                    # Only inside a Match block: which one.
                    **({"block": directive.block} if directive.block else {}),
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


def normalize_expected(value: object, keyword: str = "") -> str:
    """The spelling ``sshd -T``/``ssh -G`` uses for a value we set (times in seconds)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if keyword.lower() in TIME_KEYWORDS:
        return str(parse_seconds(str(value).strip()))
    return str(value).strip().lower()


def _same(keyword: str, have: Optional[str], want: str) -> bool:
    if have is None:
        return False
    if keyword.lower() in TIME_KEYWORDS:
        try:
            return parse_seconds(have) == int(want)
        except ConfigError:
            return False
    return have.lower() == want


def _text(value: Optional[EffectiveValue]) -> Optional[str]:
    return " ".join(value) if isinstance(value, list) else value


def _wanted(keyword: str, want: str, requested: Optional[Dict[str, object]]) -> str:
    """``expected 30``, or ``expected 30 (60 requested, ...)`` when the two differ."""
    if requested is None or keyword not in requested:
        return f"expected {want}"
    asked = normalize_expected(requested[keyword], keyword)
    if asked == want:
        return f"expected {want}"
    return (
        f"expected {want} ({asked} requested, halved because this sshd sends a probe only"
        " every second interval)"
    )


def compare(
    effective: Dict[str, EffectiveValue],
    expected: Dict[str, object],
    sources: Dict[str, List[Dict[str, Any]]],
    requested: Optional[Dict[str, object]] = None,
) -> List[Dict[str, Any]]:
    """Keywords whose effective value differs from the expected one, with the line that wins.

    ``requested`` (same keys) is what the user asked for when ``expected`` was derived from
    it (the halved interval): the message names both.
    """
    mismatches = []
    for keyword in sorted(expected, key=str.lower):
        key = keyword.lower()
        want = normalize_expected(expected[keyword], keyword)
        have_text = _text(effective.get(key))
        if _same(keyword, have_text, want):
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
                "message": f"{keyword} is {have_text}, {_wanted(keyword, want, requested)}:"
                f" {where}",
            }
        )
    return mismatches


def predict_shadowed(
    directives: Sequence[Directive],
    expected: Dict[str, object],
    ours: str,
    included: bool,
    requested: Optional[Dict[str, object]] = None,
) -> List[Dict[str, Any]]:
    """What would still override ``expected`` once ``ours`` holds it (for check mode).

    ``directives`` come from :func:`walk_config` with ``pretend=ours``. When ``ours`` is
    not ``included`` the role puts its Include above everything, so no line can come
    first. Otherwise the first unconditional line of a keyword that is read before
    ``ours`` wins, unless it sets the same value.
    """
    if not included:
        return []
    ours = os.path.abspath(ours)
    result = []
    for keyword in sorted(expected, key=str.lower):
        key = keyword.lower()
        want = normalize_expected(expected[keyword], keyword)
        for directive in directives:
            if directive.conditional:
                continue
            if directive.file == ours:
                break
            if directive.keyword != key:
                continue
            if not _same(keyword, directive.value.split()[0] if directive.value else "", want):
                result.append(
                    {
                        "keyword": keyword,
                        "expected": want,
                        "effective": directive.value,
                        "origin": _source(directive),
                        "message": (
                            f"{keyword} would be {directive.value},"
                            f" {_wanted(keyword, want, requested)}: {directive.file} line"
                            f" {directive.line} sets '{keyword} {directive.value}' before our"
                            f" {ours} and OpenSSH uses the first value it reads"
                        ),
                    }
                )
            break
    return result


def _source(directive: Directive) -> Dict[str, Any]:
    return {
        "file": directive.file,
        "line": directive.line,
        "value": directive.value,
        "conditional": directive.conditional,
        **({"block": directive.block} if directive.block else {}),
    }


# --- Match blocks: which connections get other values -----------------------------------


def _example_address(pattern: str) -> Optional[str]:
    """An address the pattern matches: sshd compares Match Address only with parsable ones."""
    if "/" in pattern:
        try:
            network = ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            return None
        return str(next(iter(network.hosts()), network.network_address))
    candidate = pattern.replace("*", "1").replace("?", "1")
    if ":" not in candidate:
        # 10.* becomes 10.1, which sshd cannot parse: fill the missing octets.
        parts = candidate.split(".")
        candidate = ".".join(parts + ["1"] * (4 - len(parts)))
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return None
    return candidate if fnmatch.fnmatchcase(candidate, pattern) or "/" in pattern else None


def _pattern_example(patterns: str, address: bool) -> Optional[str]:
    """A value the comma-separated pattern list matches, or None when none can be made."""
    negated = [p[1:] for p in patterns.split(",") if p.startswith("!")]
    for pattern in patterns.split(","):
        if not pattern or pattern.startswith("!"):
            continue
        if address:
            candidate = _example_address(pattern)
        else:
            candidate = pattern.replace("*", "x").replace("?", "x")
        if candidate and not any(fnmatch.fnmatchcase(candidate, n) for n in negated):
            return candidate
    if negated and len(negated) == len([p for p in patterns.split(",") if p]):
        # Only negations: anything outside them.
        for candidate in ("192.0.2.1", "198.51.100.1") if address else ("root", "nobody", "x"):
            if not any(fnmatch.fnmatchcase(candidate, n) for n in negated):
                return candidate
    return None


def match_connection(
    match: MatchLine, group_member: Optional[Callable[[str], Optional[str]]] = None
) -> tuple[Optional[Dict[str, str]], str]:
    """A ``-C`` connection the Match line applies to, and '' or why none could be made.

    Missing keys are filled from DEFAULT_CONNECTION. ``Group`` is matched through a
    member of the group (``group_member`` returns one, or None).
    """
    args = split_args(match.criteria)
    connection: Dict[str, str] = {}
    if len(args) % 2:
        return None, "its criteria are not name/pattern pairs"
    for name, patterns in zip(args[::2], args[1::2]):
        criterion = name.lower()
        if criterion == "group":
            members = [
                member
                for group in patterns.split(",")
                if group and not group.startswith("!") and not glob.has_magic(group)
                for member in [group_member(group) if group_member else None]
                if member
            ]
            if not members:
                return None, f"no user is known to be in group {patterns}"
            connection["user"] = members[0]
            continue
        key = _MATCH_KEYS.get(criterion)
        if key is None:
            return None, f"the criterion {name} cannot be given to sshd -T -C"
        example = _pattern_example(patterns, key in ("addr", "laddr"))
        if example is None:
            return None, f"no {name} matching {patterns} could be made up"
        connection[key] = example
    return {**DEFAULT_CONNECTION, **connection}, ""


def match_mismatches(
    global_effective: Dict[str, EffectiveValue],
    context_effective: Dict[str, EffectiveValue],
    expected: Dict[str, object],
    sources: Dict[str, List[Dict[str, Any]]],
    spec: str,
    requested: Optional[Dict[str, object]] = None,
) -> List[Dict[str, Any]]:
    """Keywords a Match block sets to another value than expected for one connection.

    Only values that differ from the global ones count: those come from a Match block
    (the global ones are checked, and attributed, by :func:`compare`). The line named is
    the first conditional one that sets the value seen.
    """
    result = []
    for keyword in sorted(expected, key=str.lower):
        key = keyword.lower()
        want = normalize_expected(expected[keyword], keyword)
        have = _text(context_effective.get(key))
        if have == _text(global_effective.get(key)) or _same(keyword, have, want):
            continue
        candidates = [s for s in sources.get(key, []) if s["conditional"]]
        origin = next(
            (
                s
                for s in candidates
                if have is not None and _same(keyword, s["value"].split()[0], have)
            ),
            candidates[0] if candidates else None,
        )
        if origin is None:
            where = "no line of the configuration files sets it"
        else:
            where = f"{origin['file']} line {origin['line']} sets '{keyword} {origin['value']}'"
            if origin.get("block"):
                where += f" in the block of {origin['block']}"
        result.append(
            {
                "keyword": keyword,
                "expected": want,
                "effective": have,
                "origin": origin,
                "connection_spec": spec,
                "message": (
                    f"{keyword} is {have} for connections like {spec},"
                    f" {_wanted(keyword, want, requested)}: {where}, and a Match block"
                    " overrides the global value"
                ),
            }
        )
    return result


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
