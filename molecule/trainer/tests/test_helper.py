# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests of the host helper the trainer role deploys (pure functions, no host needed)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

HELPER_PATH = (
    Path(__file__).resolve().parents[3] / "roles/trainer/helper/unbroken_trainer_helper.py"
)
_spec = importlib.util.spec_from_file_location("unbroken_trainer_helper", HELPER_PATH)
assert _spec and _spec.loader
helper: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helper)


def _job(**overrides: Any) -> dict[str, Any]:
    job = {
        "name": "demo",
        "container": "unbroken-job-demo",
        "image": "img@sha256:abc",
        "command": ["python3", "/opt/unbroken/runtime/train.py", "--steps", 10],
        "user": "1000:1000",
        "labels": {"unbroken.training.job": "demo"},
        "env_file": "/etc/unbroken/trainer/jobs/demo.env",
        "workdir": "",
        "ipc": "",
        "shm_size": "16g",
        "ulimits": {"memlock": -1, "stack": 67108864},
        "memory": None,
        "cpus": None,
        "pids_limit": None,
        "gpus": "all",
        "mounts": [
            {
                "source": "/opt/unbroken/runtime",
                "target": "/opt/unbroken/runtime",
                "readonly": True,
            },
            {"source": "/srv/ckpt", "target": "/checkpoints", "readonly": False},
        ],
        "docker_args": [],
    }
    job.update(overrides)
    return job


def test_run_command_has_init_name_label_user_and_no_pull() -> None:
    argv = helper.docker_run_argv(_job())
    assert argv[:8] == [
        "docker",
        "run",
        "--rm",
        "--init",
        "--name",
        "unbroken-job-demo",
        "--pull",
        "never",
    ]
    joined = " ".join(argv)
    assert "--label unbroken.training.job=demo" in joined
    assert "--user 1000:1000" in joined
    assert "--ulimit memlock=-1 --ulimit stack=67108864" in joined
    assert "--gpus all" in joined
    assert (
        "--mount type=bind,source=/opt/unbroken/runtime,target=/opt/unbroken/runtime,readonly"
        in joined
    )
    assert "--mount type=bind,source=/srv/ckpt,target=/checkpoints " in joined
    # Image, then the command exactly (no shell in between to swallow SIGTERM).
    image_at = argv.index("img@sha256:abc")
    assert argv[image_at + 1 :] == ["python3", "/opt/unbroken/runtime/train.py", "--steps", "10"]


def test_limits_and_ipc_appear_only_when_set() -> None:
    plain = helper.docker_run_argv(_job(shm_size="", gpus="none", ulimits={}))
    for flag in ("--memory", "--cpus", "--pids-limit", "--ipc", "--shm-size", "--gpus", "--ulimit"):
        assert flag not in plain
    limited = helper.docker_run_argv(_job(memory="64g", cpus=7.5, pids_limit=4096, ipc="host"))
    joined = " ".join(limited)
    assert "--memory 64g --cpus 7.5 --pids-limit 4096" in joined
    assert "--ipc host" in joined


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        ("all", "all"),
        ("none", None),
        (None, None),
        (2, "2"),
        ([0, 2], '"device=0,2"'),
        (["GPU-3f2a", "GPU-77"], '"device=GPU-3f2a,GPU-77"'),
    ],
)
def test_gpu_specs_become_docker_gpus_values(gpus: Any, expected: str | None) -> None:
    assert helper.gpus_argument(gpus) == expected


@pytest.mark.parametrize("gpus", ["some", 0, -1, True, [], ["0,1"], {"count": 1}])
def test_unknown_gpu_specs_are_refused(gpus: Any) -> None:
    with pytest.raises(helper.HelperError, match="unsupported gpus value"):
        helper.gpus_argument(gpus)


def test_watchdog_counts_a_previous_runs_status_from_this_runs_start() -> None:
    stale = {"updated_at": 100.0, "state": "training", "step": 7}
    young = helper.heartbeat_verdict(stale, started_wall=990.0, hang_timeout=30, now_wall=1000.0)
    assert young["hung"] is False and young["heartbeat_age"] == 10.0
    old = helper.heartbeat_verdict(stale, started_wall=900.0, hang_timeout=30, now_wall=1000.0)
    assert old["hung"] is True and old["step"] == 7


@pytest.mark.parametrize("state", ["finished", "stopped", "failed"])
def test_watchdog_leaves_a_run_that_wrote_its_terminal_state(state: str) -> None:
    ending = {"updated_at": 950.0, "state": state, "step": 7}
    verdict = helper.heartbeat_verdict(ending, started_wall=900.0, hang_timeout=30, now_wall=1000.0)
    assert verdict["hung"] is False and verdict["heartbeat_age"] == 50.0


def _entry(identifier: str, message: str) -> dict[str, str]:
    return {"SYSLOG_IDENTIFIER": identifier, "MESSAGE": message}


def test_failure_reason_names_the_crash_loop_exit_code_and_log() -> None:
    job = {"name": "broken", "unit": "u", "restart_limit_burst": 3, "restart_limit_interval": 30}
    props = {"Result": "exit-code", "ExecMainStatus": "3", "NRestarts": "2"}
    entries = [
        _entry("unbroken-job-broken", "boom"),
        _entry("systemd", "u: Main process exited, code=exited, status=3/NOTIMPLEMENTED"),
        _entry("systemd", "u: Start request repeated too quickly."),
        _entry("systemd", "u: Failed with result 'exit-code'."),
    ]
    reason = helper.failure_reason(job, props, entries)
    assert reason["message"] == (
        "job broken failed: crash-loop limit reached (3 automatic restarts within 30s); "
        "last exit code 3; 2 automatic restarts"
    )
    assert reason["crash_loop"] is True
    assert reason["exit_code"] == 3 and reason["last_log_lines"] == ["boom"]


def test_a_single_failure_is_not_called_a_crash_loop() -> None:
    job = {"name": "x", "unit": "u", "restart_limit_burst": 3, "restart_limit_interval": 30}
    props = {"Result": "timeout", "ExecMainStatus": "0", "NRestarts": "0"}
    reason = helper.failure_reason(job, props, [_entry("systemd", "u: Failed with result.")])
    assert reason["crash_loop"] is False
    assert "unit result timeout" in reason["message"]


def test_log_file_rotates_at_its_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "demo.log"
    log = helper.RotatingLog(str(path), max_bytes=100, backups=2)
    for index in range(20):
        log.write(f"line {index:02d} " + "x" * 20)
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["demo.log", "demo.log.1", "demo.log.2"]
    assert all(p.stat().st_size <= 100 for p in path.parent.iterdir())
    assert "line 19" in path.read_text()


def test_journal_entries_become_timestamped_lines() -> None:
    entry = {"MESSAGE": [104, 105, 255], "__REALTIME_TIMESTAMP": "1800000000123456"}
    assert helper.journal_line(entry) == "2027-01-15T08:00:00.123456Z hi\ufffd"


# -- Prometheus textfile --------------------------------------------------------------

METRICS_MODULE = HELPER_PATH.parents[1] / "files/unbroken_ckpt/training_metrics.py"


def _textfile_job(tmp_path: Path, name: str) -> dict[str, Any]:
    job = _job(
        name=name,
        unit=f"unbroken-job-{name}.service",
        hang_timeout=0,
        checkpoint_dir=str(tmp_path / name / "ckpt"),
        status_file=str(tmp_path / name / "ckpt/status.json"),
        state_dir=str(tmp_path / name / "state"),
    )
    os.makedirs(job["checkpoint_dir"])
    os.makedirs(job["state_dir"])
    (tmp_path / "config/jobs").mkdir(parents=True, exist_ok=True)
    (tmp_path / "config/jobs" / f"{name}.json").write_text(json.dumps(job))
    return job


def _samples(text: str) -> dict[str, float]:
    """{'metric{labels}': value} of a text exposition (HELP/TYPE lines checked for form)."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) unbroken_training_\w+ ", line), line
            continue
        series, value = line.rsplit(" ", 1)
        samples[series] = float(value)
    return samples


def test_watchdog_writes_every_jobs_metrics_to_the_prometheus_textfile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    ref = _textfile_job(tmp_path, "ref")
    (Path(ref["status_file"])).write_text(
        json.dumps(
            {
                "schema": "unbroken.training/status",
                "state": "training",
                "step": 120,
                "total_steps": 1000,
                "loss": 0.5,
                "samples_per_second": 64.0,
                "updated_at": now - 3,
                "last_checkpoint": {"name": "step-100", "step": 100, "created": now - 30},
            }
        )
    )
    (Path(ref["state_dir"]) / "runs.json").write_text(json.dumps({"runs": 3, "restarts": 2}))
    # A user's own script: no status file, only the metrics stream.
    own = _textfile_job(tmp_path, "own")
    metrics = helper.load_metrics_module(str(METRICS_MODULE))
    with metrics.MetricsWriter(os.path.join(own["checkpoint_dir"], "metrics.jsonl")) as writer:
        writer.start(0)
        writer.log(7, loss=2.25, samples_per_second=10.5)
    units = {
        ref["unit"]: {"ActiveState": "active", "SubState": "running", "NRestarts": "2"},
        own["unit"]: {"ActiveState": "activating", "SubState": "auto-restart", "NRestarts": "1"},
    }
    monkeypatch.setattr(helper, "systemctl_show", lambda unit, _props: units[unit])
    textfile = tmp_path / "node-exporter/unbroken_training.prom"

    assert (
        helper.main(
            [
                "--config-dir",
                str(tmp_path / "config"),
                "watchdog",
                "--textfile",
                str(textfile),
                "--metrics-module",
                str(METRICS_MODULE),
            ]
        )
        == 0
    )

    samples = _samples(textfile.read_text())
    assert samples['unbroken_training_job_step{job="ref"}'] == 120
    assert samples['unbroken_training_job_total_steps{job="ref"}'] == 1000
    assert samples['unbroken_training_job_loss{job="ref"}'] == 0.5
    assert samples['unbroken_training_job_samples_per_second{job="ref"}'] == 64.0
    assert samples['unbroken_training_job_restarts_total{job="ref"}'] == 2
    assert 30 <= samples['unbroken_training_job_last_checkpoint_age_seconds{job="ref"}'] < 60
    assert samples['unbroken_training_job_state{job="ref",state="training"}'] == 1
    assert samples['unbroken_training_job_state{job="ref",state="hung"}'] == 0
    assert samples['unbroken_training_job_step{job="own"}'] == 7
    assert samples['unbroken_training_job_loss{job="own"}'] == 2.25
    assert samples['unbroken_training_job_restarts_total{job="own"}'] == 1
    assert samples['unbroken_training_job_state{job="own",state="restarting"}'] == 1
    assert not [p for p in textfile.parent.iterdir() if p != textfile]  # no temporary left


def test_watchdog_reports_a_textfile_it_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _textfile_job(tmp_path, "ref")
    monkeypatch.setattr(helper, "systemctl_show", lambda _unit, _props: {})
    config = str(tmp_path / "config")
    missing = str(tmp_path / "nowhere.py")
    assert helper.watchdog(config, str(tmp_path / "out.prom"), missing) == 1
    assert "nowhere.py" in capsys.readouterr().err
    assert helper.watchdog(config, str(tmp_path / "out.txt"), str(METRICS_MODULE)) == 1
    assert "*.prom" in capsys.readouterr().err
    assert helper.watchdog(config, "", missing) == 0  # disabled: nothing loaded or written
