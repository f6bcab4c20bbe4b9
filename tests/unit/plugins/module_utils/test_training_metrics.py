# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""module_utils/training_metrics: the metrics stream (write, rotate, resume, read) and the
Prometheus textfile."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ansible_collections.unbroken.training.plugins.module_utils import training_metrics as tm
from ansible_collections.unbroken.training.plugins.module_utils import (
    training_status_file as sf,
)

MODULE_FILE = Path(tm.__file__).resolve()


class Clock:
    """Wall time that advances one second per reading, so records are told apart."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_an_end_record_knows_the_same_terminal_states_as_the_status_file() -> None:
    assert sorted(tm.END_STATES) == sorted(sf.TERMINAL_STATES)


def writer(path: Path, **kwargs: object) -> tm.MetricsWriter:
    return tm.MetricsWriter(str(path / tm.FILE_NAME), clock=Clock(), **kwargs)  # type: ignore[arg-type]


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- writing and rotation -------------------------------------------------------------------


def test_rotation_by_size_keeps_n_files_each_self_describing_and_reads_back_in_order(
    tmp_path: Path,
) -> None:
    with writer(tmp_path, max_bytes=1024, backups=3) as out:
        for step in range(1, 201):
            out.log(step, loss=1.0 / step, lr=0.001)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["metrics.jsonl", "metrics.jsonl.1", "metrics.jsonl.2", "metrics.jsonl.3"]
    kept: list[int] = []
    for name in ("metrics.jsonl.3", "metrics.jsonl.2", "metrics.jsonl.1", "metrics.jsonl"):
        file = tmp_path / name
        assert file.stat().st_size <= 1024
        records = lines_of(file)
        assert records[0] == {
            "kind": "header",
            "schema": tm.SCHEMA,
            "version": tm.VERSION,
            "time": records[0]["time"],
        }
        kept += [r["step"] for r in records[1:]]
    # What is kept is a contiguous tail of the history, oldest file first.
    assert kept == list(range(kept[0], 201)) and kept[0] > 1
    history = tm.read_metrics(str(tmp_path))
    assert [r["step"] for r in history.records] == kept
    assert history.records[-1] == {
        "step": 200,
        "time": history.records[-1]["time"],
        "loss": 1 / 200,
        "lr": 0.001,
    }
    assert history.scalars == ["loss", "lr"]
    assert history.bad_lines == 0 and history.dropped_records == 0


def test_resume_drops_the_abandoned_steps_across_a_rotation(tmp_path: Path) -> None:
    """Run 1 logs to step 100 (checkpoints at 40 and 80) and is killed; run 2 resumes at 40
    (the checkpoint at 80 was found corrupt) after the stream has rotated."""
    with writer(tmp_path, max_bytes=2048, backups=20) as out:
        out.start(0)
        for step in range(1, 101):
            out.log(step, loss=1000.0 + step)
            if step in (40, 80):
                out.checkpoint(step, name=f"step-{step:06d}", seconds=0.5, size_bytes=10)
    rotated_before_resume = len(tm.stream_files(str(tmp_path)))
    assert rotated_before_resume > 2
    with writer(tmp_path, max_bytes=2048, backups=20) as out:
        out.start(40, checkpoint="step-000040", skipped=[["step-000080", "size differs"]])
        # Before the resumed run logs anything, the killed run's steps past 40 are gone.
        assert tm.read_metrics(str(tmp_path)).records[-1]["step"] == 40
        for step in range(41, 61):
            out.log(step, loss=2000.0 + step, eval_loss=float(step))
        out.end(60, "stopped", "SIGTERM")
    history = tm.read_metrics(str(tmp_path))
    steps = [r["step"] for r in history.records]
    assert steps == list(range(1, 61))  # each step once
    assert [r["loss"] for r in history.records[:40]] == [1000.0 + s for s in range(1, 41)]
    assert [r["loss"] for r in history.records[40:]] == [2000.0 + s for s in range(41, 61)]
    assert history.dropped_records == 60  # steps 41..100 of the killed run
    assert "eval_loss" in history.scalars
    starts = history.runs
    assert [(s["step"], s["cause"], s["previous_end"]) for s in starts] == [
        (0, "start", None),
        (40, "resume", tm.INTERRUPTED),
    ]
    assert starts[1]["checkpoint"] == "step-000040"
    assert starts[1]["skipped"] == [["step-000080", "size differs"]]
    assert [(c["step"], c["abandoned"]) for c in history.checkpoints] == [(40, False), (80, True)]
    assert history.events[-1]["kind"] == "end" and history.events[-1]["state"] == "stopped"
    assert len(tm.stream_files(str(tmp_path))) > rotated_before_resume


def test_a_script_that_never_writes_start_is_still_deduplicated(tmp_path: Path) -> None:
    with writer(tmp_path) as out:
        for step in range(10, 310, 10):
            out.log(step, loss=1.0)
    with writer(tmp_path) as out:  # resumed from 200, logs from 210 on
        for step in range(210, 260, 10):
            out.log(step, loss=2.0)
    history = tm.read_metrics(str(tmp_path))
    assert [r["step"] for r in history.records] == list(range(10, 260, 10))
    assert {r["loss"] for r in history.records if r["step"] >= 210} == {2.0}
    assert history.dropped_records == 10  # 210..300 of the first run


def test_several_logs_for_one_step_merge(tmp_path: Path) -> None:
    with writer(tmp_path) as out:
        out.log(5, loss=0.5)
        out.log(5, eval_loss=0.7)
        out.log(6, loss=0.4)
    history = tm.read_metrics(str(tmp_path))
    assert [(r["step"], r.get("loss"), r.get("eval_loss")) for r in history.records] == [
        (5, 0.5, 0.7),
        (6, 0.4, None),
    ]


def test_values_non_finite_tensor_like_and_refused(tmp_path: Path) -> None:
    class ZeroDim:  # what a 0-d tensor or a NumPy scalar offers
        def __float__(self) -> float:
            return 0.25

    with writer(tmp_path) as out:
        out.log(1, loss=math.nan, grad_norm=math.inf, low=-math.inf, acc=ZeroDim(), ok=True)
        for bad in ({"loss": "0.1"}, {"loss": [1.0]}, {"time": 1.0}, {"bad name": 1.0}):
            with pytest.raises(tm.MetricsError):
                out.log(2, **bad)
        with pytest.raises(tm.MetricsError):
            out.log(-1, loss=1.0)
        with pytest.raises(tm.MetricsError):
            out.end(1, "exploded")
    raw = (tmp_path / tm.FILE_NAME).read_text()
    assert "NaN" in raw and "Infinity" in raw  # strings, so the file stays standard JSON
    for line in raw.splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    (record,) = tm.read_metrics(str(tmp_path)).records
    assert math.isnan(record["loss"]) and record["grad_norm"] == math.inf
    assert record["low"] == -math.inf and record["acc"] == 0.25 and record["ok"] == 1


# -- torn lines and kills -------------------------------------------------------------------


def test_a_torn_last_line_is_skipped_and_the_next_writer_starts_a_fresh_line(
    tmp_path: Path,
) -> None:
    with writer(tmp_path) as out:
        for step in range(1, 6):
            out.log(step, loss=float(step))
    stream = tmp_path / tm.FILE_NAME
    data = stream.read_bytes()
    stream.write_bytes(data[: len(data) - 20])  # what a crash or a full disk leaves
    history = tm.read_metrics(str(tmp_path))
    assert [r["step"] for r in history.records] == [1, 2, 3, 4]
    assert history.bad_lines == 1
    assert tm.latest_record(str(tmp_path))["step"] == 4
    with writer(tmp_path) as out:
        out.log(5, loss=50.0)
    history = tm.read_metrics(str(tmp_path))
    assert [(r["step"], r["loss"]) for r in history.records][-2:] == [(4, 4.0), (5, 50.0)]
    assert history.bad_lines == 1


WRITER_LOOP = """
import sys
sys.path.insert(0, sys.argv[1])
import training_metrics as tm
out = tm.MetricsWriter(sys.argv[2], max_bytes=64 * 1024, backups=100000)
out.start(0)
step = 0
while True:
    step += 1
    out.log(step, loss=1.0 / step, **{f"s{i}": float(i) for i in range(40)})
    if step == 50:
        print("ready", flush=True)
"""


def test_a_writer_killed_with_sigkill_leaves_a_readable_stream(tmp_path: Path) -> None:
    stream = tmp_path / tm.FILE_NAME
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER_LOOP, str(MODULE_FILE.parent), str(stream)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        time.sleep(0.2)  # rotating and writing at full speed
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    history = tm.read_metrics(str(tmp_path))
    steps = [r["step"] for r in history.records]
    assert len(steps) >= 50 and len(tm.stream_files(str(tmp_path))) > 2
    assert steps == list(range(steps[0], steps[0] + len(steps)))
    assert history.bad_lines <= 1
    resumed = tm.MetricsWriter(str(stream), max_bytes=64 * 1024, backups=100000)
    resumed.start(10)
    resumed.log(11, loss=-1.0)
    resumed.close()
    history = tm.read_metrics(str(tmp_path))
    assert [r["step"] for r in history.records][-3:] == [9, 10, 11]
    assert history.records[-1]["loss"] == -1.0


def test_files_of_another_schema_or_a_newer_version_are_skipped(tmp_path: Path) -> None:
    with writer(tmp_path) as out:
        out.log(1, loss=1.0)
    (tmp_path / "metrics.jsonl.1").write_text(
        '{"kind":"header","schema":"unbroken.training/metrics","version":99,"time":0}\n'
        '{"kind":"scalars","step":7,"time":0,"loss":9}\n'
    )
    (tmp_path / "metrics.jsonl.2").write_text('{"kind":"header","schema":"other","version":1}\n')
    history = tm.read_metrics(str(tmp_path))
    assert [r["step"] for r in history.records] == [1]
    assert history.skipped_files == 2
    assert tm.read_metrics(str(tmp_path / "absent")).records == []


def test_latest_record_reads_the_tail_and_honours_a_resume(tmp_path: Path) -> None:
    with writer(tmp_path, max_bytes=4096) as out:
        for step in range(1, 300):
            out.log(step, loss=float(step))
        out.start(120)
    assert tm.latest_record(str(tmp_path))["step"] == 120
    with writer(tmp_path, max_bytes=4096) as out:
        out.log(121, loss=-1.0)
    assert tm.latest_record(str(tmp_path)) == {
        "step": 121,
        "time": pytest.approx(1_800_000_001.0, abs=10),
        "loss": -1.0,
    }


# -- Prometheus textfile --------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_textfile(text: str) -> dict:
    """A strict reader of the text exposition format (what node_exporter checks): returns
    {family: {"help", "type", "samples": [(labels, value)]}}."""
    families: dict = {}
    current = None
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, help_text = line[7:].split(" ", 1)
            assert name not in families, f"second HELP for {name}"
            families[name] = {"help": help_text, "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ", 1)
            assert name == current and families[name]["type"] is None, line
            assert kind in ("gauge", "counter", "untyped")
            families[name]["type"] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels_text, value = match.groups()
            assert name == current, f"{name} outside its family"
            labels = {}
            rest = labels_text or ""
            while rest:
                label = _LABEL.match(rest)
                assert label, f"bad labels {labels_text!r}"
                labels[label.group(1)] = re.sub(
                    r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), label.group(2)
                )
                rest = rest[label.end() :]
            families[name]["samples"].append((labels, float(value)))
    return families


def _value(families: dict, metric: str, **labels: str) -> float | None:
    for found, value in families.get(tm.TEXTFILE_PREFIX + metric, {"samples": []})["samples"]:
        if found == labels:
            return value
    return None


def test_textfile_has_every_job_value_and_parses() -> None:
    weird = 'odd "job"\\name\nline'
    jobs = [
        {
            "name": "gpt",
            "state": "training",
            "step": 1200,
            "total_steps": 5000,
            "loss": 0.125,
            "samples_per_second": 512.5,
            "restarts": 2,
            "heartbeat_age": 3.5,
            "last_checkpoint": {"name": "step-001200", "created": 1000.0, "age_seconds": 61.0},
        },
        {
            "name": weird,
            "state": "hung",
            "step": 7,
            "loss": math.nan,
            "restarts": 0,
            "last_checkpoint_time": 900.0,
        },
        {"name": "new", "state": "starting"},  # nothing known yet: no made-up zeros
    ]
    families = parse_textfile(tm.render_textfile(jobs, now=1000.0))
    assert _value(families, "job_step", job="gpt") == 1200
    assert _value(families, "job_total_steps", job="gpt") == 5000
    assert _value(families, "job_loss", job="gpt") == 0.125
    assert _value(families, "job_samples_per_second", job="gpt") == 512.5
    assert _value(families, "job_restarts_total", job="gpt") == 2
    assert _value(families, "job_heartbeat_age_seconds", job="gpt") == 3.5
    assert _value(families, "job_last_checkpoint_age_seconds", job="gpt") == 61.0
    assert _value(families, "job_last_checkpoint_timestamp_seconds", job="gpt") == 1000.0
    assert _value(families, "job_step", job=weird) == 7
    assert math.isnan(_value(families, "job_loss", job=weird))
    assert _value(families, "job_last_checkpoint_age_seconds", job=weird) == 100.0
    assert _value(families, "job_step", job="new") is None
    assert families[tm.TEXTFILE_PREFIX + "job_restarts_total"]["type"] == "counter"
    states = families[tm.TEXTFILE_PREFIX + "job_state"]["samples"]
    for job, state in (("gpt", "training"), (weird, "hung"), ("new", "starting")):
        mine = {labels["state"]: value for labels, value in states if labels["job"] == job}
        assert mine == {s: float(s == state) for s in tm.JOB_STATES}
    assert tm.render_textfile([]) == ""


def test_textfile_refuses_jobs_it_cannot_label() -> None:
    with pytest.raises(tm.MetricsError, match="name"):
        tm.render_textfile([{"step": 1}])
    with pytest.raises(tm.MetricsError, match="unique"):
        tm.render_textfile([{"name": "a"}, {"name": "a"}])


def test_write_textfile_replaces_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "unbroken_training.prom"
    tm.write_textfile(str(target), "first 1\n")
    assert target.read_text() == "first 1\n"
    assert oct(target.stat().st_mode & 0o777) == "0o644"

    def refuse(*_args: object) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(tm.os, "replace", refuse)
    with pytest.raises(OSError, match="no space"):
        tm.write_textfile(str(target), "second 2\n")
    monkeypatch.undo()
    assert target.read_text() == "first 1\n"  # the collector never sees a partial file
    assert os.listdir(tmp_path) == ["unbroken_training.prom"]  # no temporary left behind
    tm.write_textfile(str(target), "second 2\n")
    assert target.read_text() == "second 2\n"
    with pytest.raises(tm.MetricsError, match=r"\*\.prom"):
        tm.write_textfile(str(tmp_path / "metrics.txt"), "x 1\n")
