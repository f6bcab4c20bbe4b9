# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Filters that turn training_status results and job logs into a table and SVG curves.

Used by the collection's operator playbooks (status.yml, report.yml); they run on the
controller. Documentation: the YAML files next to this one, one per filter.
"""

from __future__ import annotations

import calendar
import html
import math
import re
import textwrap
import time
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from ansible.errors import AnsibleFilterError

# The reference script's progress line as the trainer role's log file holds it: the journal
# timestamp the helper adds, then Python logging's own prefix, then the message.
_STEP_LINE = re.compile(
    r"^(?P<stamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z .*?\btrain: step (?P<step>\d+) "
    r"loss (?P<loss>\S+)"
)
# Each start of the script logs this line once; it separates the runs of a job.
_RUN_START = re.compile(r"\btrain: training on \S+: \d+ steps")
# The trainer role's helper logs why each run starts, before the script's own start line.
_START_CAUSE = re.compile(r"\brun \d+ of job \S+ starts \(cause: (?P<cause>[a-z]+)\)")
_WATCHDOG_KILL = re.compile(r"\bhang watchdog: job \S+: no heartbeat")
DEFAULT_BATCH_SIZE = 32  # the reference script's default --batch-size

TABLE_COLUMNS = (
    "HOST",
    "JOB",
    "STATE",
    "STEP",
    "LOSS",
    "SAMPLES/S",
    "LAST CKPT AGE",
    "RESTARTS",
    "RUNS",
    "NOTE",
)
# The NOTE is wrapped onto continuation lines at this width, never cut.
NOTE_WIDTH = 72
# What a start's cause reads as in the table and the report.
CAUSE_WORDS = {
    "crash": "restarted after a crash",
    "hang": "restarted by the hang watchdog",
    "reboot": "restarted after a host reboot",
    "operator": "started by an operator",
    "interrupted": "restarted after the previous run was cut off (killed, crashed or lost)",
    "resume": "resumed",
}
# How the run before a start ended (the metrics stream's ``previous_end``) says why it
# started when the trainer role recorded no cause for it (a job run some other way).
PREVIOUS_END_CAUSES = {
    "interrupted": "interrupted",
    "failed": "crash",
    "stopped": "operator",
    "finished": "operator",
}


# -- status table -------------------------------------------------------------------


def human_age(seconds: Any) -> str:
    """42s, 5m07s, 3h02m, 2d04h; '-' when unknown."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{(whole % 3600) // 60:02d}m"
    return f"{whole // 86400}d{(whole % 86400) // 3600:02d}h"


def job_state(job: Mapping[str, Any]) -> str:
    """One word an operator can act on: hung, failed, training, waiting, finished, ..."""
    if job.get("hung"):
        return "hung"
    if job.get("active_state") == "failed":
        return "failed"
    if job.get("running") and job.get("waiting"):
        return "waiting"  # in a rendezvous round: the status file is the last workers'
    if job.get("running"):
        updated, started = job.get("status_updated_at"), job.get("main_started_at")
        if (
            isinstance(updated, (int, float))
            and isinstance(started, (int, float))
            and updated <= started
        ):
            return "starting"  # the status file is still the previous run's
        return str(job.get("status_state") or "starting")
    sub = str(job.get("sub_state") or "")
    if sub == "auto-restart":
        return "restarting"
    if job.get("status_state") == "finished":
        return "finished"
    return "stopped" if sub in ("dead", "") else sub


def _number(value: Any, fmt: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return fmt.format(value)


def _running_now(job: Mapping[str, Any]) -> bool:
    return bool(job.get("running")) and job_state(job) not in ("finished", "stopped", "failed")


def _skipped(resumed: Mapping[str, Any]) -> List[str]:
    names = []
    for entry in resumed.get("skipped") or []:
        if isinstance(entry, Sequence) and not isinstance(entry, str) and entry:
            reason = " ".join(str(entry[1]).split()) if len(entry) > 1 else ""
            names.append(f"{entry[0]} ({reason})" if reason else str(entry[0]))
        elif isinstance(entry, Mapping) and entry.get("name"):
            names.append(str(entry["name"]))
        else:
            names.append(str(entry))
    return names


def note_parts(job: Mapping[str, Any]) -> List[str]:
    """What happened last and why, most urgent first; nothing cut."""
    parts: List[str] = []
    state = job_state(job)
    if state == "waiting":
        parts.append(str(job.get("waiting_note") or "waiting for the job's other nodes"))
    if job.get("hung"):
        parts.append(
            "no heartbeat for {} (limit {}s): the watchdog kills and restarts it".format(
                human_age(job.get("heartbeat_age")), job.get("hang_timeout")
            )
        )
    if job.get("failure_reason"):
        parts.append(" ".join(str(job["failure_reason"]).split()))
    reason = job.get("status_reason")
    if reason and (
        state in ("failed", "stopped", "finished", "restarting") or not job.get("running")
    ):
        code = job.get("status_exit_code")
        parts.append(
            "trainer: {}{}".format(" ".join(str(reason).split()), f" (exit {code})" if code else "")
        )
    start = job.get("last_start")
    if (
        isinstance(start, Mapping)
        and start.get("cause") in ("crash", "hang", "reboot")
        and state not in ("stopped", "finished")
    ):
        parts.append(
            "{} {} ago: {}".format(
                CAUSE_WORDS[str(start["cause"])],
                human_age(_age(start.get("at"), job)),
                start.get("detail") or "",
            ).rstrip(": ")
        )
    if job.get("checkpoint_error"):
        parts.append("checkpoint error: " + " ".join(str(job["checkpoint_error"]).split()))
    quarantined = job.get("quarantined") or []
    if quarantined:
        parts.append(
            "quarantined: "
            + ", ".join(
                "{} ({})".format(q.get("name"), " ".join(str(q.get("reason") or "").split()))
                if isinstance(q, Mapping)
                else str(q)
                for q in quarantined
            )
        )
    resumed = job.get("resumed_from")
    if isinstance(resumed, Mapping) and _running_now(job):
        if resumed.get("name"):
            parts.append("resumed from {}".format(resumed["name"]))
        skipped = _skipped(resumed)
        if skipped:
            parts.append("skipped invalid " + ", ".join(skipped))
    # The trainer's own reason already says where it stopped (a status file since the
    # terminal state "stopped"); older ones left "stopping" and no reason.
    if (
        state == "stopped"
        and job.get("status_state") in ("stopped", "stopping")
        and not job.get("status_reason")
    ):
        checkpoint = job.get("last_checkpoint")
        name = checkpoint.get("name") if isinstance(checkpoint, Mapping) else None
        parts.append(
            "stopped at step {}{}".format(
                job.get("step"), f", newest checkpoint {name}" if name else ""
            )
        )
    return parts


def _age(at: Any, job: Mapping[str, Any]) -> Optional[float]:
    now = job.get("checked_at")
    if not isinstance(at, (int, float)) or isinstance(at, bool):
        return None
    reference = now if isinstance(now, (int, float)) else time.time()
    return max(0.0, reference - at)


def job_note(job: Mapping[str, Any]) -> str:
    return "; ".join(note_parts(job))


def _from_metrics(job: Mapping[str, Any], key: str) -> Any:
    """The status file's value, else the metrics stream's newest (a script of one's own
    may log metrics and write no status file)."""
    value = job.get(key)
    latest = job.get("metrics_latest")
    if value is None and isinstance(latest, Mapping):
        return latest.get(key)
    return value


def table_row(host: str, job: Mapping[str, Any]) -> List[str]:
    total = job.get("total_steps")
    step = _number(_from_metrics(job, "step"), "{:d}")
    if step != "-" and isinstance(total, int) and not isinstance(total, bool):
        step = f"{step}/{total}"
    checkpoint = job.get("last_checkpoint")
    age = checkpoint.get("age_seconds") if isinstance(checkpoint, Mapping) else None
    state = job_state(job)
    # A rate is only true while the job trains; a hung, failed or stopped job has none.
    rate = _from_metrics(job, "samples_per_second") if state == "training" else None
    return [
        host,
        str(job.get("name", "?")),
        state,
        step,
        _number(_from_metrics(job, "loss"), "{:.4g}"),
        _number(rate, "{:.1f}"),
        human_age(age),
        _number(job.get("restarts"), "{:d}"),
        _number(job.get("runs"), "{:d}"),
        job_note(job),
    ]


def training_table(jobs_by_host: Mapping[str, Any], detail: bool = False) -> str:
    """Text table, one row per host and job, from {host: training_status jobs list}.

    A multi-node job (its definition lists two or more ``nodes``) is one row for the job
    unless ``detail`` is true: see ``multinode_row``. A long NOTE continues on the next
    lines, under the NOTE column.
    """
    rows: List[List[str]] = []
    spans: Dict[Tuple[str, Tuple[str, ...]], Dict[str, Mapping[str, Any]]] = {}
    for host, jobs in _jobs_per_host(jobs_by_host, "training_table"):
        if not jobs:
            rows.append([host, "-", "no jobs", "-", "-", "-", "-", "-", "-", ""])
        for job in jobs:
            nodes = _nodes(job)
            if detail or len(nodes) < 2:
                rows.append(table_row(host, job))
                continue
            key = (str(job.get("name", "?")), nodes)  # one job: its name and its nodes
            if key not in spans:
                spans[key] = {}
                rows.append([])  # the job's row, filled in below where its first node sorts
            spans[key][host] = job
    spans_left = iter(spans.items())
    rows = [row or multinode_row(*next(spans_left)) for row in rows]
    return _format_table([list(TABLE_COLUMNS), *rows])


def _jobs_per_host(jobs_by_host: Any, filter_name: str) -> Iterator[Tuple[str, Sequence[Any]]]:
    """(host, its training_status jobs) in host order, from {host: jobs list}, checked."""
    if not isinstance(jobs_by_host, Mapping):
        raise AnsibleFilterError(f"{filter_name} expects a mapping of host name to a jobs list")
    for host in sorted(jobs_by_host):
        jobs = jobs_by_host[host] or []
        if not isinstance(jobs, Sequence) or isinstance(jobs, str):
            raise AnsibleFilterError(f"{filter_name}: jobs of {host} must be a list")
        yield host, jobs


def _nodes(job: Mapping[str, Any]) -> Tuple[str, ...]:
    nodes = job.get("nodes")
    if isinstance(nodes, Sequence) and not isinstance(nodes, str):
        return tuple(str(node) for node in nodes)
    return ()


# The state a multi-node job shows is the most urgent of its nodes' states.
# A node that waits in a rendezvous round waits for the others: their state says why.
STATE_URGENCY = (
    "failed",
    "hung",
    "restarting",
    "stopped",
    "stopping",
    "starting",
    "waiting",
    "finished",
)


def multinode_row(
    key: Tuple[str, Tuple[str, ...]], reports: Mapping[str, Mapping[str, Any]]
) -> List[str]:
    """One row for a job whose ranks run on several nodes.

    Ranks move in lockstep, so STEP is the lowest node's; SAMPLES/S the slowest node's (it
    paces the job); LAST CKPT AGE the oldest of the nodes' newest checkpoints (with node-local
    checkpoints, the newest step every node holds); LOSS the rendezvous (first) node's;
    RESTARTS the nodes' sum. NOTE says how many nodes are up, names those that are not (or
    do not report) and carries their notes.
    """
    name, nodes = key
    states = {host: job_state(job) for host, job in reports.items()}
    up = [host for host in nodes if reports.get(host, {}).get("running")]
    urgent = [s for s in STATE_URGENCY if s in states.values()]
    state = urgent[0] if urgent else (next(iter(states.values())) if states else "unknown")
    if len(up) < len(nodes) and state == "training":
        state = "degraded"
    # Nodes that are gone: not reporting, or their unit stopped or failed (not about to
    # restart). A fixed-size job cannot train without them: the nodes that are up wait for
    # them (in a rendezvous round, or killed and restarted by the watchdog while they wait).
    gone = [
        host
        for host in nodes
        if host not in reports or (host not in up and states[host] in ("stopped", "failed"))
    ]
    # Too few nodes left for the job's minimum (all of them by default: fixed size): the
    # status a surviving node still shows is its last step's, not training.
    needed = next(
        (j["min_nodes"] for j in reports.values() if _is_number(j.get("min_nodes"))), None
    )
    waiting = 0 < len(gone) < len(nodes) and len(nodes) - len(gone) < (needed or len(nodes))
    # A node whose unit failed was given up by systemd (the crash-loop limit, or an exit it
    # does not restart) and will not come back by itself: the job has failed, however
    # patiently the other nodes wait for it. A node not reporting may still come back.
    gave_up = [host for host in gone if host in reports and states[host] == "failed"]
    if waiting:
        state = "failed" if gave_up else "waiting"
    steps: List[Any] = [job.get("step") for job in reports.values()]
    step = min((s for s in steps if isinstance(s, int) and not isinstance(s, bool)), default=None)
    totals: List[Any] = [job.get("total_steps") for job in reports.values()]
    total = next((t for t in totals if isinstance(t, int) and not isinstance(t, bool)), None)
    step_text = _number(step, "{:d}")
    if step_text != "-" and total is not None:
        step_text = f"{step_text}/{total}"
    first = reports.get(nodes[0], {})
    rates: List[Any] = [
        _from_metrics(job, "samples_per_second")
        for host, job in reports.items()
        if states[host] == "training"
    ]
    rate = min((r for r in rates if _is_number(r)), default=None) if state == "training" else None
    ages: List[Any] = [
        job["last_checkpoint"].get("age_seconds")
        for job in reports.values()
        if isinstance(job.get("last_checkpoint"), Mapping)
    ]
    restarts: List[Any] = [job.get("restarts") for job in reports.values()]
    runs: List[Any] = [job.get("runs") for job in reports.values()]
    notes = [f"nodes up {len(up)}/{len(nodes)}"]
    if waiting:
        notes.append(
            "waiting for "
            + ", ".join(
                f"{host} ({'not reporting' if host not in reports else states[host]})"
                for host in gone
            )
        )
    missing = [host for host in nodes if host not in reports]
    if missing:
        notes.append("not reporting: " + ", ".join(missing))
    for host in nodes:
        if host in reports and (states[host] != "training" or host not in up):
            note = job_note(reports[host])
            notes.append(f"{host} {states[host]}" + (f": {note}" if note else ""))
    return [
        ",".join(nodes),
        name,
        state,
        step_text,
        _number(_from_metrics(first, "loss"), "{:.4g}"),
        _number(rate, "{:.1f}"),
        human_age(max((a for a in ages if _is_number(a)), default=None)),
        _number(sum(r for r in restarts if _is_number(r)) if restarts else None, "{:d}"),
        _number(max((r for r in runs if _is_number(r)), default=None), "{:d}"),
        "; ".join(notes),
    ]


def job_spans(jobs_by_host: Any, play_hosts: Any = None) -> List[Dict[str, Any]]:
    """The multi-node jobs among {host: training_status jobs}, each once with all its nodes.

    An operator playbook acts on such a job once, on every node, whichever of its hosts the
    play targets (``-l`` may name only one). ``outside`` lists the nodes that are not in
    ``play_hosts``: the playbook reaches them by delegation.
    """
    per_host = list(_jobs_per_host(jobs_by_host, "training_job_spans"))
    in_play = set(jobs_by_host if play_hosts is None else [str(h) for h in play_hosts])
    spans: Dict[Tuple[str, Tuple[str, ...]], Dict[str, Any]] = {}
    for _host, jobs in per_host:
        for job in jobs:
            nodes = _nodes(job) if isinstance(job, Mapping) else ()
            if len(nodes) < 2:
                continue
            key = (str(job.get("name")), nodes)
            spans.setdefault(
                key,
                {
                    "name": key[0],
                    "unit": job.get("unit"),
                    "nodes": list(nodes),
                    "outside": [n for n in nodes if n not in in_play],
                },
            )
    names = [span["name"] for span in spans.values()]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise AnsibleFilterError(
            "the hosts define the multi-node job(s) {} with different nodes; converge them "
            "first (site.yml)".format(", ".join(twice))
        )
    return list(spans.values())


def report_jobs(jobs_by_host: Any) -> List[Dict[str, Any]]:
    """The jobs report.yml draws, each once: ``{host, job, nodes}``, in host order.

    A multi-node job's ranks train one model in lockstep, so it gets one set of curves, from
    its first node that reported (the rendezvous host, unless ``-l`` left it out); ``nodes``
    lists all its hosts. A single-node job is drawn per host, ``nodes`` empty.
    """
    drawn: Dict[Tuple[str, Tuple[str, ...]], Dict[str, Any]] = {}
    entries: List[Dict[str, Any]] = []
    for host, jobs in _jobs_per_host(jobs_by_host, "training_report_jobs"):
        for job in jobs:
            nodes = _nodes(job)
            if len(nodes) < 2:
                entries.append({"host": host, "job": job, "nodes": []})
                continue
            key = (str(job.get("name")), nodes)
            entry = drawn.get(key)
            first = nodes.index(host) if host in nodes else len(nodes)
            if entry is None:
                drawn[key] = entry = {"host": host, "job": job, "nodes": list(nodes)}
                entries.append(entry)
            elif first < (nodes.index(entry["host"]) if entry["host"] in nodes else len(nodes)):
                entry.update(host=host, job=job)
    return entries


def _format_table(rows: List[List[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        notes = textwrap.wrap(row[-1], NOTE_WIDTH, break_on_hyphens=False) or [""]
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths)]
        lines.append("  ".join([*cells, notes[0]]).rstrip())
        indent = " " * (sum(widths) + 2 * len(widths))
        lines.extend(indent + more.rstrip() for more in notes[1:])
    return "\n".join(lines)


# -- curves from the job log --------------------------------------------------------


def _epoch(stamp: str) -> float:
    whole, _dot, fraction = stamp.partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds + (float("0." + fraction) if fraction else 0.0)


def batch_size_of(command: Any) -> int:
    """The --batch-size of a job's command (argv list), else the reference default."""
    if isinstance(command, Sequence) and not isinstance(command, str):
        argv = [str(a) for a in command]
        for index, arg in enumerate(argv):
            value: Optional[str] = None
            if arg == "--batch-size" and index + 1 < len(argv):
                value = argv[index + 1]
            elif arg.startswith("--batch-size="):
                value = arg.split("=", 1)[1]
            if value is not None and value.isdigit() and int(value) > 0:
                return int(value)
    return DEFAULT_BATCH_SIZE


def training_curves(
    log: Any, batch_size: int = DEFAULT_BATCH_SIZE, max_points: int = 500
) -> Dict[str, Any]:
    """Loss and samples/s per logged step from a trainer log (text or list of lines).

    Throughput is measured between consecutive progress lines of the same run (the
    journal timestamps), so a restart never produces a spike or a negative rate.
    """
    if isinstance(log, str):
        lines: Iterable[str] = log.splitlines()
    elif isinstance(log, Sequence):
        lines = [str(line) for line in log]
    else:
        raise AnsibleFilterError("training_curves expects the log as text or a list of lines")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise AnsibleFilterError("training_curves: batch_size must be a positive integer")
    points: List[Dict[str, Any]] = []
    starts: List[Dict[str, Any]] = []
    run = 0
    previous: Optional[Dict[str, Any]] = None
    cause: Optional[str] = None
    for line in lines:
        found = _START_CAUSE.search(line)
        if found:
            cause = found.group("cause")
            continue
        if _WATCHDOG_KILL.search(line):
            cause = cause or "hang"
            continue
        if _RUN_START.search(line):
            run += 1
            previous = None
            continue
        match = _STEP_LINE.match(line)
        if not match:
            continue
        if previous is not None and int(match.group("step")) <= previous["step"]:
            # A resume without its start line (log rotated or cut): the step went back.
            run += 1
            previous = None
        point = _step_point(match, run, previous, batch_size)
        if point is None:
            continue
        if previous is None and points:
            starts.append(
                {
                    "step": point["step"],
                    "time": point["time"],
                    "run": run,
                    "cause": cause or "unknown",
                    # From the last progress line before the restart to the first after it.
                    "down_seconds": round(max(0.0, point["time"] - points[-1]["time"]), 1),
                }
            )
        if previous is None:
            cause = None
        points.append(point)
        previous = point
    causes: Dict[str, int] = {}
    for start in starts:
        causes[start["cause"]] = causes.get(start["cause"], 0) + 1
    return {
        "points": _thin(points, max_points),
        "runs": len({point["run"] for point in points}),
        "restarts": starts,
        "restart_causes": causes,
        "batch_size": batch_size,
    }


def metrics_curves(summary: Any, batch_size: Optional[int] = None) -> Dict[str, Any]:
    """Curves like training_curves() from a job's metrics stream summary.

    ``summary`` is ``training_status``'s ``metrics`` (``metrics_points`` above 0): the whole
    history, thinned on the host. Restarts come from the stream's ``start`` events, their
    cause from the trainer role's record of that start (crash, hang, reboot, operator),
    else from how the previous run ended. Samples/s missing from a record are computed from
    ``batch_size`` when given.
    """
    if not isinstance(summary, Mapping):
        raise AnsibleFilterError(
            "training_metrics_curves expects the metrics summary of training_status"
        )
    points: List[Dict[str, Any]] = []
    previous: Optional[Dict[str, Any]] = None
    for raw in summary.get("points") or []:
        if not isinstance(raw, Mapping) or not _is_number(raw.get("step")):
            continue
        point = dict(raw)
        point.setdefault("run", 0)
        if (
            not _is_number(point.get("samples_per_second"))
            and batch_size
            and previous is not None
            and previous.get("run") == point["run"]
            and _is_number(point.get("time"))
            and _is_number(previous.get("time"))
            and point["time"] > previous["time"]
        ):
            point["samples_per_second"] = (
                (point["step"] - previous["step"]) * batch_size / (point["time"] - previous["time"])
            )
        points.append(point)
        previous = point
    restarts = []
    for index, start in enumerate(summary.get("runs") or []):
        if index == 0 or not isinstance(start, Mapping):
            continue  # the first run's start is where the history begins
        cause = start.get("host_cause") or PREVIOUS_END_CAUSES.get(
            str(start.get("previous_end")), "unknown"
        )
        restarts.append(
            {
                "step": start.get("step"),
                "time": start.get("time"),
                "run": index,
                "cause": cause,
                "checkpoint": start.get("checkpoint"),
                "previous_end": start.get("previous_end"),
                "down_seconds": start.get("down_seconds"),
            }
        )
    restarts = [r for r in restarts if _is_number(r["step"]) and _is_number(r["time"])]
    causes: Dict[str, int] = {}
    for restart in restarts:
        causes[str(restart["cause"])] = causes.get(str(restart["cause"]), 0) + 1
    checkpoints = [
        dict(c)
        for c in summary.get("checkpoints") or []
        if isinstance(c, Mapping) and _is_number(c.get("step")) and _is_number(c.get("time"))
    ]
    scalars = [str(n) for n in summary.get("scalars") or []]
    return {
        "source": "metrics",
        "points": points,
        "runs": len(summary.get("runs") or []) or len({p["run"] for p in points}),
        "restarts": restarts,
        "restart_causes": causes,
        "checkpoints": checkpoints,
        "scalars": scalars,
        "user_scalars": [n for n in scalars if n not in ("loss", "lr", "samples_per_second")],
        "records": summary.get("records"),
        "batch_size": batch_size,
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _step_point(
    match: re.Match[str], run: int, previous: Optional[Dict[str, Any]], batch_size: int
) -> Optional[Dict[str, Any]]:
    try:
        loss = float(match.group("loss"))
        when = _epoch(match.group("stamp"))
    except ValueError:
        return None
    step = int(match.group("step"))
    rate = None
    if previous is not None and step > previous["step"] and when > previous["time"]:
        rate = (step - previous["step"]) * batch_size / (when - previous["time"])
    return {
        "time": when,
        "step": step,
        "loss": loss if math.isfinite(loss) else None,
        "samples_per_second": rate,
        "run": run,
    }


def _thin(points: List[Dict[str, Any]], max_points: int) -> List[Dict[str, Any]]:
    if max_points < 2 or len(points) <= max_points:
        return points
    stride = len(points) / float(max_points)
    kept = [points[int(i * stride)] for i in range(max_points)]
    if kept[-1] is not points[-1]:
        kept[-1] = points[-1]
    return kept


# -- SVG line chart -----------------------------------------------------------------


def _ticks(low: float, high: float) -> List[float]:
    if high <= low:
        return [low]
    span = high - low
    step = 10 ** math.floor(math.log10(span / 4))
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= 5:
            step *= factor
            break
    first = math.ceil(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _label(value: float) -> str:
    """Readable tick labels: 25000, not 2.5e+04; 0.0125, not 1.25e-02."""
    if value == int(value) and abs(value) < 1e12:
        return str(int(value))
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}" if abs(value) < 1e5 else str(round(value))


def _clock_label(seconds: float) -> str:
    """Elapsed wall-clock time for the time axis: 0, 45s, 12m, 2h30m, 3d04h."""
    if seconds <= 0:
        return "0"
    return human_age(seconds).replace("m00s", "m").replace("h00m", "h")


def _time_ticks(span: float) -> List[float]:
    for step in (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400, 172800):
        if span / step <= 6:
            return [i * step for i in range(int(span // step) + 1)]
    step = 86400 * math.ceil(span / 86400 / 6)
    return [i * step for i in range(int(span // step) + 1)]


def _restart_words(restart: Mapping[str, Any]) -> str:
    cause = str(restart.get("cause") or "unknown")
    words = CAUSE_WORDS.get(cause, "restart (cause not in the log)")
    down = restart.get("down_seconds")
    return "{}, resumed at step {}{}".format(
        words,
        int(restart["step"]),
        f", {human_age(down)} without progress" if isinstance(down, (int, float)) else "",
    )


def _where(restart: Mapping[str, Any], x: str, origin: float) -> float:
    return float(restart["time"]) - origin if x == "time" else float(restart["step"])


LABEL_ROWS = 3
LABEL_CHAR_WIDTH = 5.5  # a generous average advance of a 9 px sans-serif character


def _restart_lines(
    restarts: List[Mapping[str, Any]], at: Any, top: float, bottom: float
) -> List[str]:
    """Dashed red lines at restarts, labelled with the cause (and a long stall's length).

    Restarts close together (a crash loop) would print their labels over each other:
    each label takes the first of a few rows where it clears the previous label, and a
    restart with no room left keeps its line and its tooltip only.
    """
    parts = []
    row_ends: List[float] = [float("-inf")] * LABEL_ROWS
    for restart in sorted(restarts, key=at):
        cx = at(restart)
        label = str(restart.get("cause") or "unknown")
        down = restart.get("down_seconds")
        if isinstance(down, (int, float)) and down >= 60:
            label += f" {human_age(down)}"  # a long stall is visible on a step axis too
        parts.append(
            f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{top}" y2="{bottom}" '
            f'stroke="#d33" stroke-dasharray="3,3"><title>'
            f"{html.escape(_restart_words(restart))}</title></line>"
        )
        row = next((i for i, end in enumerate(row_ends) if cx + 2 > end + 4), None)
        if row is None:
            continue
        row_ends[row] = cx + 2 + len(label) * LABEL_CHAR_WIDTH
        parts.append(
            f'<text x="{cx + 2:.1f}" y="{top + 9 + row * 10}" font-size="9" fill="#d33">'
            f"{html.escape(label)}</text>"
        )
    return parts


def training_svg_chart(
    curves: Mapping[str, Any],
    y: str = "loss",
    title: str = "",
    width: int = 640,
    height: int = 240,
    x: str = "step",
    y_from_zero: Optional[bool] = None,
) -> str:
    """An inline SVG line chart of one series of training_curves().

    ``x`` is ``step`` or ``time`` (wall clock since the first point: downtime shows as a
    shaded gap). The y axis starts at 0 for samples/s (and whenever ``y_from_zero``), so
    noise does not look like a collapse; otherwise the axis label says where it starts.
    """
    if x not in ("step", "time"):
        raise AnsibleFilterError("training_svg_chart: x must be 'step' or 'time'")
    if y_from_zero is None:
        y_from_zero = y == "samples_per_second"
    points = [p for p in curves.get("points", []) if isinstance(p.get(y), (int, float))]
    esc_title = html.escape(title or y)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc_title}">'
        f"<title>{esc_title}</title>"
        f'<rect width="{width}" height="{height}" fill="#fff" stroke="#ccc"/>'
        f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" font-size="13">{esc_title}</text>'
    )
    if len(points) < 1:
        return (
            head + f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
            'font-size="12" fill="#888">no data in the job log yet</text></svg>'
        )
    left, right, top, bottom = 64, 12, 26, 30
    origin = float(points[0]["time"]) if x == "time" else 0.0

    def xval(point: Mapping[str, Any]) -> float:
        return float(point["time"]) - origin if x == "time" else float(point["step"])

    xs = [xval(p) for p in points]
    ys = [float(p[y]) for p in points]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)
    if not y_from_zero and 0.0 <= y_low <= 0.05 * (y_high - y_low):
        y_from_zero = True  # the data come down to about 0 anyway (a decayed learning rate)
    if y_from_zero:
        y_low, y_high = min(0.0, y_low), max(0.0, y_high)
    if x_high == x_low:
        x_high = x_low + 1
    if y_high == y_low:
        y_low, y_high = y_low - 0.5 * (abs(y_low) or 1), y_high + 0.5 * (abs(y_high) or 1)
        if y_from_zero:
            y_low = min(0.0, y_low + 0.5 * (abs(y_low) or 1))

    def px(value: float) -> float:
        return left + (value - x_low) / (x_high - x_low) * (width - left - right)

    def py(value: float) -> float:
        return height - bottom - (value - y_low) / (y_high - y_low) * (height - top - bottom)

    parts = [head]
    restarts = [r for r in curves.get("restarts", []) if isinstance(r, Mapping)]
    if x == "time":
        for restart in restarts:
            down = restart.get("down_seconds")
            if isinstance(down, (int, float)) and down > 0:
                x1 = px(float(restart["time"]) - origin - down)
                x2 = px(float(restart["time"]) - origin)
                parts.append(
                    f'<rect x="{x1:.1f}" y="{top}" width="{max(1.0, x2 - x1):.1f}" '
                    f'height="{height - top - bottom}" fill="#fbe3e3">'
                    f"<title>{html.escape(_restart_words(restart))}</title></rect>"
                )
    for tick in _ticks(y_low, y_high):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" '
            f'stroke="#eee"/><text x="{left - 4}" y="{py(tick) + 4:.1f}" text-anchor="end" '
            f'font-size="10">{_label(tick)}</text>'
        )
    x_ticks = _time_ticks(x_high) if x == "time" else _ticks(x_low, x_high)
    for tick in x_ticks:
        text = _clock_label(tick) if x == "time" else _label(tick)
        parts.append(
            f'<text x="{px(tick):.1f}" y="{height - bottom + 14}" text-anchor="middle" '
            f'font-size="10">{text}</text>'
        )
    axis = "wall-clock time since the first point" if x == "time" else "step"
    if not y_from_zero:
        axis += f" (y axis from {_label(y_low)}, not 0)"
    parts.append(
        f'<text x="{width / 2:.0f}" y="{height - 3}" text-anchor="middle" font-size="10">'
        f"{html.escape(axis)}</text>"
    )
    marks = [
        (px(value), checkpoint)
        for checkpoint in curves.get("checkpoints") or []
        if isinstance(checkpoint, Mapping)
        for value in [_where(checkpoint, x, origin)]
        if x_low - 1e-9 <= value <= x_high + 1e-9
    ]
    parts.extend(_checkpoint_marks(marks, height - bottom))
    parts.extend(_restart_lines(restarts, lambda r: px(_where(r, x, origin)), top, height - bottom))
    for run_points in _split_runs(points):
        coords = " ".join(f"{px(xval(p)):.1f},{py(float(p[y])):.1f}" for p in run_points)
        parts.append(
            f'<polyline fill="none" stroke="#1f6feb" stroke-width="1.5" points="{coords}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _checkpoint_marks(marks: List[Any], bottom: float) -> List[str]:
    """A short green tick above the x axis at every committed checkpoint in view."""
    parts = []
    for cx, checkpoint in marks:
        name = html.escape(str(checkpoint.get("name") or "checkpoint"))
        parts.append(
            f'<line class="checkpoint" x1="{cx:.1f}" x2="{cx:.1f}" y1="{bottom - 6:.1f}" '
            f'y2="{bottom:.1f}" stroke="#2da44e" stroke-width="2"><title>{name} '
            f"(step {int(checkpoint['step'])})</title></line>"
        )
    return parts


def _split_runs(points: List[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
    runs: List[List[Dict[str, Any]]] = []
    for point in points:
        if not runs or runs[-1][-1].get("run") != point.get("run"):
            runs.append([])
        runs[-1].append(point)
    return runs


class FilterModule:
    """Training status table and report curves."""

    def filters(self) -> Dict[str, Any]:
        return {
            "training_table": training_table,
            "training_curves": training_curves,
            "training_metrics_curves": metrics_curves,
            "training_svg_chart": training_svg_chart,
            "training_batch_size": batch_size_of,
            "training_job_spans": job_spans,
            "training_report_jobs": report_jobs,
        }
