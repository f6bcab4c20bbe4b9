# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""A batch sampler whose position is part of the checkpoint.

Each epoch's order is a permutation drawn from its own generator seeded by (seed,
epoch), so it does not depend on, nor disturb, the global RNGs; ``state_dict`` holds
(epoch, batches consumed), so a resumed run sees exactly the batch the interrupted one
would have seen next.  Under torchrun give ``rank`` and ``world_size``: each step's global
batch (``batch_size * world_size`` samples of the epoch's permutation) is split by rank,
so every rank's order is exact and the ranks never overlap.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


class ResumableBatchSampler:
    """Yield lists of sample indices, epoch after epoch, resumable mid-epoch.

    The position advances when a batch is handed out by ``next_batch`` (or by iteration
    with ``DataLoader(batch_sampler=..., num_workers=0)``); with worker processes the
    loader prefetches ahead, so call ``next_batch`` yourself instead.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        if batch_size < 1 or num_samples < batch_size * world_size:
            raise ValueError(
                f"need 1 <= batch_size and batch_size * world_size <= num_samples, got "
                f"{batch_size} * {world_size} and {num_samples}"
            )
        self.rank = rank
        self.world_size = world_size
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // (self.batch_size * self.world_size)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def next_batch(self) -> list[int]:
        """Return the next batch's indices and advance (rolling over into the next epoch)."""
        if self.position >= self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
            self._order = self._permutation(self.epoch)
        start = (self.position * self.world_size + self.rank) * self.batch_size
        self.position += 1
        return self._order[start : start + self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        while self.position < self.batches_per_epoch:
            yield self.next_batch()

    def __len__(self) -> int:
        return self.batches_per_epoch - self.position

    def state_dict(self) -> dict[str, Any]:
        # The same on every rank (the position counts global batches), so one rank's copy
        # restores them all; the rank itself is not part of it.
        state = {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
        }
        if self.world_size > 1:
            state["world_size"] = self.world_size
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = {"world_size": 1, **state}
        for key in ("seed", "num_samples", "batch_size", "shuffle", "world_size"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler {key} differs from the checkpoint's "
                    f"({getattr(self, key)!r} != {state[key]!r})"
                )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = self._permutation(self.epoch)
