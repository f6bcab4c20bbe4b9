#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_daemon_config
short_description: Merge keys into Docker's daemon.json without losing the others
description:
  - Merges keys into C(/etc/docker/daemon.json) (objects merge key by key, other values are
    replaced) and removes keys, keeping every other setting the file already has.
  - Writes only when the resulting configuration differs, atomically (temporary file, fsync,
    rename), optionally keeping a backup of the previous file.
  - Refuses a file that is not valid JSON, or not a JSON object, and leaves it unchanged.
  - Warns when a key of the resulting file is also passed to dockerd as a command-line flag by
    the systemd unit (including drop-ins and C($VAR) from EnvironmentFiles); dockerd refuses to
    start when an option comes from both places.
version_added: 0.1.0
author:
  - unbroken.training contributors (@unbroken-training)
options:
  path:
    description: Path of the daemon configuration file.
    type: path
    default: /etc/docker/daemon.json
  merge:
    description:
      - Keys to merge into the file. Nested objects (for example C(runtimes)) merge key by key;
        lists and scalars replace the existing value.
    type: dict
    default: {}
  remove:
    description:
      - Key paths to remove, C(key) or C(parent/child) (for example C(runtimes/nvidia)).
      - Removal happens before O(merge) is applied.
    type: list
    elements: str
    default: []
  remove_if_equal:
    description:
      - Key paths to remove only while they still hold the given value, so that undoing a
        setting this module made leaves a value the user chose alone.
    type: dict
    default: {}
  backup:
    description: Keep a timestamped copy of the previous file when it is changed.
    type: bool
    default: false
  mode:
    description: Permissions of the file when it is created; an existing file keeps its own.
    type: raw
    default: '0644'
  service:
    description:
      - Systemd unit whose dockerd command line is checked for flags that duplicate keys of
        the resulting file. An empty string skips the check.
    type: str
    default: docker
attributes:
  check_mode:
    description: Computes the result and the diff without writing the file.
    support: full
  diff_mode:
    description: Shows daemon.json before and after.
    support: full
"""

EXAMPLES = r"""
- name: Register the nvidia runtime with Docker, keeping all other settings
  unbroken.training.docker_daemon_config:
    merge:
      runtimes:
        nvidia:
          path: /usr/bin/nvidia-container-runtime
          args: []
    backup: true

- name: Stop making nvidia the default runtime, unless the user changed it since
  unbroken.training.docker_daemon_config:
    remove_if_equal:
      default-runtime: nvidia

- name: Remove a runtime
  unbroken.training.docker_daemon_config:
    remove:
      - runtimes/nvidia
"""

RETURN = r"""
config:
  description: The configuration the file holds after the task (or would hold, in check mode).
  returned: success
  type: dict
  sample:
    log-opts: {max-size: 10m}
    runtimes: {nvidia: {path: /usr/bin/nvidia-container-runtime}}
backup_file:
  description: Path of the backup, when one was made.
  returned: changed and O(backup) is true and the file existed
  type: str
flag_conflicts:
  description: Keys of the resulting file that the service unit also passes to dockerd as flags.
  returned: success
  type: list
  elements: dict
  sample: [{"key": "hosts", "flag": "-H"}]
"""

import os
from typing import Any, Dict, List, Tuple

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.unbroken.training.plugins.module_utils.docker_daemon import (
    DaemonConfigError,
    apply_changes,
    dump_config,
    expand_argv,
    find_flag_conflicts,
    parse_config,
    parse_environment_file,
    parse_exec_start,
    split_path,
    write_atomically,
)


def _read_text(path: str) -> Tuple[bool, str]:
    if not os.path.exists(path):
        return False, ""
    with open(path, encoding="utf-8") as handle:
        return True, handle.read()


def _unit_properties(module: AnsibleModule, service: str) -> Dict[str, str]:
    systemctl = module.get_bin_path("systemctl")
    if not systemctl:
        return {}
    props = "ExecStart,Environment,EnvironmentFiles,FragmentPath,DropInPaths"
    rc, out, _err = module.run_command([systemctl, "show", service, "-p", props])
    if rc != 0:
        return {}
    result: Dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            result[key] = result[key] + "\n" + value if key in result else value
    return result


def _unit_environment(props: Dict[str, str]) -> Dict[str, str]:
    env: Dict[str, str] = {}
    for entry in props.get("EnvironmentFiles", "").split("\n"):
        path = entry.split(" (", 1)[0].strip()
        if path:
            exists, text = _read_text(path)
            if exists:
                env.update(parse_environment_file(text))
    for assignment in props.get("Environment", "").split():
        key, sep, value = assignment.partition("=")
        if sep:
            env[key] = value
    return env


def flag_conflicts(
    module: AnsibleModule, service: str, config: Dict[str, Any]
) -> Tuple[List[Dict[str, str]], str]:
    """Conflicting keys and the unit files that define dockerd's command line."""
    if not service:
        return [], ""
    props = _unit_properties(module, service)
    env = _unit_environment(props)
    conflicts: List[Dict[str, str]] = []
    for argv in parse_exec_start(props.get("ExecStart", "")):
        for conflict in find_flag_conflicts(config, expand_argv(argv, env)):
            if conflict not in conflicts:
                conflicts.append(conflict)
    sources = " ".join(
        part for part in (props.get("FragmentPath", ""), props.get("DropInPaths", "")) if part
    )
    return conflicts, sources


def _file_mode(module: AnsibleModule, path: str, exists: bool) -> Tuple[int, int, int]:
    if exists:
        st = os.stat(path)
        return st.st_mode & 0o7777, st.st_uid, st.st_gid
    mode = module.params["mode"]
    return (int(mode, 8) if isinstance(mode, str) else int(mode)), -1, -1


def run_module() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/etc/docker/daemon.json"},
            "merge": {"type": "dict", "default": {}},
            "remove": {"type": "list", "elements": "str", "default": []},
            "remove_if_equal": {"type": "dict", "default": {}},
            "backup": {"type": "bool", "default": False},
            "mode": {"type": "raw", "default": "0644"},
            "service": {"type": "str", "default": "docker"},
        },
        supports_check_mode=True,
    )
    path = module.params["path"]
    for key_path in list(module.params["remove"]) + list(module.params["remove_if_equal"]):
        try:
            split_path(key_path)
        except ValueError as exc:
            module.fail_json(msg=str(exc))

    exists, before_text = _read_text(path)
    try:
        before = parse_config(before_text, path)
    except DaemonConfigError as exc:
        module.fail_json(
            msg=f"{exc}. The file was left unchanged: dockerd cannot read it either. Fix it "
            "(or move it away) and run again.",
            path=path,
        )

    after = apply_changes(
        before, module.params["merge"], module.params["remove"], module.params["remove_if_equal"]
    )
    changed = after != before
    conflicts, unit_sources = flag_conflicts(module, module.params["service"], after)
    for conflict in conflicts:
        module.warn(
            f"'{conflict['key']}' is set in {path} and dockerd is also started with "
            f"'{conflict['flag']}' ({unit_sources or module.params['service']}): dockerd refuses "
            "to start when an option comes from both places; keep only one of them."
        )

    result: Dict[str, Any] = {"changed": changed, "config": after, "flag_conflicts": conflicts}
    after_text = dump_config(after)
    if changed and module._diff:
        result["diff"] = {
            "before": before_text,
            "after": after_text,
            "before_header": path,
            "after_header": path,
        }
    if changed and not module.check_mode:
        if exists and module.params["backup"]:
            result["backup_file"] = module.backup_local(path)
        mode, uid, gid = _file_mode(module, path, exists)
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        write_atomically(path, after_text, mode, uid, gid)
    module.exit_json(**result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
