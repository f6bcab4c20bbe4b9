# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The stage runner's clean-up after a Molecule scenario: that scenario's volumes only."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
STANDIN = ROOT / "tests" / "unit" / "standin"


def _load_run_stages() -> Any:
    spec = importlib.util.spec_from_file_location(
        "run_stages", ROOT / "tests" / "harness" / "run_stages.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_stages"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


run_stages = _load_run_stages()


def _scenario_volumes(name: str) -> list[str]:
    config = yaml.safe_load((ROOT / "molecule" / name / "molecule.yml").read_text())
    return list(run_stages.named_volumes(config))


def test_named_volumes_are_the_sources_that_are_not_paths() -> None:
    config = {
        "platforms": [
            {"name": "a", "volumes": ["/sys/fs/cgroup:/sys/fs/cgroup:rw", "ut-a-docker:/d"]},
            {"name": "b"},
            {"name": "c", "volumes": ["ut-a-docker:/d", "ut-c.cache:/c:ro", "./here:/h"]},
        ]
    }
    assert run_stages.named_volumes(config) == ["ut-a-docker", "ut-c.cache"]
    assert run_stages.named_volumes({"platforms": None}) == []


def test_each_scenario_owns_its_volumes_and_no_other_scenarios() -> None:
    by_scenario = {name: _scenario_volumes(name) for name in run_stages.scenarios()}
    assert by_scenario["trainer"] == ["ut-trainer-1-var-lib-docker"]
    assert by_scenario["multinode"] == [
        "ut-mn-1-var-lib-docker",
        "ut-mn-shared",
        "ut-mn-2-var-lib-docker",
    ]
    assert by_scenario["session_tools"] == []
    owners: dict[str, str] = {}
    for name, volumes in by_scenario.items():
        for volume in volumes:
            assert owners.setdefault(volume, name) == name, f"{volume} in {owners[volume]}, {name}"


def test_after_a_scenario_only_its_volumes_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "standin.log"
    monkeypatch.setenv("UT_STANDIN_LOG", str(log))
    monkeypatch.setenv("PATH", f"{STANDIN}:{run_stages.os.environ['PATH']}")
    run_stages.remove_test_volumes("multinode")
    assert log.read_text().splitlines() == [
        "docker volume rm -f ut-mn-1-var-lib-docker ut-mn-shared ut-mn-2-var-lib-docker"
    ]
    log.unlink()
    run_stages.remove_test_volumes("session_tools")  # no named volume: docker is not called
    assert not log.exists()
