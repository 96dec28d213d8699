"""Cached latents as a DataModule for stage 2: (mean, std, label) rows per split."""

from __future__ import annotations

from typing import Optional

import torch

from ldm.data.base import StepDataModule, TensorTuple


class LatentDataModule(StepDataModule):
    """Posterior means and stds (zeros for deterministic encoders) with labels, all in memory.

    `splits` maps split name -> dict(mean=(N, C, h, w), std=(N, C, h, w) or None, labels=(N,)).
    Keeping std lets stage 2 train on posterior samples instead of means (a config switch).
    """

    batch_key = "stage2.batch_size"

    def __init__(self, splits: dict[str, dict], batch_size: int, shuffle_seed: int, overfit_batches: int = 0) -> None:
        super().__init__(batch_size=batch_size, split_seed=shuffle_seed, overfit_batches=overfit_batches)
        for name, s in splits.items():
            std = s.get("std")
            std = torch.zeros(len(s["mean"]), 1, 1, 1) if std is None else std
            self.splits[name] = TensorTuple(s["mean"], std, s["labels"])

    def setup(self, stage: Optional[str] = None) -> None:  # built in __init__
        pass
