# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Exceptions raised by the checkpoint library; each message says what to do."""

from __future__ import annotations


class CheckpointError(Exception):
    """Base class of every checkpoint library error."""


class CheckpointLockedError(CheckpointError):
    """Another process holds the checkpoint directory's writer lock."""


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed; the partial write was removed, older ones are intact."""


class CheckpointSpaceError(CheckpointWriteError):
    """Not enough free space for a checkpoint (checked before writing, or ENOSPC)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file holds pickled objects that weights_only loading refuses."""


class ConfigMismatchError(CheckpointError):
    """The checkpoint was written by a run with a different configuration."""


class NoValidCheckpointError(CheckpointError):
    """Checkpoints exist but none verifies, and a fresh start was not allowed."""
