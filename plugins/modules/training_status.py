#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: report the state of the trainer role's training jobs."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: training_status
short_description: Report the state of training jobs run by the unbroken.training trainer role
version_added: 0.1.0
description:
  - For each job the C(unbroken.training.trainer) role defined on the host, reports its systemd
    unit state and automatic restart count, the progress the checkpoint library writes to the
    job's status file (step, loss, samples/s), the age of the newest committed checkpoint,
    whether the job is hung (running but its heartbeat older than its C(hang_timeout)), what
    the hang watchdog did, and why the unit failed when it did.
  - Only reads; never changes anything, so it is safe in check mode.
author:
  - unbroken.training contributors (@unbroken-training)
options:
  name:
    description:
      - Names of the jobs to report. Empty means every job defined in O(config_dir).
      - A name that is not defined on the host is an error.
    type: list
    elements: str
    default: []
    aliases: [names]
  config_dir:
    description:
      - The trainer role's configuration directory (C(trainer_config_dir)); job definitions
        are read from its C(jobs/) sub-directory.
    type: path
    default: /etc/unbroken/trainer
extends_documentation_fragment:
  - unbroken.training.attributes.info_module
notes:
  - Needs C(systemctl) on the host; standard library only.
  - The heartbeat is the status file's C(updated_at); a file left by an earlier run of the
    job counts from the start of the current run, as in the role's hang watchdog.
seealso:
  - module: unbroken.training.checkpoint_info
"""

EXAMPLES = r"""
- name: Read the state of every training job
  unbroken.training.training_status:
  register: training

- name: Show one job's progress
  ansible.builtin.debug:
    msg: >-
      {{ training.jobs_by_name.demo.step }} / {{ training.jobs_by_name.demo.total_steps }},
      loss {{ training.jobs_by_name.demo.loss }}

- name: Wait until a job trains again after a restart
  unbroken.training.training_status:
    name: [demo]
  register: demo
  until: demo.jobs[0].training
  retries: 30
  delay: 2
"""

RETURN = r"""
jobs:
  description: One entry per job, in the order asked (or sorted by name).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Job name.
      type: str
      returned: always
    unit:
      description: The job's systemd unit.
      type: str
      returned: always
    active_state:
      description: systemd ActiveState (active, activating, failed, ...).
      type: str
      returned: always
    sub_state:
      description: systemd SubState (running, auto-restart, dead, ...).
      type: str
      returned: always
    result:
      description: systemd Result of the last run (success, exit-code, start-limit-hit, ...).
      type: str
      returned: always
    restarts:
      description: Automatic restarts since the unit was last started by hand (NRestarts).
      type: int
      returned: always
    exit_code:
      description: Exit status of the last main process, when it exited.
      type: int
      returned: always
    main_pid:
      description: PID of the running main process (docker's client), 0 when none.
      type: int
      returned: always
    main_started_at:
      description: Unix time the current (or last) main process started.
      type: float
      returned: always
    running:
      description: The unit is active and its main process runs.
      type: bool
      returned: always
    training:
      description: Running and the status file was written by this run in state training.
      type: bool
      returned: always
    status_state:
      description: State in the status file (starting, training, stopping, finished, failed).
      type: str
      returned: always
    step:
      description: Optimizer steps completed (status file).
      type: int
      returned: always
    total_steps:
      description: Steps the run is configured for.
      type: int
      returned: always
    loss:
      description: Loss of the latest step.
      type: float
      returned: always
    samples_per_second:
      description: Throughput between the last two status writes.
      type: float
      returned: always
    heartbeat_age:
      description: Seconds since the heartbeat (status write, or start of this run).
      type: float
      returned: always
    hang_timeout:
      description: Heartbeat age after which the watchdog restarts the job (0 off).
      type: int
      returned: always
    startup_timeout:
      description: Limit on the heartbeat age before this run's first status write.
      type: int
      returned: always
    hung:
      description: >-
        Running with a heartbeat older than hang_timeout, or, before this run's first
        status write, running longer than startup_timeout.
      type: bool
      returned: always
    resumed_from:
      description: Checkpoint this run resumed from, with skipped invalid ones.
      type: dict
      returned: always
    last_checkpoint:
      description: Newest committed checkpoint (name, step, created, age_seconds).
      type: dict
      returned: always
    checkpoint_error:
      description: Error of the latest failed checkpoint write.
      type: str
      returned: always
    watchdog:
      description: The hang watchdog's record (last check, kills, last kill time).
      type: dict
      returned: always
    failure:
      description: Why the unit failed (result, exit code, last log lines); null when it did not.
      type: dict
      returned: always
    failure_reason:
      description: One-line reason from C(failure), null when none.
      type: str
      returned: always
jobs_by_name:
  description: The same entries keyed by job name.
  returned: always
  type: dict
"""

import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.unbroken.training.plugins.module_utils.checkpoint_manifest import (
    find_newest_valid,
)

STATUS_SCHEMA = "unbroken.training/status"
UNIT_PROPERTIES = (
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "NRestarts",
    "ExecMainStatus",
    "ExecMainCode",
    "ExecMainPID",
    "ExecMainStartTimestampMonotonic",
)

Runner = Callable[[List[str]], Tuple[int, str, str]]


def read_json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def read_status(path: str) -> Optional[Dict[str, Any]]:
    """The checkpoint library's status document, or None (absent, torn, not a status file)."""
    document = read_json(path)
    if document is None or document.get("schema") != STATUS_SCHEMA:
        return None
    return document


def parse_show(text: str) -> Dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return values


def to_int(value: Optional[str]) -> Optional[int]:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def unit_properties(run: Runner, unit: str) -> Dict[str, str]:
    rc, out, err = run(["systemctl", "show", unit, "--property=" + ",".join(UNIT_PROPERTIES)])
    if rc != 0:
        return {"LoadState": "error", "ActiveState": "unknown", "SubState": err.strip()}
    return parse_show(out)


def heartbeat(
    status: Optional[Dict[str, Any]], started_wall: Optional[float], now: float
) -> Tuple[Optional[float], bool]:
    """(heartbeat age, whether the status was written by the current run).

    Same rule as the role's watchdog: a status older than the current run's start counts
    from the start, so a freshly restarted job is not called hung before it could write.
    """
    updated = status.get("updated_at") if status else None
    fresh = isinstance(updated, (int, float)) and (
        started_wall is None or float(updated) > started_wall
    )
    if fresh:
        return max(0.0, now - float(updated)), True  # type: ignore[arg-type]
    if started_wall is not None:
        return max(0.0, now - started_wall), False
    if isinstance(updated, (int, float)):
        return max(0.0, now - float(updated)), False
    return None, False


def newest_checkpoint(directory: str, now: float) -> Optional[Dict[str, Any]]:
    """Newest committed checkpoint by manifest and file sizes (no hashing: cheap)."""
    if not os.path.isdir(directory):
        return None
    try:
        best, _invalid = find_newest_valid(directory, full=False)
    except OSError:
        return None
    if best is None:
        return None
    created = (best.manifest or {}).get("created")
    return {
        "name": best.name,
        "step": best.step,
        "created": created,
        "age_seconds": None if created is None else round(max(0.0, now - created), 1),
    }


def job_report(
    job: Dict[str, Any],
    run: Runner,
    now_wall: float,
    now_monotonic: float,
) -> Dict[str, Any]:
    props = unit_properties(run, job["unit"])
    active = props.get("ActiveState", "unknown")
    sub = props.get("SubState", "")
    start_usec = to_int(props.get("ExecMainStartTimestampMonotonic")) or 0
    started_wall = now_wall - (now_monotonic - start_usec / 1e6) if start_usec > 0 else None
    running = active == "active" and sub == "running"
    status = read_status(job["status_file"])
    age, fresh = heartbeat(status, started_wall if running else None, now_wall)
    hang_timeout = int(job.get("hang_timeout") or 0)
    startup_timeout = int(job.get("startup_timeout") or 0) or hang_timeout
    limit = hang_timeout if fresh else startup_timeout
    status_state = status.get("state") if status else None
    failure = read_json(os.path.join(job["state_dir"], "failure.json"))
    return {
        "name": job["name"],
        "unit": job["unit"],
        "load_state": props.get("LoadState"),
        "active_state": active,
        "sub_state": sub,
        "result": props.get("Result"),
        "restarts": to_int(props.get("NRestarts")),
        "exit_code": to_int(props.get("ExecMainStatus")),
        "main_pid": to_int(props.get("ExecMainPID")) or 0,
        "main_started_at": None if started_wall is None else round(started_wall, 3),
        "running": running,
        "training": running and fresh and status_state == "training",
        "status_state": status_state,
        "step": status.get("step") if status else None,
        "total_steps": status.get("total_steps") if status else None,
        "loss": status.get("loss") if status else None,
        "samples_per_second": status.get("samples_per_second") if status else None,
        "status_updated_at": status.get("updated_at") if status else None,
        "heartbeat_age": None if age is None else round(age, 1),
        "hang_timeout": hang_timeout,
        "startup_timeout": startup_timeout,
        "hung": bool(
            running
            and hang_timeout > 0
            and age is not None
            and age > limit
            and not (fresh and status_state == "finished")
        ),
        "resumed_from": status.get("resumed_from") if status else None,
        "last_checkpoint": newest_checkpoint(job["checkpoint_dir"], now_wall),
        "checkpoint_error": status.get("checkpoint_error") if status else None,
        "watchdog": read_json(os.path.join(job["state_dir"], "watchdog.json")),
        "failure": failure,
        "failure_reason": failure.get("message") if failure else None,
    }


def load_jobs(config_dir: str, names: List[str]) -> Tuple[List[Dict[str, Any]], List[str]]:
    """(definitions found, names asked for but not defined)."""
    directory = os.path.join(config_dir, "jobs")
    try:
        defined = sorted(n[: -len(".json")] for n in os.listdir(directory) if n.endswith(".json"))
    except FileNotFoundError:
        defined = []
    wanted = names or defined
    missing = [n for n in wanted if n not in defined]
    jobs = []
    for name in wanted:
        if name in defined:
            job = read_json(os.path.join(directory, name + ".json"))
            if job is None:
                missing.append(name)
            else:
                jobs.append(job)
    return jobs, missing


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "list", "elements": "str", "default": [], "aliases": ["names"]},
            "config_dir": {"type": "path", "default": "/etc/unbroken/trainer"},
        },
        supports_check_mode=True,
    )
    jobs, missing = load_jobs(module.params["config_dir"], module.params["name"])
    if missing:
        module.fail_json(
            msg="no readable job definition for {} in {}/jobs (jobs are defined by the "
            "trainer role)".format(", ".join(missing), module.params["config_dir"])
        )

    def run(argv: List[str]) -> Tuple[int, str, str]:
        result: Tuple[int, str, str] = module.run_command(argv, environ_update={"LC_ALL": "C"})
        return result

    now_wall, now_monotonic = time.time(), time.monotonic()
    reports = [job_report(job, run, now_wall, now_monotonic) for job in jobs]
    module.exit_json(changed=False, jobs=reports, jobs_by_name={r["name"]: r for r in reports})


if __name__ == "__main__":
    main()
