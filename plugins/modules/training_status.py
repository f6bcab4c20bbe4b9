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
  - With O(wait), polls until every job trains again (or finished, stopped, or failed with a
    recorded reason) and returns then, so a playbook waits without a retry loop that prints
    C(FAILED - RETRYING) for a normal wait.
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
  wait:
    description:
      - Wait until every job named is settled - training again with a heartbeat from its
        current process, finished, stopped, or failed with its reason recorded - polling
        once a second.
      - A job that is not settled within O(wait_timeout) makes the module fail, naming it
        and its state.
    type: bool
    default: false
  wait_timeout:
    description: Seconds O(wait) waits at most.
    type: int
    default: 300
  metrics_points:
    description:
      - When above 0, every job also returns RV(jobs[].metrics), its metrics stream
        (C(<checkpoint_dir>/metrics.jsonl) and all its rotated files, de-duplicated across
        restarts) thinned on the host to at most this many steps (the first step of every
        run and the last one are always kept), so a long history reaches the controller small.
      - 0 reads only the newest record (RV(jobs[].metrics_latest)).
    type: int
    default: 0
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

- name: Wait until a job trains again after a restart (no retry loop, no FAILED lines)
  unbroken.training.training_status:
    name: [demo]
    wait: true
    wait_timeout: 120
  register: demo
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
    nodes:
      description: >-
        The hosts of a multi-node job (C(nodes) of the trainer role's job), first the rendezvous
        host; empty for a single-node job.
      type: list
      elements: str
      returned: always
    log_file:
      description: The job's log file on the host (the trainer role's C(trainer_log_dir)).
      type: str
      returned: always
    command:
      description: >-
        What the container runs (its command and arguments, from the job definition); the
        report reads the batch size from it.
      type: list
      elements: str
      returned: always
    min_nodes:
      description: >-
        The fewest nodes a multi-node job trains with (torchrun's C(--nnodes) in its command:
        C(N) or C(MIN:MAX)); with fewer nodes up, the others wait for the missing ones.
        Null for a single-node job.
      type: int
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
      description: >-
        Starts nobody asked for (crash, hang watchdog, reboot) since the last deliberate
        start (operator, playbook, converge), counted by the role's helper; systemd's
        NRestarts when the helper has no record yet. Only these count toward the
        crash-loop limit.
      type: int
      returned: always
    runs:
      description: Runs (starts of the job's process) in total, as the helper counted them.
      type: int
      returned: always
    systemd_restarts:
      description: systemd's NRestarts (reset by a reboot and by every manual start).
      type: int
      returned: always
    last_start:
      description: >-
        The current (or last) run's start - run number, cause (operator, reboot, crash,
        hang), a one-line detail and the time; null before the helper recorded one.
      type: dict
      returned: always
    last_end:
      description: How the last finished run ended (systemd's result, exit code kind and status).
      type: dict
      returned: always
    exit_code:
      description: Exit status of the last main process, when it exited.
      type: int
      returned: always
    checked_at:
      description: Unix time (on the host) this report was read.
      type: float
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
      description: >-
        Running, the status file was written by this run in state training, and the node
        does not wait in a rendezvous round (RV(jobs[].waiting)).
      type: bool
      returned: always
    status_state:
      description: >-
        State in the status file (starting, training, stopping, stopped, finished, failed),
        as the trainer last wrote it; while RV(jobs[].waiting) it is the last workers'.
      type: str
      returned: always
    status_exit_code:
      description: The exit code the trainer wrote into its status file on its way out.
      type: int
      returned: always
    status_reason:
      description: One-line reason the trainer wrote for its last state (why it failed or stopped).
      type: str
      returned: always
    quarantined:
      description: >-
        Checkpoints the trainer found invalid and moved aside (name, step, reason), from
        the status file.
      type: list
      elements: dict
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
        status write, running longer than startup_timeout; never while RV(jobs[].waiting).
      type: bool
      returned: always
    waiting:
      description: >-
        A multi-node job whose node waits in a rendezvous round for the job's other nodes:
        the hang watchdog's last check of the current run found its torchrun agent running
        without workers (C(waiting) in RV(jobs[].watchdog)) and no worker wrote the status
        file since, so RV(jobs[].status_state) and the heartbeat are the last workers', not
        the node's state. The watchdog does not kill such a node; torch's rendezvous join
        timeout (600 s by default) ends the wait and systemd restarts the agent. Needs the
        hang watchdog (C(hang_timeout) above 0); always false for a single-node job.
      type: bool
      returned: always
    waiting_note:
      description: >-
        Why the node waits (C(waiting in a rendezvous round for the job's other nodes)),
        null when RV(jobs[].waiting) is false.
      type: str
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
      description: >-
        The hang watchdog's record (last check, its verdict - C(hung), C(waiting) - kills,
        last kill time).
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
    metrics_latest:
      description: >-
        The newest record of the job's metrics stream (step, time, loss, lr,
        samples_per_second and any scalar the script logs; non-finite values as null), null
        without a stream. Any training script can write it (C(unbroken_ckpt.metrics)).
      type: dict
      returned: always
    metrics:
      description:
        - >-
          With O(metrics_points) above 0: C(points) (thinned records, each with C(run), the
          index of the run it belongs to), C(records) (steps in the whole history),
          C(scalars) (names), C(runs) (one per start, oldest first: C(step), C(time),
          C(checkpoint) resumed from, C(previous_end) - how the run before ended:
          finished, stopped, failed or interrupted - C(host_cause) - operator, crash, hang or
          reboot, from the trainer role's record of that start, null when none matches - and
          C(down_seconds), from the last record before the start to the first after it),
          C(checkpoints) (C(step), C(time), C(name); thinned like the points), C(ends)
          (C(step), C(time), C(state), C(reason)), C(files), C(bad_lines).
        - Null without a metrics stream.
      type: dict
      returned: when O(metrics_points) is above 0
jobs_by_name:
  description: The same entries keyed by job name.
  returned: always
  type: dict
waited_seconds:
  description: How long O(wait) waited (0 without it).
  returned: always
  type: float
msg:
  description: With O(wait), one line per job saying how it settled.
  returned: always
  type: str
"""

import bisect
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.unbroken.training.plugins.module_utils.checkpoint_manifest import (
    find_newest_valid,
)
from ansible_collections.unbroken.training.plugins.module_utils.training_job_files import (
    FAILURE_FILE,
    RUNS_FILE,
    WATCHDOG_FILE,
    JobDefinitionError,
    job_names,
    read_job,
    run_history,
    state_path,
)
from ansible_collections.unbroken.training.plugins.module_utils.training_metrics import (
    MetricsHistory,
    latest_record,
    read_metrics,
)
from ansible_collections.unbroken.training.plugins.module_utils.training_status_file import (
    TERMINAL_STATES,
    one_line,
    read_json,
    read_status,
    updated_at,
)

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
WAIT_POLL_SECONDS = 1.0
# Status-file states after which a process is done on purpose: nothing more to wait for.
SETTLED_STATES = ("finished", "stopped")
# Starts of a crash-looping job kept in a metrics summary (the newest ones).
MAX_RUNS_IN_SUMMARY = 500

Runner = Callable[[List[str]], Tuple[int, str, str]]


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
    updated = updated_at(status)
    if updated is not None and (started_wall is None or updated > started_wall):
        return max(0.0, now - updated), True
    if started_wall is not None:
        return max(0.0, now - started_wall), False
    if updated is not None:
        return max(0.0, now - updated), False
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


WAITING_NOTE = "waiting in a rendezvous round for the job's other nodes"


def watchdog_saw_waiting(
    job: Dict[str, Any],
    running: bool,
    started_wall: Optional[float],
    status: Optional[Dict[str, Any]],
    watchdog: Optional[Dict[str, Any]],
) -> bool:
    """The hang watchdog's last check of this run found the torchrun agent without workers
    (``waiting`` in watchdog.json; the helper alone looks into the container), and no worker
    has written the status file since: the status file is the last worker's, stale."""
    if not running or len(job.get("nodes") or []) < 2 or not watchdog:
        return False
    checked = watchdog.get("checked_at")
    if watchdog.get("waiting") is not True or not isinstance(checked, (int, float)):
        return False
    if started_wall is None or checked <= started_wall:
        return False  # a check of an earlier run
    updated = updated_at(status)
    return updated is None or updated < checked


def min_nodes(job: Dict[str, Any]) -> Optional[int]:
    """The lower bound of ``--nnodes`` in a multi-node job's torchrun command."""
    command = [str(a) for a in job.get("command") or []]
    if len(job.get("nodes") or []) < 2 or "--nnodes" not in command[:-1]:
        return None
    return to_int(command[command.index("--nnodes") + 1].partition(":")[0])


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
    failure = read_json(state_path(job, FAILURE_FILE))
    runs = read_json(state_path(job, RUNS_FILE)) or {}
    systemd_restarts = to_int(props.get("NRestarts"))
    quarantined = status.get("quarantined") if status else None
    reason = status.get("reason") if status else None
    watchdog = read_json(state_path(job, WATCHDOG_FILE))
    waiting = watchdog_saw_waiting(job, running, started_wall, status, watchdog)
    return {
        "name": job["name"],
        "unit": job["unit"],
        "nodes": [n for n in job.get("nodes") or [] if isinstance(n, str)],
        "log_file": job.get("log_file"),
        "command": [str(arg) for arg in job.get("command") or []],
        "min_nodes": min_nodes(job),
        "load_state": props.get("LoadState"),
        "active_state": active,
        "sub_state": sub,
        "result": props.get("Result"),
        "restarts": _int_or(runs.get("restarts"), systemd_restarts),
        "runs": _int_or(runs.get("runs"), None),
        "systemd_restarts": systemd_restarts,
        "last_start": runs.get("last_start") if isinstance(runs.get("last_start"), dict) else None,
        "last_end": runs.get("last_end") if isinstance(runs.get("last_end"), dict) else None,
        "exit_code": to_int(props.get("ExecMainStatus")),
        "main_pid": to_int(props.get("ExecMainPID")) or 0,
        "checked_at": round(now_wall, 3),
        "main_started_at": None if started_wall is None else round(started_wall, 3),
        "running": running,
        "training": running and fresh and status_state == "training" and not waiting,
        "status_state": status_state,
        "status_exit_code": _int_or(status.get("exit_code") if status else None, None),
        "status_reason": one_line(reason) if isinstance(reason, str) else None,
        "quarantined": quarantined if isinstance(quarantined, list) else [],
        "step": status.get("step") if status else None,
        "total_steps": status.get("total_steps") if status else None,
        "loss": status.get("loss") if status else None,
        "samples_per_second": status.get("samples_per_second") if status else None,
        "status_updated_at": status.get("updated_at") if status else None,
        "heartbeat_age": None if age is None else round(age, 1),
        "hang_timeout": hang_timeout,
        "startup_timeout": startup_timeout,
        "waiting": waiting,
        "waiting_note": WAITING_NOTE if waiting else None,
        "hung": bool(
            running
            and not waiting
            and hang_timeout > 0
            and age is not None
            and age > limit
            and not (fresh and status_state in TERMINAL_STATES)
        ),
        "resumed_from": status.get("resumed_from") if status else None,
        "last_checkpoint": newest_checkpoint(job["checkpoint_dir"], now_wall),
        "checkpoint_error": status.get("checkpoint_error") if status else None,
        "watchdog": watchdog,
        "failure": failure,
        "failure_reason": failure.get("message") if failure else None,
        "metrics_latest": _json_safe(latest_record(job["checkpoint_dir"])),
    }


# -- metrics stream ---------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """Non-finite floats as None: Ansible's JSON has no NaN or Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def thin_indexes(count: int, max_points: int, keep: List[int]) -> List[int]:
    """Evenly spread indexes of ``count`` items, at most ``max_points`` of them (at least 2),
    always with the last one and every index in ``keep`` (which may add a few)."""
    if count <= max_points:
        return list(range(count))
    chosen = {int(i * count / max_points) for i in range(max(2, max_points) - 1)}
    chosen.add(count - 1)
    chosen.update(i for i in keep if 0 <= i < count)
    return sorted(chosen)


def match_host_causes(
    starts: List[Dict[str, Any]], history: List[Dict[str, Any]]
) -> List[Optional[str]]:
    """The trainer role's cause (runs.json) of each start event, None where none matches.

    The helper records a start just before the container starts, the script's start
    event follows: the newest record at or before the event (and after the previous
    event) is its start.
    """
    records = sorted((float(h["at"]), str(h["cause"])) for h in history)
    causes: List[Optional[str]] = []
    previous = -math.inf
    for start in starts:
        when = float(start.get("time") or 0)
        candidates = [cause for at, cause in records if previous < at <= when]
        causes.append(candidates[-1] if candidates else None)
        previous = when
    return causes


def metrics_summary(
    history: MetricsHistory, max_points: int, host_starts: List[Dict[str, Any]]
) -> Optional[Dict[str, Any]]:
    """The stream's history, thinned for the controller (see RETURN ``metrics``)."""
    if not history.files:
        return None
    records = history.records
    times = [float(r.get("time") or 0) for r in records]
    starts = history.runs[-MAX_RUNS_IN_SUMMARY:]
    start_times = [float(e.get("time") or 0) for e in starts]
    runs = []
    for start, cause in zip(starts, match_host_causes(starts, host_starts)):
        at = bisect.bisect_left(times, float(start.get("time") or 0))
        down = None
        if 0 < at < len(records):
            down = round(max(0.0, times[at] - times[at - 1]), 1)
        runs.append(
            {
                "step": start["step"],
                "time": start.get("time"),
                "checkpoint": start.get("checkpoint"),
                "skipped": start.get("skipped") or [],
                "previous_end": start.get("previous_end"),
                "host_cause": cause,
                "down_seconds": down,
            }
        )
    # The first record of every run, so each restart keeps its segment start.
    firsts = [bisect.bisect_left(times, t) for t in start_times]
    points = []
    for index in thin_indexes(len(records), max_points, firsts):
        point = dict(records[index])
        point["run"] = max(0, bisect.bisect_right(start_times, times[index]) - 1)
        points.append(point)
    kept = [e for e in history.checkpoints if not e.get("abandoned")]
    checkpoints = [
        {"step": kept[i]["step"], "time": kept[i].get("time"), "name": kept[i].get("name")}
        for i in thin_indexes(len(kept), max_points, [])
    ]
    ends = [
        {k: e.get(k) for k in ("step", "time", "state", "reason")}
        for e in history.events
        if e["kind"] == "end"
    ][-MAX_RUNS_IN_SUMMARY:]
    summary: Dict[str, Any] = _json_safe(
        {
            "points": points,
            "records": len(records),
            "scalars": history.scalars,
            "runs": runs,
            "checkpoints": checkpoints,
            "ends": ends,
            "files": len(history.files),
            "bad_lines": history.bad_lines,
        }
    )
    return summary


def job_metrics(job: Dict[str, Any], max_points: int) -> Optional[Dict[str, Any]]:
    return metrics_summary(
        read_metrics(job["checkpoint_dir"]),
        max_points,
        run_history(read_json(state_path(job, RUNS_FILE)) or {}),
    )


def _int_or(value: Any, fallback: Optional[int]) -> Optional[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return fallback


def settled(report: Dict[str, Any]) -> bool:
    """Nothing more to wait for: trains again, ended on purpose, or failed with a reason."""
    if report["training"]:
        return True
    if report["waiting"]:
        return False  # the status file is the previous workers'; the job is not over
    if report["status_state"] in SETTLED_STATES:
        # Written by the current process (not a file left by the previous run).
        updated, started = report["status_updated_at"], report["main_started_at"]
        if report["active_state"] in ("inactive", "failed") or (
            updated is not None and started is not None and updated > started
        ):
            return True
    return report["active_state"] == "failed" and report["failure_reason"] is not None


def describe(report: Dict[str, Any]) -> str:
    if report["training"]:
        return "{} trains (step {})".format(report["name"], report["step"])
    if report["active_state"] == "failed":
        return "{} failed: {}".format(report["name"], report["failure_reason"])
    if report["waiting"]:
        return "{} is waiting: {}".format(report["name"], report["waiting_note"])
    return "{} is {} (unit {}/{}{})".format(
        report["name"],
        report["status_state"] or "without status",
        report["active_state"],
        report["sub_state"],
        ", " + report["status_reason"] if report["status_reason"] else "",
    )


def wait_for_jobs(
    report_all: Callable[[], List[Dict[str, Any]]],
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Tuple[List[Dict[str, Any]], float, bool]:
    """Poll until every job is settled: (last reports, seconds waited, all settled)."""
    start = clock()
    while True:
        reports = report_all()
        waited = clock() - start
        if all(settled(r) for r in reports):
            return reports, waited, True
        if waited >= timeout:
            return reports, waited, False
        sleep(min(WAIT_POLL_SECONDS, max(0.0, timeout - waited)))


def load_jobs(config_dir: str, names: List[str]) -> Tuple[List[Dict[str, Any]], List[str]]:
    """(definitions read, one line per name asked for that cannot be read)."""
    defined = job_names(config_dir)
    jobs, problems = [], []
    for name in names or defined:
        try:
            jobs.append(read_job(config_dir, name))
        except JobDefinitionError as exc:
            problems.append(str(exc))
    return jobs, problems


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "list", "elements": "str", "default": [], "aliases": ["names"]},
            "config_dir": {"type": "path", "default": "/etc/unbroken/trainer"},
            "wait": {"type": "bool", "default": False},
            "wait_timeout": {"type": "int", "default": 300},
            "metrics_points": {"type": "int", "default": 0},
        },
        supports_check_mode=True,
    )
    jobs, problems = load_jobs(module.params["config_dir"], module.params["name"])
    if problems:
        module.fail_json(
            msg="no readable job definition: {} (jobs are defined by the trainer role)".format(
                "; ".join(problems)
            )
        )

    def run(argv: List[str]) -> Tuple[int, str, str]:
        result: Tuple[int, str, str] = module.run_command(argv, environ_update={"LC_ALL": "C"})
        return result

    if module.params["wait_timeout"] < 0:
        module.fail_json(msg="wait_timeout must be 0 or more seconds")
    if module.params["metrics_points"] < 0:
        module.fail_json(msg="metrics_points must be 0 or more")

    def report_all() -> List[Dict[str, Any]]:
        now_wall, now_monotonic = time.time(), time.monotonic()
        return [job_report(job, run, now_wall, now_monotonic) for job in jobs]

    waited, ok = 0.0, True
    if module.params["wait"]:
        reports, waited, ok = wait_for_jobs(report_all, float(module.params["wait_timeout"]))
    else:
        reports = report_all()
    if module.params["metrics_points"] > 0:
        for job, report in zip(jobs, reports):
            report["metrics"] = job_metrics(job, max(2, module.params["metrics_points"]))
    result = {
        "changed": False,
        "jobs": reports,
        "jobs_by_name": {r["name"]: r for r in reports},
        "waited_seconds": round(waited, 1),
        "msg": "; ".join(describe(r) for r in reports) if module.params["wait"] else "",
    }
    if not ok:
        module.fail_json(
            msg="not settled after {} s: {}".format(
                module.params["wait_timeout"],
                "; ".join(describe(r) for r in reports if not settled(r)),
            ),
            **{k: v for k, v in result.items() if k != "msg"},
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
