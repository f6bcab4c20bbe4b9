#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the docker_pull_progress action (plugins/action/docker_pull_progress.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_pull_progress
short_description: Wait for an async image pull and print its progress while it runs
version_added: 0.1.0
description:
  - Ansible shows a task's result only when the task ends, so a pull of a 10-20 GB image is
    silent for many minutes. Run M(unbroken.training.docker_image_digest) with C(async) and
    C(poll=0) and its O(unbroken.training.docker_image_digest#module:progress_file) option,
    then hand the registered job to this action.
  - It announces the image's compressed size and number of layers, then prints a line each
    time layers complete (layers and bytes done, elapsed seconds, the attempt after a retry),
    and returns the module's own result when the job ends, failing with its message.
  - Bytes advance a whole layer at a time; C(docker pull) prints no byte counts without a
    terminal.
  - A job registered without C(async) (check mode cannot be async) is returned unchanged.
author:
  - unbroken.training contributors (@unbroken-training)
options:
  job:
    description: The registered result of the C(async) docker_image_digest task.
    type: dict
    required: true
  progress_file:
    description:
      - The same path as the module's
        O(unbroken.training.docker_image_digest#module:progress_file).
    type: path
    required: true
  poll_interval:
    description: Seconds between two looks at the job and its progress.
    type: int
    default: 5
  timeout:
    description: Seconds after which waiting fails (set the C(async) value of the pull).
    type: int
    default: 7200
attributes:
  action:
    description: Runs on the controller and polls the host.
    support: full
  check_mode:
    description: In check mode the pull task runs without async and its result is returned.
    support: full
  diff_mode:
    description: Returns the pull's diff.
    support: full
notes:
  - Polling runs C(async_status) and C(slurp) on the host at each interval.
"""

EXAMPLES = r"""
- name: Start the pull in the background
  unbroken.training.docker_image_digest:
    repository: pytorch/pytorch
    tag: 2.13.0-cuda12.6-cudnn9-runtime
    digest: sha256:6acf597eeb8e376a96580dde4952f37cc017fef732bb40bfc73f28f25e3f64b4
    progress_file: /var/tmp/pytorch-pull.json
  async: 7200
  poll: 0
  changed_when: false
  register: pull_job

- name: Show the pull's progress until it ends
  unbroken.training.docker_pull_progress:
    job: "{{ pull_job }}"
    progress_file: /var/tmp/pytorch-pull.json
    timeout: 7200
  register: pulled
"""

RETURN = r"""
reference:
  description:
    - The local reference of the image, from the module's result when the job ended (every
      key that M(unbroken.training.docker_image_digest) returns is passed on).
  returned: success
  type: str
"""
