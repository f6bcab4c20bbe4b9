# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Capture and restore every random number generator a training run draws from.

States are stored as tensors and plain scalars so that they load under
``torch.load(weights_only=True)`` (NumPy arrays and Python tuples of the raw states
do not: huggingface/transformers#34631).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import torch

try:  # NumPy is optional: its RNG is captured only when it is installed.
    import numpy as np
except ImportError:  # pragma: no cover - exercised only without numpy
    np = None  # type: ignore[assignment]

LOG = logging.getLogger("unbroken_ckpt")


def capture_rng() -> dict[str, Any]:
    """Return the current Python, NumPy, torch CPU and CUDA RNG states."""
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "torch_cpu": torch.get_rng_state(),
        "numpy": _capture_numpy(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return state


def _capture_numpy() -> dict[str, Any] | None:
    if np is None:
        return None
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "bit_generator": str(name),
        "key": torch.from_numpy(np.asarray(key, dtype=np.int64).copy()),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Put every generator back into the captured state."""
    py = state["python"]
    internal = tuple(int(v) for v in py["internal"].tolist())
    random.setstate((int(py["version"]), internal, py["gauss_next"]))
    torch.set_rng_state(state["torch_cpu"])
    _restore_numpy(state.get("numpy"))
    _restore_cuda(state.get("cuda"))


def _restore_numpy(saved: dict[str, Any] | None) -> None:
    if saved is None or np is None:
        if saved is not None:
            LOG.warning("checkpoint has a NumPy RNG state but NumPy is not installed; not restored")
        return
    key = saved["key"].numpy().astype(np.uint32)
    np.random.set_state(
        (
            saved["bit_generator"],
            key,
            saved["pos"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
    )


def _restore_cuda(saved: Any | None) -> None:
    if saved is None:
        return
    if not torch.cuda.is_available():
        LOG.warning("checkpoint has CUDA RNG states but CUDA is not available; not restored")
        return
    if len(saved) != torch.cuda.device_count():
        LOG.warning(
            "checkpoint has CUDA RNG states for %d device(s), this process sees %d; not restored",
            len(saved),
            torch.cuda.device_count(),
        )
        return
    torch.cuda.set_rng_state_all(saved)
