#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: file_content
short_description: Write a small file from given content in one round trip, validated and atomic
version_added: 0.1.0
description:
  - Makes O(path) hold exactly O(content), with the given owner, group and mode, in a single
    module run. It is what M(ansible.builtin.template) does for a small rendered file (pass
    C(content) from the P(ansible.builtin.template#lookup) lookup), without the separate
    C(stat) run, the transfer of a temporary file and the C(copy) run that the template
    action needs. On a host reached over SSH or C(docker exec) that is one round trip
    instead of four or five.
  - The content is compared with the file in place; only a difference is written. The new
    content goes to a temporary file next to O(path), is flushed to disk, optionally checked
    with O(validate), and renamed over O(path), so readers see the old or the new file,
    never a torn one. A file that fails validation is never put in place.
  - Owner, group and mode are applied whether or not the content changed.
  - Meant for configuration files that fit in a module argument (kilobytes), not for large
    or binary files.
author:
  - unbroken.training contributors (@unbroken-training)
options:
  path:
    description:
      - The file to write. Its directory must exist.
      - A symbolic link at O(path) is replaced by a regular file, as
        M(ansible.builtin.template) does by default.
    type: path
    required: true
    aliases: [dest]
  content:
    description: The whole text the file must contain (written as UTF-8).
    type: str
    required: true
  backup:
    description:
      - Keep a timestamped copy of the previous file when the content changes, named as
        M(ansible.builtin.template) names it; its path is RV(backup_file).
    type: bool
    default: false
  validate:
    description:
      - Command that checks the new content before it replaces O(path); C(%s) stands for the
        temporary file and must appear. It runs without a shell.
      - When it exits non-zero the module fails with its output and O(path) is unchanged.
    type: str
extends_documentation_fragment:
  - ansible.builtin.files
attributes:
  check_mode:
    description: Reports whether the content or the attributes would change, and writes nothing.
    support: full
  diff_mode:
    description: Shows the content before and after, and attribute changes.
    support: full
"""

EXAMPLES = r"""
- name: Write an sshd drop-in rendered on the controller, keeping a backup
  unbroken.training.file_content:
    path: /etc/ssh/sshd_config.d/00-keepalive.conf
    content: "{{ lookup('ansible.builtin.template', 'sshd_keepalive.conf.j2') }}"
    owner: root
    group: root
    mode: "0644"
    backup: true
  register: dropin

- name: Write the tmux configuration only if tmux accepts it
  unbroken.training.file_content:
    path: /etc/tmux.conf
    content: |
      set -g history-limit 50000
    mode: "0644"
    validate: tmux -L validate -f %s start-server ; kill-server
"""

RETURN = r"""
path:
  description: The file written or checked.
  returned: always
  type: str
  sample: /etc/ssh/sshd_config.d/00-keepalive.conf
checksum:
  description: SHA-1 of O(content) as written (UTF-8), as M(ansible.builtin.copy) reports it.
  returned: success
  type: str
  sample: 2a2c0a9a6f3e0a3f6bd7c2a4b8f9c9e0d4f5a6b7
backup_file:
  description: Path of the copy of the previous file.
  returned: when the content changed, O(backup) is true and a file was in place
  type: str
  sample: /etc/ssh/sshd_config.d/00-keepalive.conf.4242.2026-12-01@20:00:00~
"""

import hashlib
import os
import tempfile
from typing import Any, Dict, Optional

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native


def _read_current(module: AnsibleModule, path: str) -> Optional[bytes]:
    """The bytes of the regular file at path; None when there is none (or a link to replace)."""
    if os.path.islink(path) or not os.path.lexists(path):
        return None
    if not os.path.isfile(path):
        module.fail_json(
            msg=f"{path} is not a regular file; file_content writes files only.", path=path
        )
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        module.fail_json(msg=f"Cannot read {path}: {to_native(exc)}", path=path)
    return None  # not reached: fail_json exits


def _write_temp(module: AnsibleModule, path: str, data: bytes) -> str:
    """data in a new file next to path, flushed to disk; returns its path."""
    directory = os.path.dirname(path)
    fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        os.unlink(tmp_path)
        module.fail_json(
            msg=f"Cannot write a temporary file in {directory}: {to_native(exc)}", path=path
        )
    return tmp_path


def _validate(module: AnsibleModule, path: str, tmp_path: str) -> None:
    """Run the validate command on the temporary file; remove it and fail when refused."""
    command = module.params["validate"] % tmp_path
    rc, out, err = module.run_command(command)
    if rc != 0:
        os.unlink(tmp_path)
        module.fail_json(
            msg=f"The new content of {path} failed validation with '{module.params['validate']}' "
            f"(exit {rc}); {path} was left unchanged.",
            path=path,
            rc=rc,
            stdout=out,
            stderr=err,
            exit_status=rc,
        )


def _sync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run_module(module: AnsibleModule) -> Dict[str, Any]:
    params = module.params
    path = os.path.abspath(params["path"])
    validate = params["validate"]
    if validate is not None and "%s" not in validate:
        module.fail_json(
            msg=f"validate must contain %s (the file to check): {validate!r}", path=path
        )
    if not os.path.isdir(os.path.dirname(path)):
        module.fail_json(
            msg=f"The directory of {path} does not exist; create it first (nothing was written).",
            path=path,
        )

    data = params["content"].encode("utf-8")
    before = _read_current(module, path)
    content_changed = before != data
    result: Dict[str, Any] = {"path": path, "checksum": hashlib.sha1(data).hexdigest()}
    diff: Dict[str, Any] = {}

    if content_changed:
        diff = {
            "before_header": path if before is not None else f"{path} (no regular file)",
            "after_header": path,
            "before": before.decode("utf-8", errors="replace") if before is not None else "",
            "after": params["content"],
        }
        if not module.check_mode:
            tmp_path = _write_temp(module, path, data)
            if validate is not None:
                _validate(module, path, tmp_path)
            if before is not None and params["backup"]:
                result["backup_file"] = module.backup_local(path)
            module.atomic_move(tmp_path, path)
            _sync_directory(os.path.dirname(path))

    file_args = module.load_file_common_arguments(params, path=path)
    attributes_diff: Dict[str, Any] = {"before": {}, "after": {}}
    if os.path.exists(path) or not module.check_mode:
        attributes_changed = module.set_fs_attributes_if_different(
            file_args, False, attributes_diff
        )
    else:
        attributes_changed = False
    result["changed"] = content_changed or attributes_changed
    if module._diff:
        if content_changed:
            result["diff"] = [diff, attributes_diff] if attributes_changed else diff
        elif attributes_changed:
            result["diff"] = attributes_diff
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True, "aliases": ["dest"]},
            "content": {"type": "str", "required": True},
            "backup": {"type": "bool", "default": False},
            "validate": {"type": "str"},
        },
        add_file_common_args=True,
        supports_check_mode=True,
    )
    module.exit_json(**run_module(module))


if __name__ == "__main__":
    main()
