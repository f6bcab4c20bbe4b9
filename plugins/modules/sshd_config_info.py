#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sshd_config_info
short_description: Read the effective OpenSSH server or client configuration and where it comes from
version_added: 0.1.0
description:
  - Runs C(sshd -T) (optionally with a C(-C) connection spec) or C(ssh -G <host>) and returns
    the effective configuration as a dict.
  - Re-reads the configuration files in OpenSSH's order, expanding C(Include) globs in place,
    and tells which file and line sets a keyword first. OpenSSH uses the first value it reads,
    so a drop-in that sorts earlier (for example C(50-cloud-init.conf)) or a line in the main
    file above its C(Include) silently wins; this module names that line.
  - Optionally compares effective values with expected ones and reports each mismatch with
    the file and line that wins.
  - Reads only; it never changes the host, so it behaves the same in check mode.
author:
  - unbroken.training contributors (@unbroken-training)
options:
  target:
    description:
      - C(sshd) evaluates the server with C(sshd -T); C(ssh) evaluates the client with C(ssh -G).
    type: str
    choices: [sshd, ssh]
    default: sshd
  binary:
    description:
      - Path of the C(sshd) or C(ssh) executable.
      - Default is to search C(PATH) plus C(/usr/sbin) and C(/sbin).
    type: path
  config_file:
    description:
      - Main configuration file, passed as C(sshd -f) or C(ssh -F).
      - Default C(/etc/ssh/sshd_config) for O(target=sshd), C(/etc/ssh/ssh_config) for
        O(target=ssh).
    type: path
  base_dir:
    description:
      - Directory that relative C(Include) paths resolve against.
      - Default is the directory of O(config_file) (C(/etc/ssh) for the system files).
    type: path
  connection:
    description:
      - Connection spec for C(sshd -T -C), so C(Match) blocks are evaluated for that
        connection. Only with O(target=sshd).
    type: dict
    # Written once: match_contexts reuses these fields through the YAML alias below.
    suboptions: &connection_fields
      user:
        description: User name of the connection.
        type: str
      host:
        description: Remote host name of the connection.
        type: str
      addr:
        description: Remote address of the connection.
        type: str
      laddr:
        description: Local address the connection arrives on.
        type: str
      lport:
        description: Local port the connection arrives on.
        type: int
      rdomain:
        description: Routing domain of the connection.
        type: str
  host:
    description:
      - Destination that C(ssh -G) evaluates; C(Host) blocks are matched against it.
      - Required with O(target=ssh).
    type: str
  keywords:
    description:
      - Keywords (any case) to attribute to files and lines in RV(sources) and RV(origins).
      - Keywords of O(expect) are always attributed.
    type: list
    elements: str
    default: []
  expect:
    description:
      - "Expected effective values by keyword, for example C({ClientAliveInterval: 60}).
        Booleans compare as C(yes)/C(no). Differences are returned in RV(mismatches)."
    type: dict
    default: {}
  compensate_slow_probes:
    description:
      - Only with O(target=sshd). When true, an expected C(ClientAliveInterval) in O(expect)
        is divided by RV(client_alive_probe_factor) (rounded down, at least 1) before it is
        compared, because OpenSSH 9.2 to 9.4 probe a silent client only every second
        interval; a role that writes half the interval there can check it in the same read.
      - RV(expected) returns the values actually compared.
    type: bool
    default: false
  included_file:
    description:
      - A path (existing or not) to look for among the files the configuration reads
        unconditionally through C(Include); the answer is RV(included).
      - Also the file RV(shadowed) predicts for, as if it held O(expect).
    type: path
  check_match_blocks:
    description:
      - Only with O(target=sshd). Also run C(sshd -T -C) for a connection made up for every
        C(Match) line in the files (a user, address, host, ... its criteria match; C(Group)
        through a member of the group), so a C(Match) block that overrides O(expect) for
        some connections is reported in RV(mismatches) with its file and line.
      - Match lines no connection can be made up for are listed in RV(unchecked_match_blocks).
    type: bool
    default: false
  match_contexts:
    description:
      - Only with O(target=sshd). Connections to check like those of O(check_match_blocks),
        for example the users and addresses that matter. Missing C(user), C(host) and C(addr)
        are filled with C(root), C(client.invalid) and C(192.0.2.1).
    type: list
    elements: dict
    default: []
    suboptions: *connection_fields
notes:
  - C(sshd -T) must run as root (it reads the host keys); use C(become).
  - Lines inside C(Match) blocks (and, for the client, C(Host) blocks that do not match
    O(host)) are reported as conditional and never named as the winning line; with
    O(check_match_blocks) or O(match_contexts) a C(Match) block's values are checked per
    connection.
  - Time values (C(ClientAliveInterval), C(ServerAliveInterval)) compare in seconds, so
    C(1m30s) in O(expect) equals C(90) in the effective configuration. A C(Match)
    block opened in an included file ends with that file, as in OpenSSH 8.x and later.
extends_documentation_fragment:
  - unbroken.training.attributes.info_module
"""

EXAMPLES = r"""
- name: Read the effective sshd configuration and who sets the keepalive options
  unbroken.training.sshd_config_info:
    expect:
      ClientAliveInterval: 60
      ClientAliveCountMax: 3
      TCPKeepAlive: true
  register: sshd_info

- name: Fail with the file and line that shadows a value
  ansible.builtin.assert:
    that: sshd_info.mismatches | length == 0
    fail_msg: "{{ sshd_info.mismatches | map(attribute='message') | join('; ') }}"

- name: Evaluate Match blocks for one connection
  unbroken.training.sshd_config_info:
    connection:
      user: alice
      host: laptop.example.org
      addr: 192.0.2.10
  register: alice_view

- name: Read the client configuration for one destination
  unbroken.training.sshd_config_info:
    target: ssh
    host: gpu01.example.org
    expect:
      ServerAliveInterval: 60
"""

RETURN = r"""
config:
  description:
    - Effective configuration, keys in lower case. A keyword printed more than once
      (C(hostkey), C(listenaddress), C(acceptenv), ...) is a list of its values.
  returned: success
  type: dict
  sample: {"clientaliveinterval": "60", "clientalivecountmax": "3", "port": "22"}
command:
  description: The command that produced RV(config).
  returned: success
  type: list
  elements: str
  sample: ["/usr/sbin/sshd", "-T", "-f", "/etc/ssh/sshd_config"]
connection_spec:
  description: The C(-C) argument used, or null.
  returned: success
  type: str
  sample: user=alice,host=laptop.example.org,addr=192.0.2.10
files:
  description: Configuration files read, in OpenSSH's reading order.
  returned: success
  type: list
  elements: str
  sample: ["/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d/00-unbroken-keepalive.conf"]
sources:
  description:
    - Per requested keyword (lower case), every line that may set it, in reading order, with
      C(file), C(line), C(value) and C(conditional).
  returned: success
  type: dict
  sample: {"clientaliveinterval": [{"file": "/etc/ssh/sshd_config.d/50-cloud-init.conf",
           "line": 3, "value": "0", "conditional": false}]}
origins:
  description:
    - Per requested keyword, the line whose value is in force (the first unconditional one),
      or null when no line sets it.
  returned: success
  type: dict
  sample: {"clientaliveinterval": {"file": "/etc/ssh/sshd_config", "line": 12,
           "value": "0", "conditional": false}}
mismatches:
  description:
    - Keywords of O(expect) whose effective value differs, with C(keyword), C(expected),
      C(effective), C(origin) and a human-readable C(message) naming the winning file and line.
    - Those of a checked connection (O(check_match_blocks), O(match_contexts)) also carry its
      C(connection_spec).
  returned: success
  type: list
  elements: dict
  sample: [{"keyword": "ClientAliveInterval", "expected": "60", "effective": "0",
            "message": "ClientAliveInterval is 0, expected 60: /etc/ssh/sshd_config line 12 sets
            'ClientAliveInterval 0' first and OpenSSH uses the first value it reads"}]
expected:
  description:
    - The values of O(expect) that were compared, after O(compensate_slow_probes) (keys as
      given). Pass it as O(expect) to a later read to compare the same values again.
  returned: success
  type: dict
  sample: {"ClientAliveInterval": 30, "ClientAliveCountMax": 3, "TCPKeepAlive": true}
shadowed:
  description:
    - With O(included_file), what would still be wrong once that file held O(expect) (and
      were included at the top when it is not yet), in the form of RV(mismatches). That is
      a line read before it with another value, and the RV(mismatches) of checked
      connections. A prediction for check mode, made before anything is written.
  returned: success
  type: list
  elements: dict
contexts:
  description:
    - The connections checked with C(sshd -T -C), each with C(connection_spec) and C(why)
      (the C(Match) line it was made up for, or C(match_contexts)).
  returned: success
  type: list
  elements: dict
  sample: [{"connection_spec": "user=root,host=client.invalid,addr=192.0.2.1",
            "why": "/etc/ssh/sshd_config line 130: Match User root"}]
unchecked_match_blocks:
  description: C(Match) lines no connection could be made up for, with C(match) and C(reason).
  returned: success
  type: list
  elements: dict
included:
  description: Whether O(included_file) is read unconditionally; null when not asked.
  returned: success
  type: bool
  sample: true
version:
  description:
    - The OpenSSH version (C(major.minor)) that C(sshd -V) or C(ssh -V) reports, or null when
      it could not be read.
  returned: success
  type: str
  sample: "9.2"
client_alive_probe_factor:
  description:
    - For O(target=sshd), how many C(ClientAliveInterval)s this sshd waits between two probes
      of a silent client. 2 on OpenSSH 9.2 to 9.4, which probe only every second interval
      (fixed in 9.5); 1 otherwise. Null for O(target=ssh).
  returned: success
  type: int
  sample: 2
listen:
  description:
    - For O(target=sshd), the listen addresses with C(address), C(port) and a
      C(connect_address) to probe them locally (loopback for wildcard addresses).
  returned: success
  type: list
  elements: dict
  sample: [{"address": "0.0.0.0", "port": 22, "connect_address": "127.0.0.1"}]
"""

import grp
import os
import pwd
from typing import Any, Dict, List, Optional, Tuple

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.unbroken.training.plugins.module_utils.sshd_config import (
    DEFAULT_CONNECTION,
    ConfigError,
    build_connection_spec,
    client_alive_probe_factor,
    compare,
    is_included,
    listen_endpoints,
    match_connection,
    match_lines,
    match_mismatches,
    origin_of,
    parse_effective,
    parse_version,
    predict_shadowed,
    probe_interval,
    sources_for,
    walk_config,
)

DEFAULT_CONFIG = {"sshd": "/etc/ssh/sshd_config", "ssh": "/etc/ssh/ssh_config"}
SEARCH_DIRS = ["/usr/sbin", "/sbin", "/usr/local/sbin"]
# The fields of one connection, for O(connection) and each of O(match_contexts).
CONNECTION_FIELDS = {
    "user": {"type": "str"},
    "host": {"type": "str"},
    "addr": {"type": "str"},
    "laddr": {"type": "str"},
    "lport": {"type": "int"},
    "rdomain": {"type": "str"},
}


def argument_spec() -> Dict[str, Any]:
    return {
        "target": {"type": "str", "choices": ["sshd", "ssh"], "default": "sshd"},
        "binary": {"type": "path"},
        "config_file": {"type": "path"},
        "base_dir": {"type": "path"},
        "connection": {
            "type": "dict",
            "options": CONNECTION_FIELDS,
        },
        "host": {"type": "str"},
        "keywords": {"type": "list", "elements": "str", "default": [], "no_log": False},
        "expect": {"type": "dict", "default": {}},
        "compensate_slow_probes": {"type": "bool", "default": False},
        "included_file": {"type": "path"},
        "check_match_blocks": {"type": "bool", "default": False},
        "match_contexts": {
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": CONNECTION_FIELDS,
        },
    }


def find_binary(module: AnsibleModule, target: str, binary: Optional[str]) -> str:
    if binary:
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            module.fail_json(msg=f"{binary} is not an executable file")
        return binary
    found: str = module.get_bin_path(target, opt_dirs=SEARCH_DIRS)
    if not found:
        package = "openssh-server" if target == "sshd" else "openssh-client"
        module.fail_json(msg=f"{target} not found in PATH or {SEARCH_DIRS}; install {package}")
    return found


def build_command(
    target: str, binary: str, config_file: str, spec: Optional[str], host: Optional[str]
) -> List[str]:
    if target == "sshd":
        command = [binary, "-T", "-f", config_file]
        if spec:
            command += ["-C", spec]
        return command
    return [binary, "-G", "-F", config_file, "--", host or ""]


def compensated(expect: Dict[str, Any], factor: int) -> Dict[str, Any]:
    """``expect`` with ClientAliveInterval divided by the probe factor (at least 1)."""
    result = dict(expect)
    for keyword, value in expect.items():
        if keyword.lower() != "clientaliveinterval":
            continue
        try:
            result[keyword] = probe_interval(value, factor)
        except ConfigError as exc:
            raise ConfigError(
                f"{keyword}={value!r} in expect is not a time sshd reads: {exc}"
            ) from exc
    return result


def group_member(name: str) -> Optional[str]:
    """A user in group ``name`` (a listed member, else one whose primary group it is)."""
    try:
        group = grp.getgrnam(name)
    except KeyError:
        return None
    if group.gr_mem:
        return group.gr_mem[0]
    return next((user.pw_name for user in pwd.getpwall() if user.pw_gid == group.gr_gid), None)


def read_effective(module: AnsibleModule, command: List[str]) -> Dict[str, Any]:
    rc, out, err = module.run_command(command, environ_update={"LC_ALL": "C"})
    if rc != 0:
        module.fail_json(
            msg=f"{' '.join(command)} failed (rc={rc}): {(err or out).strip()}",
            rc=rc,
            stdout=out,
            stderr=err,
            command=command,
        )
    return parse_effective(out)


def connections_to_check(
    params: Dict[str, Any], config_file: str
) -> Tuple[List[Tuple[Any, ...]], List[Dict[str, Any]]]:
    """(connection, why) pairs for sshd -T -C, and the Match lines none was made up for."""
    wanted: List[Tuple[Any, ...]] = []
    unchecked: List[Dict[str, Any]] = []
    if params["check_match_blocks"]:
        for match in match_lines(config_file, params["base_dir"]):
            connection, reason = match_connection(match, group_member)
            if connection is None:
                unchecked.append({"match": match.describe(), "reason": reason})
            else:
                wanted.append((connection, match.describe()))
    for given in params["match_contexts"]:
        connection = {k: v for k, v in given.items() if v is not None and v != ""}
        wanted.append(({**DEFAULT_CONNECTION, **connection}, "match_contexts"))
    return wanted, unchecked


def check_connections(
    module: AnsibleModule,
    base_command: List[str],
    effective: Dict[str, Any],
    expect: Dict[str, Any],
    sources: Dict[str, List[Dict[str, Any]]],
    requested: Dict[str, Any],
    wanted: List[Tuple[Any, ...]],
    mismatches: List[Dict[str, Any]],
) -> List[Dict[str, Any]]:
    """Read sshd -T -C for each wanted connection; append what a Match block overrides."""
    contexts = []
    per_connection: List[Dict[str, Any]] = []
    for connection, why in wanted:
        context_spec = build_connection_spec(connection) or ""
        seen = read_effective(module, [*base_command, "-C", context_spec])
        contexts.append({"connection_spec": context_spec, "why": why})
        per_connection += match_mismatches(
            effective, seen, expect, sources, context_spec, requested
        )
    # One message per keyword and Match line, however many connections showed it.
    reported = set()
    for found in per_connection:
        key = (found["keyword"], str(found["origin"]))
        if key not in reported:
            reported.add(key)
            mismatches.append(found)
    return contexts


def run_module(module: AnsibleModule) -> Dict[str, Any]:
    params = module.params
    target = params["target"]
    if target == "ssh" and not params["host"]:
        module.fail_json(msg="host is required with target=ssh (the destination ssh -G evaluates)")
    if target == "sshd" and params["host"]:
        module.fail_json(msg="host is only for target=ssh; use connection.host for sshd -T -C")
    if target == "ssh" and params["connection"]:
        module.fail_json(msg="connection is only for target=sshd (ssh -G has no -C)")
    if target == "ssh" and params["compensate_slow_probes"]:
        module.fail_json(msg="compensate_slow_probes is only for target=sshd (ClientAliveInterval)")
    if target == "ssh" and (params["check_match_blocks"] or params["match_contexts"]):
        module.fail_json(msg="check_match_blocks and match_contexts are only for target=sshd")
    config_file = params["config_file"] or DEFAULT_CONFIG[target]
    if not os.path.isfile(config_file):
        module.fail_json(msg=f"{config_file} does not exist")
    connection = {k: v for k, v in (params["connection"] or {}).items() if v is not None}
    spec = build_connection_spec(connection)
    binary = find_binary(module, target, params["binary"])
    command = build_command(target, binary, config_file, spec, params["host"])

    effective = read_effective(module, command)
    # Old sshd has no -V but prints the version with its usage: the exit status is no use.
    version_run = module.run_command([binary, "-V"], environ_update={"LC_ALL": "C"})
    version = parse_version(f"{version_run[1]}\n{version_run[2]}")
    factor = client_alive_probe_factor(version) if target == "sshd" else None
    expect = dict(params["expect"])
    if params["compensate_slow_probes"] and factor:
        expect = compensated(expect, factor)

    requested = dict(params["expect"])

    client_host = params["host"] if target == "ssh" else None
    directives, files = walk_config(config_file, params["base_dir"], client_host)
    keywords = list(params["keywords"]) + list(expect)
    sources = sources_for(directives, keywords)
    mismatches = compare(effective, expect, sources, requested)

    # Match blocks override the global values for the connections they match: sshd -T
    # alone never shows them, so each connection that matters gets its own read.
    wanted, unchecked = connections_to_check(params, config_file) if target == "sshd" else ([], [])
    contexts = check_connections(
        module, command[:4], effective, expect, sources, requested, wanted, mismatches
    )
    included = None
    shadowed: List[Dict[str, Any]] = []
    if params["included_file"]:
        included = is_included(
            config_file, params["included_file"], params["base_dir"], client_host
        )
        pretended = walk_config(
            config_file, params["base_dir"], client_host, pretend=params["included_file"]
        )[0]
        shadowed = predict_shadowed(pretended, expect, params["included_file"], included, requested)
        shadowed += [found for found in mismatches if "connection_spec" in found]
    return {
        "changed": False,
        "config": effective,
        "command": command,
        "connection_spec": spec,
        "files": files,
        "sources": sources,
        "origins": {key: origin_of(found) for key, found in sources.items()},
        "mismatches": mismatches,
        "shadowed": shadowed,
        "contexts": contexts,
        "unchecked_match_blocks": unchecked,
        "expected": expect,
        "included": included,
        "version": version,
        "client_alive_probe_factor": factor,
        "listen": listen_endpoints(effective) if target == "sshd" else [],
    }


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = run_module(module)
    except ConfigError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
