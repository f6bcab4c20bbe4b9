#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: checkpoint_info
short_description: Report the checkpoints of a training job and which one a resume would use
version_added: 0.1.0
description:
  - Reads a checkpoint directory written by the C(unbroken_ckpt) library that the
    C(unbroken.training.trainer) role deploys, and returns every checkpoint with its step,
    age, size and validity, the newest valid one, the corrupt ones, and writes left
    unfinished by a crash.
  - A checkpoint is valid when its C(MANIFEST.json) parses, carries a matching self-digest,
    and every listed file has the recorded size; with O(verify=newest) or O(verify=all) the
    per-segment checksums the manifest names (CRC-32 by default, SHA-256 when the writer
    asked for it) are checked as well, which reads the data.
  - Uses the same manifest code as the training runtime (module_utils C(checkpoint_manifest)),
    so it judges a checkpoint exactly as a resume would.
  - Reads only, takes no lock and never changes the directory, so it is safe while training
    runs and behaves the same in check mode.
author:
  - unbroken.training contributors (@unbroken-training)
options:
  path:
    description:
      - The job's checkpoint directory (the trainer's C(--checkpoint-dir)).
      - A directory that does not exist yet is reported with RV(exists=false), not as an error,
        so the module can run before a job's first checkpoint.
    type: path
    required: true
  verify:
    description:
      - C(sizes) checks manifests and file sizes only (cheap; catches truncated and
        uncommitted checkpoints, not flipped bits).
      - C(newest) also hashes checkpoints from the newest down until one verifies, the
        choice a resume makes; older ones get the size check.
      - C(all) hashes every checkpoint (reads all checkpoint data).
    type: str
    choices: [sizes, newest, all]
    default: sizes
attributes:
  check_mode:
    description: Reads only, so check mode returns the same result.
    support: full
  diff_mode:
    description: Nothing changes, so there is nothing to diff.
    support: none
notes:
  - Checksum verification reads each checkpoint completely and uses up to four threads;
    CRC-32 runs at about 2-4 GB/s per core, SHA-256 at about 1 GB/s with CPU SHA extensions.
"""

EXAMPLES = r"""
- name: Find the checkpoint a restart of the job would resume from
  unbroken.training.checkpoint_info:
    path: /srv/training/llm/checkpoints
    verify: newest
  register: ckpt

- name: Refuse to go on when the newest checkpoint is older than two hours
  ansible.builtin.assert:
    that:
      - ckpt.latest is not none
      - ckpt.latest.age_seconds < 7200
    fail_msg: >-
      newest valid checkpoint: {{ ckpt.latest_name | default('none') }};
      corrupt: {{ ckpt.corrupt }}
"""

RETURN = r"""
exists:
  description: Whether the checkpoint directory exists.
  returned: always
  type: bool
path:
  description: The directory read (absolute).
  returned: always
  type: str
verify:
  description: The verification mode used.
  returned: always
  type: str
checkpoints:
  description: Every checkpoint-named directory, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Directory name, C(step-) and at least six digits.
      type: str
    step:
      description: Training step the checkpoint holds.
      type: int
    path:
      description: Absolute path of the checkpoint.
      type: str
    valid:
      description: Manifest and files check out (at the level of RV(verify)).
      type: bool
    verified:
      description: Whether the content hashes were checked.
      type: bool
    problems:
      description: What is wrong, one sentence per problem (empty when valid).
      type: list
      elements: str
    size_bytes:
      description: Sum of the data file sizes the manifest lists (0 without a manifest).
      type: int
    created:
      description: Unix time the checkpoint was written (null without a valid manifest).
      type: float
    age_seconds:
      description: Seconds since RV(checkpoints[].created).
      type: float
    epoch:
      description: Data epoch recorded by the trainer.
      type: int
    config_fingerprint:
      description: Fingerprint of the run configuration that wrote it.
      type: str
  sample:
    - name: step-000120
      step: 120
      path: /srv/training/llm/checkpoints/step-000120
      valid: true
      verified: true
      problems: []
      size_bytes: 93754
      created: 1764362000.5
      age_seconds: 42.1
      epoch: 0
      config_fingerprint: "sha256:10509e58..."
latest:
  description: The newest valid checkpoint (same fields as an RV(checkpoints) item), or null.
  returned: always
  type: dict
latest_name:
  description: Name of RV(latest), or null.
  returned: always
  type: str
latest_step:
  description: Step of RV(latest), or null.
  returned: always
  type: int
latest_age_seconds:
  description: Age of RV(latest) in seconds, or null.
  returned: always
  type: float
latest_size_bytes:
  description: Size of RV(latest) in bytes, or null.
  returned: always
  type: int
corrupt:
  description: Names of checkpoints found invalid, newest first.
  returned: always
  type: list
  elements: str
quarantined:
  description:
    - Checkpoints the trainer moved aside because they were invalid or unsafe to load
      (C(quarantine-step-<N>-<UTC time>)), newest first. They are kept for inspection,
      never loaded and not counted by rotation; delete them once inspected.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Directory name inside O(path).
      type: str
    step:
      description: Step of the checkpoint before it was moved aside.
      type: int
    reason:
      description: Why it was moved aside (from its C(QUARANTINE.json)).
      type: str
  sample:
    - name: quarantine-step-000062-20261207T044033Z
      step: 62
      reason: "state.pt: crc32 mismatch in 1 of 1 segment(s): segment 0 (bytes 0-443999)"
incomplete:
  description:
    - Entries left by a write or rotation that has not finished (C(.tmp-*), C(.trash-*)),
      either in progress now or abandoned by a crash; the next trainer start removes them.
  returned: always
  type: list
  elements: str
total_size_bytes:
  description: Sum of RV(checkpoints[].size_bytes).
  returned: always
  type: int
writer:
  description: The last writer recorded in the lock file (pid, host, start time), or null.
  returned: always
  type: str
"""

import os
import time
from typing import Any, Dict, List, Optional

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.unbroken.training.plugins.module_utils import (
    checkpoint_manifest as fmt,
)

VERIFY_CHOICES = ["sizes", "newest", "all"]


def argument_spec() -> Dict[str, Any]:
    return {
        "path": {"type": "path", "required": True},
        "verify": {"type": "str", "choices": VERIFY_CHOICES, "default": "sizes"},
    }


def inspect_directory(directory: str, verify: str) -> List[fmt.CheckpointStatus]:
    """Inspect every checkpoint, newest first, hashing as ``verify`` asks."""
    statuses = []
    hash_next = verify in ("newest", "all")
    for _step, name in fmt.list_checkpoints(directory):
        status = fmt.inspect_checkpoint(directory, name, full=False)
        if status.valid and hash_next:
            status = fmt.inspect_checkpoint(directory, name, full=True)
            if status.valid and verify == "newest":
                hash_next = False
        statuses.append(status)
    return statuses


def read_writer(directory: str) -> Optional[str]:
    try:
        with open(os.path.join(directory, fmt.LOCK_NAME), encoding="utf-8", errors="replace") as f:
            return f.read(200).strip() or None
    except OSError:
        return None


def summarise(directory: str, statuses: List[fmt.CheckpointStatus], now: float) -> Dict[str, Any]:
    items = [status.as_dict(now) for status in statuses]
    latest = next((item for item in items if item["valid"]), None)
    return {
        "checkpoints": items,
        "latest": latest,
        "latest_name": latest["name"] if latest else None,
        "latest_step": latest["step"] if latest else None,
        "latest_age_seconds": latest["age_seconds"] if latest else None,
        "latest_size_bytes": latest["size_bytes"] if latest else None,
        "corrupt": [item["name"] for item in items if not item["valid"]],
        "quarantined": fmt.list_quarantined(directory),
        "incomplete": fmt.list_incomplete(directory),
        "total_size_bytes": sum(item["size_bytes"] for item in items),
        "writer": read_writer(directory),
    }


def run_module(module: AnsibleModule) -> Dict[str, Any]:
    directory = os.path.abspath(module.params["path"])
    verify = module.params["verify"]
    result: Dict[str, Any] = {"changed": False, "path": directory, "verify": verify}
    if not os.path.lexists(directory):
        result.update(summarise_missing())
        return result
    if not os.path.isdir(directory):
        module.fail_json(
            msg=f"{directory} exists but is not a directory; path must be the "
            "checkpoint directory a trainer writes into",
            **result,
        )
    try:
        statuses = inspect_directory(directory, verify)
        result.update(summarise(directory, statuses, time.time()))
    except OSError as exc:
        module.fail_json(msg=f"cannot read checkpoint directory {directory}: {exc}", **result)
    result["exists"] = True
    return result


def summarise_missing() -> Dict[str, Any]:
    return {
        "exists": False,
        "checkpoints": [],
        "latest": None,
        "latest_name": None,
        "latest_step": None,
        "latest_age_seconds": None,
        "latest_size_bytes": None,
        "corrupt": [],
        "quarantined": [],
        "incomplete": [],
        "total_size_bytes": 0,
        "writer": None,
    }


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    module.exit_json(**run_module(module))


if __name__ == "__main__":
    main()
