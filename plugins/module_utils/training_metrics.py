# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The training metrics formats: the single definition shared by writers and readers.

1. The metrics stream ``metrics.jsonl`` (beside the job's status file, by default in the
   checkpoint directory): JSON lines, appended by the training process, rotated by size,
   read by the report, the status module and any tool (``jq``, pandas, a notebook).
2. A Prometheus text file (node_exporter's textfile collector format) with every job of a
   host, written by the host helper.

Stream records
--------------
Every line is one JSON object with ``kind``, ``step`` (optimizer steps completed) and
``time`` (unix seconds, wall clock):

=========== ==================================================================================
kind        other keys
=========== ==================================================================================
header      ``schema`` (``"unbroken.training/metrics"``), ``version`` (``1``); first line of
            every file, so each rotated file describes itself (no ``step``)
scalars     ``loss``, ``lr``, ``samples_per_second`` and any user scalar (name
            ``[A-Za-z_][A-Za-z0-9_./-]*``): numbers; ``"NaN"``/``"Infinity"``/``"-Infinity"``
            for non-finite values (JSON has no literal for them)
start       a run (process) started at ``step``: ``cause`` ``start`` (step 0) or ``resume``,
            ``checkpoint`` (name resumed from or null), ``skipped`` (invalid newer
            checkpoints ``[[name, reason], ...]``), ``pid``, ``host``
checkpoint  a checkpoint committed at ``step``: ``name``, ``seconds`` (write time),
            ``size_bytes``
end         the run ended cleanly at ``step``: ``state`` (``finished``/``stopped``/``failed``),
            ``reason`` (text or null)
=========== ==================================================================================

Readers ignore unknown kinds and unknown keys, so later versions can add both.

Resumed without duplicate steps
-------------------------------
History is never rewritten: a restarted run appends.  Readers rebuild one timeline, in file
order, with two rules:

* a ``start`` record at step S drops every earlier ``scalars`` record with step > S (the
  abandoned steps after the checkpoint the run resumed from; the run redoes them);
* a ``scalars`` record whose step is lower than the last one kept does the same
  (a script that never wrote ``start``); one with the *same* step is merged into it
  (several ``log`` calls for one step, e.g. training and evaluation loss).

So the history holds each step once, from the run that the job's current state comes from.
Events are all kept in file order; ``checkpoint`` events beyond a later resume point are
marked ``abandoned`` and each ``start`` says how the previous run ended (``previous_end``:
its ``end`` state, or ``interrupted`` when it wrote none: SIGKILL, OOM, the hang watchdog,
a crash or a power loss).

Durability: each record is one ``write`` of a whole line with ``O_APPEND``, no fsync (a
heartbeat per few steps must not wait for the disk).  A process killed mid-write leaves a
torn last line: readers skip lines that are not JSON objects (``bad_lines``), and the next
writer starts on a fresh line.  Rotation renames ``metrics.jsonl`` to ``.1`` (``.1`` to
``.2``, ... keeping ``backups``), each an atomic rename, so a reader or a crash never sees
a record twice or a file half moved.

This file is imported by Ansible modules/plugins (as module_utils), by the host helper and
by the training runtime ``unbroken_ckpt`` (through a symlink, as
``unbroken_ckpt.training_metrics``), so it stays standard library only and Python 3.8
compatible.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

SCHEMA = "unbroken.training/metrics"
VERSION = 1
FILE_NAME = "metrics.jsonl"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_BACKUPS = 8
KINDS = ("header", "scalars", "start", "checkpoint", "end")
# training_status_file.TERMINAL_STATES (a unit test keeps them equal): the host helper loads
# this file alone, by path, so it cannot import that one.
END_STATES = ("finished", "stopped", "failed")
START_CAUSES = ("start", "resume")
INTERRUPTED = "interrupted"
RESERVED_KEYS = frozenset(("kind", "step", "time"))
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]{0,127}$")
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_TAIL_CHUNK = 64 * 1024


class MetricsError(ValueError):
    """A value or argument the metrics format cannot hold."""


# -- values ------------------------------------------------------------------------------


def scalar_value(name: str, value: Any) -> Any:
    """The JSON form of one scalar: int, float, or a non-finite float's name.

    Accepts anything ``float()`` takes (a 0-d tensor, a NumPy number); refuses strings,
    containers and None with MetricsError naming the scalar.
    """
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, (str, bytes)):
        raise MetricsError(f"metric {name!r} must be a number, got the string {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MetricsError(
            f"metric {name!r} must be a number, got {type(value).__name__}"
        ) from None
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return number


def _decode_scalar(value: Any) -> Any:
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    return value


def check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, int):
        try:
            whole = int(step)
        except (TypeError, ValueError):
            raise MetricsError(f"step must be an integer, got {step!r}") from None
        if whole != step:
            raise MetricsError(f"step must be an integer, got {step!r}")
        step = whole
    if step < 0:
        raise MetricsError(f"step must be >= 0, got {step}")
    return int(step)


def scalars_record(step: int, when: float, scalars: Mapping[str, Any]) -> Dict[str, Any]:
    """A ``scalars`` record; None values are left out (e.g. no loss yet)."""
    record: Dict[str, Any] = {"kind": "scalars", "step": check_step(step), "time": when}
    for name, value in scalars.items():
        if value is None:
            continue
        if name in RESERVED_KEYS or not _NAME_RE.match(name):
            raise MetricsError(
                f"metric name {name!r} is not allowed: use letters, digits and _./- "
                "(starting with a letter or _), not kind/step/time"
            )
        record[name] = scalar_value(name, value)
    return record


# -- writer ------------------------------------------------------------------------------


def stream_path(path: str) -> str:
    """``path`` itself, or ``path/metrics.jsonl`` when ``path`` is a directory."""
    return os.path.join(path, FILE_NAME) if os.path.isdir(path) else path


class MetricsWriter:
    """Append records to a metrics stream; rotate it by size.

    One writer per stream (the training process; rank 0 under torchrun).  Thread safe, so
    a background checkpoint writer may record events too.  Write errors (a full disk) are
    raised; the next record starts on a fresh line whatever a failed write left behind.
    """

    def __init__(
        self,
        path: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes < 1024:
            raise MetricsError(f"max_bytes must be >= 1024, got {max_bytes}")
        if backups < 0:
            raise MetricsError(f"backups must be >= 0, got {backups}")
        self.path = os.path.abspath(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.clock = clock
        self._lock = threading.Lock()
        self._fd: Optional[int] = None
        self._size = 0
        self._fresh_line = True

    # -- public records --------------------------------------------------------------
    def log(self, step: int, **scalars: Any) -> Dict[str, Any]:
        """Append a ``scalars`` record for ``step``."""
        record = scalars_record(step, self.clock(), scalars)
        self.append(record)
        return record

    def start(
        self,
        step: int,
        cause: Optional[str] = None,
        checkpoint: Optional[str] = None,
        skipped: Optional[List[Any]] = None,
    ) -> Dict[str, Any]:
        """Append a ``start`` record: readers drop the abandoned steps after ``step``."""
        step = check_step(step)
        cause = cause or ("resume" if step > 0 or checkpoint else "start")
        if cause not in START_CAUSES:
            raise MetricsError(
                "cause must be one of {}, got {!r}".format(", ".join(START_CAUSES), cause)
            )
        record = {
            "kind": "start",
            "step": step,
            "time": self.clock(),
            "cause": cause,
            "checkpoint": checkpoint,
            "skipped": [list(item) for item in skipped or []],
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        self.append(record)
        return record

    def checkpoint(
        self,
        step: int,
        name: Optional[str] = None,
        seconds: Optional[float] = None,
        size_bytes: Optional[int] = None,
        when: Optional[float] = None,
    ) -> Dict[str, Any]:
        """Append a ``checkpoint`` record (``when``: the commit's time, default now)."""
        record = {
            "kind": "checkpoint",
            "step": check_step(step),
            "time": self.clock() if when is None else float(when),
            "name": name,
            "seconds": None if seconds is None else scalar_value("seconds", seconds),
            "size_bytes": size_bytes,
        }
        self.append(record)
        return record

    def end(self, step: int, state: str, reason: Optional[str] = None) -> Dict[str, Any]:
        """Append an ``end`` record: the run stopped on its own terms."""
        if state not in END_STATES:
            raise MetricsError(
                "state must be one of {}, got {!r}".format(", ".join(END_STATES), state)
            )
        record = {
            "kind": "end",
            "step": check_step(step),
            "time": self.clock(),
            "state": state,
            "reason": reason,
        }
        self.append(record)
        return record

    # -- file handling ---------------------------------------------------------------
    def append(self, record: Mapping[str, Any]) -> None:
        data = (
            json.dumps(record, separators=(",", ":"), allow_nan=False, sort_keys=False) + "\n"
        ).encode("utf-8")
        with self._lock:
            if self._fd is None:
                self._open()
            if self._size > 0 and self._size + len(data) > self.max_bytes:
                self._rotate()
            self._write(data)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(self.path, flags, 0o644)
        self._size = os.fstat(self._fd).st_size
        self._fresh_line = self._size == 0 or _ends_with_newline(self.path, self._size)
        if self._size == 0:
            self._write(_header(self.clock()))

    def _write(self, data: bytes) -> None:
        if self._fd is None:  # pragma: no cover - _open always sets it
            raise RuntimeError("metrics stream is closed")
        if not self._fresh_line:
            data = b"\n" + data  # seal a torn line left by a killed writer or a full disk
        self._fresh_line = False
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self._size += written
            view = view[written:]
        self._fresh_line = True

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.backups == 0:
            os.unlink(self.path)
        else:
            # Shift the run of files .1, .2, ... up by one (the oldest kept is replaced);
            # every step is one atomic rename, so a crash in between loses or repeats nothing.
            top = 0
            while top < self.backups - 1 and os.path.exists(f"{self.path}.{top + 1}"):
                top += 1
            for index in range(top, 0, -1):
                os.replace(f"{self.path}.{index}", f"{self.path}.{index + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._open()


def _header(when: float) -> bytes:
    record = {"kind": "header", "schema": SCHEMA, "version": VERSION, "time": when}
    return (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")


def _ends_with_newline(path: str, size: int) -> bool:
    with open(path, "rb") as handle:
        handle.seek(size - 1)
        return handle.read(1) == b"\n"


# -- reader ------------------------------------------------------------------------------


def stream_files(path: str) -> List[str]:
    """The stream's files, oldest first: ``metrics.jsonl.N`` ... ``.1``, ``metrics.jsonl``."""
    path = stream_path(path)
    directory, base = os.path.split(os.path.abspath(path))
    pattern = re.compile(re.escape(base) + r"\.(\d+)$")
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    rotated = sorted(
        ((int(m.group(1)), n) for n in names for m in [pattern.match(n)] if m),
        reverse=True,
    )
    files = [os.path.join(directory, name) for _index, name in rotated]
    if base in names:
        files.append(os.path.join(directory, base))
    return files


def iter_records(path: str, counts: Optional[Dict[str, int]] = None) -> Iterator[Dict[str, Any]]:
    """Every record of the stream in file order (headers excluded), raw.

    Lines that are not JSON objects with a ``kind`` (a torn last line, garbage) and files
    of another schema or a newer major version are skipped and counted in ``counts``
    (``bad_lines``, ``skipped_files``).  All files are opened before any is read, so a
    rotation while reading neither hides nor repeats records.
    """
    counts = counts if counts is not None else {}
    counts.setdefault("bad_lines", 0)
    counts.setdefault("skipped_files", 0)
    handles = []
    for name in stream_files(path):
        try:
            handles.append(open(name, "rb"))  # noqa: SIM115  # closed below
        except OSError:
            continue
    try:
        for handle in handles:
            yield from _file_records(handle, counts)
    finally:
        for handle in handles:
            handle.close()


def _file_records(handle: Any, counts: Dict[str, int]) -> Iterator[Dict[str, Any]]:
    for raw in handle:
        try:
            record = json.loads(raw)
        except ValueError:
            counts["bad_lines"] += 1
            continue
        if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
            counts["bad_lines"] += 1
            continue
        if record["kind"] == "header":
            if record.get("schema") != SCHEMA or not isinstance(record.get("version"), int):
                counts["skipped_files"] += 1
                return
            if record["version"] > VERSION:
                counts["skipped_files"] += 1
                return
            continue
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            counts["bad_lines"] += 1
            continue
        yield record


class MetricsHistory:
    """The de-duplicated history of a stream (see the module docstring)."""

    def __init__(self) -> None:
        self.records: List[Dict[str, Any]] = []
        self.events: List[Dict[str, Any]] = []
        self.scalars: List[str] = []
        self.files: List[str] = []
        self.bad_lines = 0
        self.skipped_files = 0
        self.dropped_records = 0

    @property
    def runs(self) -> List[Dict[str, Any]]:
        """The ``start`` events, one per run of the training process."""
        return [e for e in self.events if e["kind"] == "start"]

    @property
    def checkpoints(self) -> List[Dict[str, Any]]:
        return [e for e in self.events if e["kind"] == "checkpoint"]

    def last(self) -> Optional[Dict[str, Any]]:
        return self.records[-1] if self.records else None

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-ready data (non-finite values stay floats: serialise with care)."""
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "records": self.records,
            "events": self.events,
            "scalars": self.scalars,
            "files": self.files,
            "bad_lines": self.bad_lines,
            "skipped_files": self.skipped_files,
            "dropped_records": self.dropped_records,
        }


def read_metrics(path: str) -> MetricsHistory:
    """Read a stream (``path``: the file or its directory), rotated files included.

    ``records``: ``scalars`` records, one per step, steps strictly increasing, non-finite
    values as floats.  ``events``: ``start``/``checkpoint``/``end`` records in file order;
    ``start`` events carry ``previous_end`` (the previous run's ``end`` state,
    ``interrupted`` when it wrote none, None for the first run) and ``checkpoint`` events
    ``abandoned`` (True when a later run resumed from an earlier step).  A missing stream
    gives an empty history.
    """
    history = MetricsHistory()
    history.files = stream_files(path)
    counts: Dict[str, int] = {}
    records = history.records
    names: Dict[str, None] = {}
    previous_end: Optional[str] = None
    seen_start = False
    for record in iter_records(path, counts):
        kind, step = record["kind"], record["step"]
        if kind == "scalars":
            values = {k: _decode_scalar(v) for k, v in record.items() if k != "kind"}
            for name in values:
                if name not in RESERVED_KEYS:
                    names.setdefault(name, None)
            if records and step == records[-1]["step"]:
                records[-1].update(values)
                continue
            history.dropped_records += _rewind(records, step - 1)
            records.append(values)
        elif kind == "start":
            history.dropped_records += _rewind(records, step)
            for event in history.events:
                if event["kind"] == "checkpoint" and event["step"] > step:
                    event["abandoned"] = True
            event = dict(record)
            event["previous_end"] = (previous_end or INTERRUPTED) if seen_start else None
            history.events.append(event)
            seen_start, previous_end = True, None
        elif kind == "checkpoint":
            history.events.append(dict(record, abandoned=False))
        elif kind == "end":
            history.events.append(dict(record))
            previous_end = record.get("state") if isinstance(record.get("state"), str) else None
    history.scalars = sorted(names)
    history.bad_lines = counts.get("bad_lines", 0)
    history.skipped_files = counts.get("skipped_files", 0)
    return history


def _rewind(records: List[Dict[str, Any]], keep_through: int) -> int:
    """Drop records with step > keep_through from the end; return how many."""
    dropped = 0
    while records and records[-1]["step"] > keep_through:
        records.pop()
        dropped += 1
    return dropped


def latest_record(path: str) -> Optional[Dict[str, Any]]:
    """The newest valid ``scalars`` record, reading only the end of the stream.

    For status checks that need the latest loss/lr/user scalars without the whole history
    (a ``start`` after it at a lower step makes it abandoned; then the newest kept one).
    """
    resume_at: Optional[int] = None
    for name in reversed(stream_files(path)):
        for record in _tail_records(name):
            if record.get("kind") == "start" and isinstance(record.get("step"), int):
                step = record["step"]
                resume_at = step if resume_at is None else min(resume_at, step)
            elif (
                record.get("kind") == "scalars"
                and isinstance(record.get("step"), int)
                and (resume_at is None or record["step"] <= resume_at)
            ):
                return {k: _decode_scalar(v) for k, v in record.items() if k != "kind"}
    return None


def _tail_records(name: str) -> Iterator[Dict[str, Any]]:
    """Records of one file, newest first, reading backwards in chunks."""
    try:
        handle = open(name, "rb")  # noqa: SIM115  # closed in finally
    except OSError:
        return
    try:
        end = handle.seek(0, os.SEEK_END)
        rest = b""
        while end > 0:
            start = max(0, end - _TAIL_CHUNK)
            handle.seek(start)
            chunk = handle.read(end - start) + rest
            end = start
            lines = chunk.split(b"\n")
            rest = lines.pop(0) if start > 0 else b""
            for raw in reversed(lines):
                record = _parse_line(raw)
                if record is not None:
                    yield record
    finally:
        handle.close()


def _parse_line(raw: bytes) -> Optional[Dict[str, Any]]:
    if not raw.strip():
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


# -- Prometheus textfile -----------------------------------------------------------------

TEXTFILE_PREFIX = "unbroken_training_"
# The one-word job states of the textfile; each job gets one 0/1 series per state.
JOB_STATES = (
    "starting",
    "training",
    "stopping",
    "finished",
    "failed",
    "hung",
    "restarting",
    "stopped",
    "waiting",
)
_TEXTFILE_METRICS: Tuple[Tuple[str, str, str, str], ...] = (
    # (name without prefix, type, job key, help)
    ("job_step", "gauge", "step", "Optimizer steps completed (the job's status file)."),
    ("job_total_steps", "gauge", "total_steps", "Steps the job is configured to train."),
    ("job_loss", "gauge", "loss", "Loss of the latest step."),
    (
        "job_samples_per_second",
        "gauge",
        "samples_per_second",
        "Training throughput between the last two status writes.",
    ),
    (
        "job_last_checkpoint_timestamp_seconds",
        "gauge",
        "last_checkpoint_time",
        "Unix time the newest committed checkpoint was written.",
    ),
    (
        "job_last_checkpoint_age_seconds",
        "gauge",
        "last_checkpoint_age_seconds",
        "Age of the newest committed checkpoint when this file was written.",
    ),
    (
        "job_heartbeat_age_seconds",
        "gauge",
        "heartbeat_age_seconds",
        "Age of the job's heartbeat (status file) when this file was written.",
    ),
    (
        "job_restarts_total",
        "counter",
        "restarts",
        "Automatic restarts of the job's unit since it was last started by hand.",
    ),
)


def escape_label_value(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: Any) -> str:
    """A sample value: integers exactly, floats in full precision, NaN and +Inf/-Inf."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    return repr(number)


def _job_value(job: Mapping[str, Any], key: str, now: float) -> Any:
    checkpoint = job.get("last_checkpoint")
    checkpoint = checkpoint if isinstance(checkpoint, Mapping) else {}
    if key == "last_checkpoint_time":
        value = job.get(key, checkpoint.get("created"))
    elif key == "last_checkpoint_age_seconds":
        value = job.get(key, checkpoint.get("age_seconds"))
        created = job.get("last_checkpoint_time", checkpoint.get("created"))
        if value is None and _is_number(created):
            value = max(0.0, now - float(created))
    elif key == "heartbeat_age_seconds":
        value = job.get(key, job.get("heartbeat_age"))
    else:
        value = job.get(key)
    return value if _is_number(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def render_textfile(jobs: List[Mapping[str, Any]], now: Optional[float] = None) -> str:
    """Render every job of a host in the Prometheus text exposition format.

    Each job is a mapping with ``name`` (required) and any of: ``state`` (one word, e.g.
    from ``JOB_STATES``), ``step``, ``total_steps``, ``loss``, ``samples_per_second``,
    ``restarts``, ``heartbeat_age_seconds`` (or ``heartbeat_age``), and the newest
    checkpoint as ``last_checkpoint_time`` (unix s) / ``last_checkpoint_age_seconds`` or a
    ``last_checkpoint`` mapping with ``created``/``age_seconds`` (the shape of
    ``training_status``).  Unknown (None) values are left out rather than written as 0.
    Series carry the label ``job``; node_exporter adds the host's ``instance``.
    """
    now = time.time() if now is None else now
    names = []
    for job in jobs:
        name = job.get("name")
        if not isinstance(name, str) or not name:
            raise MetricsError(f"every job needs a non-empty name, got {name!r}")
        names.append(name)
    if len(set(names)) != len(names):
        raise MetricsError("job names must be unique, got {}".format(", ".join(sorted(names))))
    lines: List[str] = []
    for metric, kind, key, text in _TEXTFILE_METRICS:
        samples = []
        for job in jobs:
            value = _job_value(job, key, now)
            if value is not None:
                label = escape_label_value(job["name"])
                samples.append(f'{TEXTFILE_PREFIX}{metric}{{job="{label}"}} {format_value(value)}')
        _family(lines, TEXTFILE_PREFIX + metric, kind, text, samples)
    samples = []
    for job in jobs:
        state = job.get("state")
        if not isinstance(state, str) or not state:
            continue
        label = escape_label_value(job["name"])
        states = JOB_STATES if state in JOB_STATES else (*JOB_STATES, state)
        for candidate in states:
            samples.append(
                f'{TEXTFILE_PREFIX}job_state{{job="{label}",state="{escape_label_value(candidate)}"}}'
                f" {1 if candidate == state else 0}"
            )
    _family(
        lines,
        TEXTFILE_PREFIX + "job_state",
        "gauge",
        "1 for the job's current state, 0 for the others.",
        samples,
    )
    return "".join(line + "\n" for line in lines)


def _family(lines: List[str], name: str, kind: str, text: str, samples: List[str]) -> None:
    if not samples:
        return
    lines.append(f"# HELP {name} {_escape_help(text)}")
    lines.append(f"# TYPE {name} {kind}")
    lines.extend(samples)


def write_textfile(path: str, text: str) -> None:
    """Replace ``path`` (``*.prom`` in node_exporter's textfile directory) atomically.

    Written to a temporary name in the same directory (which the collector ignores: it
    reads only ``*.prom``), then renamed over ``path``, so the collector never reads a
    half-written file.
    """
    if not path.endswith(".prom"):
        raise MetricsError(
            f"{path}: node_exporter's textfile collector reads only files named *.prom"
        )
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
