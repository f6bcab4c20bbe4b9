# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Stop requests by signal, acted on at the next step boundary.

The handler only records which signal arrived and when (no I/O, no locks, no logging:
none of that is safe inside a signal handler); the training loop polls ``requested``
after each step, writes a final checkpoint and exits 0 within its stop budget.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable
from types import FrameType
from typing import Any, Self

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def parse_signal(name: str) -> signal.Signals:
    """Return the signal named ``name`` (``USR1``, ``SIGUSR1`` or a number)."""
    text = name.strip().upper()
    if text.isdigit():
        return signal.Signals(int(text))
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return signal.Signals[text]
    except KeyError:
        raise ValueError(f"unknown signal {name!r}") from None


class StopSignals:
    """Install handlers that turn stop signals into a flag."""

    def __init__(self, signals: Iterable[int] = DEFAULT_SIGNALS) -> None:
        self.signals = tuple(dict.fromkeys(signal.Signals(s) for s in signals))
        self.signum: int | None = None
        self.received_at: float | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> Self:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            self.received_at = time.monotonic()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def remaining(self, budget: float) -> float:
        """Seconds left of ``budget`` counted from the signal's arrival."""
        if self.received_at is None:
            return budget
        return budget - (time.monotonic() - self.received_at)

    def __enter__(self) -> Self:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()
