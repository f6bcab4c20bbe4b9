# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The status-file format: documents, the atomic replace and the tolerant readers."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.unbroken.training.plugins.module_utils import (
    training_status_file as sf,
)

NOW = 1_800_000_000.5


def _document(state: str = "training", **fields: Any) -> dict[str, Any]:
    return sf.new_document(
        state, 42, pid=7, hostname="node-1", started_at=NOW - 60, now=NOW, **fields
    )


def _write(path: Path, document: dict[str, Any]) -> None:
    sf.replace_file(str(path), document, str(path.parent / ".status.json.tmp"))


def test_a_document_has_every_key_of_the_schema_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    document = _document(total_steps=100, loss=0.5, last_checkpoint={"name": "step-000040"})
    _write(path, document)
    assert tuple(document) == sf.KEYS
    assert sf.read_status(str(path)) == document
    assert document["schema"] == sf.SCHEMA and document["version"] == sf.VERSION
    assert document["updated_at"] == NOW
    assert document["updated_at_iso"] == "2027-01-15T08:00:00Z"
    assert os.listdir(tmp_path) == ["status.json"], "the temporary file is renamed, not left"


def test_states_split_into_running_and_terminal() -> None:
    assert sf.TERMINAL_STATES == ("stopped", "finished", "failed")
    assert set(sf.RUNNING_STATES) | set(sf.TERMINAL_STATES) == set(sf.STATES)
    assert not set(sf.RUNNING_STATES) & set(sf.TERMINAL_STATES)


@pytest.mark.parametrize("state", ["stopped", "finished", "failed"])
def test_a_terminal_document_carries_its_exit_code_and_one_line_reason(
    tmp_path: Path, state: str
) -> None:
    path = tmp_path / "status.json"
    _write(path, _document(state, exit_code=3, reason="CUDA error:\n  device lost\t(step 42)"))
    read = sf.read_status(str(path))
    assert read is not None
    assert read["state"] in sf.TERMINAL_STATES
    assert read["exit_code"] == 3
    assert read["reason"] == "CUDA error: device lost (step 42)"


def test_an_unknown_state_is_refused_naming_the_states() -> None:
    with pytest.raises(ValueError, match="starting, training, stopping, stopped, finished, failed"):
        _document("crashed")


def test_non_finite_numbers_are_written_as_null_so_the_file_stays_json(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    _write(path, _document(loss=math.nan, samples_per_second=math.inf))
    read = json.loads(path.read_text())
    assert read["loss"] is None and read["samples_per_second"] is None


@pytest.mark.parametrize(
    "content",
    [
        "",  # created, not yet written (or emptied by a power loss)
        '{"schema": "unbroken.training/status", "state": "trai',  # torn
        "[]",
        "null",
        json.dumps({"schema": "unbroken.training/metrics", "step": 1}),
        json.dumps({"state": "training", "step": 1}),  # no schema
    ],
    ids=["empty", "torn", "array", "null", "other-schema", "no-schema"],
)
def test_anything_but_a_status_document_means_no_heartbeat(tmp_path: Path, content: str) -> None:
    path = tmp_path / "status.json"
    path.write_text(content, encoding="utf-8")
    assert sf.read_status(str(path)) is None


def test_a_torn_real_document_and_undecodable_bytes_read_as_none(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    _write(path, _document())
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert sf.read_status(str(path)) is None
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert sf.read_status(str(path)) is None
    assert sf.read_json(str(path)) is None


def test_a_missing_file_or_a_directory_reads_as_none(tmp_path: Path) -> None:
    assert sf.read_status(str(tmp_path / "missing.json")) is None
    assert sf.read_json(str(tmp_path / "missing.json")) is None
    assert sf.read_status(str(tmp_path)) is None


def test_unknown_keys_of_a_newer_writer_are_kept_and_do_not_hide_the_document(
    tmp_path: Path,
) -> None:
    path = tmp_path / "status.json"
    document = {**_document(), "version": 2, "gpu_memory_bytes": 123, "phase": "eval"}
    path.write_text(json.dumps(document), encoding="utf-8")
    read = sf.read_status(str(path))
    assert read == document
    assert sf.updated_at(read) == NOW


def test_read_json_reads_any_json_object_for_the_helper_records(tmp_path: Path) -> None:
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"runs": 3, "restarts": 1}), encoding="utf-8")
    assert sf.read_json(str(path)) == {"runs": 3, "restarts": 1}
    assert sf.read_status(str(path)) is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"updated_at": 12}, 12.0),
        ({"updated_at": 12.5}, 12.5),
        ({"updated_at": "12"}, None),
        ({"updated_at": True}, None),
        ({"updated_at": None}, None),
        ({}, None),
        (None, None),
    ],
)
def test_updated_at_is_a_number_or_none(status: dict[str, Any] | None, expected: Any) -> None:
    assert sf.updated_at(status) == expected


def test_a_failed_replace_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    _write(path, _document())
    before = path.read_bytes()
    tmp = tmp_path / ".status.json.tmp"
    # The target is a directory: the rename fails after the temporary file was written.
    blocked = tmp_path / "blocked"
    (blocked / "inside").mkdir(parents=True)
    with pytest.raises(OSError):
        sf.replace_file(str(blocked), _document("failed"), str(tmp))
    assert not tmp.exists()
    # The temporary file cannot be created: nothing changes either.
    with pytest.raises(OSError):
        sf.replace_file(str(path), _document("failed"), str(tmp_path / "no" / "tmp"))
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a\n  b\tc", "a b c"), ("   ", None), ("", None), (None, None), (3, "3")],
)
def test_one_line(text: Any, expected: str | None) -> None:
    assert sf.one_line(text) == expected
