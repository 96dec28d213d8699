"""Step-indexed batch sampling, so a run resumed mid-epoch sees exactly the batches it would have."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from ldm.utils.seeds import epoch_seed


class StepBatchSampler(Sampler[list[int]]):
    """Endless shuffled batches; batch k is a pure function of (seed, k).

    Epoch e is a permutation drawn from `seed + e`; a global batch of `batch_size` is cut from it without
    replacement (the remainder of each epoch is dropped). With `world_size` ranks (DDP), `batch_size` stays the
    global batch: at step k rank r takes every world_size-th item of global batch k, starting at r, so the ranks
    together train on exactly the batches one process would, step for step, and a budget of N batches means
    the same data on any number of devices (DDP averages the ranks' gradients, so each step's gradient is the
    global batch's mean, as on one device). `start` skips batches already trained on, which is what makes
    mid-epoch resume exact.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, start: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_samples < batch_size:
            raise ValueError(f"batch_size={batch_size} is larger than the training set ({num_samples} items)")
        if batch_size % world_size:
            raise ValueError(f"batch_size={batch_size} does not split evenly over {world_size} devices (it is the "
                             f"global batch; each device takes batch_size / devices)")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.start, self.rank, self.world_size = start, rank, world_size
        self.batches_per_epoch = num_samples // batch_size
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.num_samples, generator=g)
        return self._perm

    def batch(self, step: int) -> list[int]:
        """Indices of this rank's share of the global batch at training step `step`."""
        epoch, i = divmod(step, self.batches_per_epoch)
        batch = self._permutation(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        return batch[self.rank::self.world_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            yield self.batch(step)
            step += 1
