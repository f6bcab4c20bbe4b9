# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests of the training_status module (systemctl faked, files real)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[4]


from ansible_collections.unbroken.training.plugins.module_utils import (  # noqa: E402
    checkpoint_manifest as fmt,
)
from ansible_collections.unbroken.training.plugins.modules import (  # noqa: E402
    training_status,
)
from module_runner import run_module  # noqa: E402


def _load_runtime_status_module() -> Any:
    """The checkpoint library's status.py (standard library only) loaded without torch.

    Its package's ``__init__`` imports torch: the package is entered without running it,
    so status.py's relative import of the shared format file resolves as in the runtime.
    """
    package = "unbroken_ckpt_without_torch"
    if package not in sys.modules:
        bare = types.ModuleType(package)
        bare.__path__ = [str(REPO / "runtime" / "unbroken_ckpt")]
        sys.modules[package] = bare
    return importlib.import_module(package + ".status")


def _load_helper() -> Any:
    path = REPO / "runtime" / "helper" / "unbroken_trainer_helper.py"
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
        "container": "unbroken-job-demo",
        "status_file": str(ckpt / "status.json"),
        "checkpoint_dir": str(ckpt),
        "state_dir": str(state),
        "log_file": str(tmp_path / "logs" / "demo.log"),
        "command": ["python3", "/opt/unbroken/runtime/train.py", "--batch-size", 64],
        "hang_timeout": 30,
    }


def _watchdog_standins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """systemctl and docker stand-ins on PATH for the helper's real watchdog: the job's unit
    runs, its run began two minutes ago; returns the log of the stand-ins' calls."""
    started = max(1, int((time.monotonic() - 120) * 1e6))
    show = tmp_path / "systemctl-show"
    show.write_text(
        f"ActiveState=active\nSubState=running\nExecMainStartTimestampMonotonic={started}\n"
    )
    log = tmp_path / "standin.log"
    monkeypatch.setenv("UT_STANDIN_LOG", str(log))
    monkeypatch.setenv("UT_STANDIN_SYSTEMCTL_SHOW", str(show))
    monkeypatch.setenv("PATH", f"{REPO / 'tests' / 'unit' / 'standin'}:{os.environ['PATH']}")
    monkeypatch.setattr(helper, "JOURNAL_SOCKET", str(tmp_path / "no-journal"))
    return log


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


@pytest.mark.parametrize("state", ["finished", "stopped", "failed"])
def test_a_run_that_wrote_its_terminal_state_is_not_hung(job: dict[str, Any], state: str) -> None:
    # The process is on its way out (final checkpoint, exit): no watchdog kill, no "hung".
    _write_status(job["status_file"], NOW_WALL - 45, state=state)
    report = training_status.job_report(job, _show(started_mono=NOW_MONO - 100), NOW_WALL, NOW_MONO)
    assert not report["hung"] and report["heartbeat_age"] == 45.0


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


def _define(config_dir: Path, job: dict[str, Any]) -> None:
    (config_dir / "jobs").mkdir(parents=True, exist_ok=True)
    (config_dir / "jobs" / f"{job['name']}.json").write_text(json.dumps(job))


def test_module_reports_every_defined_job_in_check_mode(
    tmp_path: Path,
    job: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "etc"
    _define(config, job)
    two_nodes = ["gpu01", "gpu02"]  # a multi-node job's definition lists its hosts
    _define(
        config,
        {
            **job,
            "name": "second",
            "unit": "unbroken-job-second.service",
            "nodes": two_nodes,
            "command": ["torchrun", "--nnodes", "1:2", "train.py"],
        },
    )
    _write_status(job["status_file"], time.time())
    before = sorted(p.name for p in tmp_path.rglob("*"))

    def fake_run_command(self: Any, argv: list[str], **kwargs: Any) -> tuple[int, str, str]:
        return _show(started_mono=time.monotonic() - 10)(argv)

    monkeypatch.setattr(training_status.AnsibleModule, "run_command", fake_run_command)
    result = run_module(training_status, {"config_dir": str(config)}, check_mode=True)
    assert result["changed"] is False
    assert [j["name"] for j in result["jobs"]] == ["demo", "second"]
    assert result["jobs_by_name"]["demo"]["training"] is True
    # What the report needs from the definition, so it does not read the file itself.
    assert result["jobs_by_name"]["demo"]["log_file"] == job["log_file"]
    assert result["jobs_by_name"]["demo"]["command"][-2:] == ["--batch-size", "64"]
    assert [j["nodes"] for j in result["jobs"]] == [[], two_nodes]
    # The fewest nodes it trains with, from torchrun's --nnodes MIN:MAX; none single-node.
    assert [j["min_nodes"] for j in result["jobs"]] == [None, 1]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_module_fails_clearly_for_an_unknown_job(tmp_path: Path, job: dict[str, Any]) -> None:
    _define(tmp_path, job)
    args = {"config_dir": str(tmp_path), "name": ["demo", "nope"]}
    result = run_module(training_status, args, fails=True)
    assert "no definition for job 'nope'" in result["msg"]
    assert "'demo'" not in result["msg"]


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


_WORKER = """
import pathlib, signal, sys, time
def stop(*_args):
    pathlib.Path(sys.argv[1]).write_text("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
pathlib.Path(sys.argv[1]).write_text("ready")
time.sleep(60)
"""
# docker's init -> the torchrun agent -> its worker, each exiting with its child's code.
_PARENT = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def test_multinode_stop_signals_the_workers_not_the_agent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A multi-node job stops through its workers: the agents exit 0, no docker stop."""
    helper = _load_helper()
    marker = tmp_path / "worker-signal"
    py = sys.executable
    init = subprocess.Popen([py, "-c", _PARENT, py, "-c", _PARENT, py, "-c", _WORKER, str(marker)])
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, f"{init.pid}\n", "")

    try:
        deadline = time.monotonic() + 30
        while not marker.exists():  # its handler is installed
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.05)
        monkeypatch.setattr(helper, "docker_binary", lambda: "docker")
        monkeypatch.setattr(helper.subprocess, "run", fake_run)
        monkeypatch.setenv("MAINPID", str(init.pid))
        job = {"name": "mn", "container": "mn", "stop_budget": 5, "stop_timeout": 15}
        helper.stop_job({**job, "nodes": ["node1", "node2"]})
        assert init.wait(5) == 0  # the agent saw its worker exit 0, and so did the init
        assert marker.read_text() == "SIGTERM"
        assert [argv[1] for argv in calls] == ["inspect"], calls  # never docker stop
    finally:
        init.kill()
        init.wait()


def test_single_node_stop_and_a_multinode_job_without_workers_use_docker_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    helper = _load_helper()
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        # No running container: nothing to find in /proc.
        return subprocess.CompletedProcess(argv, 0, "0\n" if argv[1] == "inspect" else "", "")

    monkeypatch.setattr(helper, "docker_binary", lambda: "docker")
    monkeypatch.setattr(helper.subprocess, "run", fake_run)
    monkeypatch.delenv("MAINPID", raising=False)
    job = {"name": "mn", "container": "mn", "stop_budget": 5, "stop_timeout": 15}
    nothing = helper.WorkersStop.NOTHING_TO_SIGNAL
    two_nodes = {**job, "nodes": ["node1", "node2"]}
    assert helper.stop_workers_first(job, "docker", 999999999) is nothing
    assert helper.stop_workers_first(two_nodes, "docker", None) is nothing
    helper.stop_job(job)
    monkeypatch.setenv("MAINPID", "999999999")
    helper.stop_job({**job, "nodes": ["node1", "node2"]})
    stops = [argv for argv in calls if argv[1] == "stop"]
    assert stops == [["docker", "stop", "--time", "15", "mn"]] * 2, calls


_DEAF_WORKER = """
import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1]).write_text("ready")
time.sleep(60)
"""


def test_a_multinode_stop_that_runs_out_of_time_leaves_docker_stop_one_second(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Workers that ignore SIGTERM spend the stop timeout: docker stop then kills soon."""
    helper = _load_helper()
    marker = tmp_path / "worker-ready"
    py = sys.executable
    init = subprocess.Popen(
        [py, "-c", _PARENT, py, "-c", _PARENT, py, "-c", _DEAF_WORKER, str(marker)],
        start_new_session=True,  # one process group: the cleanup reaches the deaf worker
    )
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, f"{init.pid}\n", "")

    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.05)
        monkeypatch.setattr(helper, "docker_binary", lambda: "docker")
        monkeypatch.setattr(helper.subprocess, "run", fake_run)
        monkeypatch.setattr(helper, "MAIN_EXIT_WAIT", 0.1)
        monkeypatch.setenv("MAINPID", str(init.pid))
        job = {"name": "mn", "container": "mn", "stop_budget": 5, "stop_timeout": 0.3}
        job["nodes"] = ["node1", "node2"]
        assert helper.stop_workers_first(job, "docker", init.pid) is helper.WorkersStop.TIMED_OUT
        calls.clear()
        helper.stop_job(job)
        stops = [argv for argv in calls if argv[1] == "stop"]
        assert stops == [["docker", "stop", "--time", "1", "mn"]], calls
    finally:
        os.killpg(init.pid, signal.SIGKILL)
        init.wait()


# -- why a job (re)started, how its run ended, waiting without a retry loop -------------

helper = _load_helper()


# -- the helper's run record ---------------------------------------------------------


def _start(previous: dict[str, Any], automatic: bool, boot: str = "b1", **kw: Any) -> dict:
    return helper.note_start(previous, automatic, kw.get("now", 1000.0), boot, kw.get("watchdog"))


def test_runs_count_every_start_but_restarts_only_the_ones_nobody_asked_for() -> None:
    record: dict[str, Any] = {}
    causes = []
    # converge, four operator restarts, a crash, a hang, a reboot, an operator start
    for automatic, boot, watchdog in [
        (False, "b1", None),
        (False, "b1", None),
        (False, "b1", None),
        (False, "b1", None),
        (False, "b1", None),
        (True, "b1", None),
        (True, "b1", {"last_kill_at": 6500.0, "last_kill_step": 420}),
        (False, "b2", None),
        (False, "b2", None),
    ]:
        now = 1000.0 + 1000 * len(causes)
        record = helper.note_start(record, automatic, now, boot, watchdog)
        causes.append(record["last_start"]["cause"])
        if len(causes) == 8:
            assert record["restarts"] == 3  # crash, hang, reboot since the last operator start
    assert causes == [
        "operator",
        "operator",
        "operator",
        "operator",
        "operator",
        "crash",
        "hang",
        "reboot",
        "operator",
    ]
    assert record["runs"] == 9 and record["restarts"] == 0
    assert [h["run"] for h in record["history"]] == list(range(1, 10))


def test_the_helpers_records_carry_only_the_keys_the_format_file_documents(
    job: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runs.json, failure.json and watchdog.json: training_job_files lists their keys.

    watchdog.json is written by the helper's own watchdog run (systemctl and docker are
    the stand-ins in tests/unit/standin), so a key it starts writing is caught here.
    """
    from ansible_collections.unbroken.training.plugins.module_utils import (
        training_job_files as jf,
    )

    record = _start(_start({}, automatic=False), automatic=True)
    Path(job["state_dir"], jf.RUNS_FILE).write_text(json.dumps(record))
    helper.post_stop(
        job, {"SERVICE_RESULT": "exit-code", "EXIT_CODE": "exited", "EXIT_STATUS": "1"}
    )
    runs = json.loads(Path(jf.state_path(job, jf.RUNS_FILE)).read_text())
    assert set(runs) <= set(jf.RUNS_KEYS) and "last_end" in runs
    assert runs["last_start"]["cause"] in jf.START_CAUSES
    assert jf.run_history(runs) == runs["history"] and len(runs["history"]) == 2

    props = {"Result": "exit-code", "ExecMainStatus": "3", "NRestarts": "2"}
    failure = helper.failure_reason({**job, "restart_limit_burst": 3}, props, [])
    assert set(failure) == set(jf.FAILURE_KEYS)

    # The unit's run began two minutes ago and never wrote a heartbeat: past hang_timeout.
    log = _watchdog_standins(tmp_path, monkeypatch)
    config = tmp_path / "config"
    (config / "jobs").mkdir(parents=True)
    (config / "jobs" / "demo.json").write_text(json.dumps(job))
    assert helper.watchdog(str(config)) == 0
    assert f"docker kill --signal KILL {job['container']}" in log.read_text().splitlines()
    watched = json.loads(Path(jf.state_path(job, jf.WATCHDOG_FILE)).read_text())
    assert watched["kills"] == 1
    assert sorted(watched) == sorted(jf.WATCHDOG_KEYS)


_SLEEPER = "import time; time.sleep(60)"


def _container(depth: int) -> subprocess.Popen[bytes]:
    """A process tree like a job's container: init -> torchrun agent (-> worker)."""
    py = sys.executable
    argv = [py, "-c", _PARENT] * (depth - 1) + [py, "-c", _SLEEPER]
    init = subprocess.Popen(argv, start_new_session=True)
    deadline = time.monotonic() + 30
    level = [init.pid]
    for _level in range(depth - 1):
        while not (children := [c for pid in level for c in helper.child_pids(pid)]):
            assert time.monotonic() < deadline, "the process tree never formed"
            time.sleep(0.05)
        level = children
    return init


@pytest.mark.parametrize(
    ("nodes", "depth", "killed"),
    [
        (["mn-1", "mn-2"], 2, False),  # the agent has no workers: a rendezvous round
        (["mn-1", "mn-2"], 3, True),  # its worker is there and silent: hung
        (None, 2, True),  # a single-node job is judged by its heartbeat alone
    ],
    ids=["multinode-waiting", "multinode-hung-worker", "single-node"],
)
def test_the_watchdog_does_not_kill_a_multinode_agent_waiting_for_its_other_nodes(
    job: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nodes: list[str] | None,
    depth: int,
    killed: bool,
) -> None:
    """The real watchdog, docker and systemctl stand-ins, a real process tree."""
    from ansible_collections.unbroken.training.plugins.module_utils import (
        training_job_files as jf,
    )

    if nodes:
        job["nodes"] = nodes
    # The last status a worker wrote (training), older than hang_timeout (30 s).
    _write_status(job["status_file"], time.time() - 90, state="training")
    log = _watchdog_standins(tmp_path, monkeypatch)
    init = _container(depth)
    try:
        monkeypatch.setenv("UT_STANDIN_DOCKER_PID", str(init.pid))
        assert helper.watch_job(job) == int(killed)
    finally:
        os.killpg(init.pid, signal.SIGKILL)
        init.wait()
    kill = f"docker kill --signal KILL {job['container']}"
    assert (kill in log.read_text().splitlines()) is killed
    record = json.loads(Path(jf.state_path(job, jf.WATCHDOG_FILE)).read_text())
    assert (record["waiting"], record["hung"], record["kills"]) == (
        not killed,
        killed,
        int(killed),
    )
    # training_status reads the verdict: the node waits, its worker's state is stale.
    now_wall, now_mono = time.time(), time.monotonic()
    run = _show(started_mono=now_mono - 120)
    report = training_status.job_report(job, run, now_wall, now_mono)
    if killed:
        assert report["hung"] and not report["waiting"] and report["waiting_note"] is None
    else:
        assert report["waiting"] and not report["hung"] and not report["training"]
        assert not training_status.settled(report)
        assert training_status.describe(report) == (
            "demo is waiting: waiting in a rendezvous round for the job's other nodes"
        )


def test_the_textfile_says_waiting_while_the_watchdog_saw_the_agent_wait(
    job: dict[str, Any],
) -> None:
    metrics = helper.load_metrics_module(
        str(REPO / "plugins" / "module_utils" / "training_metrics.py")
    )
    running = {"ActiveState": "active", "SubState": "running"}
    _write_status(job["status_file"], time.time() - 90, state="failed")
    _watchdog_record(job, time.time())
    assert helper.job_metrics(job, metrics, running)["state"] == "waiting"
    assert "waiting" in metrics.JOB_STATES  # a series of its own, 0 for every other job
    _watchdog_record(job, time.time(), waiting=False)
    assert helper.job_metrics(job, metrics, running)["state"] == "starting"
    stopped = {"ActiveState": "inactive", "SubState": "dead"}
    assert helper.textfile_state(stopped, {"state": "failed"}, False, True) == "failed"


def _watchdog_record(job: dict[str, Any], checked_at: float, waiting: bool = True) -> None:
    record = {"job": job["name"], "checked_at": checked_at, "waiting": waiting, "kills": 0}
    Path(job["state_dir"], "watchdog.json").write_text(json.dumps(record))


def test_a_node_waits_only_while_no_worker_wrote_since_the_watchdog_saw_none(
    job: dict[str, Any],
) -> None:
    """The watchdog's verdict of this run, newer than the status file; else the status."""
    job["nodes"] = ["mn-1", "mn-2"]
    run = _show(started_mono=NOW_MONO - 300)  # this run started 300 s ago
    _write_status(job["status_file"], NOW_WALL - 200, state="failed")

    def report() -> dict[str, Any]:
        return training_status.job_report(job, run, NOW_WALL, NOW_MONO)

    _watchdog_record(job, NOW_WALL - 20)
    assert report()["waiting"] and report()["status_state"] == "failed"
    _watchdog_record(job, NOW_WALL - 20, waiting=False)
    assert not report()["waiting"]
    _watchdog_record(job, NOW_WALL - 400)  # a check of the previous run
    assert not report()["waiting"]
    _watchdog_record(job, NOW_WALL - 20)
    _write_status(job["status_file"], NOW_WALL - 5, state="starting")  # new workers wrote
    assert not report()["waiting"]
    _write_status(job["status_file"], NOW_WALL - 200, state="training")
    assert report()["waiting"] and not report()["hung"] and not report()["training"]
    del job["nodes"]  # a single-node job never waits for other nodes
    assert not report()["waiting"] and report()["hung"]
    job["nodes"] = ["mn-1", "mn-2"]
    stopped = _show(active="inactive", sub="dead", started_mono=NOW_MONO - 300)
    assert not training_status.job_report(job, stopped, NOW_WALL, NOW_MONO)["waiting"]


def test_a_crash_start_names_how_the_previous_run_ended() -> None:
    record = _start({}, automatic=False)
    record["last_end"] = {
        "run": 1,
        "service_result": "exit-code",
        "exit_code_kind": "exited",
        "exit_status": "137",
    }
    crashed = _start(record, automatic=True)
    assert crashed["last_start"]["cause"] == "crash"
    assert crashed["last_start"]["detail"] == (
        "the previous run failed with exit status 137 (SIGKILL in the container)"
    )
    assert helper.describe_exit({"exit_code_kind": "killed", "exit_status": "TERM"}) == (
        "killed by SIGTERM"
    )
    assert helper.describe_exit(None) == "an unknown exit"


def test_a_watchdog_kill_before_this_runs_start_is_not_a_hang() -> None:
    record = _start({}, automatic=False, now=2000.0)
    old_kill = {"last_kill_at": 1500.0, "last_kill_step": 10}
    assert _start(record, True, watchdog=old_kill)["last_start"]["cause"] == "crash"


def test_a_deliberate_start_resets_systemds_crash_loop_counter(
    job: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    nrestarts = {"value": "0"}

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        calls.append(argv)
        out = f"NRestarts={nrestarts['value']}\n" if argv[1] == "show" else ""
        return subprocess.CompletedProcess(argv, 0, out, "")

    monkeypatch.setattr(helper.subprocess, "run", fake_run)
    monkeypatch.setattr(helper, "BOOT_MARKER", str(Path(job["state_dir"]).parent / "run" / "boot"))
    helper.record_start(job)
    assert ["systemctl", "reset-failed", job["unit"]] in calls
    calls.clear()
    nrestarts["value"] = "1"  # systemd's own Restart=: a crash, which must count
    helper.record_start(job)
    assert not any(c[:2] == ["systemctl", "reset-failed"] for c in calls)
    record = json.loads(Path(job["state_dir"], "runs.json").read_text())
    assert (record["runs"], record["restarts"], record["last_start"]["cause"]) == (2, 1, "crash")
    calls.clear()
    nrestarts["value"] = ""  # unknown: never reset (a crash loop must still end)
    helper.record_start(job)
    assert not any(c[:2] == ["systemctl", "reset-failed"] for c in calls)


def test_the_boot_token_lives_until_the_next_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "run" / "unbroken-trainer" / "boot"
    monkeypatch.setattr(helper, "BOOT_MARKER", str(marker))
    first = helper.boot_id()
    assert first and helper.boot_id() == first
    marker.unlink()  # /run is emptied at every boot (a tmpfs)
    assert helper.boot_id() != first


def test_post_stop_records_systemds_exit_variables(job: dict[str, Any]) -> None:
    Path(job["state_dir"], "runs.json").write_text(json.dumps({"last_start": {"run": 4}}))
    helper.post_stop(
        job, {"SERVICE_RESULT": "exit-code", "EXIT_CODE": "exited", "EXIT_STATUS": "3"}
    )
    end = json.loads(Path(job["state_dir"], "runs.json").read_text())["last_end"]
    assert (end["run"], end["service_result"], end["exit_status"]) == (4, "exit-code", "3")


def test_watchdog_messages_reach_the_jobs_journal(
    tmp_path: Path, job: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    monkeypatch.setattr(helper, "JOURNAL_SOCKET", path)
    try:
        helper.log_to_job_journal(job, "hang watchdog: job demo: no heartbeat\nfor 25s")
        fields = dict(
            line.split("=", 1) for line in server.recv(4096).decode().splitlines() if line
        )
    finally:
        server.close()
    # journalctl -u lists root's entries whose OBJECT_SYSTEMD_UNIT names the unit.
    assert fields == {
        "MESSAGE": "hang watchdog: job demo: no heartbeat for 25s",
        "PRIORITY": "4",
        "SYSLOG_IDENTIFIER": "unbroken-job-demo",
        "OBJECT_SYSTEMD_UNIT": "unbroken-job-demo.service",
    }


# -- training_status ---------------------------------------------------------------------


def test_report_counts_restarts_from_the_helpers_record_not_nrestarts(job: dict[str, Any]) -> None:
    fresh = training_status.job_report(job, _show(NRestarts="2"), NOW_WALL, NOW_MONO)
    assert fresh["restarts"] == 2 and fresh["runs"] is None  # no record yet: systemd's count
    record = {
        "runs": 16,
        "restarts": 1,
        "last_start": {"run": 16, "cause": "reboot", "at": NOW_WALL - 60, "detail": "x"},
    }
    Path(job["state_dir"], "runs.json").write_text(json.dumps(record))
    report = training_status.job_report(job, _show(NRestarts="0"), NOW_WALL, NOW_MONO)
    assert (report["runs"], report["restarts"], report["systemd_restarts"]) == (16, 1, 0)
    assert report["last_start"]["cause"] == "reboot"


def test_report_carries_the_trainers_final_state_reason_and_quarantine(
    job: dict[str, Any],
) -> None:
    _write_status(job["status_file"], NOW_WALL - 30, state="failed")
    document = json.loads(Path(job["status_file"]).read_text())
    document.update(
        exit_code=2,
        reason="train.py: error: unrecognized arguments:\n --lr-warmup",
        quarantined=[{"name": "quarantine-step-000062", "step": 62, "reason": "crc mismatch"}],
    )
    Path(job["status_file"]).write_text(json.dumps(document))
    report = training_status.job_report(
        job, _show(active="inactive", sub="dead"), NOW_WALL, NOW_MONO
    )
    assert report["status_state"] == "failed" and report["status_exit_code"] == 2
    assert report["status_reason"] == "train.py: error: unrecognized arguments: --lr-warmup"
    assert report["quarantined"][0]["name"] == "quarantine-step-000062"
    _write_status(job["status_file"], NOW_WALL - 30)  # a status file without the new keys
    old = training_status.job_report(job, _show(), NOW_WALL, NOW_MONO)
    assert (old["status_exit_code"], old["status_reason"], old["quarantined"]) == (None, None, [])


def _report(**fields: Any) -> dict[str, Any]:
    base = {
        "name": "demo",
        "training": False,
        "running": True,
        "status_state": "training",
        "status_updated_at": 100.0,
        "main_started_at": 200.0,
        "active_state": "active",
        "sub_state": "running",
        "failure_reason": None,
        "status_reason": None,
        "step": 5,
        "waiting": False,
    }
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("fields", "done"),
    [
        ({"training": True}, True),
        ({}, False),  # the previous run's status: not yet
        ({"status_state": "stopped"}, False),  # the previous run's stop, a new run loads
        ({"status_state": "stopped", "active_state": "inactive", "running": False}, True),
        ({"status_state": "finished", "status_updated_at": 300.0}, True),
        ({"active_state": "failed", "running": False}, False),  # reason not recorded yet
        ({"active_state": "failed", "running": False, "failure_reason": "x"}, True),
    ],
)
def test_settled_means_nothing_more_to_wait_for(fields: dict[str, Any], done: bool) -> None:
    assert training_status.settled(_report(**fields)) is done


def test_wait_polls_until_settled_and_gives_up_at_its_timeout() -> None:
    clock = {"now": 0.0}
    answers = iter([[_report()], [_report()], [_report(training=True)]])

    def sleep(seconds: float) -> None:
        clock["now"] += seconds

    reports, waited, ok = training_status.wait_for_jobs(
        lambda: next(answers), 10, sleep, lambda: clock["now"]
    )
    assert ok and waited == 2.0 and reports[0]["training"]
    clock["now"] = 0.0
    reports, waited, ok = training_status.wait_for_jobs(
        lambda: [_report()], 3, sleep, lambda: clock["now"]
    )
    assert not ok and waited == 3.0


def test_module_wait_fails_naming_the_job_that_did_not_settle(
    tmp_path: Path,
    job: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _define(tmp_path, job)
    _write_status(job["status_file"], time.time() - 500)  # the previous run's

    def fake_run_command(self: Any, argv: list[str], **kwargs: Any) -> tuple[int, str, str]:
        return _show(started_mono=time.monotonic() - 5)(argv)

    monkeypatch.setattr(training_status.AnsibleModule, "run_command", fake_run_command)
    monkeypatch.setattr(training_status, "WAIT_POLL_SECONDS", 0.05)
    args = {"config_dir": str(tmp_path), "name": ["demo"], "wait": True, "wait_timeout": 0}
    result = run_module(training_status, args, fails=True)
    assert result["msg"].startswith("not settled after 0 s: demo is training (unit active/running")
    assert result["jobs"][0]["name"] == "demo"
    _write_status(job["status_file"], time.time())
    result = run_module(training_status, {**args, "wait_timeout": 5})
    assert result["msg"] == "demo trains (step 120)"


# -- the metrics stream: the whole history, thinned on the host --------------------------

from ansible_collections.unbroken.training.plugins.module_utils import (  # noqa: E402
    training_metrics as tm,
)


class _Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def _two_runs_with_rotation(directory: str) -> _Clock:
    """Run 1: steps 1..300 with checkpoints at 100, 200 and 300, then killed (no end).
    Run 2 resumes from step 200 (as if checkpoint 300 were invalid) and trains to 400."""
    clock = _Clock(1_000.0)
    path = os.path.join(directory, "metrics.jsonl")
    with tm.MetricsWriter(path, max_bytes=4096, backups=50, clock=clock) as writer:
        writer.start(0)
        for step in range(1, 301):
            clock.now += 1.0
            writer.log(step, loss=1.0 / step, lr=0.1, samples_per_second=32.0, accuracy=step / 400)
            if step % 100 == 0:
                writer.checkpoint(step, name=f"step-{step:06d}")
    clock.now += 50.0  # 50 s down: killed, restarted by systemd
    with tm.MetricsWriter(path, max_bytes=4096, backups=50, clock=clock) as writer:
        writer.start(200, checkpoint="step-000200")
        for step in range(201, 401):
            clock.now += 1.0
            writer.log(step, loss=float("nan") if step == 250 else 1.0 / step, lr=0.05)
    return clock


def test_metrics_summary_is_the_whole_deduplicated_history_thinned(
    job: dict[str, Any],
) -> None:
    _two_runs_with_rotation(job["checkpoint_dir"])
    # The helper recorded why run 2 started (just before the trainer's start event).
    Path(job["state_dir"], "runs.json").write_text(
        json.dumps(
            {
                "history": [
                    {"run": 1, "at": 999.0, "cause": "operator"},
                    {"run": 2, "at": 1_340.0, "cause": "hang"},
                ]
            }
        )
    )
    summary = training_status.job_metrics(job, 50)
    assert summary is not None
    assert summary["files"] > 3  # rotated: the history spans several files
    assert summary["records"] == 400  # steps 201..300 of run 1 were redone by run 2
    points = summary["points"]
    assert len(points) <= 52  # 50, plus each run's first step
    steps = [p["step"] for p in points]
    assert steps == sorted(set(steps)) and steps[0] == 1 and steps[-1] == 400
    assert 201 in steps  # run 2's first step is kept for its segment
    assert {p["run"] for p in points if p["step"] <= 200} == {0}
    assert {p["run"] for p in points if p["step"] > 200} == {1}
    assert [p["lr"] for p in points if p["step"] in (1, 400)] == [0.1, 0.05]
    assert "accuracy" in summary["scalars"]
    json.dumps(summary, allow_nan=False)  # non-finite values are nulls, Ansible's JSON holds it
    first, second = summary["runs"]
    assert first["host_cause"] == "operator" and first["previous_end"] is None
    assert second["host_cause"] == "hang" and second["previous_end"] == "interrupted"
    assert second["step"] == 200 and second["checkpoint"] == "step-000200"
    assert second["down_seconds"] == pytest.approx(151.0)  # step 200 at 1200 s to 201 at 1351 s
    # The checkpoint at 300 was abandoned by the resume from 200.
    assert [c["step"] for c in summary["checkpoints"]] == [100, 200]


def test_report_carries_the_newest_metrics_record_and_no_summary_by_default(
    job: dict[str, Any],
) -> None:
    assert training_status.job_metrics(job, 10) is None  # no stream
    _two_runs_with_rotation(job["checkpoint_dir"])
    report = training_status.job_report(job, _show(), NOW_WALL, NOW_MONO)
    assert report["metrics_latest"]["step"] == 400
    assert report["metrics_latest"]["lr"] == 0.05
    assert "metrics" not in report
