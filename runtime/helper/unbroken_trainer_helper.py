# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Host-side helper of the unbroken.training trainer role (standard library only).

Deployed as /opt/unbroken/bin/unbroken-trainer-helper and run by the systemd units the
role writes, as ``<trainer_python> unbroken-trainer-helper <action> [job]``.  Every
sub-command reads the job's JSON definition written by the role
(``<config_dir>/jobs/<job>.json``), so the unit files stay short and free of quoting:

``run JOB``            exec ``docker run`` (no wrapper left behind: docker's client is the
                       unit's main process, SIGTERM goes to the container's init).
``pre-start JOB``      remove a stale container of the job, clear the last failure
                       reason, record the run and why it starts (``runs.json``: operator,
                       reboot, crash or hang), reset systemd's crash-loop counter when
                       the start is deliberate, refuse to start when the image is absent.
``post-stop JOB``      record how the run ended ($SERVICE_RESULT, $EXIT_CODE,
                       $EXIT_STATUS from systemd's ExecStopPost=) in ``runs.json``.
``stop JOB``           run ``docker stop -t <stop_timeout>`` (the trainer's budget plus a
                       margin; systemd's TimeoutStopSec is larger again), then wait for
                       the unit's main process (``$MAINPID``) to exit with the job's code.
``watchdog``           restart every running job whose heartbeat (the status file the
                       checkpoint library writes) is older than its hang_timeout; each
                       kill is also logged to the job's own journal (``journalctl -u``).
                       With ``--textfile``, then write every job's step, loss, samples/s,
                       checkpoint age, restarts and state for node_exporter's textfile
                       collector (the format is ``training_metrics.py`` of the runtime,
                       loaded by path with ``--metrics-module``: one implementation).
``record-failure JOB`` write why a job's unit failed (result, last exit code, last log
                       lines) to ``<state_dir>/failure.json``; run by ``OnFailure=``.
``follow-log JOB``     copy the job's journal into a size-capped, rotated log file.
``show-command JOB``   print the ``docker run`` command line.

Alerts: ``record-failure`` (crash loop), ``watchdog`` (a hang kill; a new checkpoint
error, once per distinct error) and ``post-stop`` (a finished run) call the hooks in
``<config_dir>/alerts.json`` (root only, it may hold tokens): a command given the event
JSON on stdin and/or a webhook POSTed the same JSON. A failing hook is logged, never
raised: the job's own handling goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import http.client
import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Mapping, Optional, Tuple

# The status-file format is one file shared with the runtime and the training_status
# module; the role installs it beside this script. Run as a script, Python puts this
# directory first on sys.path already; loaded by path (the tests), it does not.
_HERE = os.path.dirname(os.path.realpath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from training_job_files import (  # noqa: E402
    DELIBERATE_CAUSE,
    FAILURE_FILE,
    RUN_HISTORY,
    RUNS_FILE,
    WATCHDOG_FILE,
    JobDefinitionError,
    job_names,
    read_job,
    state_path,
)
from training_status_file import (  # noqa: E402
    RUNNING_STATES,
    TERMINAL_STATES,
    read_json,
    read_status,
    updated_at,
)

DEFAULT_CONFIG_DIR = "/etc/unbroken/trainer"
CURSOR_FILE = "journal.cursor"
BOOT_MARKER = "/run/unbroken-trainer/boot"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
LOG_LINES_IN_REASON = 15
ALERTS_FILE = "alerts.json"  # in the config dir
ALERT_STATE_FILE = "alerts.json"  # in a job's state dir: the last checkpoint error alerted
ALERT_EVENTS = ("crash_loop", "hang", "finished", "checkpoint_failed")
# Seconds ``stop`` waits, after the container is gone, for ``docker run`` to exit.
MAIN_EXIT_WAIT = 15.0


class HelperError(Exception):
    """A problem the helper reports in one line and exits non-zero for."""


# -- job definitions ---------------------------------------------------------------


def load_job(config_dir: str, name: str) -> Dict[str, Any]:
    try:
        return read_job(config_dir, name)
    except JobDefinitionError as exc:
        raise HelperError(str(exc)) from None


def list_jobs(config_dir: str) -> List[Dict[str, Any]]:
    return [load_job(config_dir, name) for name in job_names(config_dir)]


# -- docker command lines ------------------------------------------------------------


def gpus_argument(gpus: Any) -> Optional[str]:
    """Translate the role's GPU spec into docker's ``--gpus`` value (None: no GPU)."""
    if gpus is None or gpus == "none":
        return None
    if gpus == "all":
        return "all"
    if isinstance(gpus, int) and not isinstance(gpus, bool) and gpus > 0:
        return str(gpus)
    if isinstance(gpus, list) and gpus:
        ids = [str(g) for g in gpus]
        if all(i and "," not in i and '"' not in i for i in ids):
            # docker parses --gpus as CSV: a device list must be quoted as one field.
            return '"device={}"'.format(",".join(ids))
    raise HelperError(
        f"unsupported gpus value {gpus!r}: use 'all', 'none', a count >= 1, or a list of "
        "device indexes/UUIDs"
    )


def mount_argument(mount: Dict[str, Any]) -> str:
    parts = ["type=bind", "source=" + mount["source"], "target=" + mount["target"]]
    if mount.get("readonly", True):
        parts.append("readonly")
    return ",".join(parts)


def docker_run_argv(job: Dict[str, Any], docker: str = "docker") -> List[str]:
    """The complete ``docker run`` argv of a job (attached, so the unit sees its exit code)."""
    argv = [docker, "run", "--rm", "--init", "--name", job["container"], "--pull", "never"]
    for key, value in sorted(job.get("labels", {}).items()):
        argv += ["--label", f"{key}={value}"]
    argv += ["--user", job["user"], "--log-driver", "local"]
    if job.get("workdir"):
        argv += ["--workdir", job["workdir"]]
    if job.get("env_file"):
        argv += ["--env-file", job["env_file"]]
    if job.get("network"):
        # Multi-node jobs: gloo/NCCL and the c10d store listen on the host's own addresses,
        # which docker's NAT would hide from the other nodes.
        argv += ["--network", job["network"]]
    if job.get("ipc"):
        argv += ["--ipc", job["ipc"]]
    if job.get("shm_size"):
        argv += ["--shm-size", str(job["shm_size"])]
    for name, value in sorted(job.get("ulimits", {}).items()):
        if value is not None:
            argv += ["--ulimit", f"{name}={value}"]
    for option in ("memory", "cpus", "pids_limit"):
        if job.get(option) is not None:
            argv += ["--" + option.replace("_", "-"), str(job[option])]
    gpus = gpus_argument(job.get("gpus"))
    if gpus is not None:
        argv += ["--gpus", gpus]
    for mount in job.get("mounts", []):
        argv += ["--mount", mount_argument(mount)]
    argv += [str(a) for a in job.get("docker_args", [])]
    argv.append(job["image"])
    argv += [str(a) for a in job["command"]]
    return argv


def docker_binary() -> str:
    found = shutil.which("docker")
    if found is None:
        raise HelperError("docker is not installed on this host (no 'docker' in PATH)")
    return found


def run_job(job: Dict[str, Any]) -> None:
    argv = docker_run_argv(job, docker_binary())
    print("starting job {}: {}".format(job["name"], shlex.join(argv)), flush=True)
    os.execv(argv[0], argv)


def pre_start(job: Dict[str, Any]) -> None:
    docker = docker_binary()
    removed = subprocess.run(
        [docker, "rm", "--force", job["container"]], capture_output=True, text=True, check=False
    )
    if removed.returncode == 0 and removed.stdout.strip():
        print("removed stale container {}".format(job["container"]), flush=True)
    _remove(state_path(job, FAILURE_FILE))
    record_start(job)
    image = subprocess.run(
        [docker, "image", "inspect", "--format", "{{.Id}}", job["image"]],
        capture_output=True,
        text=True,
        check=False,
    )
    if image.returncode != 0:
        raise HelperError(
            "image {} is not on this host; pull it first (pytorch_image role). The service "
            "never pulls: a multi-GB pull must not happen inside a restart loop".format(
                job["image"]
            )
        )


# -- runs: why each start happened ----------------------------------------------------


def boot_id() -> str:
    """A token that changes at every boot of the host, shared by all jobs.

    Kept on /run (a tmpfs, empty after every boot) rather than read from the kernel's
    boot_id, which a container host shares with its own host.
    """
    os.makedirs(os.path.dirname(BOOT_MARKER), mode=0o755, exist_ok=True)
    try:
        fd = os.open(BOOT_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        with open(BOOT_MARKER, encoding="ascii") as handle:
            return handle.read().strip()
    token = os.urandom(16).hex()
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    return token


def describe_exit(end: Optional[Dict[str, Any]]) -> str:
    """'exit status 137 (SIGKILL in the container)', 'killed by SIGTERM', ... of a run."""
    if not end:
        return "an unknown exit"
    kind, status = end.get("exit_code_kind"), str(end.get("exit_status") or "")
    if kind == "exited" and status.isdigit():
        text = f"exit status {status}"
        # docker run reports a container killed by signal N as 128 + N.
        with contextlib.suppress(ValueError):
            if 128 < int(status) <= 128 + 64:
                text += f" ({signal.Signals(int(status) - 128).name} in the container)"
        return text
    if kind in ("killed", "dumped") and status:
        return "{} by {}".format(kind, status if status.isdigit() else "SIG" + status)
    return "result {}".format(end.get("service_result") or "unknown")


def start_cause(
    previous: Dict[str, Any],
    automatic: bool,
    current_boot: str,
    watchdog_record: Optional[Dict[str, Any]],
) -> Tuple[str, str]:
    """(cause, detail) of this start: operator, reboot, hang or crash.

    ``automatic`` is systemd's own word (NRestarts > 0 at ExecStartPre: the start is a
    Restart= of a run that failed); any other start was asked for (operator, converge,
    boot).  A start on a new boot after runs on an earlier one is a reboot.
    """
    last = previous.get("last_start") or {}
    end = previous.get("last_end")
    ended = describe_exit(end if end and end.get("run") == last.get("run") else None)
    if not automatic:
        if last and last.get("boot_id") and last.get("boot_id") != current_boot:
            return "reboot", "host restarted (the previous run was cut off)"
        return (
            DELIBERATE_CAUSE,
            "started on request (systemctl start/restart, a playbook or converge)",
        )
    kill_at = (watchdog_record or {}).get("last_kill_at")
    if isinstance(kill_at, (int, float)) and kill_at >= float(last.get("at") or 0):
        return "hang", "the hang watchdog killed the previous run at step {} ({})".format(
            (watchdog_record or {}).get("last_kill_step"), ended
        )
    return "crash", "the previous run failed with " + ended


def note_start(
    previous: Dict[str, Any],
    automatic: bool,
    now: float,
    current_boot: str,
    watchdog_record: Optional[Dict[str, Any]],
) -> Dict[str, Any]:
    """The job's run record after one more start."""
    cause, detail = start_cause(previous, automatic, current_boot, watchdog_record)
    runs = int(previous.get("runs") or 0) + 1
    # One restart count for the table and the report: starts nobody asked for (crash,
    # hang, reboot) since the last deliberate one. systemd's NRestarts is reset by a
    # reboot and by every manual start, so it cannot say that.
    restarts = 0 if cause == DELIBERATE_CAUSE else int(previous.get("restarts") or 0) + 1
    start = {"run": runs, "at": now, "cause": cause, "detail": detail, "boot_id": current_boot}
    history = list(previous.get("history") or [])[-(RUN_HISTORY - 1) :]
    history.append({k: start[k] for k in ("run", "at", "cause", "detail")})
    record = dict(previous)
    record.update(runs=runs, restarts=restarts, last_start=start, history=history)
    if cause == DELIBERATE_CAUSE:
        record["last_operator_start"] = now
    return record


def unit_automatic_restart(unit: str) -> bool:
    """True when systemd started this run by itself (Restart=): NRestarts > 0."""
    value = systemctl_show(unit, ["NRestarts"]).get("NRestarts", "")
    # Unknown counts as automatic: then the crash-loop counter is never reset wrongly.
    return not value.isdigit() or int(value) > 0


def record_start(job: Dict[str, Any]) -> None:
    """Write runs.json for this start; on a deliberate start reset the crash-loop counter.

    systemd's StartLimitBurst counts every start, so operator restarts and converges
    used to eat the budget meant for crashes. ``systemctl reset-failed`` during
    ExecStartPre (the limit was already checked for this start) empties the counter, so
    only the automatic restarts after this start count toward the limit.
    """
    path = state_path(job, RUNS_FILE)
    automatic = unit_automatic_restart(job["unit"])
    try:
        boot = boot_id()
    except OSError as exc:
        print(f"warning: cannot read or write {BOOT_MARKER}: {exc}", flush=True)
        boot = ""
    record = note_start(
        read_json(path) or {},
        automatic,
        time.time(),
        boot,
        read_json(state_path(job, WATCHDOG_FILE)),
    )
    start = record["last_start"]
    print(
        "run {} of job {} starts (cause: {}): {}; {} automatic restart(s) since the last "
        "deliberate start".format(
            start["run"], job["name"], start["cause"], start["detail"], record["restarts"]
        ),
        flush=True,
    )
    if not automatic:
        subprocess.run(["systemctl", "reset-failed", job["unit"]], capture_output=True, check=False)
    try:
        write_json(path, record)
    except OSError as exc:  # a full /var must not keep the job from starting
        print(f"warning: cannot write {path}: {exc}", flush=True)


def post_stop(
    job: Dict[str, Any], env: Mapping[str, str], alerts: Optional[Dict[str, Any]] = None
) -> None:
    """Record how the run ended, from the variables systemd gives ExecStopPost=."""
    path = state_path(job, RUNS_FILE)
    record = read_json(path) or {}
    started = float((record.get("last_start") or {}).get("at") or 0)
    status = read_status(job["status_file"]) or {}
    updated = updated_at(status)
    if (
        status.get("state") == "finished"
        and env.get("SERVICE_RESULT") == "success"
        and updated is not None
        and updated >= started
    ):
        send_alert(job, alerts, "finished", status, "the run finished")
    end = {
        "run": (record.get("last_start") or {}).get("run"),
        "at": time.time(),
        "service_result": env.get("SERVICE_RESULT"),
        "exit_code_kind": env.get("EXIT_CODE"),
        "exit_status": env.get("EXIT_STATUS"),
    }
    record["last_end"] = end
    if end["service_result"] not in (None, "success"):
        print("run {} of job {} ended: {}".format(end["run"], job["name"], describe_exit(end)))
    try:
        write_json(path, record)
    except OSError as exc:
        print(f"warning: cannot write {path}: {exc}", flush=True)


def log_to_job_journal(job: Dict[str, Any], message: str, priority: int = 4) -> None:
    """Also put ``message`` in the job's journal (``journalctl -u <unit>`` shows it).

    journalctl -u matches entries from root that carry OBJECT_SYSTEMD_UNIT=<unit>, so a
    message the watchdog sends over journald's native protocol is listed with the job's
    own output, under the job's identifier, and the log file copy picks it up too.
    """
    fields = {
        "MESSAGE": message,
        "PRIORITY": str(priority),
        "SYSLOG_IDENTIFIER": "unbroken-job-" + job["name"],
        "OBJECT_SYSTEMD_UNIT": job["unit"],
    }
    datagram = "".join("{}={}\n".format(k, v.replace("\n", " ")) for k, v in fields.items())
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(datagram.encode("utf-8"), JOURNAL_SOCKET)


def child_pids(pid: int) -> List[int]:
    """The direct children of ``pid`` (all its threads'), from /proc."""
    children: List[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                children.extend(int(c) for c in handle.read().split())
        except (OSError, ValueError):
            continue
    return sorted(set(children))


def torchrun_agents(docker: str, container: str) -> Optional[Dict[int, List[int]]]:
    """{host PID of each torchrun agent: host PIDs of its workers} of a multi-node job's
    container; None when the container is not running.

    The container runs docker's init (``--init``), whose child is the torchrun agent, whose
    children are the workers: the init's grandchildren. An agent without workers waits in a
    rendezvous round.
    """
    result = subprocess.run(
        [docker, "inspect", "--format", "{{.State.Pid}}", container],
        capture_output=True,
        text=True,
        check=False,
    )
    init = result.stdout.strip()
    if result.returncode != 0 or not init.isdigit() or int(init) <= 0:
        return None
    return {agent: child_pids(agent) for agent in child_pids(int(init))}


def torchrun_workers(docker: str, container: str) -> List[int]:
    """Host PIDs of the worker processes of a multi-node job's container (see above);
    empty when the container is not running or the agent has no workers."""
    agents = torchrun_agents(docker, container) or {}
    return [worker for workers in agents.values() for worker in workers]


def waits_in_rendezvous(job: Dict[str, Any], docker: str) -> bool:
    """A multi-node job whose container runs its torchrun agent without workers: the agent
    waits in a rendezvous round for the job's other nodes (torch bounds the wait by its
    rendezvous join timeout, then the agent exits and systemd restarts it). Not a hang."""
    if len(job.get("nodes") or []) < 2:
        return False
    agents = torchrun_agents(docker, job["container"])
    return agents is not None and bool(agents) and not any(agents.values())


class WorkersStop(enum.Enum):
    """How a workers-first stop went, and so what ``docker stop`` still has to do."""

    NOTHING_TO_SIGNAL = "nothing to signal"  # single node, or no workers: full budget
    STOPPED = "stopped"  # the main process exited: no docker stop
    TIMED_OUT = "timed out"  # the budget is spent: docker stop kills soon


def stop_workers_first(job: Dict[str, Any], docker: str, main_pid: Optional[int]) -> WorkersStop:
    """Stop a multi-node job through its workers, so that every node ends cleanly.

    A SIGTERM to torchrun makes that agent exit 1 (the unit would end ``failed``) and leaves
    the other nodes' agents waiting out torch's exit barrier (300 s). SIGTERM to the workers
    instead: the ranks agree on the stop at the next step (the trainer's ``agree_stop``),
    checkpoint that one step and exit 0; every node's agent sees its group succeed, meets
    the others at the exit barrier and exits 0. The main process gets the job's stop
    timeout to exit.
    """
    if main_pid is None or len(job.get("nodes") or []) < 2:
        return WorkersStop.NOTHING_TO_SIGNAL
    workers = torchrun_workers(docker, job["container"])
    if not workers:
        return WorkersStop.NOTHING_TO_SIGNAL
    print(
        "stopping job {}: SIGTERM to its workers {} (all nodes' ranks stop at one step), "
        "docker stop after {}s".format(
            job["name"], ",".join(map(str, workers)), job["stop_timeout"]
        ),
        flush=True,
    )
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGTERM)
    if wait_for_exit(main_pid, float(job["stop_timeout"])):
        return WorkersStop.STOPPED
    return WorkersStop.TIMED_OUT


def stop_job(job: Dict[str, Any]) -> None:
    docker = docker_binary()
    main_pid = os.environ.get("MAINPID", "")
    workers = stop_workers_first(job, docker, int(main_pid) if main_pid.isdigit() else None)
    if workers is WorkersStop.STOPPED:
        return
    timeout = 1 if workers is WorkersStop.TIMED_OUT else job["stop_timeout"]
    argv = [docker, "stop", "--time", str(timeout), job["container"]]
    print(
        "stopping job {}: SIGTERM, trainer budget {}s, SIGKILL after {}s".format(
            job["name"], job["stop_budget"], timeout
        ),
        flush=True,
    )
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0 and "No such container" not in result.stderr:
        raise HelperError("docker stop failed: " + result.stderr.strip())
    if main_pid.isdigit():
        wait_for_exit(int(main_pid), MAIN_EXIT_WAIT)


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting for its parent to reap it."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return False
    return bool(fields) and fields[0] not in ("Z", "X")


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited; False when it is still there after ``timeout`` s.

    ``docker stop`` returns when the container is gone, a moment before the attached
    ``docker run`` client (the unit's main process) notices it and exits with the
    container's code.  systemd sends SIGTERM to whatever is left in the unit as soon as
    ExecStop= returns, so returning early would record a clean stop as "killed by
    SIGTERM" (ExecMainStatus=15) instead of the trainer's exit code.
    """
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# -- systemd and status reading --------------------------------------------------------


def systemctl_show(unit: str, properties: List[str]) -> Dict[str, str]:
    result = subprocess.run(
        ["systemctl", "show", unit, "--property=" + ",".join(properties)],
        capture_output=True,
        text=True,
        check=False,
    )
    values = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return values


def write_json(path: str, document: Dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def monotonic_to_wall(monotonic_usec: int, now_wall: float, now_monotonic: float) -> float:
    return now_wall - (now_monotonic - monotonic_usec / 1e6)


def heartbeat_verdict(
    status: Optional[Dict[str, Any]],
    started_wall: float,
    hang_timeout: float,
    now_wall: float,
    startup_timeout: Optional[float] = None,
) -> Dict[str, Any]:
    """Decide whether a running job is hung.

    The heartbeat is the status file's ``updated_at``.  Until the current run has written
    one (a file left by the previous run does not count), the age counts from the run's
    start and the limit is ``startup_timeout`` (loading, restoring), then ``hang_timeout``.
    """
    updated = updated_at(status)
    fresh = updated is not None and updated > started_wall
    beat = updated if updated is not None and fresh else started_wall
    limit = hang_timeout if fresh or not startup_timeout else startup_timeout
    age = max(0.0, now_wall - beat)
    # The run wrote its terminal state and is on its way out: not hung.
    state = status.get("state") if status else None
    finished = fresh and state in TERMINAL_STATES
    return {
        "heartbeat_age": round(age, 1),
        "hang_timeout": hang_timeout,
        "limit": limit,
        "started": fresh,
        "hung": age > limit and not finished,
        "step": status.get("step") if status else None,
    }


def unit_running(unit: str) -> Optional[Tuple[float, int]]:
    """(wall-clock start, monotonic start in µs) of the running main process, else None."""
    props = systemctl_show(unit, ["ActiveState", "SubState", "ExecMainStartTimestampMonotonic"])
    if props.get("ActiveState") != "active" or props.get("SubState") != "running":
        return None
    try:
        started = int(props.get("ExecMainStartTimestampMonotonic", "0"))
    except ValueError:
        return None
    if started <= 0:
        return None
    return monotonic_to_wall(started, time.time(), time.monotonic()), started


def watchdog(
    config_dir: str, textfile: Optional[str] = None, metrics_module: Optional[str] = None
) -> int:
    jobs = list_jobs(config_dir)
    alerts = load_alerts(config_dir)
    for job in jobs:
        watch_job(job, alerts)
        check_checkpoint_error(job, alerts)
    if not textfile:
        return 0
    try:
        metrics = load_metrics_module(metrics_module or default_metrics_module())
        text = metrics.render_textfile([job_metrics(job, metrics) for job in jobs])
        os.makedirs(os.path.dirname(os.path.abspath(textfile)), mode=0o755, exist_ok=True)
        metrics.write_textfile(textfile, text)
    except (OSError, ValueError, ImportError) as exc:
        # The hang checks above are done; a monitoring file must not hide them.
        print(f"cannot write the Prometheus textfile {textfile}: {exc}", file=sys.stderr)
        return 1
    return 0


def watch_job(job: Dict[str, Any], alerts: Optional[Dict[str, Any]] = None) -> int:
    """Check one job's heartbeat; kill it when hung. 1 when this check killed it.

    A multi-node job whose agent waits in a rendezvous round (no workers) is not hung:
    recorded as ``waiting``, not killed.
    """
    hung_jobs = 0
    if not job.get("hang_timeout"):
        return 0  # 0: this job's watchdog is off
    running = unit_running(job["unit"])
    if running is None:
        return 0
    started, run_id = running
    verdict = heartbeat_verdict(
        read_status(job["status_file"]),
        started,
        float(job["hang_timeout"]),
        time.time(),
        float(job.get("startup_timeout") or 0),
    )
    # The status file stops moving while the agent waits for a node that is gone; killing
    # it would only cost this node a restart toward its crash-loop limit.
    waiting = waits_in_rendezvous(job, docker_binary())
    if waiting:
        verdict["hung"] = False
    record_path = state_path(job, WATCHDOG_FILE)
    record = read_json(record_path) or {"kills": 0}
    record.update(verdict, waiting=waiting, checked_at=time.time(), job=job["name"])
    if verdict["hung"] and record.get("last_kill_run") == run_id:
        print("job {}: killed container not gone yet".format(job["name"]), flush=True)
    elif verdict["hung"]:
        hung_jobs += 1
        message = (
            "job {}: no heartbeat for {:.0f}s ({} {:.0f}s, last step {}); killing "
            "container {} so systemd restarts it from the newest checkpoint".format(
                job["name"],
                verdict["heartbeat_age"],
                "hang_timeout" if verdict["started"] else "startup_timeout",
                verdict["limit"],
                verdict["step"],
                job["container"],
            )
        )
        print(message, flush=True)
        log_to_job_journal(job, "hang watchdog: " + message)
        subprocess.run(
            [docker_binary(), "kill", "--signal", "KILL", job["container"]],
            capture_output=True,
            check=False,
        )
        record["kills"] = int(record.get("kills", 0)) + 1
        record["last_kill_at"] = time.time()
        record["last_kill_step"] = verdict["step"]
        record["last_kill_run"] = run_id
        send_alert(job, alerts, "hang", {"step": verdict["step"]}, message)
    write_json(record_path, record)
    return hung_jobs


# -- Prometheus textfile ----------------------------------------------------------------


def default_metrics_module() -> str:
    """The runtime's metrics module as the role deploys it (runtime dir beside bin dir)."""
    here = os.path.dirname(os.path.realpath(__file__))
    return os.path.join(os.path.dirname(here), "runtime", "unbroken_ckpt", "training_metrics.py")


def load_metrics_module(path: str) -> Any:
    """Load the runtime's ``training_metrics.py`` by path.

    Importing the ``unbroken_ckpt`` package would import torch; this one file is standard
    library only, so the textfile format has one implementation for the runtime, the
    Ansible plugins and this helper.
    """
    spec = importlib.util.spec_from_file_location("unbroken_training_metrics", path)
    if spec is None or spec.loader is None or not os.path.isfile(path):
        raise ImportError(f"no metrics module at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def textfile_state(
    props: Mapping[str, str],
    status: Optional[Dict[str, Any]],
    hung: bool,
    waiting: bool = False,
) -> str:
    """One word for the textfile: the trainer's own state while its run is current."""
    active, sub = props.get("ActiveState", ""), props.get("SubState", "")
    state = status.get("state") if status else None
    if active == "active" and sub == "running":
        if hung:
            return "hung"
        if waiting:  # a multi-node agent in a rendezvous round: the status file is stale
            return "waiting"
        return state if state in RUNNING_STATES else "starting"
    if active == "activating" and sub == "auto-restart":
        return "restarting"
    if active == "activating":
        return "starting"
    if active == "deactivating":
        return "stopping"
    if active == "failed":
        return "failed"
    return state if state in TERMINAL_STATES else "stopped"


def job_metrics(
    job: Dict[str, Any], metrics: Any, props: Optional[Mapping[str, str]] = None
) -> Dict[str, Any]:
    """A job's row of the textfile, from its unit, status file, metrics stream and runs."""
    if props is None:
        props = systemctl_show(job["unit"], ["ActiveState", "SubState", "NRestarts"])
    status = read_status(job["status_file"]) or {}
    runs = read_json(state_path(job, RUNS_FILE)) or {}
    record = read_json(state_path(job, WATCHDOG_FILE)) or {}
    # A user's own script may write only the metrics stream: its newest record fills in.
    latest = metrics.latest_record(job["checkpoint_dir"]) or {}
    row: Dict[str, Any] = {"name": job["name"]}
    for key in ("step", "loss", "samples_per_second"):
        value = status.get(key)
        row[key] = value if value is not None else latest.get(key)
    row["total_steps"] = status.get("total_steps")
    updated = updated_at(status)
    if updated is not None:
        row["heartbeat_age_seconds"] = round(max(0.0, time.time() - updated), 1)
    row["last_checkpoint"] = status.get("last_checkpoint")
    restarts = runs.get("restarts")
    if not isinstance(restarts, int) and props.get("NRestarts", "").isdigit():
        restarts = int(props["NRestarts"])
    row["restarts"] = restarts
    row["state"] = textfile_state(
        props, status or None, bool(record.get("hung")), bool(record.get("waiting"))
    )
    return row


# -- failure reasons ---------------------------------------------------------------


def journal_entries(unit: str, count: int) -> List[Dict[str, Any]]:
    result = subprocess.run(
        ["journalctl", "--unit", unit, "--lines", str(count), "--output", "json", "--no-pager"],
        capture_output=True,
        text=True,
        check=False,
    )
    entries = []
    for raw in result.stdout.splitlines():
        try:
            entries.append(json.loads(raw))
        except ValueError:
            continue
    return entries


def message_of(entry: Dict[str, Any]) -> str:
    message = entry.get("MESSAGE", "")
    if isinstance(message, list):  # journald gives non-UTF-8 messages as byte arrays
        message = bytes(message).decode("utf-8", "replace")
    return str(message)


def failure_reason(
    job: Dict[str, Any], props: Dict[str, str], entries: List[Dict[str, Any]]
) -> Dict[str, Any]:
    """Why the unit failed, from ``systemctl show`` and its recent journal entries.

    systemd (252 at least) reports a crash loop of automatic restarts with the result of the
    last run (e.g. exit-code), not start-limit-hit; its "Start request repeated too quickly"
    message among the unit's last manager messages says the limit was reached.
    """
    result = props.get("Result", "unknown")
    code = props.get("ExecMainStatus", "")
    exit_code = int(code) if code.isdigit() else None
    restarts = int(props["NRestarts"]) if props.get("NRestarts", "").isdigit() else None
    manager = [message_of(e) for e in entries if e.get("SYSLOG_IDENTIFIER") == "systemd"][-5:]
    crash_loop = result == "start-limit-hit" or any("repeated too quickly" in m for m in manager)
    own = [message_of(e) for e in entries if e.get("SYSLOG_IDENTIFIER") != "systemd"]
    if crash_loop:
        why = "crash-loop limit reached ({} automatic restarts within {}s)".format(
            job.get("restart_limit_burst"), job.get("restart_limit_interval")
        )
    else:
        why = f"unit result {result}"
    message = "job {} failed: {}; last exit code {}; {} automatic restarts".format(
        job["name"], why, exit_code, restarts
    )
    return {
        "job": job["name"],
        "unit": job["unit"],
        "failed_at": time.time(),
        "result": result,
        "crash_loop": crash_loop,
        "exit_code": exit_code,
        "exit_code_kind": props.get("ExecMainCode"),
        "restarts": restarts,
        "message": message,
        "last_log_lines": own[-LOG_LINES_IN_REASON:],
    }


def record_failure(job: Dict[str, Any], alerts: Optional[Dict[str, Any]] = None) -> None:
    props = systemctl_show(job["unit"], ["Result", "ExecMainStatus", "ExecMainCode", "NRestarts"])
    reason = failure_reason(job, props, journal_entries(job["unit"], 4 * LOG_LINES_IN_REASON))
    write_json(state_path(job, FAILURE_FILE), reason)
    print(reason["message"], flush=True)
    for line in reason["last_log_lines"]:
        print("  | " + line, flush=True)
    if reason["crash_loop"]:
        status = read_status(job["status_file"]) or {}
        extra = {"exit_code": reason["exit_code"], "restarts": reason["restarts"]}
        send_alert(job, alerts, "crash_loop", {**status, **extra}, reason["message"])


# -- alerts ------------------------------------------------------------------------


def load_alerts(config_dir: str) -> Optional[Dict[str, Any]]:
    """The hooks the role wrote (None: no alerts configured)."""
    return read_json(os.path.join(config_dir, ALERTS_FILE))


def alert_event(
    job: Dict[str, Any], event: str, status: Mapping[str, Any], reason: str
) -> Dict[str, Any]:
    """The JSON document every hook gets."""
    document = {
        "event": event,
        "job": job["name"],
        "host": socket.gethostname(),  # not getfqdn: a DNS lookup may hang
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "step": status.get("step"),
        "reason": reason,
    }
    for key in ("total_steps", "state", "checkpoint_error", "last_checkpoint", "exit_code"):
        if status.get(key) is not None:
            document[key] = status[key]
    if status.get("restarts") is not None:
        document["restarts"] = status["restarts"]
    return document


def send_alert(
    job: Dict[str, Any],
    alerts: Optional[Dict[str, Any]],
    event: str,
    status: Mapping[str, Any],
    reason: str,
) -> List[str]:
    """Call the configured hooks for ``event``; the problems, logged, never raised."""
    if not alerts or event not in alerts.get("events", ALERT_EVENTS):
        return []
    body = json.dumps(alert_event(job, event, status, reason), sort_keys=True).encode("utf-8")
    timeout = float(alerts.get("timeout") or 10)
    problems: List[str] = []
    command = [str(a) for a in alerts.get("command") or []]
    if command:
        try:
            result = subprocess.run(
                command, input=body, capture_output=True, timeout=timeout, check=False
            )
            if result.returncode != 0:
                problems.append(
                    "alert command {} exited with {}: {}".format(
                        command[0],
                        result.returncode,
                        result.stderr.decode("utf-8", "replace").strip()[-300:],
                    )
                )
        except (OSError, subprocess.SubprocessError) as exc:
            problems.append(f"alert command {command[0]} failed: {exc}")
    url = str(alerts.get("webhook_url") or "")
    if url:
        headers = {"Content-Type": "application/json"}
        headers.update({str(k): str(v) for k, v in (alerts.get("webhook_headers") or {}).items()})
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read(1024)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # The URL and headers may hold a token: name neither.
            why = (
                f"HTTP {exc.code}"
                if isinstance(exc, urllib.error.HTTPError)
                else type(exc).__name__
            )
            problems.append(f"alert webhook failed ({why})")
    for problem in problems:
        message = f"{event} alert of job {job['name']}: {problem} (ignored)"
        print(message, file=sys.stderr, flush=True)
        log_to_job_journal(job, message)
    return problems


def check_checkpoint_error(job: Dict[str, Any], alerts: Optional[Dict[str, Any]]) -> None:
    """Alert once per distinct checkpoint error of the status file, not at every check."""
    status = read_status(job["status_file"]) or {}
    error = status.get("checkpoint_error")
    path = os.path.join(job["state_dir"], ALERT_STATE_FILE)
    record = read_json(path) or {}
    if not error or error == record.get("checkpoint_error"):
        return
    record["checkpoint_error"] = error
    try:
        write_json(path, record)  # first: a broken hook must not make every check alert
    except OSError as exc:
        print(f"warning: cannot write {path}: {exc}", flush=True)
        return
    send_alert(job, alerts, "checkpoint_failed", status, f"cannot checkpoint: {error}")


# -- log file ----------------------------------------------------------------------


class RotatingLog:
    """Append lines to a file; past ``max_bytes`` rotate it to .1 ... .<backups>."""

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
        self.handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open while following

    def write(self, line: str) -> None:
        if self.handle.tell() + len(line) + 1 > self.max_bytes:
            self.rotate()
        self.handle.write(line + "\n")
        self.handle.flush()

    def rotate(self) -> None:
        self.handle.close()
        for index in range(self.backups - 1, 0, -1):
            older = f"{self.path}.{index}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{index + 1}")
        if self.backups > 0:
            os.replace(self.path, self.path + ".1")
        else:
            _remove(self.path)
        self.handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115


def journal_line(entry: Dict[str, Any]) -> str:
    message = message_of(entry)
    usec = int(entry.get("__REALTIME_TIMESTAMP", "0"))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(usec / 1e6))
    return f"{stamp}.{usec % 1000000:06d}Z {message}"


def follow_log(job: Dict[str, Any]) -> None:
    cursor_path = os.path.join(job["state_dir"], CURSOR_FILE)
    cursor = None
    try:
        with open(cursor_path, encoding="utf-8") as handle:
            cursor = handle.read().strip() or None
    except FileNotFoundError:
        pass
    argv = ["journalctl", "--unit", job["unit"], "--follow", "--output", "json", "--no-pager"]
    argv += ["--after-cursor", cursor] if cursor else ["--lines", "all"]
    log = RotatingLog(job["log_file"], int(job["log_max_bytes"]), int(job["log_backups"]))
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as reader:
        assert reader.stdout is not None
        for raw in reader.stdout:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            log.write(journal_line(entry))
            write_text(cursor_path, entry.get("__CURSOR", ""))


def write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


# -- entry point -------------------------------------------------------------------


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--config-dir", default=DEFAULT_CONFIG_DIR)
    parser.add_argument(
        "--textfile", default="", help="watchdog: also write this Prometheus textfile (*.prom)"
    )
    parser.add_argument(
        "--metrics-module",
        default="",
        help="training_metrics.py of the runtime (default: ../runtime/unbroken_ckpt/)",
    )
    parser.add_argument(
        "action",
        choices=(
            "run",
            "pre-start",
            "post-stop",
            "stop",
            "watchdog",
            "record-failure",
            "follow-log",
            "show-command",
        ),
    )
    parser.add_argument("job", nargs="?")
    args = parser.parse_args(argv)
    if args.action != "watchdog" and not args.job:
        parser.error(f"{args.action} needs a job name")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if args.action == "watchdog":
            return watchdog(args.config_dir, args.textfile, args.metrics_module)
        job = load_job(args.config_dir, args.job)
        alerts = load_alerts(args.config_dir)
        if args.action == "run":
            run_job(job)
        elif args.action == "pre-start":
            pre_start(job)
        elif args.action == "post-stop":
            post_stop(job, os.environ, alerts)
        elif args.action == "stop":
            stop_job(job)
        elif args.action == "record-failure":
            record_failure(job, alerts)
        elif args.action == "follow-log":
            follow_log(job)
        else:
            print(shlex.join(docker_run_argv(job)))
    except HelperError as exc:
        print(f"unbroken-trainer-helper: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
