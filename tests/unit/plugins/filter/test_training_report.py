# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests for the status table and report curve filters (plugins/filter/training_report.py)."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

PLUGIN = Path(__file__).resolve().parents[4] / "plugins" / "filter" / "training_report.py"
_spec = importlib.util.spec_from_file_location("training_report", PLUGIN)
assert _spec and _spec.loader
report: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)

# Lines as the trainer role's log file holds them: journal time, then the script's logging.
START = "train: training on cpu: 1000 steps, checkpoint every 200 into /checkpoints"


def _line(clock: str, message: str) -> str:
    return f"2026-11-28T22:{clock}.000000Z 2026-11-28 22:{clock},000 {message}"


LOG = "\n".join(
    [
        _line("02:00", "INFO " + START),
        _line("02:10", "INFO train: step 50 loss 0.500000 lr 0.002"),
        _line("02:20", "INFO train: step 100 loss 0.250000 lr 0.002"),
        _line("02:25", "WARNING unbroken_ckpt: something else"),
        _line("02:40", "INFO " + START),
        _line("02:41", "INFO unbroken_ckpt: resumed from checkpoint step-000050 (step 50)"),
        _line("02:45", "INFO train: step 100 loss 0.260000 lr 0.002"),
        _line("02:50", "INFO train: step 150 loss nan lr 0.002"),
        _line("02:55", "INFO train: step 200 loss 0.125000 lr 0.002"),
    ]
)


def job(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "llm",
        "active_state": "active",
        "sub_state": "running",
        "running": True,
        "training": True,
        "status_state": "training",
        "step": 1200,
        "total_steps": 100000,
        "loss": 0.123456,
        "samples_per_second": 812.345,
        "last_checkpoint": {"name": "step-001000", "step": 1000, "age_seconds": 312.4},
        "restarts": 2,
        "runs": 7,
        "hung": False,
        "failure_reason": None,
        "checkpoint_error": None,
        "resumed_from": None,
    }
    entry.update(overrides)
    return entry


def test_table_has_one_aligned_row_per_host_and_job() -> None:
    text = report.training_table({"gpu02": [job(name="b")], "gpu01": [job(), job(name="c")]})
    lines = text.splitlines()
    assert lines[0].split() == [
        "HOST",
        "JOB",
        "STATE",
        "STEP",
        "LOSS",
        "SAMPLES/S",
        "LAST",
        "CKPT",
        "AGE",
        "RESTARTS",
        "RUNS",
        "NOTE",
    ]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["gpu01", "llm"],
        ["gpu01", "c"],
        ["gpu02", "b"],
    ]
    assert lines[1].split()[2:9] == [
        "training",
        "1200/100000",
        "0.1235",
        "812.3",
        "5m12s",
        "2",
        "7",
    ]
    # Columns line up: every row's JOB column starts where the header's does.
    column = lines[0].index("JOB")
    assert all(line[column - 2 : column] == "  " for line in lines)


@pytest.mark.parametrize(
    ("overrides", "state"),
    [
        ({"hung": True}, "hung"),
        ({"active_state": "failed", "running": False, "sub_state": "failed"}, "failed"),
        ({"running": False, "sub_state": "auto-restart"}, "restarting"),
        ({"running": False, "sub_state": "dead", "status_state": "finished"}, "finished"),
        ({"running": False, "sub_state": "dead", "status_state": "stopping"}, "stopped"),
        ({"status_state": None}, "starting"),
    ],
)
def test_state_column_names_what_an_operator_must_know(overrides: dict, state: str) -> None:
    row = report.table_row("h", job(**overrides))
    assert row[2] == state


def test_note_shows_the_failure_reason_first_then_checkpoint_error_then_resume() -> None:
    failed = job(failure_reason="crash loop: exit 5\nmore", checkpoint_error="ENOSPC")
    assert report.table_row("h", failed)[9] == "crash loop: exit 5 more; checkpoint error: ENOSPC"
    assert report.table_row("h", job(checkpoint_error="ENOSPC"))[9] == "checkpoint error: ENOSPC"
    resumed = job(resumed_from={"name": "step-000900", "step": 900})
    assert report.table_row("h", resumed)[9] == "resumed from step-000900"


LONG_REASON = (
    "job demo failed: crash-loop limit reached (5 automatic restarts within 3600s); "
    "last exit code 2; 4 automatic restarts"
)


def test_a_long_note_is_wrapped_under_its_column_never_cut() -> None:
    failed = job(
        active_state="failed",
        running=False,
        sub_state="failed",
        failure_reason=LONG_REASON,
        status_reason="train.py: error: unrecognized arguments: --lr-warmup 100",
        status_exit_code=2,
    )
    lines = report.training_table({"gpu01": [failed]}).splitlines()
    column = lines[0].index("NOTE")
    assert len(lines) > 2
    assert all(line[:column].strip() == "" for line in lines[2:])
    note = " ".join(line[column:] for line in lines[1:])
    assert LONG_REASON in note
    assert "trainer: train.py: error: unrecognized arguments: --lr-warmup 100 (exit 2)" in note
    assert all(len(line) - column <= report.NOTE_WIDTH for line in lines[1:])


def test_samples_per_second_only_while_training() -> None:
    for state in (
        {"hung": True},
        {"active_state": "failed", "running": False, "sub_state": "failed"},
        {"running": False, "sub_state": "dead", "status_state": "stopped"},
    ):
        assert report.table_row("h", job(**state))[5] == "-", state
    assert report.table_row("h", job())[5] == "812.3"


def test_a_script_without_a_status_file_shows_its_metrics_stream() -> None:
    latest = {"step": 4321, "loss": 0.5, "samples_per_second": 99.0}
    bare = job(step=None, loss=None, samples_per_second=None, total_steps=None)
    assert report.table_row("h", bare)[3:6] == ["-", "-", "-"]
    row = report.table_row("h", dict(bare, metrics_latest=latest))
    assert row[3:6] == ["4321", "0.5", "99.0"]
    # The status file, where there is one, stays what the table shows.
    assert report.table_row("h", job(metrics_latest=latest))[3] == "1200/100000"


def test_note_says_why_the_current_run_started_and_what_was_skipped() -> None:
    crashed = job(
        checked_at=1000.0,
        last_start={
            "cause": "crash",
            "at": 910.0,
            "detail": "the previous run failed with exit status 137 (SIGKILL in the container)",
        },
        resumed_from={
            "name": "step-000040",
            "step": 40,
            "skipped": [["step-000060", "state.pt: sha256 mismatch"]],
        },
        quarantined=[{"name": "quarantine-step-000060", "step": 60, "reason": "sha256 mismatch"}],
    )
    note = report.job_note(crashed)
    assert (
        "restarted after a crash 1m30s ago: the previous run failed with exit status 137 "
        "(SIGKILL in the container)" in note
    )
    assert "resumed from step-000040" in note
    assert "skipped invalid step-000060 (state.pt: sha256 mismatch)" in note
    assert "quarantined: quarantine-step-000060 (sha256 mismatch)" in note
    hang = job(last_start={"cause": "hang", "at": 0, "detail": "the hang watchdog killed it"})
    assert report.job_note(hang).startswith("restarted by the hang watchdog")
    reboot = job(last_start={"cause": "reboot", "at": 0, "detail": "host restarted"})
    assert report.job_note(reboot).startswith("restarted after a host reboot")
    operator = job(last_start={"cause": "operator", "at": 0, "detail": "started on request"})
    assert report.job_note(operator) == ""
    hung = job(hung=True, heartbeat_age=185.0, hang_timeout=120)
    assert report.job_note(hung).startswith("no heartbeat for 3m05s (limit 120s)")


def test_a_stopped_job_shows_why_it_stopped_not_the_previous_resume() -> None:
    stopped = job(
        running=False,
        training=False,
        sub_state="dead",
        active_state="inactive",
        status_state="stopped",
        status_reason="stopped by SIGTERM at step 1200; final checkpoint step-001200",
        status_exit_code=0,
        step=1200,
        last_checkpoint={"name": "step-001200", "step": 1200, "age_seconds": 3},
        resumed_from={"name": "step-000900", "step": 900},
        last_start={"cause": "crash", "at": 0, "detail": "x"},
    )
    row = report.table_row("h", stopped)
    assert row[2] == "stopped"
    assert "resumed from" not in row[9] and "crash" not in row[9]
    assert row[9] == "trainer: stopped by SIGTERM at step 1200; final checkpoint step-001200"
    older = dict(stopped, status_state="stopping", status_reason=None)  # before "stopped"
    assert report.job_note(older) == "stopped at step 1200, newest checkpoint step-001200"


def test_a_running_job_with_the_previous_runs_status_is_starting() -> None:
    starting = job(status_state="stopped", status_updated_at=100.0, main_started_at=200.0)
    assert report.job_state(starting) == "starting"
    assert report.job_state(job(status_updated_at=300.0, main_started_at=200.0)) == "training"


def test_unknown_values_show_as_dashes_and_hosts_without_jobs_get_a_line() -> None:
    empty = job(
        step=None,
        loss=None,
        samples_per_second=None,
        last_checkpoint=None,
        restarts=None,
        runs=None,
    )
    assert report.table_row("h", empty)[3:9] == ["-", "-", "-", "-", "-", "-"]
    text = report.training_table({"idle": []})
    assert text.splitlines()[1].split()[:4] == ["idle", "-", "no", "jobs"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59.9, "59s"),
        (61, "1m01s"),
        (3600, "1h00m"),
        (90061, "1d01h"),
        (None, "-"),
        (-1, "-"),
        (True, "-"),
    ],
)
def test_ages_read_like_a_clock(seconds: Any, text: str) -> None:
    assert report.human_age(seconds) == text


def test_table_refuses_input_that_is_not_a_mapping_of_lists() -> None:
    with pytest.raises(AnsibleFilterError):
        report.training_table([job()])
    with pytest.raises(AnsibleFilterError):
        report.training_table({"h": "not a list"})


def test_curves_measure_throughput_within_each_run_only() -> None:
    curves = report.training_curves(LOG, batch_size=32)
    points = curves["points"]
    assert [p["step"] for p in points] == [50, 100, 100, 150, 200]
    assert [p["run"] for p in points] == [1, 1, 2, 2, 2]
    # 50 steps x 32 samples in 10 s; the first line of each run has no rate (no spike).
    assert points[0]["samples_per_second"] is None
    assert points[1]["samples_per_second"] == pytest.approx(160.0)
    assert points[2]["samples_per_second"] is None
    assert points[3]["samples_per_second"] == pytest.approx(320.0)
    assert points[1]["loss"] == 0.25
    assert points[3]["loss"] is None  # nan is not drawn
    assert curves["runs"] == 2
    assert curves["restarts"] == [
        {
            "step": 100,
            "time": points[2]["time"],
            "run": 2,
            "cause": "unknown",
            "down_seconds": 25.0,
        }
    ]


def test_curves_accept_lines_and_thin_long_logs_keeping_the_last_point() -> None:
    lines = [
        f"2026-11-28T22:00:{i // 10:02d}.{i % 10}00000Z x INFO train: step {i} loss 1.0 lr 1"
        for i in range(1, 501)
    ]
    curves = report.training_curves(lines, max_points=50)
    assert len(curves["points"]) == 50
    assert curves["points"][-1]["step"] == 500
    assert report.training_curves("", batch_size=8) == {
        "points": [],
        "runs": 0,
        "restarts": [],
        "restart_causes": {},
        "batch_size": 8,
    }
    with pytest.raises(AnsibleFilterError):
        report.training_curves(LOG, batch_size=0)
    with pytest.raises(AnsibleFilterError):
        report.training_curves(42)


def test_curves_start_a_new_run_when_the_step_goes_back_without_a_start_line() -> None:
    lines = [line for line in LOG.splitlines() if "training on" not in line]
    curves = report.training_curves(lines)
    assert [p["run"] for p in curves["points"]] == [0, 0, 1, 1, 1]
    assert curves["points"][2]["samples_per_second"] is None
    assert [r["step"] for r in curves["restarts"]] == [100]
    assert curves["runs"] == 2


@pytest.mark.parametrize(
    ("command", "size"),
    [
        (["python3", "train.py", "--batch-size", "128"], 128),
        (["python3", "train.py", "--batch-size=64", "--steps", 5], 64),
        (["python3", "train.py"], 32),
        (["python3", "train.py", "--batch-size"], 32),
        ("--batch-size 7", 32),
    ],
)
def test_batch_size_is_read_from_the_job_command(command: Any, size: int) -> None:
    assert report.batch_size_of(command) == size


def test_svg_chart_is_well_formed_with_one_line_per_run_and_a_restart_marker() -> None:
    curves = report.training_curves(LOG)
    svg = report.training_svg_chart(curves, y="loss", title="loss <llm>")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    polylines = root.findall(f"{ns}polyline")
    assert len(polylines) == 2  # one per run: no line across the restart
    assert [len(p.get("points", "").split()) for p in polylines] == [2, 2]
    markers = [line for line in root.findall(f"{ns}line") if line.get("stroke") == "#d33"]
    assert len(markers) == 1
    assert "loss &lt;llm&gt;" in svg and "<llm>" not in svg
    assert "script" not in svg


def test_svg_chart_says_when_there_is_no_data() -> None:
    svg = report.training_svg_chart({"points": []}, y="samples_per_second")
    ET.fromstring(svg)
    assert "no data in the job log yet" in svg
    assert "polyline" not in svg


def test_svg_chart_handles_a_single_point_and_a_flat_series() -> None:
    single = {"points": [{"step": 10, "loss": 1.0, "run": 1}]}
    ET.fromstring(report.training_svg_chart(single))
    flat = {"points": [{"step": s, "loss": 0.0, "run": 1} for s in (1, 2, 3)]}
    svg = report.training_svg_chart(flat)
    ET.fromstring(svg)
    assert "nan" not in svg.lower()


def test_filter_module_exports_the_documented_filters() -> None:
    names = set(report.FilterModule().filters())
    assert names == {
        "training_table",
        "training_curves",
        "training_metrics_curves",
        "training_svg_chart",
        "training_batch_size",
        "training_job_spans",
        "training_report_jobs",
    }
    for name in names:
        assert (PLUGIN.parent / f"{name}.yml").is_file(), f"{name} has no documentation"


# A job's log with the helper's start lines: a crash, then a 3-minute hang killed by the
# watchdog, then an operator restart (steps past 10000, where labels used to read 1e+04).
CAUSES_LOG = [
    _line("00:00", "INFO " + START),
    _line("00:10", "INFO train: step 10000 loss 0.5 lr 1"),
    _line("00:20", "INFO train: step 10100 loss 0.4 lr 1"),
    "2026-11-28T22:00:25.000000Z run 2 of job llm starts (cause: crash): the previous run "
    "failed with exit status 137 (SIGKILL in the container)",
    _line("00:30", "INFO " + START),
    _line("00:40", "INFO train: step 10100 loss 0.4 lr 1"),
    _line("00:50", "INFO train: step 10200 loss 0.3 lr 1"),
    "2026-11-28T22:03:50.000000Z hang watchdog: job llm: no heartbeat for 180s",
    "2026-11-28T22:03:52.000000Z run 3 of job llm starts (cause: hang): the hang watchdog "
    "killed the previous run at step 10200",
    _line("03:55", "INFO " + START),
    _line("04:00", "INFO train: step 10200 loss 0.3 lr 1"),
    _line("04:10", "INFO train: step 10300 loss 0.2 lr 1"),
    "2026-11-28T22:04:12.000000Z run 4 of job llm starts (cause: operator): started on request",
    _line("04:15", "INFO " + START),
    _line("04:20", "INFO train: step 10300 loss 0.2 lr 1"),
    _line("04:30", "INFO train: step 10400 loss 0.1 lr 1"),
]


def test_restarts_carry_their_cause_and_downtime() -> None:
    curves = report.training_curves(CAUSES_LOG, batch_size=1)
    assert [(r["step"], r["cause"], r["down_seconds"]) for r in curves["restarts"]] == [
        (10100, "crash", 20.0),
        (10200, "hang", 190.0),
        (10300, "operator", 10.0),
    ]
    assert curves["restart_causes"] == {"crash": 1, "hang": 1, "operator": 1}
    svg = report.training_svg_chart(curves, y="loss")
    ET.fromstring(svg)
    assert "restarted by the hang watchdog, resumed at step 10200, 3m10s without progress" in svg
    assert "restarted after a crash" in svg and "started by an operator" in svg
    labels = [t.text for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")]
    assert "hang 3m10s" in labels and "crash" in labels  # a long stall is labelled on the chart


def test_step_labels_are_plain_numbers_and_throughput_starts_at_zero() -> None:
    curves = report.training_curves(CAUSES_LOG, batch_size=1)
    svg = report.training_svg_chart(curves, y="samples_per_second")
    root = ET.fromstring(svg)
    labels = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "10000" in labels or "10100" in labels
    assert not any("e+" in (label or "") for label in labels)
    assert "0" in labels  # the y axis starts at 0 for samples/s
    loss = report.training_svg_chart(curves, y="loss")
    assert "not 0)" in loss  # the loss axis says where it starts
    assert report._label(25000.0) == "25000" and report._label(0.0125) == "0.0125"


def test_the_axis_caption_names_where_the_axis_really_starts() -> None:
    def chart(values: list[float]) -> str:
        points = [{"step": i, "time": float(i), "lr": v} for i, v in enumerate(values)]
        return report.training_svg_chart({"points": points}, y="lr")

    # A learning rate decayed to about 0: the axis starts at 0 and says nothing.
    decayed = chart([0.003, 0.001, 1e-6, 7e-14])
    assert "not 0" not in decayed
    # Data far from 0: the caption names the data's lowest value, where the axis begins.
    assert "(y axis from 0.1, not 0)" in chart([0.3, 0.2, 0.1])


def test_wall_clock_view_shows_a_hang_as_a_shaded_gap() -> None:
    curves = report.training_curves(CAUSES_LOG, batch_size=1)
    svg = report.training_svg_chart(curves, y="loss", x="time")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    gaps = [r for r in root.findall(f"{ns}rect") if r.get("fill") == "#fbe3e3"]
    assert len(gaps) == 3
    widths = [float(g.get("width", "0")) for g in gaps]
    assert widths[1] > 5 * widths[0]  # the 190 s hang is far wider than the 20 s crash
    assert "wall-clock time" in svg
    with pytest.raises(AnsibleFilterError):
        report.training_svg_chart(curves, x="epoch")


# -- curves from the metrics stream (training_status metrics_points) -------------------


def _summary() -> dict[str, Any]:
    """What training_status returns for a stream: two runs, a hang restart, checkpoints."""
    first = [
        {"step": s, "time": 1000.0 + s, "loss": 1.0 / s, "lr": 0.1, "run": 0, "acc": s / 300}
        for s in range(10, 210, 10)
    ]
    second = [
        {"step": s, "time": 1300.0 + s, "loss": 1.0 / s, "lr": 0.05, "run": 1}
        for s in range(110, 310, 10)
    ]
    for point in first:
        point["samples_per_second"] = 320.0
    return {
        "points": first[:10] + second,
        "records": 300,
        "scalars": ["acc", "loss", "lr", "samples_per_second"],
        "runs": [
            {"step": 0, "time": 1000.0, "previous_end": None, "host_cause": "operator"},
            {
                "step": 100,
                "time": 1405.0,
                "checkpoint": "step-000100",
                "previous_end": "interrupted",
                "host_cause": "hang",
                "down_seconds": 310.0,
            },
            {"step": 300, "time": 1700.0, "previous_end": "failed", "host_cause": None},
        ],
        "checkpoints": [
            {"step": 100, "time": 1100.0, "name": "step-000100"},
            {"step": 200, "time": 1500.0, "name": "step-000200"},
        ],
        "ends": [],
        "files": 3,
        "bad_lines": 0,
    }


def test_metrics_curves_mark_restarts_with_their_cause_and_keep_every_series() -> None:
    curves = report.metrics_curves(_summary(), batch_size=32)
    assert curves["source"] == "metrics" and curves["runs"] == 3
    assert [(r["step"], r["cause"]) for r in curves["restarts"]] == [(100, "hang"), (300, "crash")]
    assert curves["restart_causes"] == {"hang": 1, "crash": 1}
    assert curves["restarts"][0]["down_seconds"] == 310.0
    assert curves["user_scalars"] == ["acc"]
    assert [c["name"] for c in curves["checkpoints"]] == ["step-000100", "step-000200"]
    points = curves["points"]
    assert points[0]["samples_per_second"] == 320.0  # the script's own rate is kept
    # Run 2 logged no rate: computed from the batch size within the run (10 steps per 10 s).
    assert points[11]["samples_per_second"] == pytest.approx(32.0)
    assert "samples_per_second" not in points[10]  # no rate across the restart


def test_a_start_without_the_roles_record_takes_its_cause_from_how_the_last_run_ended() -> None:
    summary = _summary()
    for run in summary["runs"]:
        run["host_cause"] = None
    causes = [r["cause"] for r in report.metrics_curves(summary)["restarts"]]
    assert causes == ["interrupted", "crash"]


def test_metrics_charts_draw_checkpoints_restarts_lr_and_user_scalars() -> None:
    curves = report.metrics_curves(_summary())
    loss = ET.fromstring(report.training_svg_chart(curves, y="loss"))
    ns = "{http://www.w3.org/2000/svg}"
    marks = [e for e in loss.iter(ns + "line") if e.get("class") == "checkpoint"]
    assert [m.find(ns + "title").text for m in marks] == [
        "step-000100 (step 100)",
        "step-000200 (step 200)",
    ]
    restart_labels = [t.text for t in loss.iter(ns + "text") if t.get("fill") == "#d33"]
    assert restart_labels == ["hang 5m10s", "crash"]
    for series in ("lr", "acc"):
        chart = ET.fromstring(report.training_svg_chart(curves, y=series))
        assert len(list(chart.iter(ns + "polyline"))) >= 1
    without = dict(curves, checkpoints=[])
    assert "checkpoint" not in report.training_svg_chart(without, y="loss")


TWO_NODES = ["mn-1", "mn-2"]


def _columns(line: str) -> list[str]:
    return line.split(None, 9)


def test_a_multi_node_job_is_one_row_paced_by_its_slowest_node() -> None:
    first = job(nodes=TWO_NODES, step=1200, loss=0.5, samples_per_second=800.0, restarts=1)
    second = job(
        nodes=TWO_NODES,
        step=1198,
        loss=0.7,
        samples_per_second=650.0,
        restarts=2,
        last_checkpoint={"name": "step-000800", "step": 800, "age_seconds": 900.0},
    )
    table = {"mn-2": [second], "mn-1": [first], "single": [job(name="other")]}
    lines = report.training_table(table).splitlines()
    assert len(lines) == 3, lines  # header, the two-node job, the single-node job
    row = _columns(lines[1])
    assert row[:6] == ["mn-1,mn-2", "llm", "training", "1198/100000", "0.5", "650.0"]
    # The oldest of the nodes' newest checkpoints (what every node holds); restarts summed.
    assert row[6:9] == ["15m00s", "3", "7"]
    assert row[9] == "nodes up 2/2"
    assert _columns(lines[2])[:2] == ["single", "other"]

    detail = report.training_table(table, detail=True).splitlines()
    assert [_columns(line)[0] for line in detail[1:]] == ["mn-1", "mn-2", "single"]


def test_a_multi_node_job_names_the_node_that_is_down_or_silent() -> None:
    crashed = job(
        nodes=TWO_NODES,
        running=False,
        sub_state="auto-restart",
        active_state="activating",
        failure_reason="exit status 137",
    )
    row = _columns(
        report.training_table({"mn-1": [job(nodes=TWO_NODES)], "mn-2": [crashed]}).splitlines()[1]
    )
    assert row[2] == "restarting" and row[5] == "-"  # no rate while a node is down
    assert row[9].startswith("nodes up 1/2; mn-2 restarting")

    # Elastic (min_nodes 1): the node that reports trains on; a fixed-size job would wait.
    silent = report.training_table({"mn-1": [job(nodes=TWO_NODES, min_nodes=1)]}).splitlines()
    row = _columns(silent[1])
    assert row[2] == "degraded"
    assert "nodes up 1/2; not reporting: mn-2" in " ".join(silent[1:])


def test_a_multi_node_job_says_which_node_its_surviving_nodes_wait_for() -> None:
    """Fault 4: a node gone for good; the others wait (fixed size) and the row names it."""
    # Its last step's status still says training: a fixed-size job cannot be, one node short.
    survivor = job(nodes=TWO_NODES, min_nodes=2)
    lines = report.training_table({"mn-1": [survivor]}).splitlines()
    row = _columns(lines[1])
    assert row[2] == "waiting" and row[5] == "-"
    assert row[9].startswith("nodes up 1/2; waiting for mn-2 (not reporting)"), row
    hung = job(nodes=TWO_NODES, min_nodes=2, hung=True, heartbeat_age=90)
    assert _columns(report.training_table({"mn-1": [hung]}).splitlines()[1])[2] == "waiting"
    # Elastic (min_nodes 1): the survivor trains on alone.
    elastic = report.training_table({"mn-1": [job(nodes=TWO_NODES, min_nodes=1)]})
    assert _columns(elastic.splitlines()[1])[2] == "degraded"
    stopped = job(nodes=TWO_NODES, running=False, sub_state="dead", active_state="inactive")
    restarted = job(nodes=TWO_NODES, status_state="starting")
    row = _columns(report.training_table({"mn-1": [restarted], "mn-2": [stopped]}).splitlines()[1])
    assert row[2] == "waiting"
    assert row[9].startswith("nodes up 1/2; waiting for mn-2 (stopped)"), row
    # A node that systemd gave up on (the crash-loop limit) does not come back by itself:
    # the job has failed, the crash loop of one node ends the job, and the row names it.
    gave_up = job(
        nodes=TWO_NODES,
        running=False,
        sub_state="failed",
        active_state="failed",
        failure_reason="crash loop: 5 restarts within 3600 s",
    )
    row = _columns(report.training_table({"mn-1": [survivor], "mn-2": [gave_up]}).splitlines()[1])
    assert row[2] == "failed" and row[5] == "-", row
    expected = "nodes up 1/2; waiting for mn-2 (failed); mn-2 failed: crash loop"
    assert row[9].startswith(expected), row
    # Every node stopped (an operator's stop) is a stopped job, not one waiting for itself.
    both = report.training_table({"mn-1": [stopped], "mn-2": [stopped]}).splitlines()
    assert _columns(both[1])[2] == "stopped"


def test_a_node_waiting_in_a_rendezvous_round_says_so_not_its_last_workers_state() -> None:
    """training_status's ``waiting``: the node's own row and the job's row say why."""
    note = "waiting in a rendezvous round for the job's other nodes"
    # The last worker wrote failed (its collective broke) and no worker has written since.
    survivor = job(
        nodes=TWO_NODES,
        min_nodes=2,
        status_state="failed",
        status_reason="collective failed",
        waiting=True,
        waiting_note=note,
    )
    assert report.job_state(survivor) == "waiting"
    detail = report.training_table({"mn-1": [survivor]}, detail=True).splitlines()
    row = _columns(detail[1])
    assert row[2] == "waiting" and note in detail[1] and "trainer:" not in detail[1], row
    lines = report.training_table({"mn-1": [survivor]}).splitlines()
    row = _columns(lines[1])
    assert row[2] == "waiting", row
    assert row[9].startswith("nodes up 1/2; waiting for mn-2 (not reporting)"), row
    assert f"mn-1 waiting: {note}" in " ".join(" ".join(lines[1:]).split())
    # Both nodes answer and one restarts: the job's row shows why the other waits.
    crashed = job(nodes=TWO_NODES, running=False, sub_state="auto-restart")
    both = report.training_table({"mn-1": [survivor], "mn-2": [crashed]}).splitlines()
    assert _columns(both[1])[2] == "restarting"
    # A stopped unit's last record does not make it wait.
    idle = job(nodes=TWO_NODES, running=False, sub_state="dead", waiting=True)
    assert report.job_state(idle) == "stopped"


def test_a_multi_node_job_is_one_span_with_all_its_nodes_even_those_outside_the_play() -> None:
    """The operator playbooks act once per multi-node job, on every node, whatever -l says."""
    mn = job(nodes=TWO_NODES, unit="unbroken-job-llm.service")
    table = {"mn-2": [mn, job(name="local")], "single": [job(name="other")]}
    spans = report.job_spans(table, ["mn-2", "single"])
    assert spans == [
        {
            "name": "llm",
            "unit": "unbroken-job-llm.service",
            "nodes": TWO_NODES,
            "outside": ["mn-1"],
        }
    ]
    both = report.job_spans({"mn-1": [mn], "mn-2": [mn]}, TWO_NODES)
    assert [(s["name"], s["outside"]) for s in both] == [("llm", [])]  # named once, acted once
    assert report.job_spans({"single": [job(name="other", nodes=[])]}) == []


def test_the_report_draws_a_multi_node_job_once_from_its_first_node() -> None:
    """report.yml: one set of curves per multi-node job, not one per node."""
    first, second = job(nodes=TWO_NODES, step=10), job(nodes=TWO_NODES, step=9)
    table = {"mn-2": [second, job(name="local")], "mn-1": [first], "single": [job(name="x")]}
    drawn = report.report_jobs(table)
    assert [(d["host"], d["job"]["name"], d["nodes"]) for d in drawn] == [
        ("mn-1", "llm", TWO_NODES),
        ("mn-2", "local", []),
        ("single", "x", []),
    ]
    assert drawn[0]["job"] is first  # the rendezvous host's stream
    # -l left the first node out: the job is still drawn once, from the node there is.
    assert [(d["host"], d["nodes"]) for d in report.report_jobs({"mn-2": [second]})] == [
        ("mn-2", TWO_NODES)
    ]
    with pytest.raises(AnsibleFilterError, match="mapping"):
        report.report_jobs([first])


def test_spans_refuse_a_job_whose_hosts_disagree_on_its_nodes() -> None:
    moved = {"mn-1": [job(nodes=TWO_NODES)], "mn-2": [job(nodes=["mn-2", "mn-3"])]}
    with pytest.raises(AnsibleFilterError, match="llm with different nodes"):
        report.job_spans(moved)
    with pytest.raises(AnsibleFilterError, match="mapping"):
        report.job_spans([job()])


def test_restart_labels_of_a_crash_loop_never_overlap() -> None:
    """Eight crashes within a few steps: every line drawn, no label printed over another."""
    points = [{"step": step, "time": float(step), "loss": 1.0, "run": 1} for step in range(400)]
    restarts = [{"step": 200 + i, "time": 200.0 + i, "cause": "crash"} for i in range(8)]
    restarts.append({"step": 390, "time": 390.0, "cause": "hang", "down_seconds": 70})
    svg = ET.fromstring(report.training_svg_chart({"points": points, "restarts": restarts}))
    ns = "{http://www.w3.org/2000/svg}"
    lines = [e for e in svg.iter(ns + "line") if e.get("stroke") == "#d33"]
    assert len(lines) == 9
    labels = [t for t in svg.iter(ns + "text") if t.get("fill") == "#d33"]
    boxes = [
        (float(t.get("x", 0)), float(t.get("y", 0)), len(t.text or "") * report.LABEL_CHAR_WIDTH)
        for t in labels
    ]
    for i, (x1, y1, w1) in enumerate(boxes):
        for x2, y2, w2 in boxes[i + 1 :]:
            assert y1 != y2 or x1 + w1 <= x2 or x2 + w2 <= x1, (boxes, i)
    # The first crash and the later, isolated hang are always labelled.
    assert labels[0].text == "crash" and labels[-1].text == "hang 1m10s"
    assert 1 < len(labels) <= report.LABEL_ROWS + 1


def test_metrics_curves_refuse_what_is_not_a_summary() -> None:
    with pytest.raises(AnsibleFilterError, match="metrics summary"):
        report.metrics_curves(["not", "a", "summary"])
