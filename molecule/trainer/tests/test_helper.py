# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests of the host helper the trainer role deploys (pure functions, no host needed)."""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

HELPER_PATH = Path(__file__).resolve().parents[3] / "runtime/helper/unbroken_trainer_helper.py"
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


def test_multinode_jobs_run_on_the_host_network_and_single_node_jobs_do_not() -> None:
    assert "--network" not in helper.docker_run_argv(_job())
    argv = helper.docker_run_argv(_job(network="host"))
    assert argv[argv.index("--network") + 1] == "host"
    assert argv.index("--network") < argv.index("img@sha256:abc")


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

METRICS_MODULE = HELPER_PATH.parents[1] / "unbroken_ckpt/training_metrics.py"


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


# -- alerts ----------------------------------------------------------------------------

SECRET = "Bearer s3cret-token-never-printed"


class _Listener:
    """A real HTTP server on 127.0.0.1 (ephemeral port) that records what it is POSTed."""

    def __init__(self, status: int = 204) -> None:
        received: list[dict[str, Any]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": json.loads(self.rfile.read(length)),
                    }
                )
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Listener:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _alert_job(tmp_path: Path, name: str = "demo") -> dict[str, Any]:
    state = tmp_path / "state" / name
    state.mkdir(parents=True)
    ckpt = tmp_path / "ckpt" / name
    ckpt.mkdir(parents=True)
    return {
        "name": name,
        "unit": f"unbroken-job-{name}.service",
        "container": f"unbroken-job-{name}",
        "state_dir": str(state),
        "status_file": str(ckpt / "status.json"),
        "checkpoint_dir": str(ckpt),
        "hang_timeout": 30,
        "startup_timeout": 30,
        "restart_limit_burst": 3,
        "restart_limit_interval": 60,
    }


def _write_status(job: dict[str, Any], **fields: Any) -> None:
    status = {"schema": "unbroken.training/status", "updated_at": time.time(), **fields}
    Path(job["status_file"]).write_text(json.dumps(status))


def _recorder(path: Path) -> list[str]:
    """A real command hook: appends its stdin (one event) as one line to ``path``."""
    code = "import sys; open(sys.argv[1], 'a').write(sys.stdin.read() + '\\n')"
    return [sys.executable, "-c", code, str(path)]


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture(autouse=True)
def _no_host_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hook problems go to the job's journal: never the real one of the test machine."""
    monkeypatch.setattr(helper, "JOURNAL_SOCKET", str(tmp_path / "no-journal.sock"))


def test_alert_posts_json_to_a_webhook_and_feeds_a_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = _alert_job(tmp_path)
    out = tmp_path / "events.jsonl"
    with _Listener() as listener:
        alerts = {
            "command": _recorder(out),
            "webhook_url": listener.url,
            "webhook_headers": {"Authorization": SECRET},
            "events": list(helper.ALERT_EVENTS),
            "timeout": 5,
        }
        problems = helper.send_alert(job, alerts, "hang", {"step": 42}, "no heartbeat")
    assert problems == []
    (post,) = listener.received
    assert post["path"] == "/hook"
    assert post["headers"]["Content-Type"] == "application/json"
    assert post["headers"]["Authorization"] == SECRET
    body = post["body"]
    assert body["event"] == "hang" and body["job"] == "demo" and body["step"] == 42
    assert body["reason"] == "no heartbeat" and body["host"] and body["time"].endswith("Z")
    assert _events(out) == [body]  # the command got the same document on stdin
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err


def test_a_failing_hook_is_reported_and_never_raises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = _alert_job(tmp_path)
    with _Listener(status=500) as listener:
        alerts = {
            "command": [sys.executable, "-c", "import sys; sys.exit('hook broke')"],
            "webhook_url": listener.url + "?token=s3cret-in-url",
            "webhook_headers": {"Authorization": SECRET},
            "timeout": 5,
        }
        problems = helper.send_alert(job, alerts, "finished", {"step": 9}, "done")
    assert len(listener.received) == 1
    assert len(problems) == 2
    assert "exited with 1: hook broke" in problems[0] and "HTTP 500" in problems[1]
    # A URL http.client refuses (a space) is one more failing hook, not an exception.
    alerts = {"webhook_url": "http://127.0.0.1:9/a b", "timeout": 2}
    assert helper.send_alert(job, alerts, "finished", {}, "done") == [
        "alert webhook failed (InvalidURL)"
    ]
    # Nothing listens on a closed port; a command that does not exist.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    alerts = {"command": [str(tmp_path / "absent")], "webhook_url": closed, "timeout": 2}
    assert len(helper.send_alert(job, alerts, "finished", {}, "done")) == 2
    captured = capsys.readouterr()
    assert "(ignored)" in captured.err
    assert SECRET not in captured.out + captured.err
    assert "s3cret-in-url" not in captured.out + captured.err


def test_alerts_only_for_the_configured_events(tmp_path: Path) -> None:
    job = _alert_job(tmp_path)
    out = tmp_path / "events.jsonl"
    alerts = {"command": _recorder(out), "events": ["crash_loop"]}
    helper.send_alert(job, alerts, "finished", {}, "done")
    helper.send_alert(job, None, "crash_loop", {}, "no hooks configured")
    assert _events(out) == []
    helper.send_alert(job, alerts, "crash_loop", {}, "limit reached")
    assert [e["event"] for e in _events(out)] == ["crash_loop"]


def test_checkpoint_failed_alerts_once_per_distinct_error(tmp_path: Path) -> None:
    job = _alert_job(tmp_path)
    out = tmp_path / "events.jsonl"
    alerts = {"command": _recorder(out)}
    _write_status(job, state="training", step=5, checkpoint_error=None)
    helper.check_checkpoint_error(job, alerts)
    assert _events(out) == []
    _write_status(job, state="training", step=6, checkpoint_error="No space left on device")
    for _tick in range(3):
        helper.check_checkpoint_error(job, alerts)
    _write_status(job, state="training", step=8, checkpoint_error="Permission denied")
    helper.check_checkpoint_error(job, alerts)
    helper.check_checkpoint_error(job, alerts)
    events = _events(out)
    assert [(e["event"], e["step"], e["checkpoint_error"]) for e in events] == [
        ("checkpoint_failed", 6, "No space left on device"),
        ("checkpoint_failed", 8, "Permission denied"),
    ]


def test_the_helpers_actions_send_their_alerts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _alert_job(tmp_path)
    out = tmp_path / "events.jsonl"
    alerts = {"command": _recorder(out)}
    # finished: post-stop of a run that wrote state finished and exited 0.
    Path(job["state_dir"], "runs.json").write_text(json.dumps({"last_start": {"run": 1, "at": 1}}))
    _write_status(job, state="finished", step=100, total_steps=100)
    helper.post_stop(job, {"SERVICE_RESULT": "exit-code", "EXIT_CODE": "exited"}, alerts)
    assert _events(out) == []
    helper.post_stop(job, {"SERVICE_RESULT": "success", "EXIT_CODE": "exited"}, alerts)
    # hang: the watchdog kills a run whose heartbeat is old ('true' stands in for docker).
    _write_status(job, state="training", step=55)
    Path(job["status_file"]).touch()
    monkeypatch.setattr(helper, "unit_running", lambda _unit: (time.time() + 5, 7))
    monkeypatch.setattr(helper, "docker_binary", lambda: "true")
    monkeypatch.setattr(
        helper,
        "heartbeat_verdict",
        lambda *_a, **_k: {
            "hung": True,
            "step": 55,
            "heartbeat_age": 99.0,
            "limit": 30.0,
            "started": True,
            "hang_timeout": 30,
        },
    )
    assert helper.watch_job(job, alerts) == 1
    # crash_loop: the failure unit finds systemd's crash-loop message.
    props = {"Result": "exit-code", "ExecMainStatus": "3", "NRestarts": "3"}
    monkeypatch.setattr(helper, "systemctl_show", lambda _unit, _props: props)
    limit = {"SYSLOG_IDENTIFIER": "systemd", "MESSAGE": "Start request repeated too quickly."}
    monkeypatch.setattr(helper, "journal_entries", lambda _unit, _count: [limit])
    helper.record_failure(job, alerts)
    events = _events(out)
    assert [(e["event"], e["step"]) for e in events] == [
        ("finished", 100),
        ("hang", 55),
        ("crash_loop", 55),
    ]
    assert events[2]["exit_code"] == 3 and events[2]["restarts"] == 3
    assert "crash-loop limit reached" in events[2]["reason"]


def test_post_stop_reads_the_hooks_the_role_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _alert_job(tmp_path)
    config = tmp_path / "config"
    (config / "jobs").mkdir(parents=True)
    (config / "jobs" / "demo.json").write_text(json.dumps(job))
    out = tmp_path / "events.jsonl"
    (config / "alerts.json").write_text(json.dumps({"command": _recorder(out)}))
    _write_status(job, state="finished", step=100)
    monkeypatch.setenv("SERVICE_RESULT", "success")
    assert helper.main(["--config-dir", str(config), "post-stop", "demo"]) == 0
    assert [(e["event"], e["job"], e["step"]) for e in _events(out)] == [("finished", "demo", 100)]
