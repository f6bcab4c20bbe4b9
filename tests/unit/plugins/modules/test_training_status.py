# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests of the training_status module (systemctl faked, files real)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[4]


from ansible.module_utils.testing import patch_module_args  # noqa: E402
from ansible_collections.unbroken.training.plugins.module_utils import (  # noqa: E402
    checkpoint_manifest as fmt,
)
from ansible_collections.unbroken.training.plugins.modules import (  # noqa: E402
    training_status,
)


def _load_runtime_status_module() -> Any:
    """The checkpoint library's status.py (standard library only) loaded without torch."""
    path = REPO / "roles" / "trainer" / "files" / "unbroken_ckpt" / "status.py"
    spec = importlib.util.spec_from_file_location("unbroken_runtime_status", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_helper() -> Any:
    path = REPO / "roles" / "trainer" / "helper" / "unbroken_trainer_helper.py"
    spec = importlib.util.spec_from_file_location("unbroken_trainer_helper", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NOW_WALL = 1_800_000_000.0
NOW_MONO = 5_000.0


def _show(active: str = "active", sub: str = "running", started_mono: float = 4_900.0, **extra):
    props = {
        "LoadState": "loaded",
        "ActiveState": active,
        "SubState": sub,
        "Result": "success",
        "NRestarts": "2",
        "ExecMainStatus": "0",
        "ExecMainCode": "0",
        "ExecMainPID": "4242" if active == "active" else "0",
        "ExecMainStartTimestampMonotonic": str(int(started_mono * 1e6)),
    }
    props.update(extra)
    text = "".join(f"{k}={v}\n" for k, v in props.items())
    calls: list[list[str]] = []

    def run(argv: list[str]) -> tuple[int, str, str]:
        calls.append(argv)
        return 0, text, ""

    run.calls = calls  # type: ignore[attr-defined]
    return run


@pytest.fixture
def job(tmp_path: Path) -> dict[str, Any]:
    ckpt = tmp_path / "ckpt"
    state = tmp_path / "state"
    ckpt.mkdir()
    state.mkdir()
    return {
        "name": "demo",
        "unit": "unbroken-job-demo.service",
        "status_file": str(ckpt / "status.json"),
        "checkpoint_dir": str(ckpt),
        "state_dir": str(state),
        "hang_timeout": 30,
    }


def _write_status(path: str, updated_at: float, state: str = "training", step: int = 120) -> None:
    document = {
        "schema": "unbroken.training/status",
        "version": 1,
        "state": state,
        "step": step,
        "total_steps": 1000,
        "loss": 0.25,
        "samples_per_second": 300.0,
        "updated_at": updated_at,
        "resumed_from": {"name": "step-000100", "step": 100, "skipped": []},
    }
    Path(path).write_text(json.dumps(document))


def _commit_checkpoint(directory: str, step: int, created: float) -> None:
    path = os.path.join(directory, fmt.checkpoint_name(step))
    os.mkdir(path)
    Path(path, "state.pt").write_bytes(b"x" * 1000)
    size, segments = fmt.hash_file(os.path.join(path, "state.pt"))
    manifest = fmt.build_manifest(
        step, {"state.pt": fmt.file_entry(size, segments)}, created=created
    )
    fmt.write_manifest(path, manifest)


# -- the status file format: one writer (the library), the same reading here -----------


def test_status_written_by_the_library_reads_back_identically(tmp_path: Path) -> None:
    runtime_status = _load_runtime_status_module()
    path = str(tmp_path / "status.json")
    written = runtime_status.StatusFile(path).write(
        "training",
        42,
        total_steps=100,
        loss=0.5,
        samples_per_second=12.5,
        last_checkpoint={"name": "step-000040", "step": 40},
    )
    assert training_status.read_status(path) == written
    assert runtime_status.read_status(path) == written
    assert _load_helper().read_status(path) == written


@pytest.mark.parametrize(
    "content", ["", "{", "[]", json.dumps({"schema": "other", "step": 1}), "\x00\xff"]
)
def test_status_that_is_not_a_status_document_means_no_heartbeat(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "status.json"
    path.write_text(content, encoding="latin-1")
    assert training_status.read_status(str(path)) is None
    assert training_status.read_status(str(tmp_path / "missing.json")) is None


# -- heartbeat and hang ------------------------------------------------------------------


def test_heartbeat_from_this_run_is_the_status_write() -> None:
    age, fresh = training_status.heartbeat({"updated_at": 990.0}, 900.0, 1000.0)
    assert (age, fresh) == (10.0, True)


def test_status_left_by_the_previous_run_counts_from_this_run_start() -> None:
    age, fresh = training_status.heartbeat({"updated_at": 800.0}, 900.0, 1000.0)
    assert (age, fresh) == (100.0, False)


def test_no_status_and_not_running_has_no_heartbeat() -> None:
    assert training_status.heartbeat(None, None, 1000.0) == (None, False)


def test_module_and_watchdog_agree_on_hangs() -> None:
    helper = _load_helper()
    cases = [
        ({"updated_at": 990.0, "state": "training"}, 900.0, 30, 1000.0),
        ({"updated_at": 950.0, "state": "training"}, 900.0, 30, 1000.0),
        ({"updated_at": 800.0, "state": "training"}, 900.0, 30, 1000.0),
        ({"updated_at": 800.0, "state": "training"}, 990.0, 30, 1000.0),
        (None, 900.0, 30, 1000.0),
        (None, 990.0, 30, 1000.0),
    ]
    for status, started, timeout, now in cases:
        for startup in (0, 60):
            age, fresh = training_status.heartbeat(status, started, now)
            verdict = helper.heartbeat_verdict(status, started, timeout, now, startup)
            assert verdict["heartbeat_age"] == round(age, 1)
            assert verdict["started"] == fresh
            limit = timeout if fresh or not startup else startup
            assert verdict["hung"] == (age > limit), (status, started, startup)


# -- per-job reports ---------------------------------------------------------------------


def test_running_job_with_a_fresh_heartbeat_is_training(job: dict[str, Any]) -> None:
    started_wall = NOW_WALL - 100
    _write_status(job["status_file"], NOW_WALL - 1)
    _commit_checkpoint(job["checkpoint_dir"], 100, NOW_WALL - 20)
    _commit_checkpoint(job["checkpoint_dir"], 80, NOW_WALL - 40)
    run = _show(started_mono=NOW_MONO - 100)
    report = training_status.job_report(job, run, NOW_WALL, NOW_MONO)
    assert report["running"] and report["training"] and not report["hung"]
    assert report["restarts"] == 2 and report["main_pid"] == 4242
    assert report["main_started_at"] == pytest.approx(started_wall)
    assert (report["step"], report["loss"], report["samples_per_second"]) == (120, 0.25, 300.0)
    assert report["heartbeat_age"] == 1.0
    assert report["last_checkpoint"] == {
        "name": "step-000100",
        "step": 100,
        "created": NOW_WALL - 20,
        "age_seconds": 20.0,
    }
    assert report["failure"] is None and report["failure_reason"] is None
    assert run.calls[0][:3] == ["systemctl", "show", "unbroken-job-demo.service"]


def test_running_job_with_a_stale_heartbeat_is_hung(job: dict[str, Any]) -> None:
    _write_status(job["status_file"], NOW_WALL - 45)
    report = training_status.job_report(job, _show(started_mono=NOW_MONO - 100), NOW_WALL, NOW_MONO)
    assert report["hung"] and report["heartbeat_age"] == 45.0
    assert report["training"] is True  # the last write was this run's, in state training


def test_freshly_restarted_job_is_not_hung_before_its_timeout(job: dict[str, Any]) -> None:
    _write_status(job["status_file"], NOW_WALL - 500)  # written by the previous run
    report = training_status.job_report(job, _show(started_mono=NOW_MONO - 5), NOW_WALL, NOW_MONO)
    assert not report["hung"] and not report["training"]
    assert report["heartbeat_age"] == 5.0


def test_slow_start_is_judged_by_the_startup_timeout(job: dict[str, Any]) -> None:
    job["startup_timeout"] = 120
    _write_status(job["status_file"], NOW_WALL - 500)  # written by the previous run
    loading = training_status.job_report(job, _show(started_mono=NOW_MONO - 90), NOW_WALL, NOW_MONO)
    assert not loading["hung"] and loading["heartbeat_age"] == 90.0
    stuck = training_status.job_report(job, _show(started_mono=NOW_MONO - 130), NOW_WALL, NOW_MONO)
    assert stuck["hung"]


def test_hang_timeout_zero_turns_hang_detection_off(job: dict[str, Any]) -> None:
    job["hang_timeout"] = 0
    _write_status(job["status_file"], NOW_WALL - 5000)
    report = training_status.job_report(
        job, _show(started_mono=NOW_MONO - 9000), NOW_WALL, NOW_MONO
    )
    assert report["running"] and not report["hung"]


def test_failed_job_reports_the_recorded_reason(job: dict[str, Any]) -> None:
    failure = {
        "message": "job demo failed: crash-loop limit reached (3 starts within 30s); exit code 3",
        "exit_code": 3,
        "last_log_lines": ["simulated failure"],
    }
    Path(job["state_dir"], "failure.json").write_text(json.dumps(failure))
    run = _show(
        active="failed", sub="failed", Result="start-limit-hit", ExecMainStatus="3", NRestarts="2"
    )
    report = training_status.job_report(job, run, NOW_WALL, NOW_MONO)
    assert report["active_state"] == "failed" and report["result"] == "start-limit-hit"
    assert report["exit_code"] == 3 and not report["running"] and not report["hung"]
    assert report["failure_reason"] == failure["message"]
    assert report["failure"]["last_log_lines"] == ["simulated failure"]


def test_torn_newest_checkpoint_is_not_reported_as_the_last_one(job: dict[str, Any]) -> None:
    _commit_checkpoint(job["checkpoint_dir"], 20, NOW_WALL - 60)
    os.mkdir(os.path.join(job["checkpoint_dir"], "step-000040"))  # no manifest: never committed
    report = training_status.job_report(job, _show(), NOW_WALL, NOW_MONO)
    assert report["last_checkpoint"]["name"] == "step-000020"


# -- the module entry point --------------------------------------------------------------


def _run_module(args: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    with patch_module_args(args), pytest.raises(SystemExit):
        training_status.main()
    return json.loads(capsys.readouterr().out)


def _define(config_dir: Path, job: dict[str, Any]) -> None:
    (config_dir / "jobs").mkdir(parents=True, exist_ok=True)
    (config_dir / "jobs" / f"{job['name']}.json").write_text(json.dumps(job))


def test_module_reports_every_defined_job_in_check_mode(
    tmp_path: Path,
    job: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "etc"
    _define(config, job)
    _define(config, {**job, "name": "second", "unit": "unbroken-job-second.service"})
    _write_status(job["status_file"], time.time())
    before = sorted(p.name for p in tmp_path.rglob("*"))

    def fake_run_command(self: Any, argv: list[str], **kwargs: Any) -> tuple[int, str, str]:
        return _show(started_mono=time.monotonic() - 10)(argv)

    monkeypatch.setattr(training_status.AnsibleModule, "run_command", fake_run_command)
    result = _run_module({"config_dir": str(config), "_ansible_check_mode": True}, capsys)
    assert result["changed"] is False
    assert [j["name"] for j in result["jobs"]] == ["demo", "second"]
    assert result["jobs_by_name"]["demo"]["training"] is True
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_module_fails_clearly_for_an_unknown_job(
    tmp_path: Path, job: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _define(tmp_path, job)
    result = _run_module({"config_dir": str(tmp_path), "name": ["demo", "nope"]}, capsys)
    assert result["failed"] is True
    assert "no readable job definition for nope" in result["msg"]


def test_stop_waits_for_the_main_process_to_exit_not_to_be_reaped() -> None:
    """``stop`` returns once $MAINPID exited; an unreaped (zombie) process counts as gone."""
    helper = _load_helper()
    child = subprocess.Popen(["sleep", "0.5"])
    try:
        assert helper.process_alive(child.pid)
        assert helper.wait_for_exit(child.pid, 10.0)
        # Not reaped yet: still in /proc as a zombie, and already counted as exited.
        assert Path(f"/proc/{child.pid}").exists()
        assert not helper.process_alive(child.pid)
    finally:
        child.wait()
    assert not helper.process_alive(child.pid)


def test_stop_returns_only_after_the_units_main_process_exited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``stop`` waits for $MAINPID after docker stop, so systemd does not SIGTERM it."""
    helper = _load_helper()
    main = subprocess.Popen(["sleep", "0.5"])  # the attached docker run, exiting a bit later
    stopped = subprocess.CompletedProcess(["docker", "stop"], 0, "demo\n", "")
    monkeypatch.setattr(helper, "docker_binary", lambda: "docker")
    monkeypatch.setattr(helper.subprocess, "run", lambda *_args, **_kwargs: stopped)
    monkeypatch.setenv("MAINPID", str(main.pid))
    try:
        helper.stop_job({"name": "demo", "container": "demo", "stop_budget": 5, "stop_timeout": 15})
        assert not helper.process_alive(main.pid)
    finally:
        main.kill()
        main.wait()


def test_stop_gives_up_waiting_for_a_main_process_that_does_not_exit() -> None:
    helper = _load_helper()
    child = subprocess.Popen(["sleep", "30"])
    try:
        started = time.monotonic()
        assert not helper.wait_for_exit(child.pid, 0.3)
        assert time.monotonic() - started >= 0.3
    finally:
        child.kill()
        child.wait()
