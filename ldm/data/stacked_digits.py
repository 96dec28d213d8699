"""Stacked digits: three scikit-learn digits as the R, G and B channels of one image, 10^3 = 1000 modes.

The 16x16 analogue of stacked MNIST (Metz et al. 2017; VEEGAN, PacGAN), built offline from the bundled
digits. The digits are first split into train / val / test exactly as `data=digits` splits them (stratified,
`split_seed`); train triples are drawn only from train digits, val and test triples only from the held-out
digits. Every split holds each of the 1000 label triples equally often (n // 1000 times, the remainder to
distinct random triples), each channel a random digit of its label, drawn by a generator seeded with `split_seed`.
"""

from __future__ import annotations

import numpy as np
import torch

from ldm.data.base import InMemoryImageDataModule, resize_center_crop, split_indices
from ldm.errors import ConfigError

SPLITS = ("train", "val", "test")
DIGITS = 10


def triple_name(label: int, k: int = DIGITS, channels: int = 3) -> str:
    """Mode index -> its per-channel classes, R first: 371 -> "3-7-1"."""
    return "-".join(str(label // k ** (channels - 1 - c) % k) for c in range(channels))


class StackedDigitsDataModule(InMemoryImageDataModule):
    """RGB images whose channels are three digits; label = 100 r + 10 g + b, class names "r-g-b".

    `channel_classes` (10) tells the evaluator to classify each channel on its own (ldm.metrics.evaluator):
    the predicted mode is the triple of the three per-channel predictions. `val_fraction` and `test_fraction`
    split the 1,797 digits; `num_train`, `num_val` and `num_test` are the numbers of stacked images.
    """

    channel_classes = DIGITS

    def __init__(self, image_size: int = 16, channels: int = 3, num_train: int = 10000, num_val: int = 1000,
                 num_test: int = 10000, **kwargs) -> None:
        super().__init__(image_size=image_size, channels=channels, **kwargs)
        if channels != 3:
            raise ConfigError(f"data.channels={channels}: stacked digits are three digits as R, G, B, use "
                              f"data.channels=3")
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        for split, n in self.counts.items():
            if n < (1 if split == "train" else 0):
                raise ConfigError(f"data.num_{split}={n} must be >= {1 if split == 'train' else 0}")
        self.num_channels = channels
        self.class_names = [triple_name(i) for i in range(DIGITS ** channels)]
        self.channel_class_names = [str(d) for d in range(DIGITS)]
        self.digit_splits: dict[str, torch.Tensor] = {}

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        from sklearn.datasets import load_digits

        d = load_digits()
        digits = resize_center_crop(torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0,
                                    self.image_size)[:, 0]
        target = torch.tensor(d.target, dtype=torch.long)
        self.digit_splits = split_indices(len(digits), self.val_fraction, self.test_fraction, self.split_seed,
                                          labels=target)
        out = {}
        for s, split in enumerate(SPLITS):
            n, pool = self.counts[split], self.digit_splits[split]
            if n and len(pool) == 0:
                raise ConfigError(f"data.num_{split}={n} but no digits are held out for {split}: raise "
                                  f"data.{split}_fraction")
            rng = np.random.default_rng([self.split_seed, s])
            by_class = [pool[target[pool] == c].numpy() for c in range(DIGITS)]
            missing = [c for c in range(DIGITS) if len(by_class[c]) == 0]
            if n and missing:
                raise ConfigError(f"the {split} digits hold no {missing[0]}: raise data.{split}_fraction")
            modes = DIGITS ** self.num_channels  # each mode n // modes times, the remainder to distinct modes
            label = np.concatenate([np.tile(np.arange(modes), n // modes), rng.permutation(modes)[:n % modes]])
            label = rng.permutation(label)
            triples = label[:, None] // DIGITS ** np.arange(self.num_channels - 1, -1, -1) % DIGITS
            picks = np.empty_like(triples)
            for c in range(DIGITS):
                where = triples == c
                picks[where] = by_class[c][rng.integers(0, len(by_class[c]), size=int(where.sum()))]
            images = digits[torch.from_numpy(picks).reshape(-1)].reshape(n, self.num_channels, *digits.shape[1:])
            out[split] = (images.contiguous(), torch.from_numpy(label).long())
        return out
