# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The job's files on its host: the definition the role writes, the helper's records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_collections.unbroken.training.plugins.module_utils import (
    training_job_files as jf,
)
from ansible_collections.unbroken.training.plugins.module_utils import (
    training_status_file as sf,
)

ROOT = Path(__file__).resolve().parents[4]


def _definition(name: str = "demo", **changes: Any) -> dict[str, Any]:
    job = {
        "name": name,
        "unit": f"unbroken-job-{name}.service",
        "container": f"unbroken-job-{name}",
        "checkpoint_dir": "/srv/ckpt",
        "status_file": "/srv/ckpt/status.json",
        "state_dir": f"/var/lib/unbroken/trainer/{name}",
    }
    job.update(changes)
    return job


def _define(config: Path, name: str, content: str) -> None:
    (config / "jobs").mkdir(parents=True, exist_ok=True)
    (config / "jobs" / f"{name}.json").write_text(content, encoding="utf-8")


def test_names_are_the_definitions_sorted_and_none_without_a_directory(tmp_path: Path) -> None:
    assert jf.job_names(str(tmp_path / "absent")) == []
    for name in ("zeta", "alpha"):
        _define(tmp_path, name, json.dumps(_definition(name)))
    (tmp_path / "jobs" / "alpha.env").write_text("SECRET=1\n", encoding="utf-8")
    assert jf.job_names(str(tmp_path)) == ["alpha", "zeta"]
    assert jf.read_job(str(tmp_path), "zeta") == _definition("zeta")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no definition for job 'demo'"),
        ("{not json", "is not JSON"),
        (json.dumps(_definition("other")), "does not define job 'demo'"),
        (json.dumps([1]), "does not define job 'demo'"),
        (json.dumps(_definition(state_dir=None, unit=3)), "lacks unit, state_dir"),
    ],
    ids=["missing", "not-json", "another-job", "not-an-object", "keys-missing"],
)
def test_a_bad_definition_is_named_with_its_path(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        _define(tmp_path, "demo", content)
    with pytest.raises(jf.JobDefinitionError) as caught:
        jf.read_job(str(tmp_path), "demo")
    assert message in str(caught.value)
    assert str(tmp_path / "jobs" / "demo.json") in str(caught.value)


def test_the_role_writes_every_key_readers_rely_on() -> None:
    """The writer is the role's ``__trainer_job_config``: it must carry REQUIRED_KEYS."""
    tasks = yaml.safe_load((ROOT / "roles/trainer/tasks/job_present.yml").read_text())
    written = [
        task["ansible.builtin.set_fact"]["__trainer_job_config"]
        for task in tasks
        if "__trainer_job_config" in (task.get("ansible.builtin.set_fact") or {})
        and isinstance(task["ansible.builtin.set_fact"]["__trainer_job_config"], dict)
    ]
    assert len(written) == 1
    assert set(jf.REQUIRED_KEYS) <= set(written[0])


def test_records_read_through_the_one_json_reader_are_objects_or_none(tmp_path: Path) -> None:
    job = _definition(state_dir=str(tmp_path))

    def record(file_name: str) -> dict[str, Any] | None:
        return sf.read_json(jf.state_path(job, file_name))

    assert record(jf.RUNS_FILE) is None
    (tmp_path / jf.FAILURE_FILE).write_text("[]", encoding="utf-8")
    (tmp_path / jf.WATCHDOG_FILE).write_text("{torn", encoding="utf-8")
    (tmp_path / jf.RUNS_FILE).write_text(json.dumps({"runs": 3}), encoding="utf-8")
    assert record(jf.FAILURE_FILE) is None
    assert record(jf.WATCHDOG_FILE) is None
    assert record(jf.RUNS_FILE) == {"runs": 3}
    assert jf.state_path(job, jf.RUNS_FILE) == str(tmp_path / "runs.json")


def test_run_history_keeps_the_starts_with_a_time_and_a_cause() -> None:
    good = {"run": 2, "at": 1.5, "cause": "crash", "detail": "exit 1"}
    runs = {
        "history": [
            good,
            {"run": 3, "at": "yesterday", "cause": "crash"},
            {"run": 4, "at": True, "cause": "crash"},
            {"run": 5, "at": 2.0},
            "junk",
        ]
    }
    assert jf.run_history(runs) == [good]
    assert jf.run_history({"history": "junk"}) == []
    assert jf.run_history({}) == []
    assert set(jf.START_CAUSES) == {"operator", "crash", "hang", "reboot"}
