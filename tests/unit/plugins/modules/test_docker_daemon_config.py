# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests for unbroken.training.docker_daemon_config and its module_utils."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible_collections.unbroken.training.plugins.module_utils import (
    docker_daemon as dd,
)
from ansible_collections.unbroken.training.plugins.modules import (
    docker_daemon_config,
)
from module_runner import run_module

NVIDIA = {"runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime", "args": []}}}
DEBIAN_EXEC_START = (
    "ExecStart={ path=/usr/sbin/dockerd ; argv[]=/usr/sbin/dockerd -H fd:// "
    "--containerd=/run/containerd/containerd.sock $DOCKER_OPTS ; ignore_errors=no ; "
    "start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }"
)


def run(
    args: dict[str, Any], unit: str = "", env_file: str | None = None, **how: bool
) -> dict[str, Any]:
    """Run the module with args (``how``: run_module's check_mode, diff, fails); `unit` is
    what `systemctl show` prints."""
    args.setdefault("service", "docker" if unit else "")
    lines = [unit] if unit else []
    if env_file is not None:
        lines.append(f"EnvironmentFiles={env_file} (ignore_errors=yes)")

    def fake_run_command(self: Any, cmd: list[str], **kwargs: Any) -> tuple[int, str, str]:
        assert cmd[1] == "show"
        return 0, "\n".join(lines) + "\n", ""

    def fake_get_bin_path(self: Any, name: str, *args: Any, **kwargs: Any) -> str | None:
        return "/bin/systemctl" if name == "systemctl" else None

    run_command = mock.patch.object(basic.AnsibleModule, "run_command", fake_run_command)
    get_bin_path = mock.patch.object(basic.AnsibleModule, "get_bin_path", fake_get_bin_path)
    with run_command, get_bin_path:
        return run_module(docker_daemon_config, args, **how)


@pytest.fixture
def daemon_json(tmp_path: Path) -> Path:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"log-driver": "json-file", "log-opts": {"max-size": "10m"}}))
    return path


def test_merge_adds_runtime_and_keeps_every_other_key(daemon_json: Path) -> None:
    result = run({"path": str(daemon_json), "merge": NVIDIA})
    assert result["changed"] is True
    on_disk = json.loads(daemon_json.read_text())
    assert on_disk["log-opts"] == {"max-size": "10m"}
    assert on_disk["log-driver"] == "json-file"
    assert on_disk["runtimes"]["nvidia"]["path"] == "/usr/bin/nvidia-container-runtime"
    assert result["config"] == on_disk


def test_merge_is_deep_for_objects_and_replaces_lists(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(
        json.dumps({"runtimes": {"crun": {"path": "/usr/bin/crun"}}, "dns": ["10.0.0.1"]})
    )
    run({"path": str(path), "merge": {**NVIDIA, "dns": ["10.0.0.2"]}})
    on_disk = json.loads(path.read_text())
    assert set(on_disk["runtimes"]) == {"crun", "nvidia"}
    assert on_disk["dns"] == ["10.0.0.2"]


def test_second_run_is_idempotent_and_does_not_rewrite(daemon_json: Path) -> None:
    run({"path": str(daemon_json), "merge": NVIDIA})
    inode = daemon_json.stat().st_ino
    result = run({"path": str(daemon_json), "merge": NVIDIA})
    assert result["changed"] is False
    assert daemon_json.stat().st_ino == inode


def test_user_formatting_is_kept_when_nothing_changes(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    text = '{"runtimes":{"nvidia":{"path":"/usr/bin/nvidia-container-runtime","args":[]}}}'
    path.write_text(text)
    assert run({"path": str(path), "merge": NVIDIA})["changed"] is False
    assert path.read_text() == text


def test_remove_deletes_nested_and_top_level_keys(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({**NVIDIA, "default-runtime": "nvidia", "debug": True}))
    result = run({"path": str(path), "remove": ["runtimes/nvidia", "default-runtime", "absent"]})
    assert result["changed"] is True
    assert json.loads(path.read_text()) == {"runtimes": {}, "debug": True}


def test_remove_if_equal_leaves_a_user_choice_alone(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"default-runtime": "crun"}))
    result = run({"path": str(path), "remove_if_equal": {"default-runtime": "nvidia"}})
    assert result["changed"] is False
    path.write_text(json.dumps({"default-runtime": "nvidia"}))
    result = run({"path": str(path), "remove_if_equal": {"default-runtime": "nvidia"}})
    assert result["changed"] is True
    assert json.loads(path.read_text()) == {}


def test_invalid_path_expression_is_refused(daemon_json: Path) -> None:
    result = run({"path": str(daemon_json), "remove": ["runtimes//nvidia"]}, fails=True)
    assert "invalid key path" in result["msg"]


def test_check_mode_reports_change_and_diff_without_writing(daemon_json: Path) -> None:
    before = daemon_json.read_text()
    result = run({"path": str(daemon_json), "merge": NVIDIA}, check_mode=True, diff=True)
    assert result["changed"] is True
    assert daemon_json.read_text() == before
    assert result["diff"]["before"] == before
    assert json.loads(result["diff"]["after"])["runtimes"] == NVIDIA["runtimes"]


def test_diff_is_absent_without_diff_mode(daemon_json: Path) -> None:
    assert "diff" not in run({"path": str(daemon_json), "merge": NVIDIA})


def test_missing_file_is_created_with_mode(tmp_path: Path) -> None:
    path = tmp_path / "etc-docker" / "daemon.json"
    result = run({"path": str(path), "merge": NVIDIA, "mode": "0640"})
    assert result["changed"] is True
    assert json.loads(path.read_text()) == NVIDIA
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_missing_file_and_nothing_to_set_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    assert run({"path": str(path), "remove": ["runtimes/nvidia"]})["changed"] is False
    assert not path.exists()


def test_empty_file_counts_as_empty_object(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text("\n")
    run({"path": str(path), "merge": NVIDIA})
    assert json.loads(path.read_text()) == NVIDIA


@pytest.mark.parametrize("text", ['{"log-driver": "json-file",}', "[1, 2]", "{nope"])
def test_invalid_json_fails_clearly_and_leaves_the_file_alone(tmp_path: Path, text: str) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(text)
    mtime = path.stat().st_mtime_ns
    result = run({"path": str(path), "merge": NVIDIA, "backup": True}, fails=True)
    assert str(path) in result["msg"] and "left unchanged" in result["msg"]
    assert path.read_text() == text
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == ["daemon.json"]


def test_invalid_json_message_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text('{\n  "debug": true,\n}\n')
    result = run({"path": str(path), "merge": NVIDIA}, fails=True)
    assert "line 3, column 1" in result["msg"]


def test_backup_keeps_the_previous_content(daemon_json: Path) -> None:
    before = daemon_json.read_text()
    result = run({"path": str(daemon_json), "merge": NVIDIA, "backup": True})
    backup = Path(result["backup_file"])
    assert backup.parent == daemon_json.parent and backup.read_text() == before


def test_no_backup_when_nothing_changes(daemon_json: Path) -> None:
    run({"path": str(daemon_json), "merge": NVIDIA})
    result = run({"path": str(daemon_json), "merge": NVIDIA, "backup": True})
    assert "backup_file" not in result
    assert len(list(daemon_json.parent.iterdir())) == 1


def test_existing_mode_is_kept(daemon_json: Path) -> None:
    daemon_json.chmod(0o600)
    run({"path": str(daemon_json), "merge": NVIDIA, "mode": "0644"})
    assert stat.S_IMODE(daemon_json.stat().st_mode) == 0o600


def test_write_is_temp_fsync_rename(daemon_json: Path) -> None:
    calls: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def rename(src: str, dst: str) -> None:
        calls.append("rename")
        assert Path(src).parent == daemon_json.parent and Path(src) != daemon_json
        assert json.loads(Path(src).read_text())["runtimes"] == NVIDIA["runtimes"]
        real_rename(src, dst)

    with mock.patch.object(os, "fsync", fsync), mock.patch.object(os, "rename", rename):
        run({"path": str(daemon_json), "merge": NVIDIA})
    assert calls[:2] == ["fsync", "rename"]


def test_failed_write_leaves_old_file_and_no_temp(daemon_json: Path) -> None:
    before = daemon_json.read_text()

    def rename(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    with mock.patch.object(os, "rename", rename), pytest.raises(OSError):
        run({"path": str(daemon_json), "merge": NVIDIA})
    assert daemon_json.read_text() == before
    assert [p.name for p in daemon_json.parent.iterdir()] == ["daemon.json"]


def test_flag_conflict_in_unit_is_warned(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"hosts": ["unix:///var/run/docker.sock"]}))
    result = run({"path": str(path), "merge": NVIDIA}, unit=DEBIAN_EXEC_START)
    assert result["flag_conflicts"] == [{"key": "hosts", "flag": "-H"}]
    assert any("'hosts'" in w and "'-H'" in w for w in result["warnings"])


def test_flag_conflict_through_environment_file_is_warned(tmp_path: Path) -> None:
    env = tmp_path / "default-docker"
    env.write_text('# Debian\nDOCKER_OPTS="--default-runtime=runc --log-opt max-size=1m"\n')
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"log-opts": {"max-size": "10m"}}))
    result = run(
        {"path": str(path), "merge": {"default-runtime": "nvidia"}},
        unit=DEBIAN_EXEC_START,
        env_file=str(env),
    )
    keys = {c["key"] for c in result["flag_conflicts"]}
    assert keys == {"default-runtime", "log-opts"}
    assert len(result["warnings"]) == 2


def test_no_warning_without_conflict(daemon_json: Path) -> None:
    result = run({"path": str(daemon_json), "merge": NVIDIA}, unit=DEBIAN_EXEC_START)
    assert result["flag_conflicts"] == [] and result["warnings"] == []


def test_parse_exec_start_and_expand() -> None:
    (argv,) = dd.parse_exec_start(DEBIAN_EXEC_START.partition("=")[2])
    assert argv[0] == "/usr/sbin/dockerd" and argv[-1] == "$DOCKER_OPTS"
    expanded = dd.expand_argv(argv, {"DOCKER_OPTS": "--debug  --iptables=false"})
    assert expanded[-2:] == ["--debug", "--iptables=false"]
    assert dd.expand_argv(["--x=${A}"], {"A": "1"}) == ["--x=1"]


def test_apply_changes_does_not_mutate_input() -> None:
    base = {"runtimes": {"crun": {"path": "/c"}}}
    dd.apply_changes(base, NVIDIA, ["runtimes/crun"], {})
    assert base == {"runtimes": {"crun": {"path": "/c"}}}
