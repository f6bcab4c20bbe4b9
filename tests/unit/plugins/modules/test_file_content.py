# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests for unbroken.training.file_content, on real files in a temporary directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.unbroken.training.plugins.modules import file_content
from module_runner import run_module

OLD = "ClientAliveInterval 0\n"
NEW = "ClientAliveInterval 60\nClientAliveCountMax 3\n"


def others(directory: Path, keep: Path) -> list[str]:
    """Names in directory besides keep: temporary files or backups left behind."""
    return sorted(p.name for p in directory.iterdir() if p != keep)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_creates_the_file_with_its_mode_and_then_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "keepalive.conf"
    result = run_module(file_content, {"path": str(target), "content": NEW, "mode": "0640"})
    assert result["changed"] is True
    assert target.read_text() == NEW
    assert mode_of(target) == 0o640
    assert others(tmp_path, target) == []

    again = run_module(file_content, {"path": str(target), "content": NEW, "mode": "0640"})
    assert again["changed"] is False
    assert again["checksum"] == result["checksum"]


def test_changed_content_is_replaced_and_the_old_one_kept_as_backup(tmp_path: Path) -> None:
    target = tmp_path / "keepalive.conf"
    target.write_text(OLD)
    result = run_module(
        file_content, {"path": str(target), "content": NEW, "backup": True}, diff=True
    )
    assert result["changed"] is True
    assert target.read_text() == NEW
    assert Path(result["backup_file"]).read_text() == OLD
    assert others(tmp_path, target) == [Path(result["backup_file"]).name]
    assert result["diff"]["before"] == OLD
    assert result["diff"]["after"] == NEW


def test_unchanged_content_makes_no_backup(tmp_path: Path) -> None:
    target = tmp_path / "keepalive.conf"
    target.write_text(NEW)
    result = run_module(file_content, {"path": str(target), "content": NEW, "backup": True})
    assert result["changed"] is False
    assert "backup_file" not in result
    assert others(tmp_path, target) == []


def test_check_mode_predicts_the_change_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "keepalive.conf"
    target.write_text(OLD)
    os.chmod(target, 0o600)
    result = run_module(
        file_content,
        {"path": str(target), "content": NEW, "mode": "0644", "backup": True},
        check_mode=True,
        diff=True,
    )
    assert result["changed"] is True
    assert target.read_text() == OLD
    assert mode_of(target) == 0o600
    assert others(tmp_path, target) == []
    content_diff, attributes_diff = result["diff"]
    assert content_diff["after"] == NEW
    assert attributes_diff["after"]["mode"] == "0644"

    missing = tmp_path / "new.conf"
    result = run_module(
        file_content, {"path": str(missing), "content": NEW, "mode": "0644"}, check_mode=True
    )
    assert result["changed"] is True
    assert not missing.exists()


def test_only_the_mode_differs(tmp_path: Path) -> None:
    target = tmp_path / "mosh-server"
    target.write_text(NEW)
    os.chmod(target, 0o644)
    result = run_module(
        file_content, {"path": str(target), "content": NEW, "mode": "0755"}, diff=True
    )
    assert result["changed"] is True
    assert mode_of(target) == 0o755
    assert result["diff"]["before"]["mode"] == "0644"
    assert target.read_text() == NEW


def test_refused_content_leaves_the_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "tmux.conf"
    target.write_text(OLD)
    result = run_module(
        file_content,
        {"path": str(target), "content": NEW, "backup": True, "validate": "grep -q Nonexistent %s"},
        fails=True,
    )
    assert "failed validation" in result["msg"]
    assert result["rc"] == 1
    assert target.read_text() == OLD
    assert others(tmp_path, target) == []


def test_validate_sees_the_new_content(tmp_path: Path) -> None:
    target = tmp_path / "tmux.conf"
    result = run_module(
        file_content,
        {"path": str(target), "content": NEW, "validate": "grep -q ClientAliveCountMax %s"},
    )
    assert result["changed"] is True
    assert target.read_text() == NEW


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"validate": "true"}, "validate must contain %s"),
        ({"path_in": "missing/dir/file"}, "does not exist"),
        ({"path_in": "."}, "not a regular file"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    tmp_path: Path, args: dict[str, Any], message: str
) -> None:
    path = tmp_path / args.pop("path_in", "keepalive.conf")
    result = run_module(file_content, {"path": str(path), "content": NEW, **args}, fails=True)
    assert message in result["msg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_symbolic_link_is_replaced_and_its_target_left_alone(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.conf"
    elsewhere.write_text(NEW)
    link = tmp_path / "keepalive.conf"
    link.symlink_to(elsewhere)
    result = run_module(file_content, {"path": str(link), "content": NEW})
    assert result["changed"] is True
    assert not link.is_symlink()
    assert link.read_text() == NEW
    assert elsewhere.read_text() == NEW
