# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Fixtures for the end-to-end suites: one NAT lab per session, always torn down."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Dict, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab import Lab, LabSettings, build_lab, host_prerequisites, report_path

_DURATIONS: Dict[str, float] = {}


def report_dir() -> Path:
    """Where measurements go: $UNBROKEN_REPORT_DIR, else tests/output (gitignored)."""
    return report_path("x").parent


@pytest.fixture(scope="session")
def lab_settings() -> LabSettings:
    return LabSettings()


@pytest.fixture(scope="session")
def lab(lab_settings: LabSettings) -> Iterator[Lab]:
    missing = host_prerequisites()
    if missing:
        pytest.fail(f"the e2e lab needs root and these host tools: {', '.join(missing)}")
    started = time.monotonic()
    the_lab = build_lab(lab_settings)
    _DURATIONS["lab setup (containers, converge, router)"] = time.monotonic() - started
    try:
        yield the_lab
    finally:
        the_lab.close()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _DURATIONS[report.nodeid] = report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _DURATIONS:
        return
    out = report_dir() / "e2e_durations.json"
    out.write_text(json.dumps({k: round(v, 2) for k, v in _DURATIONS.items()}, indent=2) + "\n")
